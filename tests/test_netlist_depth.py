"""benchmarks/netlist_depth.py ranks register inputs by estimated arrival: a hand-made netlist."""

import json

from .benchmark_scripts import load

netlist_depth = load("netlist_depth")


def _cell(type_, conns, dirs):
    return {"type": type_, "connections": conns, "port_directions": dirs}


def _ff(d, q):
    return _cell("TRELLIS_FF", {"CLK": [1], "DI": [d], "Q": [q]}, {"CLK": "input", "DI": "input", "Q": "output"})


def _lut(ins, z):
    conns = {p: [b] for p, b in zip("ABCD", ins)} | {"Z": [z]}
    return _cell("LUT4", conns, {p: "input" for p in "ABCD"} | {"Z": "output"})


def test_longest_path_first():
    # a -> lut -> lut -> b ; a -> lut -> c ; CCU2C chain of 3 -> d
    cells = {
        "a": _ff(2, 3), "l1": _lut([3], 4), "l2": _lut([4, 3], 5), "b": _ff(5, 6),
        "l3": _lut([3], 7), "c": _ff(7, 8),
    }
    carry = 3
    for k in range(3):
        cells[f"cc{k}"] = _cell("CCU2C", {"A0": [3], "CIN": [carry] if k else [3], "COUT": [20 + k], "S0": [30 + k]},
                                {"A0": "input", "CIN": "input", "COUT": "output", "S0": "output"})
        carry = 20 + k
    cells["d"] = _ff(32, 9)
    netnames = {n: {"bits": [b], "hide_name": 0} for n, b in (("a", 3), ("b", 6), ("c", 8), ("d", 9))}
    ends = netlist_depth.estimate({"modules": {"top": {"cells": cells, "netnames": netnames}}})
    by = {e[1]: e for e in ends}
    assert by["b"][0] > by["c"][0] > 0
    assert by["b"][3] == ["a", "l1", "l2"] and by["c"][3] == ["a", "l3"]
    assert by["b"][4] == "b[0]"
    # a carry chain costs little per cell, but more than nothing
    assert by["d"][0] > by["a"][0]
    assert ends[0][1] == "b"


def test_count_over(tmp_path, capsys):
    cells = {"a": _ff(2, 3), "l1": _lut([3], 4), "l2": _lut([4], 5), "b": _ff(5, 6), "l3": _lut([3], 7), "c": _ff(7, 8)}
    netnames = {n: {"bits": [b], "hide_name": 0} for n, b in (("a", 3), ("b", 6), ("c", 8))}
    netlist = {"modules": {"top": {"cells": cells, "netnames": netnames}}}
    ends = netlist_depth.estimate(netlist)
    b, c = sorted(e[0] for e in ends if e[1] in "bc")[::-1]
    assert netlist_depth.count_over(ends, c - 0.01) == 2
    assert netlist_depth.count_over(ends, c) == 1          # strictly later
    assert netlist_depth.count_over(ends, b) == 0
    f = tmp_path / "n.json"
    f.write_text(json.dumps(netlist))
    assert netlist_depth.main([str(f), "1", "--over", f"{c - 0.01},{b}"]) == 0
    assert f"2 over {c - 0.01:.2f} ns, 0 over {b:.2f} ns" in capsys.readouterr().out


def test_lut_levels(tmp_path, capsys):
    # a -> l1 -> l2 -> b (2 levels); a -> l3 -> c (1); a -> 3-cell carry chain -> l4 -> d (chain 1 + LUT 1)
    cells = {"a": _ff(2, 3), "l1": _lut([3], 4), "l2": _lut([4, 3], 5), "b": _ff(5, 6), "l3": _lut([3], 7),
             "c": _ff(7, 8)}
    carry = 3
    for k in range(3):
        cells[f"cc{k}"] = _cell("CCU2C", {"A0": [3], "CIN": [carry] if k else [3], "COUT": [20 + k], "S0": [30 + k]},
                                {"A0": "input", "CIN": "input", "COUT": "output", "S0": "output"})
        carry = 20 + k
    cells["l4"] = _lut([32], 40)
    cells["d"] = _ff(40, 9)
    netnames = {n: {"bits": [b], "hide_name": 0} for n, b in (("a", 3), ("b", 6), ("c", 8), ("d", 9))}
    netlist = {"modules": {"top": {"cells": cells, "netnames": netnames}}}
    ends = netlist_depth.estimate(netlist)
    levels = dict(zip((e[1] for e in ends), netlist_depth.lut_levels(netlist, ends)))
    assert levels == {"a": 0, "b": 2, "c": 1, "d": 2}
    hist, ranked = netlist_depth.level_report(netlist, ends, 2)
    assert hist == {0: 1, 1: 1, 2: 2}
    assert ranked == [(1, 2, "b.DI"), (1, 2, "d.DI")]
    f = tmp_path / "n.json"
    f.write_text(json.dumps(netlist))
    assert netlist_depth.main([str(f), "5", "--levels", "2"]) == 0
    out = capsys.readouterr().out
    assert "0: 1, 1: 1, 2: 2" in out and "2 inputs at 2 levels or more, in 2 registers" in out
