"""A small, deterministic, realistic ITCH 5.0 day for the reference model's own use.

Used as ``tickgate replay``'s default feed (no file needed), by the model's cross-checks and benchmark.
It is not a market simulator: per symbol a mid price random-walks in cent ticks, orders rest a few ticks
either side of it, and the order flow mixes adds (A/F), executions at the best level (E/C), partial
cancels (X), deletes (D) and replaces (U) with trade prints (P), around the usual session frame
(S O/S/Q ... M/E/C, R directory, H trading, Y Reg SHO). Every E/C/X/D/U refers to a live order and
never over-executes, so a clean feed produces no anomalies. Same arguments, same bytes.
"""

from __future__ import annotations

import random
from typing import Iterator

from ..wire.itch import LAYOUTS

__all__ = ["synth_feed", "DEFAULT_SEED", "DEFAULT_MESSAGES"]

DEFAULT_SEED = 20191230
DEFAULT_MESSAGES = 20_000

_SYMBOLS = ("AAPL", "MSFT", "AMZN", "TSLA", "NVDA", "QQQ", "SPY", "INTC", "CSCO", "ZNGA", "ZVZZT", "ZXZZT")
_OPEN_NS = 9 * 3600 * 10**9 + 30 * 60 * 10**9
_TICK = 100                     # one cent in ITCH price units


class _Live:
    """Live orders of one symbol: ref -> [buy, price, shares], plus a list for O(1) random choice."""
    __slots__ = ("orders", "refs", "pos", "mid")

    def __init__(self, mid: int):
        self.orders: dict[int, list] = {}
        self.refs: list[int] = []
        self.pos: dict[int, int] = {}
        self.mid = mid

    def add(self, ref: int, buy: bool, price: int, shares: int) -> None:
        self.orders[ref] = [buy, price, shares]
        self.pos[ref] = len(self.refs)
        self.refs.append(ref)

    def remove(self, ref: int) -> list:
        i = self.pos.pop(ref)
        last = self.refs.pop()
        if last != ref:
            self.refs[i] = last
            self.pos[last] = i
        return self.orders.pop(ref)

    def best(self, buy: bool) -> int | None:
        """A ref at the best price of one side (first found), or None."""
        best_ref, best_px = None, None
        for ref in self.refs[-64:]:            # recent orders: cheap and near the touch
            b, px, _ = self.orders[ref]
            if b == buy and (best_px is None or (px > best_px if buy else px < best_px)):
                best_ref, best_px = ref, px
        return best_ref


def synth_feed(messages: int = DEFAULT_MESSAGES, *, seed: int = DEFAULT_SEED, symbols: int = 8) -> Iterator[bytes]:
    """Exactly ``messages`` raw ITCH messages (at least the session frame, 4 + 3 * symbols + 3)."""
    if not 1 <= symbols <= len(_SYMBOLS):
        raise ValueError(f"symbols must be 1..{len(_SYMBOLS)}, not {symbols}")
    frame = 4 + 3 * symbols + 3
    if messages < frame:
        raise ValueError(f"need at least {frame} messages for the session frame, not {messages}")
    rng = random.Random(seed)
    p = {c: LAYOUTS[c].pack for c in "SRHYAFECXDUP"}
    ts = _OPEN_NS - 10**9
    track = 0

    def head(code: str, locate: int) -> tuple:
        nonlocal ts, track
        ts += rng.randrange(1, 20_000)
        track = (track + 1) & 0xFFFF
        return (code, locate, track, ts)

    out = 0
    for ev in "OSQ":
        yield p["S"]((*head("S", 0), ev))
        out += 1
    locs = list(range(1, symbols + 1))
    names = {loc: _SYMBOLS[loc - 1] for loc in locs}
    for loc in locs:
        yield p["R"]((*head("R", loc), names[loc], "Q", "N", 100, "N", "C", "Z", "P", "N", " ", "1", "N", 0, " "))
        yield p["H"]((*head("H", loc), names[loc], "T", " ", ""))
        yield p["Y"]((*head("Y", loc), names[loc], "0"))
        out += 3
    live = {loc: _Live(rng.randrange(20, 400) * 10_000) for loc in locs}
    ref = 1000
    match = 1
    body = messages - out - 4
    for _ in range(body):
        loc = rng.choice(locs)
        bk = live[loc]
        r = rng.random()
        n_live = len(bk.refs)
        if n_live < 8 or (r < 0.45 and n_live < 120):
            # add: a few ticks off the mid, the mid drifting
            if rng.random() < 0.05:     # the mid drifts; resting orders stay on their side of it
                bk.mid = max(_TICK * 10, bk.mid + rng.choice((-_TICK, _TICK)))
            buy = rng.random() < 0.5
            off = _TICK * int(rng.expovariate(0.6))
            price = bk.mid - _TICK - off if buy else bk.mid + _TICK + off
            shares = rng.choice((100, 100, 100, 200, 300, 500, 1000)) if rng.random() < 0.9 \
                else rng.randrange(1, 100)
            ref += rng.randrange(1, 8)
            bk.add(ref, buy, price, shares)
            side = "B" if buy else "S"
            if rng.random() < 0.1:
                yield p["F"]((*head("F", loc), ref, side, shares, names[loc], price, "NITE"))
            else:
                yield p["A"]((*head("A", loc), ref, side, shares, names[loc], price))
        elif r < 0.64:
            victim = rng.choice(bk.refs)
            bk.remove(victim)
            yield p["D"]((*head("D", loc), victim))
        elif r < 0.78:
            old = rng.choice(bk.refs)
            buy, price, shares = bk.remove(old)
            price += _TICK * rng.choice((-2, -1, 0, 0, 1, 2))
            price = min(price, bk.mid - _TICK) if buy else max(price, bk.mid + _TICK)
            shares = max(1, shares + rng.choice((-100, 0, 0, 100)))
            ref += rng.randrange(1, 8)
            bk.add(ref, buy, price, shares)
            yield p["U"]((*head("U", loc), old, ref, shares, price))
        elif r < 0.90:
            target = bk.best(rng.random() < 0.5) or rng.choice(bk.refs)
            o = bk.orders[target]
            n = o[2] if rng.random() < 0.5 else rng.randrange(1, o[2] + 1)
            o[2] -= n
            if not o[2]:
                bk.remove(target)
            match += 1
            if rng.random() < 0.1:
                yield p["C"]((*head("C", loc), target, n, match, "Y", o[1] + rng.choice((-_TICK, 0, _TICK))))
            else:
                yield p["E"]((*head("E", loc), target, n, match))
        elif r < 0.97:
            target = rng.choice(bk.refs)
            o = bk.orders[target]
            n = rng.randrange(1, o[2] + 1)
            o[2] -= n
            if not o[2]:
                bk.remove(target)
            yield p["X"]((*head("X", loc), target, n))
        else:
            match += 1
            yield p["P"]((*head("P", loc), 0, rng.choice("BS"), rng.choice((100, 200)), names[loc], bk.mid, match))
    for ev in "MEC":
        yield p["S"]((*head("S", 0), ev))
    # one more so the count is exact: a final trading-state message for the first symbol
    yield p["H"]((*head("H", locs[0]), names[locs[0]], "T", " ", ""))
