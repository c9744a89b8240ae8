"""benchmarks/bench_synth.py's harness: inputs from a serial-in shift register, outputs into a signature
register, so every output bit reaches ``sout`` (no parallel-load ``cap`` net). Simulated with Amaranth."""

import json

import pytest
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from .benchmark_scripts import load


class _AddFive(wiring.Component):
    """o = i + 5, registered: 4 bits in, 4 out. (Not a plain rotation: the XOR signature is a structural
    sink, and delayed copies of one input bit can cancel in it, e.g. o = rotl2(i) gives sout = 0 always.)"""
    i: In(4)
    o: Out(4)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.o.eq(self.i + 5)
        return m


def _run(stuck=None):
    """sin bits -> sout bits through the harness; ``stuck`` forces one DUT output bit to 0."""
    bench = load("bench_synth")
    dut = _AddFive()
    h, ports = bench.harness(dut)
    assert [p.name for p in ports] == ["sin", "sout"]
    sin_bits = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0]
    out = []

    async def tb(ctx):
        for b in sin_bits + [0] * 8:
            ctx.set(h.sin, b)
            if stuck is not None:
                ctx.set(dut.o[stuck], 0)
            await ctx.tick()
            out.append(ctx.get(h.sout))

    sim = Simulator(h)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return sin_bits, out


def _reference(sin_bits):
    """The same in plain Python: sr shifts sin in at bit 0, o = sr + 5 a cycle later,
    sig <= (sig >> 1) ^ o, sout = sig[0]."""
    sr = o = sig = 0
    out = []
    for b in sin_bits + [0] * 8:
        # the values after this clock edge (what the testbench reads after its tick)
        new_sr = ((sr << 1) | b) & 0xF
        new_o = (sr + 5) & 0xF
        new_sig = (sig >> 1) ^ o
        sr, o, sig = new_sr, new_o, new_sig
        out.append(sig & 1)
    return out


def test_harness_matches_reference():
    sin_bits, out = _run()
    assert out == _reference(sin_bits)
    assert any(out)


def test_every_output_bit_is_observed():
    # a DUT output bit that never reached sout could be optimised away: flipping any one must show
    sin_bits, good = _run()
    for bit in range(4):
        _, bad = _run(stuck=bit)
        assert bad != good, bit


def test_extra_nextpnr_arguments_follow_the_fixed_ones():
    # --nextpnr-arg (placer/router tuning) is appended after the seed, thread, placer and router settings
    bench = load("bench_synth")
    args = bench.PnrOptions(2, "router2", ["--placer-heap-timingweight", "40", "--tmg-ripup"]).args()
    assert args[:2] == ("--seed", "2") and "router2" in args
    assert args[-3:] == ("--placer-heap-timingweight", "40", "--tmg-ripup")
    assert bench.PnrOptions().args() == bench.NEXTPNR_ARGS
    # the placer is a choice of its own (one --placer in the command), heap by default
    static = bench.PnrOptions(placer="static").args()
    assert static.count("--placer") == 1 and static[static.index("--placer") + 1] == "static"
    assert "heap" in bench.NEXTPNR_ARGS


def test_pnr_options_are_checked():
    bench = load("bench_synth")
    with pytest.raises(ValueError, match="router"):
        bench.PnrOptions(router="router3")
    with pytest.raises(ValueError, match="placer"):
        bench.PnrOptions(placer="quadratic")


def test_the_pipeline_gets_its_own_placer_unless_one_is_given():
    bench = load("bench_synth")
    opts = bench.PnrOptions(seed=2)
    assert bench.block_pnr_options("market_data", opts).placer == "static"
    assert bench.block_pnr_options("market_data", opts).seed == 2
    assert bench.block_pnr_options("market_book", opts) == opts
    assert bench.block_pnr_options("market_data", opts, "heap").placer == "heap"
    with pytest.raises(TypeError, match="extra"):
        bench.PnrOptions(extra="--tmg-ripup")      # a string, not a sequence of arguments
    with pytest.raises(TypeError, match="seed"):
        bench.PnrOptions(seed="1")


def test_results_record_the_nextpnr_options(tmp_path, monkeypatch):
    # the JSON says how a figure was placed and routed; synthesis-only results have no such options
    bench = load("bench_synth")
    calls = []

    def fake_run(cmd, cwd, log, timeout):
        calls.append(cmd)
        if cmd[0] == bench.YOSYS:
            (cwd / "stat.txt").write_text("(cell counts: _module_stats is replaced below)\n")
        else:
            (cwd / "report.json").write_text(json.dumps({"fmax": {"clk": {"achieved": 200.0}}}))
        return 0.0
    monkeypatch.setattr(bench, "_run", fake_run)
    monkeypatch.setattr(bench, "_module_stats", lambda text, module, **kw: {"LUT4": 3})
    opts = bench.PnrOptions(3, extra=("--tmg-ripup",))
    res = bench.build("addfive", _AddFive(), workdir=tmp_path, pnr_options=opts)
    assert res.fmax_mhz == 200.0
    assert res.nextpnr_args == list(opts.args()) and calls[-1][-len(opts.args()):] == list(opts.args())
    assert bench.build("addfive", _AddFive(), workdir=tmp_path, pnr=False).nextpnr_args == []


