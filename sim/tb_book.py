"""cocotb tests of :class:`tickgate.fpga.order_book.MarketBook` (ports as Amaranth flattens them:
``i_stream__*``, ``o_stream__*``, ``lookup__*``, ``counters__*``, ``stale``).

Stimulus is ITCH 5.0 messages; :func:`book_op` maps each to a BookOp the way the decoder does (A/F->ADD,
E/C->EXECUTE, X->CANCEL, D->DELETE, U->REPLACE, H/Y/S/R->state ops, the rest OTHER), so the suite does not
depend on the decoder. Every scenario is checked message by message against the reference book
(:class:`tickgate.model.book.OrderBook`): the exact TopOfBook rows, and the exact latency while the output
is not backpressured; each runs with and without idle input cycles and output backpressure.
The test configuration (:data:`TEST_CONFIG`) is small so collisions, a full bucket and the window edges
are easy to reach.
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from tickgate.fpga.book_records import BookOp, BookOpKind, TopOfBook
from tickgate.fpga.order_book import COUNTERS, BookState, MarketBook
from tickgate.model.book import OrderBook
from tickgate.sim.tb import idle_pattern, random_pattern
from tickgate.sim.tb_itch_split import StreamSink, StreamSource, pack_fields, unpack_fields
from tickgate.wire import itch

__all__ = ["TEST_CONFIG", "book_op", "BookTB", "A", "E", "C", "X", "D", "U", "H", "Y"]

#: The configuration the suite is built with (tests/test_book_rtl.py builds the same).
TEST_CONFIG = dict(capacity=1024, ways=4, symbols=8, window=32, tick=100)
BOOK = MarketBook(**TEST_CONFIG)      # for bucket_of, LATENCY and the sizes; not elaborated here
BOOK._MustUse__silence = True
TICK = TEST_CONFIG["tick"]
W = TEST_CONFIG["window"]


# --- ITCH messages and the decoder's mapping -----------------------------------------------------------

def _hdr(loc):
    return dict(stock_locate=loc, tracking_number=0, timestamp=0)


def A(loc, ref, side, shares, price):
    return itch.AddOrder(**_hdr(loc), order_reference_number=ref, buy_sell_indicator=side, shares=shares,
                         stock="TEST    ", price=price).encode()


def E(loc, ref, n):
    return itch.OrderExecuted(**_hdr(loc), order_reference_number=ref, executed_shares=n,
                              match_number=1).encode()


def C(loc, ref, n):
    return itch.OrderExecutedWithPrice(**_hdr(loc), order_reference_number=ref, executed_shares=n,
                                       match_number=1, printable="Y", execution_price=1).encode()


def X(loc, ref, n):
    return itch.OrderCancel(**_hdr(loc), order_reference_number=ref, canceled_shares=n).encode()


def D(loc, ref):
    return itch.OrderDelete(**_hdr(loc), order_reference_number=ref).encode()


def U(loc, old, new, shares, price):
    return itch.OrderReplace(**_hdr(loc), original_order_reference_number=old,
                             new_order_reference_number=new, shares=shares, price=price).encode()


def H(loc, state):
    return itch.StockTradingAction(**_hdr(loc), stock="TEST    ", trading_state=state, reserved=" ",
                                   reason="    ").encode()


def Y(loc, action):
    return itch.RegShoRestriction(**_hdr(loc), stock="TEST    ", reg_sho_action=action).encode()


def book_op(raw: bytes, seq: int) -> int:
    """The BookOp payload (int) the decoder makes of one ITCH message."""
    msg = itch.decode(raw)
    t = msg.TYPE
    f = dict(seq=seq, locate=msg.stock_locate)
    if t in "AF":
        f.update(kind=BookOpKind.ADD.value, ref=msg.order_reference_number,
                 buy=int(msg.buy_sell_indicator == "B"), shares=msg.shares, price=msg.price)
    elif t in "EC":
        f.update(kind=BookOpKind.EXECUTE.value, ref=msg.order_reference_number, shares=msg.executed_shares)
    elif t == "X":
        f.update(kind=BookOpKind.CANCEL.value, ref=msg.order_reference_number, shares=msg.canceled_shares)
    elif t == "D":
        f.update(kind=BookOpKind.DELETE.value, ref=msg.order_reference_number)
    elif t == "U":
        f.update(kind=BookOpKind.REPLACE.value, ref=msg.original_order_reference_number,
                 new_ref=msg.new_order_reference_number, shares=msg.shares, price=msg.price)
    elif t == "H":
        f.update(kind=BookOpKind.TRADING_STATE.value, code=ord(msg.trading_state))
    elif t == "Y":
        f.update(kind=BookOpKind.REG_SHO.value, code=ord(msg.reg_sho_action))
    elif t == "S":
        f.update(kind=BookOpKind.SYSTEM_EVENT.value, code=ord(msg.event_code))
    elif t == "R":
        f.update(kind=BookOpKind.DIRECTORY.value)
    else:
        f.update(kind=BookOpKind.OTHER.value)
    return pack_fields(BookOp, **f)


def _row(payload: int) -> tuple:
    r = unpack_fields(TopOfBook, payload)
    flags = unpack_fields(TopOfBook.as_shape()["flags"].shape, r["flags"])
    return (r["seq"], r["locate"], r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]), flags


# --- testbench ----------------------------------------------------------------------------------------

class BookTB:
    """Clock, reset, a BookOp source, a TopOfBook sink, the lookup port and the counters."""

    def __init__(self, dut):
        self.dut = dut
        self.clk = dut.clk
        cocotb.start_soon(Clock(self.clk, 4, unit="ns").start())
        self.source = StreamSource(dut, "i_stream", self.clk)
        self.sink = StreamSink(dut, "o_stream", self.clk)
        dut.stale.value = 0
        dut.lookup__valid.value = 0
        dut.lookup__locate.value = 0

    def configure(self, idle: bool, backpressure: bool, seed: int = 1):
        self.idle, self.backpressure = idle, backpressure
        self.source.set_pause_generator(random_pattern(seed, 0.4) if idle else None)
        self.sink.set_pause_generator(idle_pattern() if backpressure else None)

    async def reset(self):
        """Reset, then wait out the memory sweep (the input is not ready until it ends)."""
        self.dut.rst.value = 1
        await ClockCycles(self.clk, 3)
        self.dut.rst.value = 0
        for _ in range(BOOK.clear_cycles + 10):
            await RisingEdge(self.clk)
            if self.dut.i_stream__ready.value == 1:
                break
        else:
            raise AssertionError("input never became ready after reset")
        self.source.accepted.clear()
        self.sink.clear()

    def counters(self) -> dict:
        return {name: getattr(self.dut, f"counters__{name}").value.to_unsigned() for name in COUNTERS}

    async def lookup(self, locate: int) -> dict:
        self.dut.lookup__locate.value = locate
        self.dut.lookup__valid.value = 1
        await RisingEdge(self.clk)
        self.dut.lookup__valid.value = 0
        for n in range(1, 10):
            await RisingEdge(self.clk)
            if self.dut.lookup__result_valid.value == 1:
                assert n == MarketBook.LOOKUP_LATENCY, f"lookup answered after {n} cycles"
                r = unpack_fields(BookState, self.dut.lookup__result.value.to_unsigned())
                r["flags"] = unpack_fields(BookState.as_shape()["flags"].shape, r["flags"])
                return r
        raise AssertionError("lookup never answered")

    async def run(self, msgs: list[bytes], *, skip_model=(), model_msgs=None, check_latency=True) -> list[tuple]:
        """Send ``msgs`` (seq = index + 1), collect every row, compare with the reference book.

        ``skip_model``: indexes of messages the reference book must not see (what the hardware by design
        drops: an add into a full bucket, an order outside the window, and operations on them).
        ``model_msgs`` (same length): what the reference book sees instead of ``msgs``.
        Returns ``[(row, flags)]`` and leaves the reference book in ``self.model``.
        """
        start = len(self.source.accepted)
        first_row = len(self.sink.items)
        self.source.send(book_op(raw, i + 1) for i, raw in enumerate(msgs))
        model = self.model = OrderBook()
        expected = []
        skip = set(skip_model)
        for i, raw in enumerate(model_msgs or msgs):
            if i not in skip and model.apply(raw):
                loc = model.changed_locate
                expected.append((i + 1, loc, *model.bbo(loc)))
        for _ in range(40 * len(msgs) + 1000):
            if len(self.source.accepted) - start == len(msgs):
                break
            await RisingEdge(self.clk)
        else:
            raise AssertionError(f"only {len(self.source.accepted) - start} of {len(msgs)} ops taken")
        quiet = 0
        seen = len(self.sink.items)
        while quiet < 3 * MarketBook.LATENCY + 40:
            await RisingEdge(self.clk)
            quiet = 0 if len(self.sink.items) != seen else quiet + 1
            seen = len(self.sink.items)
        items = self.sink.items[first_row:]
        got = [_row(p) for _, _, p in items]
        rows = [r for r, _ in got]
        for n, (g, e) in enumerate(zip(rows, expected)):
            assert g == e, f"row {n}: got {g}, expected {e} (message {msgs[e[0] - 1][:1]!r})"
        assert len(rows) == len(expected), f"{len(rows)} rows, expected {len(expected)}"
        self.dut._log.info("%d messages, %d rows, %d cycles", len(msgs), len(rows),
                           self.source.accepted[-1] - self.source.accepted[start] + 1)
        if check_latency and not self.backpressure:
            accepted = self.source.accepted[start:]
            for (row, _), (_, taken, _) in zip(got, items):
                lat = MarketBook.LATENCY + (msgs[row[0] - 1][:1] == b"U")
                assert taken - accepted[row[0] - 1] == lat, \
                    f"seq {row[0]}: latency {taken - accepted[row[0] - 1]}, expected {lat}"
        return got


MODES = dict(idle=[False, True], backpressure=[False, True])


async def _tb(dut, idle, backpressure, seed=1):
    tb = BookTB(dut)
    tb.configure(idle, backpressure, seed)
    await tb.reset()
    return tb


def _px(ticks):
    return ticks * TICK


# --- scenarios ----------------------------------------------------------------------------------------

@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_each_op(dut, idle, backpressure):
    """Hand-built: every op kind on two symbols, both sides, with the rows written out."""
    tb = await _tb(dut, idle, backpressure)
    P = 10_000          # $1.00 = 100 ticks; window of symbol 1 is ticks 84..115
    msgs = [
        A(1, 100, "B", 300, P),            # 1: bid 300 @ P
        A(1, 101, "S", 200, P + 500),      # 2: ask 200 @ P+5t
        A(1, 102, "B", 100, P - 100),      # 3: lower bid, no change
        A(1, 103, "B", 50, P),             # 4: bid size 350
        E(1, 100, 100),                    # 5: 250
        X(1, 103, 50),                     # 6: cancel all of 103: 200
        C(1, 100, 500),                    # 7: overfill, order 100 gone: bid falls to P-1t 100
        D(1, 102),                         # 8: bids empty
        U(1, 101, 104, 70, P + 300),       # 9: ask moves to P+3t 70
        A(2, 200, "S", 10, 20_000),        # 10: other symbol
        H(1, "H"), Y(1, "1"),              # 11, 12: state, no rows
        E(1, 999, 5), D(1, 998), X(1, 997, 1), U(1, 996, 995, 1, P),   # 13..16 unknown refs
        A(1, 104, "B", 5, P),              # 17: duplicate ref (an ask is live as 104): ignored
        A(1, 105, "B", 0, P),              # 18: invalid (0 shares)
        A(9, 300, "B", 10, P),             # 19: locate out of range
        E(1, 104, 0),                      # 20: execute 0: no change
    ]
    got = await tb.run(msgs, skip_model={18})
    want = [
        (1, 1, P, 300, 0, 0), (2, 1, P, 300, P + 500, 200), (4, 1, P, 350, P + 500, 200),
        (5, 1, P, 250, P + 500, 200), (6, 1, P, 200, P + 500, 200), (7, 1, P - 100, 100, P + 500, 200),
        (8, 1, 0, 0, P + 500, 200), (9, 1, 0, 0, P + 300, 70), (10, 2, 0, 0, 20_000, 10),
    ]
    assert [r for r, _ in got] == want
    c = tb.counters()
    assert c == dict(unknown_execute=1, unknown_cancel=1, unknown_delete=1, unknown_replace=1,
                     duplicate_adds=1, invalid_adds=1, overfills=1, table_full=0, out_of_window=0,
                     out_of_range=1), c
    r = await tb.lookup(1)
    assert (r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]) == (0, 0, P + 300, 70)
    assert (chr(r["trading_state"]), chr(r["reg_sho"]), r["out_of_range"]) == ("H", "1", 0)
    assert (await tb.lookup(9))["out_of_range"] == 1


def random_feed(rng: random.Random, n: int, symbols=range(1, 8), spread=6):
    """A random ITCH order flow that stays inside every symbol's window (the first add of each symbol is at
    its anchor) and never fills a bucket (refs are consecutive). Many ops hit the same order and level
    back to back."""
    anchor = {s: rng.randrange(40, 2000) for s in symbols}
    live: dict[int, list] = {}           # ref -> [loc, side, shares]
    next_ref = rng.randrange(1, 1 << 40) << 20
    msgs = []
    recent: list[int] = []

    def price(loc):
        return _px(anchor[loc] + rng.randint(-spread, spread))

    for loc in symbols:                  # fix the windows
        next_ref += 1
        side, shares = rng.choice("BS"), rng.randint(1, 9) * 100
        msgs.append(A(loc, next_ref, side, shares, _px(anchor[loc])))
        live[next_ref] = [loc, side, shares]
    while len(msgs) < n:
        r = rng.random()
        pick = None
        if live:
            pick = rng.choice(recent[-3:]) if recent and rng.random() < 0.5 and recent[-1] in live else \
                rng.choice(list(live))
            if pick not in live:
                pick = rng.choice(list(live))
        if r < 0.35 or not live or len(live) < 8:
            loc = rng.choice(list(symbols))
            next_ref += rng.randint(1, 3)
            side = rng.choice("BS")
            shares = rng.choice([1, 10, 100, 200, 500, rng.randint(1, 5000)])
            msgs.append(A(loc, next_ref, side, shares, price(loc)))
            live[next_ref] = [loc, side, shares]
            recent.append(next_ref)
        elif r < 0.55:
            loc, side, rem = live[pick]
            k = rng.choice([1, rem // 2, rem, rem + 7]) if rem > 1 else rng.choice([1, 3])
            msgs.append(rng.choice([E, C, X])(loc, pick, k))
            if k >= rem:
                del live[pick]
            else:
                live[pick][2] = rem - k
            recent.append(pick)
        elif r < 0.7:
            loc = live[pick][0]
            msgs.append(D(loc, pick))
            del live[pick]
        elif r < 0.9:
            loc, side, _ = live.pop(pick)
            next_ref += 1
            shares = rng.randint(1, 900)
            msgs.append(U(loc, pick, next_ref, shares, price(loc)))
            live[next_ref] = [loc, side, shares]
            recent.append(next_ref)
        elif r < 0.94:
            loc = rng.choice(list(symbols))
            msgs.append(rng.choice([E(loc, 77, 1), D(loc, 78), U(loc, 79, 80, 1, _px(anchor[loc]))]))
        elif r < 0.97:
            loc = rng.choice(list(symbols))
            msgs.append(H(loc, rng.choice("HPQT")) if rng.random() < 0.5 else Y(loc, rng.choice("012")))
        else:
            msgs.append(A(live[pick][0], pick, "B", 100, price(live[pick][0])))     # duplicate add
    return msgs


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_random(dut, idle, backpressure):
    """Seeded random flows (adds, partial/full/over executions, cancels, deletes, replaces, unknown refs,
    duplicates, state messages) over 7 symbols, compared row by row with the reference book."""
    seed = int(os.environ.get("BOOK_SEED", "7"))
    tb = await _tb(dut, idle, backpressure, seed)
    for k in range(2):
        await tb.reset()
        msgs = random_feed(random.Random(seed * 100 + k + 10 * idle + 20 * backpressure), 1200)
        await tb.run(msgs)
        c = tb.counters()
        assert c["table_full"] == 0 and c["out_of_window"] == 0, c
        st = tb.model.stats
        assert c["duplicate_adds"] == st.duplicate_adds and c["overfills"] == st.overfills, (c, st)
        for kind, name in (("E", "unknown_execute"), ("X", "unknown_cancel"), ("D", "unknown_delete"),
                           ("U", "unknown_replace")):
            want = st.unknown_refs.get(kind, 0) + (st.unknown_refs.get("C", 0) if kind == "E" else 0)
            assert c[name] == want, (name, c, st.unknown_refs)
        for loc in range(1, 8):
            r = await tb.lookup(loc)
            assert (r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]) == tuple(tb.model.bbo(loc)), loc


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_same_level_hazards(dut, idle, backpressure):
    """Back-to-back ops on one level and one order: adds, executions, a delete, re-adds, replaces in place."""
    tb = await _tb(dut, idle, backpressure)
    P = _px(500)
    msgs = [A(3, 1, "S", 100, P)]
    for i in range(2, 12):
        msgs.append(A(3, i, "S", i, P))
    for i in range(2, 12):
        msgs += [E(3, i, 1), X(3, i, 1)]
    msgs += [E(3, 1, 100), A(3, 1000, "S", 5, P), D(3, 1000), A(3, 1001, "S", 6, P + TICK)]
    msgs += [U(3, 1001, 1002, 7, P + TICK), U(3, 1002, 1003, 8, P + TICK), E(3, 1003, 8),
             A(3, 1004, "B", 9, P - TICK), E(3, 1004, 1), E(3, 1004, 1), D(3, 1004)]
    await tb.run(msgs)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_replace_chain(dut, idle, backpressure):
    """One order replaced 60 times (each U names the ref the previous one added), prices walking inside
    the window, interleaved with adds at the same levels."""
    tb = await _tb(dut, idle, backpressure)
    rng = random.Random(3)
    base = 700
    msgs = [A(4, 10, "B", 100, _px(base)), A(4, 11, "S", 100, _px(base + 5))]
    ref = 10
    for i in range(60):
        new = 1000 + i
        msgs.append(U(4, ref, new, rng.randint(1, 300), _px(base + rng.randint(-8, 4))))
        ref = new
        if i % 7 == 0:
            msgs.append(A(4, 5000 + i, "B", 1, _px(base + rng.randint(-3, 3))))
    msgs.append(D(4, ref))
    await tb.run(msgs)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_collisions_and_full(dut, idle, backpressure):
    """Five refs in one bucket: four fit, the fifth is dropped, counted, and flags its symbol degraded;
    operations on it count as unknown; the others keep working, including through freed ways."""
    tb = await _tb(dut, idle, backpressure)
    rng = random.Random(5)
    target = BOOK.bucket_of(0xDEAD_BEEF)
    refs = []
    while len(refs) < 6:
        r = rng.randrange(1, 1 << 63)
        if BOOK.bucket_of(r) == target:
            refs.append(r)
    P = _px(300)
    msgs = [A(5, refs[i], "B", 10 * (i + 1), P + TICK * i) for i in range(5)]  # #4 dropped
    msgs += [E(5, refs[4], 1), D(5, refs[2]), A(5, refs[5], "S", 7, P + 10 * TICK), E(5, refs[3], 40),
             A(6, 42, "S", 1, P)]
    got = await tb.run(msgs, skip_model={4, 5})
    c = tb.counters()
    assert c["table_full"] == 1 and c["unknown_execute"] == 1, c
    flags = {row[0]: f for row, f in got}
    assert [(s, f["degraded"]) for s, f in flags.items()] == \
        [(1, 0), (2, 0), (3, 0), (4, 0), (8, 1), (9, 1), (10, 0)], flags
    assert (await tb.lookup(5))["flags"]["degraded"] == 1


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_out_of_window(dut, idle, backpressure):
    """Orders outside the window (or off the tick grid) are kept, counted and flagged, not priced: the
    flag is on while one is live and clears when it leaves."""
    tb = await _tb(dut, idle, backpressure)
    t0 = 400                              # window: ticks 384..415
    msgs = [
        A(2, 1, "B", 100, _px(t0)),       # 0: sets the window
        A(2, 2, "S", 50, _px(t0 + 16)),   # 1: above the window: oow, flag on
        A(2, 3, "S", 60, _px(t0 + 15)),   # 2: top of the window: ask 60 (flagged)
        A(2, 4, "B", 10, _px(t0) + 1),    # 3: off the grid: oow
        A(2, 5, "B", 10, _px(t0 - 16)),   # 4: bottom of the window
        A(2, 6, "B", 10, _px(t0 - 17)),   # 5: below the window: oow
        E(2, 2, 10), D(2, 4), U(2, 6, 7, 5, _px(t0 - 1)),    # 6, 7, 8: ops on oow orders; 8 comes in
        D(2, 2),                          # 9: last oow order leaves: flag off (no row: BBO unchanged)
        E(2, 1, 1),                       # 10: row, flag off
    ]
    skip = {1, 3, 5, 6, 7, 9}
    # the model sees the replace of 6 (unknown to it) as a plain add of 7
    msgs_model = list(msgs)
    msgs_model[8] = A(2, 7, "B", 5, _px(t0 - 1))
    got = await tb.run(msgs, skip_model=skip, model_msgs=msgs_model)
    c = tb.counters()
    assert c["out_of_window"] == 3, c
    flags = {row[0]: f["out_of_window"] for row, f in got}
    assert flags == {1: 0, 3: 1, 11: 0}, flags


@cocotb.test()
async def test_stale_and_rate(dut):
    """``stale`` reaches the rows' flags; back-to-back adds are taken one per cycle."""
    tb = await _tb(dut, False, False)
    dut.stale.value = 1
    msgs = [A(1, 10 + i, "B", 1, _px(100 + i % 10)) for i in range(40)]
    got = await tb.run(msgs)
    assert all(f["stale"] for _, f in got)
    acc = tb.source.accepted
    assert acc[-1] - acc[0] == len(acc) - 1, "not one op per cycle"
    assert (await tb.lookup(1))["flags"]["stale"] == 1
    dut.stale.value = 0
