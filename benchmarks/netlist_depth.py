"""Rough static timing of a mapped ECP5 netlist, before place and route: per flip-flop / block-RAM input,
the worst estimated arrival and the cells on the way.

    python benchmarks/bench_synth.py market_book --no-pnr --workdir build/synth/x     # ~1 min
    python benchmarks/netlist_depth.py build/synth/x/market_book/design.json 30 [-v] [--over 4.5,5.0,5.5]
    python benchmarks/netlist_depth.py build/synth/x/market_data/design.json 40 --levels 6

A unit-delay model (LUT4 0.14 ns + an average routed hop of 0.55 ns, PFUMX/L6MUX 0.15 ns next to their LUTs,
carry chains 0.05 ns a cell, flip-flop clock-to-out 0.3 ns, block-RAM clock-to-out 2.9 ns, 2 ps per sink of
a net, at most 1.5 ns) on the Yosys JSON netlist that bench_synth.py writes. No placement, so it ranks
paths rather than predicting Fmax: the order book's routed critical paths were 8.72 ns (model 7.73) and
7.96 ns (model 6.64). It takes seconds where place and route takes 20 to 50 minutes, so it is the quick
check of a restructuring; bench_synth.py is the measurement. Endpoints are listed once per register
(the first bit), worst first; ``-v`` prints each path's cells.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


NET = 0.55          # average routed hop (ns)
FANOUT = 0.002      # extra per sink of the driving net, at most FANOUT_MAX
FANOUT_MAX = 1.5
CELL = {"LUT4": 0.14, "PFUMX": 0.15, "L6MUX21": 0.15}
SOURCES = {"TRELLIS_FF": 0.3, "DP16KD": 2.9, "TRELLIS_DPR16X4": 1.0}     # clock-to-out
CLOCKS = {"CLK", "CLKA", "CLKB", "WCK"}


def estimate(netlist: dict, top: str | None = None) -> list[tuple[float, str, str, list[str], str]]:
    """Every sequential input of module ``top`` (default: the one with the most cells) of a Yosys JSON
    netlist: ``(arrival ns, cell, port, cells on the worst path, register name)``, worst first."""
    mods = netlist["modules"]
    mod = mods[top] if top else max(mods.values(), key=lambda m: len(m["cells"]))
    cells = mod["cells"]
    bitname = {}
    for n, v in mod["netnames"].items():
        if v.get("hide_name", 0):
            continue
        for i, b in enumerate(v["bits"]):
            if isinstance(b, int) and (b not in bitname or len(n) < len(bitname[b][0])):
                bitname[b] = (n, i)

    def qname(cn):
        c = cells[cn]
        for p in ("Q", "DOA0", "DOB0"):
            b = c["connections"].get(p, [None])[0]
            if b in bitname:
                return f"{bitname[b][0]}[{bitname[b][1]}]"
        return cn

    drivers, sinks = {}, defaultdict(int)
    for cn, c in cells.items():
        for p, bits in c["connections"].items():
            for b in bits:
                if isinstance(b, int):
                    if c["port_directions"].get(p) == "output":
                        drivers[b] = (cn, p)
                    else:
                        sinks[b] += 1
    memo = {}

    def inputs(c):
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) == "input":
                for b in bits:
                    if isinstance(b, int):
                        yield p, b

    def arrival(bit):
        # iterative depth-first evaluation (carry chains are long)
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in memo:
                stack.pop()
                continue
            if b not in drivers:
                memo[b] = (0.0, [])
                stack.pop()
                continue
            cn, port = drivers[b]
            c = cells[cn]
            t = c["type"]
            fo = min(FANOUT_MAX, sinks[b] * FANOUT)
            if t in SOURCES:
                memo[b] = (SOURCES[t] + NET + fo, [cn])
                stack.pop()
                continue
            todo = [x for _, x in inputs(c) if x not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            if t == "CCU2C":
                cands = [(memo[x][0] + (0.05 - NET if p == "CIN" else 0.4), memo[x][1]) for p, x in inputs(c)]
                hop = 0.0 if port == "COUT" else NET
                extra = 0.0
            else:
                cands = [memo[x] for _, x in inputs(c)]
                hop = NET if t == "LUT4" else 0.05     # muxes sit next to their LUTs
                extra = CELL.get(t, 0.3)
            a, path = max(cands, key=lambda x: x[0]) if cands else (0.0, [])
            memo[b] = (a + extra + hop + fo, path + [cn])
        return memo[bit]

    ends = []
    for cn, c in cells.items():
        if c["type"] in SOURCES:
            for p, b in inputs(c):
                if p not in CLOCKS:
                    a, path = arrival(b)
                    ends.append((a, cn, p, path, qname(cn)))
    ends.sort(key=lambda x: -x[0])
    return ends


def count_over(ends, ns: float) -> int:
    """How many of :func:`estimate`'s register inputs arrive later than ``ns``: how broad the problem is, where
    the worst path says only how deep."""
    return sum(1 for e in ends if e[0] > ns)


def lut_levels(netlist: dict, ends, top: str | None = None) -> list[int]:
    """LUT levels on each of :func:`estimate`'s worst paths: its LUT4s, plus one per carry chain it enters
    (PFUMX/L6MUX sit in the LUTs' slice and add none). On this part a routed hop costs 0.8-1.2 ns, so the
    level count is what decides: in three routed runs of the pipeline (seeds 1, 3, 4; 07 Dec 2026) 1-6%
    of the inputs with 6 levels and 4-33% of those with 7 missed 156.25 MHz, and of the 16,442 with 0-5
    levels 4 did (all in one run, at 2 levels)."""
    mods = netlist["modules"]
    cells = (mods[top] if top else max(mods.values(), key=lambda m: len(m["cells"])))["cells"]
    out = []
    for e in ends:
        types = [cells[cn]["type"] for cn in e[3]]
        out.append(sum(t == "LUT4" or (t == "CCU2C" and (i == 0 or types[i - 1] != "CCU2C"))
                       for i, t in enumerate(types)))
    return out


def level_report(netlist: dict, ends, at_least: int, top: str | None = None) -> tuple[dict, list[tuple]]:
    """The register inputs per LUT level count (``{levels: inputs}``), and the registers with inputs at
    ``at_least`` levels or more: ``(inputs, most levels, register.pin)``, most inputs first."""
    levels = lut_levels(netlist, ends, top)
    hist: dict = {}
    groups: dict = {}
    for e, n in zip(ends, levels):
        hist[n] = hist.get(n, 0) + 1
        if n >= at_least:
            key = f"{e[4].split('[')[0]}.{e[2].rstrip('0123456789')}"
            count, most = groups.get(key, (0, 0))
            groups[key] = (count + 1, max(most, n))
    ranked = sorted(((c, m, k) for k, (c, m) in groups.items()), key=lambda x: (-x[0], -x[1], x[2]))
    return dict(sorted(hist.items())), ranked


def _thresholds(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated ns figures, not {text!r}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netlist", help="Yosys JSON (design.json of a bench_synth.py work directory)")
    ap.add_argument("n", nargs="?", type=int, default=25, help="registers to list")
    ap.add_argument("-v", action="store_true", help="print each path's cells")
    ap.add_argument("--top", help="module (default: the largest)")
    ap.add_argument("--over", metavar="NS[,NS...]", type=_thresholds,
                    help="also count the register inputs (every bit) whose estimate exceeds each threshold")
    ap.add_argument("--levels", metavar="N", type=int,
                    help="print the register inputs per LUT level count, and the registers with N levels or more")
    args = ap.parse_args(argv)
    with open(args.netlist) as f:
        netlist = json.load(f)
    ends = estimate(netlist, args.top)
    if args.levels is not None:
        hist, ranked = level_report(netlist, ends, args.levels, args.top)
        print("register inputs per LUT levels: " + ", ".join(f"{k}: {v}" for k, v in hist.items()))
        print(f"{sum(c for c, _, _ in ranked)} inputs at {args.levels} levels or more, in {len(ranked)} registers:")
        for count, most, key in ranked[:args.n]:
            print(f"  {count:5d} x {key} (up to {most})")
        return 0
    if args.over:
        print(f"{len(ends)} register inputs; " +
              ", ".join(f"{count_over(ends, t)} over {t:.2f} ns" for t in args.over))
    seen = set()
    for a, cn, p, path, name in ends:
        key = name.split("[")[0]
        if key in seen:
            continue
        seen.add(key)
        src = path[0] if path else "-"
        print(f"{a:5.2f} ns  {len(path) - 1:2d} cells  {src[:50]}  ->  {name[:50]}.{p}")
        if args.v:
            for x in path:
                print("        ", x[:110])
        if len(seen) >= args.n:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