def test_kept_submodules_are_kept_and_counted(monkeypatch):
    # --keep split: the submodule keeps its hierarchy in the Yosys script, and the block's cell counts add
    # its module's to the block's own
    bench = load("bench_synth")
    script = bench._yosys_script("bench_x", "bench_x.dut", "abc9", ("split",))
    assert "setattr -mod -set keep_hierarchy 1 bench_x.dut.split" in script.splitlines()
    assert "keep_hierarchy 1 bench_x.dut.split" not in bench._yosys_script("bench_x", "bench_x.dut", "abc9")
    stat = ("=== bench_x.dut.split ===\n\n     10   LUT4\n      4   TRELLIS_FF\n"
            "=== bench_x.dut ===\n\n     20   LUT4\n      1   bench_x.dut.split\n"
            "=== bench_x ===\n\n    100   LUT4\n")
    assert bench._module_stats(stat, "bench_x.dut")["LUT4"] == 20
    kept = bench._module_stats(stat, "bench_x.dut", with_submodules=True)
    assert kept["LUT4"] == 30 and kept["TRELLIS_FF"] == 4
    monkeypatch.setattr(bench, "BLOCK_KEEP", {"market_data": ("split",)})
    assert bench.block_keep("market_data", None) == ("split",)
    assert bench.block_keep("market_data", ["none"]) == () and bench.block_keep("udp_rx", None) == ()
    assert bench.block_keep("market_book", ["a", "b"]) == ("a", "b")


def _net(driver, *endpoints):
    return {"driver": driver, "net": driver + "_Z", "port": "Q",
            "endpoints": [{"cell": c, "port": p, "delay": [0.5, a]} for c, p, a in endpoints]}


def test_failing_endpoints_group_the_pins_over_the_period_by_register():
    # nextpnr prints one worst path; the detailed report's arrivals say how many pins miss the clock
    bench = load("bench_synth")
    report = {"detailed_net_timings": [
        _net("dut.book.u3_TRELLIS_FF_Q_1", ("dut.book.bq_TRELLIS_FF_Q_12", "DI", 6.9),
             ("dut.book.bq_TRELLIS_FF_Q_13", "DI", 6.5), ("dut.book.lw[3]_TRELLIS_FF_Q_2", "CE", 6.3)),
        # a pin's latest arrival counts, over every net that reaches it
        _net("dut.book.u4_TRELLIS_FF_Q_2", ("dut.book.lw[3]_TRELLIS_FF_Q_2", "CE", 7.2),
             ("dut.book.way0.0.5", "ADA7", 6.6), ("dut.book.way0.0.6", "ADA7", 6.45)),
        # the harness's reset and serial-input pins are not register-to-register paths
        _net("rst$tr_io", ("dut.book.bq_TRELLIS_FF_Q_12", "LSR", 9.0)),
    ]}
    count, groups = bench.failing_endpoints(report, 156.25)          # 6.4 ns
    assert count == 5
    assert [(g["register"], g["pin"], g["count"], g["worst_ns"]) for g in groups] == [
        ("dut.book.lw", "CE", 1, 7.2), ("dut.book.bq", "DI", 2, 6.9), ("dut.book.way0", "ADA7", 2, 6.6)]
    assert bench.failing_endpoints(report, 100.0) == (0, [])
    assert bench.failing_endpoints(report, 156.25, top=1)[1][0]["register"] == "dut.book.lw"
    assert bench.failing_endpoints({}, 156.25) == (0, [])
    # over nextpnr's critical path delay: reached from an I/O pin through logic, left out when asked
    assert bench.failing_endpoints(report, 156.25, ceiling=7.0)[0] == 4
    # Yosys's unnamed signals keep their name, not an empty one
    assert bench._register_name("dut.book.$signal$227_TRELLIS_FF_Q_320") == "dut.book.$signal"
    assert bench._register_name("dut.inc_C_CCU2C_A0_S1$CCU2_COMB1") == "dut.inc_C"
    # every run asks nextpnr for the arrivals
    assert "--detailed-timing-report" in bench.PnrOptions().args()


