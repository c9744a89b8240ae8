"""The depth-window reference model (tickgate.model.window) on hand-worked sequences."""

import pytest

from tickgate.model.window import Window, WindowedBook
from tickgate.sim.tb_book import A, D, U, X


def test_push_bound_and_drain():
    w = Window(buy=True, depth=2)
    w.add(1000, 10)
    w.add(990, 5)
    w.add(980, 7)                     # window full, worse than the 2nd: overflow, bound moves to it
    assert (w.levels, w.ovf, w.bound) == ([[1000, 10], [990, 5]], 7, 980)
    w.add(1010, 1)                    # better: tracked, pushes 990 out (bound 990)
    assert (w.levels, w.ovf, w.bound) == ([[1010, 1], [1000, 10]], 12, 990)
    w.add(990, 3)                     # at the bound: not strictly better, overflow
    assert (w.levels, w.ovf, w.bound) == ([[1010, 1], [1000, 10]], 15, 990)
    w.delete(1010, 1)
    w.delete(1000, 10)                # no tracked level left, overflow: unknown
    assert w.unknown and w.shown == (0, 0)
    w.add(995, 2)                     # better than the bound: tracked again
    assert w.levels == [[995, 2]] and not w.unknown
    w.delete(980, 15)                 # untracked: off the overflow; drained, bound reset
    assert (w.ovf, w.bound) == (0, 0)


def test_asks_are_min_best():
    w = Window(buy=False, depth=1)
    w.add(200, 1)
    w.add(199, 2)                    # better ask: pushes 200 out
    assert (w.levels, w.ovf, w.bound) == ([[199, 2]], 1, 200)
    w.add(201, 4)                    # worse than the bound: overflow, bound stays
    assert (w.ovf, w.bound) == (5, 200)


def test_rows_and_replace_within_overflow():
    b = WindowedBook(depth=1)
    assert b.apply(A(1, 10, "B", 10, 1000)) == (1, 1, 1000, 10, 0, 0, 0)
    assert b.apply(A(1, 11, "B", 100, 900)) is None          # to overflow: the chip shows nothing new
    assert b.apply(U(1, 11, 12, 40, 800)) is None            # replace inside the overflow: 100 -> 40
    assert b.side(1, True).ovf == 40
    assert b.apply(D(1, 10)) == (4, 1, 0, 0, 0, 0, 1)        # tracked side empty, overflow left: unknown
    assert b.apply(X(1, 12, 40)) == (5, 1, 0, 0, 0, 0, 0)    # drained: known (empty) again
    assert b.apply(D(1, 99)) is None                         # unknown ref: no level op


def test_bad_depth():
    with pytest.raises(TypeError, match="depth"):
        WindowedBook(0)