def test_the_reset_can_come_registered_on_a_global_network():
    # --reset global: the pin through a two-flop synchroniser (no reset of its own) into a DCCA that drives
    # the sync domain's reset, so the reset's paths start at a register and use a global clock network
    from amaranth.back import rtlil
    bench = load("bench_synth")
    h, ports = bench.harness(_AddFive(), "global")
    assert [p.name for p in ports] == ["clk", "rst", "sin", "sout"]
    text = rtlil.convert(h, name="bench_addfive", ports=ports, emit_src=False)
    assert "cell \\DCCA" in text
    assert text.count("cell $dff ") >= 1 and "rst_meta" in text
    # the DUT's registers are reset by the DCCA's output, not by the pin
    dcca = text[text.index("cell \\DCCA"):].split("end\n", 1)[0]
    assert "connect \\CLKI" in dcca and "connect \\CLKO" in dcca
    with pytest.raises(ValueError, match="reset"):
        bench.harness(None, "async")


def test_results_count_the_deep_register_inputs(tmp_path, monkeypatch):
    # every synthesis also counts the block's register inputs per LUT level (netlist_depth.py), so a run's
    # JSON says how many paths are deep enough to miss the clock, whatever the seed
    from .test_netlist_depth import _ff, _lut
    bench = load("bench_synth")

    # a -> 6 LUTs -> b (6 levels), a -> 1 LUT -> c
    cells = {"a": _ff(2, 3), "b": _ff(9, 20), "l9": _lut([3], 21), "c": _ff(21, 22)}
    for k in range(6):
        cells[f"l{k}"] = _lut([3 + k], 4 + k)
    netlist = {"modules": {"bench_addfive.dut": {"cells": cells, "netnames": {}}, "bench_addfive": {"cells": {}}}}

    def fake_run(cmd, cwd, log, timeout):
        (cwd / "stat.txt").write_text("(cell counts: _module_stats is replaced below)\n")
        (cwd / "design.json").write_text(json.dumps(netlist))
        return 0.0
    monkeypatch.setattr(bench, "_run", fake_run)
    monkeypatch.setattr(bench, "_module_stats", lambda text, module, **kw: {"LUT4": 7})
    res = bench.build("addfive", _AddFive(), workdir=tmp_path, pnr=False)
    assert res.levels == {0: 1, 1: 1, 6: 1}
    assert res.deep_inputs == 1 and bench.DEEP_LEVELS == 6
    # a submodule kept with --keep is its own module in the netlist: its inputs are counted too
    netlist["modules"]["bench_addfive.dut.sub"] = {"cells": dict(cells), "netnames": {}}
    res = bench.build("addfive", _AddFive(), workdir=tmp_path, pnr=False, keep=("sub",))
    assert res.levels == {0: 2, 1: 2, 6: 2} and res.deep_inputs == 2


class _Elements(wiring.Component):
    """A register of array shape: Amaranth names a wire per element (``q[0]``, ``q[1]``), the kind of
    name Yosys 0.70's ABC9 cannot stitch back (bench_synth.HIDE_ELEMENT_NAMES)."""
    i: In(8)
    o: Out(8)

    def elaborate(self, platform):
        m = Module()
        q = Signal(data.ArrayLayout(4, 2))
        m.d.sync += [q.eq(self.i), self.o.eq(q.as_value() + 1)]
        return m


def test_abc9_maps_with_element_names_private(tmp_path):
    # the ABC9 script makes names ending in "[N]" private before mapping and keeps every other name
    bench = load("bench_synth")
    script = bench._yosys_script("bench_x", "bench_x.dut", "abc9").splitlines()
    hide = script.index(bench.HIDE_ELEMENT_NAMES)
    assert script[hide - 1].endswith("-run :map_luts") and script[hide + 1].endswith("-run map_luts:")
    assert bench.HIDE_ELEMENT_NAMES not in bench._yosys_script("bench_x", "bench_x.dut", "abc")
    res = bench.build("elements", _Elements(), workdir=tmp_path, pnr=False, mapper="abc9")
    assert not res.error and res.synth_options == "abc9"
    names = json.loads((tmp_path / "elements" / "design.json").read_text())["modules"]["bench_elements.dut"]["netnames"]
    assert "q" in names and not [n for n in names if n.endswith("]") and not n.startswith("$")]


def test_the_summary_names_the_critical_path_and_the_deep_inputs(tmp_path, monkeypatch, capsys):
    # after place and route both the critical path and the level count are printed (neither hides the other)
    bench = load("bench_synth")

    def fake_measure(name, **kw):
        return bench.Result(block=name, fmax_mhz=150.0, synth_seconds=1.0, pnr_seconds=2.0, critical=["a", "b"],
                            synth_options="abc9", deep_inputs=3)
    monkeypatch.setattr(bench, "measure", fake_measure)
    # the blocks are built in worker processes; threads here, so the replaced measure is the one called
    monkeypatch.setattr(bench.concurrent.futures, "ProcessPoolExecutor", bench.concurrent.futures.ThreadPoolExecutor)
    bench.main(["udp_rx", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "udp_rx: synth 1 s, P&R 2 s; critical path a -> b (abc9)" in err
    assert "udp_rx: 3 register inputs at 6 or more LUT levels" in err


def test_seeds_place_one_netlist_at_each_seed(tmp_path, monkeypatch, capsys):
    # --seeds: one synthesis, then a P&R per seed in <block>/seed<N> with that seed, each row and the
    # summary naming its seed
    bench = load("bench_synth")
    runs = []

    def fake_run(cmd, cwd, log, timeout):
        if cmd[0] == bench.YOSYS:
            runs.append(("synth", cwd))
            (cwd / "stat.txt").write_text("(cell counts: _module_stats is replaced below)\n")
        else:
            seed = int(cmd[cmd.index("--seed") + 1])
            runs.append((seed, cwd, cmd[cmd.index("--json") + 1]))
            (cwd / "report.json").write_text(json.dumps({"fmax": {"clk": {"achieved": 150.0 + seed}}}))
        return 0.0
    monkeypatch.setattr(bench, "_run", fake_run)
    monkeypatch.setattr(bench, "_module_stats", lambda text, module, **kw: {"LUT4": 3})
    monkeypatch.setattr(bench, "BLOCKS", {"addfive": lambda: (_AddFive(), "test block", 1)})
    monkeypatch.setattr(bench.concurrent.futures, "ProcessPoolExecutor", bench.concurrent.futures.ThreadPoolExecutor)
    out_json = tmp_path / "r.json"
    bench.main(["addfive", "--seeds", "4,1,5", "--workdir", str(tmp_path), "--json", str(out_json), "-j", "2"])
    assert [r[0] for r in runs].count("synth") == 1
    assert sorted((r[0], r[1].name, r[2]) for r in runs if r[0] != "synth") == \
        [(1, "seed1", "../design.json"), (4, "seed4", "../design.json"), (5, "seed5", "../design.json")]
    results = json.loads(out_json.read_text())
    assert [(r["seed"], r["fmax_mhz"]) for r in results] == [(4, 154.0), (1, 151.0), (5, 155.0)]
    assert all("--seed" in r["nextpnr_args"] for r in results)
    out = capsys.readouterr()
    assert "addfive (seed 4)" in out.out
    assert "addfive over seeds 4: 154.0, 1: 151.0, 5: 155.0 MHz" in out.err and "lowest 151.0, median 154.0" in out.err
    with pytest.raises(SystemExit):
        bench.main(["addfive", "--seeds", "1,1"])

    def broken():
        raise RuntimeError("not written yet")
    monkeypatch.setattr(bench, "BLOCKS", {"broken": broken})
    runs.clear()
    assert bench.main(["broken", "--seeds", "1,2", "--workdir", str(tmp_path), "--json", str(out_json)]) == 1
    assert runs == [] and [r["seed"] for r in json.loads(out_json.read_text())] == [None]   # one row, no P&R


class _CarryAndCompare(wiring.Component):
    """A 64-bit sum's carry XOR an 8-bit equality: ABC9 with synth_ecp5's LUT library routes the
    equality through a LUT4's fast input in a chain behind the carry."""
    a: In(64)
    b: In(64)
    o: Out(3)

    def elaborate(self, platform):
        m = Module()
        a, b, s = Signal(64), Signal(64), Signal(65)
        m.d.comb += s.eq(a + b)
        m.d.sync += [a.eq(self.a), b.eq(self.b),
                     self.o.eq(Cat(s[64] ^ (a[:8] == b[8:16]), a[:16].all(), (a[16:32] ^ b[16:32]).any()))]
        return m


def test_abc9_levels_maps_fewer_levels_than_synth_ecp5s_library(tmp_path):
    bench = load("bench_synth")
    script = bench._yosys_script("bench_x", "bench_x.dut", "abc9-levels").splitlines()
    lut_map = script.index(f"abc9 -W {bench.LEVELS_WIRE_PS} -lut {bench.LEVELS_LUT_FILE}")
    assert script[lut_map - 1] == bench.HIDE_ELEMENT_NAMES and script[lut_map + 2].endswith("-run map_cells:")
    # every width's inputs are equally slow
    for line in bench.LEVELS_LUT_LIBRARY.splitlines():
        width, _area, *delays = line.split()
        assert len(delays) == int(width) and len(set(delays)) == 1
    levels = {}
    for mapper in ("abc9", "abc9-levels"):
        res = bench.build("mix", _CarryAndCompare(), workdir=tmp_path / mapper, pnr=False, mapper=mapper)
        assert not res.error and res.synth_options == mapper
        assert (tmp_path / mapper / "mix" / bench.LEVELS_LUT_FILE).read_text() == bench.LEVELS_LUT_LIBRARY
        levels[mapper] = max(res.levels)
    assert levels == {"abc9": 4, "abc9-levels": 3}
