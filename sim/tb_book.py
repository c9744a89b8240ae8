"""cocotb tests of :class:`tickgate.fpga.order_book.MarketBook` (ports as Amaranth flattens them:
``i_stream__*``, ``o_stream__*``, ``lookup__*``, ``counters__*``, ``stale``, ``applied*``).

Stimulus is ITCH 5.0 messages; :func:`book_op` maps each to a BookOp the way the decoder does (A/F->ADD,
E/C->EXECUTE, X->CANCEL, D->DELETE, U->REPLACE, H/Y/S/R->state ops, the rest OTHER), so the suite does not
depend on the decoder. Every scenario is checked message by message against the reference book
(:class:`tickgate.model.book.OrderBook`): the exact TopOfBook rows (or, where the chip must flag, every
unflagged row equal to the model's BBO and every never-flagged symbol's rows identical), the exact latency
of every row while the output is not backpressured and of every ``applied`` strobe always; each runs with
and without idle input cycles and output backpressure.

The module serves two builds, chosen by ``$TICKGATE_BOOK_CONFIG``: ``main`` (:data:`CONFIGS`, the default
sizing: the real snippet, synthetic feeds, random flows, per-op scenarios, hazards) and ``small`` (tiny
tables so a full bucket, exhausted slots and depth overflow are easy to reach).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge

from tickgate.fpga.book_records import BookOp, TopOfBook
from tickgate.fpga.order_book import BOOK_DEFAULTS, COUNTERS, MarketBook
from tickgate.model.book import OrderBook
from tickgate.model.window import WindowedBook
from tickgate.sim.streams import StreamSink, StreamSource, pack_fields, unpack_fields
from tickgate.sim.tb import MODES, ClockedTB
from tickgate.sim.tb_itch_decode import expected_op
from tickgate.wire import itch

__all__ = ["CONFIGS", "book_op", "BookTB", "A", "E", "C", "X", "D", "U", "H", "Y", "S", "snippet_path",
           "wire_cycles"]

#: The configurations the suite is built with (tests/test_book_rtl.py builds each once).
CONFIGS = {
    "main": dict(BOOK_DEFAULTS),
    "small": dict(capacity=64, ways=4, symbols=4, depth=4, locates=64, lookup_depth=2),
}
CONFIG = os.environ.get("TICKGATE_BOOK_CONFIG", "main")
BOOK = MarketBook(**CONFIGS[CONFIG])      # for bucket_of, LATENCY and the sizes; not elaborated here
BOOK._MustUse__silence = True
MAIN, SMALL = CONFIG == "main", CONFIG == "small"
TICK = 100


def snippet_path() -> Path | None:
    env = os.environ.get("TICKGATE_DATA")
    base = Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    path = base / "itch" / "12302019_SNIPPET.NASDAQ_ITCH50"
    return path if path.is_file() else None


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


def S(code="O"):
    return itch.SystemEvent(stock_locate=0, tracking_number=0, timestamp=0, event_code=code).encode()


def wire_cycles(msgs: list[bytes]) -> list[int]:
    """The cycle at which each message's last byte arrives at line rate: MoldUDP64 message blocks (2-byte
    length + message) packed back to back with no gaps, 8 bytes a cycle from cycle 0 (stricter than a real
    feed, whose packet headers only add gaps). With the splitter and decoder's fixed latency, this is also
    the cycle spacing of their BookOps."""
    out, end = [], 0
    for raw in msgs:
        end += 2 + len(raw)
        out.append((end - 1) // 8)
    return out


def book_op(raw: bytes, seq: int) -> int:
    """The BookOp payload (int) the decoder makes of one ITCH message: the decoder suite's reference
    mapping, so the book is driven exactly as the real decoder drives it."""
    op, _ = expected_op(raw, seq)
    return pack_fields(BookOp, **op)


def _row(payload: int) -> tuple:
    r = unpack_fields(TopOfBook, payload)
    flags = unpack_fields(TopOfBook.as_shape()["flags"].shape, r["flags"])
    return (r["seq"], r["locate"], r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]), flags


def _flagged(flags: dict) -> bool:
    return bool(flags["degraded"] or flags["out_of_window"])


# --- testbench ----------------------------------------------------------------------------------------

class BookTB(ClockedTB):
    """A BookOp source (plain or timed items), a TopOfBook sink, the ``applied`` strobe log, lookup and
    counters."""

    IDLE_PROBABILITY = 0.4
    INPUTS = dict(stale=0, lookup__valid=0, lookup__locate=0)

    def __init__(self, dut):
        super().__init__(dut)
        self.source = StreamSource(dut, "i_stream", self.clk)
        self.sink = StreamSink(dut, "o_stream", self.clk)
        self.applied: list[tuple[int, int]] = []      # (cycle, seq), cycles counted like the source's

    def _sample(self):
        if self.dut.applied.value == 1:
            self.applied.append((self.cycle, self.dut.applied_seq.value.to_unsigned()))

    async def _after_reset(self):
        """Wait out the memory sweep (the input is not ready until it ends)."""
        await self.cycles(BOOK.clear_cycles - 5)
        for _ in range(20):
            await RisingEdge(self.clk)
            if self.dut.i_stream__ready.value == 1:
                break
        else:
            raise AssertionError("input never became ready after reset")

    def clear_log(self):
        self.source.accepted.clear()
        self.sink.clear()
        self.applied.clear()

    def counters(self) -> dict:
        return {name: getattr(self.dut, f"counters__{name}").value.to_unsigned() for name in COUNTERS}

    async def lookup(self, locate: int) -> dict:
        self.dut.lookup__locate.value = locate
        self.dut.lookup__valid.value = 1
        await RisingEdge(self.clk)
        self.dut.lookup__valid.value = 0
        layout = BOOK.state_layout
        for n in range(1, 10):
            await RisingEdge(self.clk)
            if self.dut.lookup__result_valid.value == 1:
                assert n == MarketBook.LOOKUP_LATENCY, f"lookup answered after {n} cycles"
                r = unpack_fields(layout, self.dut.lookup__result.value.to_unsigned())
                r["flags"] = unpack_fields(layout["flags"].shape, r["flags"])
                for side in ("bids", "asks"):
                    arr = layout[side].shape
                    r[side] = [((r[side] >> (64 * i)) & 0xFFFF_FFFF, r[side] >> (64 * i + 32) & 0xFFFF_FFFF)
                               for i in range(arr.length)]
                return r
        raise AssertionError("lookup never answered")

    async def run(self, msgs: list[bytes], *, skip_model=(), model_msgs=None, check_latency=True,
                  exact=True, at: list[int] | None = None, window=None) -> list[tuple]:
        """Send ``msgs`` (seq = index + 1), collect every row, compare with the reference book.

        ``exact``: the rows must equal the model's and carry no degraded/out_of_window flag. Otherwise every
        row without those flags must equal the model's BBO of its locate after its message, and the rows of
        every locate that never got a flagged row must equal the model's rows of that locate.
        ``skip_model``: indexes of messages the reference book must not see (what the hardware by design
        drops); ``model_msgs`` (same length): what the reference book sees instead of ``msgs``.
        ``window``: also hold every row of every symbol never flagged ``degraded`` to the depth-window model
        (:class:`tickgate.model.window.WindowedBook`): the same rows, ``out_of_window`` flags included
        (default: whenever ``exact`` is off and no message is skipped or replaced for the model).
        ``at``: the cycles (relative to a few cycles from now) at which the messages are offered, e.g.
        :func:`wire_cycles`; each must then be taken exactly then (the book never holds the input off).
        Returns ``[(row, flags)]`` and leaves the reference book in ``self.model``.
        """
        start = len(self.source.accepted)
        first_row = len(self.sink.items)
        first_applied = len(self.applied)
        if at is None:
            self.source.send(book_op(raw, i + 1) for i, raw in enumerate(msgs))
        else:
            base = self.source.cycle + 4
            self.source.send((book_op(raw, i + 1), base + c) for i, (raw, c) in enumerate(zip(msgs, at)))
        if not await self.wait_for(lambda: len(self.source.accepted) - start == len(msgs), 40 * len(msgs) + 1000):
            raise AssertionError(f"only {len(self.source.accepted) - start} of {len(msgs)} ops taken")
        quiet = 0
        seen = len(self.sink.items)
        while quiet < 3 * MarketBook.LATENCY + 40:
            await RisingEdge(self.clk)
            quiet = 0 if len(self.sink.items) != seen else quiet + 1
            seen = len(self.sink.items)
        items = self.sink.items[first_row:]
        got = [_row(p) for _, _, p in items]
        accepted = self.source.accepted[start:]
        if at is not None:
            late = [(i + 1, a - base - c) for i, (a, c) in enumerate(zip(accepted, at)) if a != base + c]
            assert not late, f"{len(late)} messages held off (seq, cycles late): {late[:5]}"

        # the model, message by message
        model = self.model = OrderBook()
        skip = set(skip_model)
        by_seq: dict[int, list] = {}
        for row, flags in got:
            by_seq.setdefault(row[0], []).append((row, flags))
        expected = []
        for i, raw in enumerate(model_msgs or msgs):
            if i not in skip and model.apply(raw):
                loc = model.changed_locate
                expected.append((i + 1, loc, *model.bbo(loc)))
            for row, flags in by_seq.get(i + 1, ()):
                if not exact and not _flagged(flags):
                    want = (i + 1, row[1], *model.bbo(row[1]))
                    assert row == want, f"unflagged row {row} but the model has {want}"
        rows = [r for r, _ in got]
        if exact:
            for n, (g, e) in enumerate(zip(rows, expected)):
                assert g == e, f"row {n}: got {g}, expected {e} (message {msgs[e[0] - 1][:1]!r})"
            assert len(rows) == len(expected), f"{len(rows)} rows, expected {len(expected)}"
            bad = [(r, f) for r, f in got if _flagged(f)]
            assert not bad, f"flagged rows in an exact run: {bad[:3]}"
        else:
            flagged = {r[1] for r, f in got if _flagged(f)}
            mine = [r for r in rows if r[1] not in flagged]
            theirs = [r for r in expected if r[1] not in flagged]
            assert mine == theirs, next(((a, b) for a, b in zip(mine, theirs) if a != b), (len(mine), len(theirs)))
            self.flagged_locates = flagged
        if window is None:
            window = not exact and not skip_model and model_msgs is None
        if window:
            wb = WindowedBook(BOOK.depth)
            want = [r for r in map(wb.apply, msgs) if r is not None]
            degraded = {r[1] for r, f in got if f["degraded"]}
            mine = [(*r, f["out_of_window"]) for r, f in got if r[1] not in degraded]
            theirs = [tuple(r) for r in want if r[1] not in degraded]
            diff = next(((n, a, b) for n, (a, b) in enumerate(zip(mine, theirs)) if a != b), None)
            assert diff is None and len(mine) == len(theirs), \
                f"rows against the window model: first difference {diff}, {len(mine)} rows vs {len(theirs)}"
            self.dut._log.info("window model: %d rows equal (%d flagged out_of_window), %d symbols degraded",
                               len(mine), sum(r[-1] for r in mine), len(degraded))
        self.dut._log.info("%d messages, %d rows (%d expected), %d cycles", len(msgs), len(rows),
                           len(expected), accepted[-1] - accepted[0] + 1 if accepted else 0)
        if check_latency and not self.backpressure:
            for (row, _), (_, taken, _) in zip(got, items):
                lat = taken - accepted[row[0] - 1]
                assert lat == MarketBook.LATENCY, f"seq {row[0]}: latency {lat}, expected {MarketBook.LATENCY}"
        applied = self.applied[first_applied:]
        assert [s for _, s in applied] == list(range(1, len(msgs) + 1)), "applied strobes out of order"
        for (cycle, seq) in applied:
            assert cycle - accepted[seq - 1] == MarketBook.LATENCY, \
                f"seq {seq}: applied {cycle - accepted[seq - 1]} cycles after its handshake"
        return got


def _px(ticks):
    return ticks * TICK


def _model_counters(st) -> dict:
    u = st.unknown_refs
    return dict(unknown_execute=u.get("E", 0) + u.get("C", 0), unknown_cancel=u.get("X", 0),
                unknown_delete=u.get("D", 0), unknown_replace=u.get("U", 0), duplicate_adds=st.duplicate_adds,
                invalid_adds=st.invalid_adds, overfills=st.overfills)


# --- scenarios on the default sizing --------------------------------------------------------------------

@cocotb.test(skip=not MAIN)
@cocotb.parametrize(**MODES)
async def test_each_op(dut, idle, backpressure):
    """Hand-built: every op kind on two symbols, both sides, with the rows written out."""
    tb = await BookTB.start(dut, idle, backpressure)
    P = 10_000
    msgs = [
        A(1, 100, "B", 300, P),            # 1: bid 300 @ P
        A(1, 101, "S", 200, P + 500),      # 2: ask 200 @ P+5t
        A(1, 102, "B", 100, P - 100),      # 3: lower bid, no change
        A(1, 103, "B", 50, P),             # 4: bid size 350
        E(1, 100, 100),                    # 5: 250
        X(1, 103, 50),                     # 6: cancel all of 103: 200
        C(1, 100, 500),                    # 7: overfill, order 100 gone: bid falls to P-1t 100
        D(1, 102),                         # 8: bids empty
        U(1, 101, 104, 70, P + 3),         # 9: ask moves to P+3 (sub-penny) 70
        A(2, 200, "S", 10, 20_000),        # 10: other symbol
        H(1, "H"), Y(1, "1"),              # 11, 12: state, no rows
        E(1, 999, 5), D(1, 998), X(1, 997, 1), U(1, 996, 995, 1, P),   # 13..16 unknown refs
        A(1, 104, "B", 5, P),              # 17: duplicate ref (an ask is live as 104): ignored
        A(1, 105, "B", 0, P),              # 18: invalid (0 shares)
        A(20_000, 300, "B", 10, P),        # 19: locate out of range (>= locates)
        E(1, 104, 0),                      # 20: execute 0: no change
        A(1, 106, "B", 7, 0),              # 21: invalid (price 0)
        U(1, 104, 104, 9, P + 4),          # 22: replace onto its own reference: allowed
        U(2, 200, 104, 1, 19_000),         # 23: new ref live: original still removed, nothing added
        U(20_000, 104, 107, 3, P),         # 24: replace at a locate out of range: ignored, 107 not added
        D(1, 107),                         # 25: so 107 is unknown
        E(1, 104, 1),                      # 26: and 104 still live: ask 8
    ]
    got = await tb.run(msgs, skip_model={18, 23})       # the model has no locate range
    want = [
        (1, 1, P, 300, 0, 0), (2, 1, P, 300, P + 500, 200), (4, 1, P, 350, P + 500, 200),
        (5, 1, P, 250, P + 500, 200), (6, 1, P, 200, P + 500, 200), (7, 1, P - 100, 100, P + 500, 200),
        (8, 1, 0, 0, P + 500, 200), (9, 1, 0, 0, P + 3, 70), (10, 2, 0, 0, 20_000, 10),
        (22, 1, 0, 0, P + 4, 9), (23, 2, 0, 0, 0, 0), (26, 1, 0, 0, P + 4, 8),
    ]
    assert [r for r, _ in got] == want, [r for r, _ in got]
    c = tb.counters()
    assert c == dict(unknown_execute=1, unknown_cancel=1, unknown_delete=2, unknown_replace=1,
                     duplicate_adds=2, invalid_adds=2, overfills=1, table_full=0, out_of_window=0,
                     out_of_range=2, no_slot=0, locate_mismatch=0), c
    r = await tb.lookup(1)
    assert (r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]) == (0, 0, P + 4, 8)
    assert (chr(r["trading_state"]), chr(r["reg_sho"]), r["out_of_range"]) == ("H", "1", 0)
    assert r["asks"][:2] == [(P + 4, 8), (0, 0)], r["asks"]
    assert (await tb.lookup(20_000))["out_of_range"] == 1
    assert (await tb.lookup(3))["out_of_range"] == 1          # no slot: nothing known


def random_feed(rng: random.Random, n: int, symbols=range(1, 8), spread=5):
    """A random ITCH order flow of at most ``2 * spread + 1`` prices per symbol (so at most that many
    levels a side), sub-penny prices included. Many ops hit the same order and level back to back."""
    anchor = {s: rng.randrange(40, 2000) for s in symbols}
    live: dict[int, list] = {}           # ref -> [loc, side, shares]
    next_ref = rng.randrange(1, 1 << 40) << 20
    msgs = []
    recent: list[int] = []

    def price(loc):
        return _px(anchor[loc] + rng.randint(-spread, spread)) + rng.choice([0, 0, 0, 37])

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


@cocotb.test(skip=not MAIN)
@cocotb.parametrize(**MODES)
async def test_random(dut, idle, backpressure):
    """Seeded random flows (adds, partial/full/over executions, cancels, deletes, replaces, unknown refs,
    duplicates, state messages) over 7 symbols, compared row by row with the reference book."""
    seed = int(os.environ.get("BOOK_SEED", "7"))
    tb = await BookTB.start(dut, idle, backpressure, seed)
    for k in range(2):
        if k:
            await tb.reset()
        msgs = random_feed(random.Random(seed * 100 + k + 10 * idle + 20 * backpressure), 1500)
        await tb.run(msgs)
        c = tb.counters()
        assert c["table_full"] == 0, c       # up to 22 prices a side: some go to overflow, rows stay exact
        want = _model_counters(tb.model.stats)
        assert {k: c[k] for k in want} == want, (c, want)
        for loc in range(1, 8):
            r = await tb.lookup(loc)
            assert (r["bid_px"], r["bid_sz"], r["ask_px"], r["ask_sz"]) == tuple(tb.model.bbo(loc)), loc
            bids, asks = tb.model.top(loc, BOOK.lookup_depth)
            pad = [(0, 0)] * BOOK.lookup_depth
            assert r["bids"] == (bids + pad)[:BOOK.lookup_depth] and r["asks"] == (asks + pad)[:BOOK.lookup_depth]


@cocotb.test(skip=not MAIN)
@cocotb.parametrize(**MODES)
async def test_same_level_hazards(dut, idle, backpressure):
    """Back-to-back ops on one level and one order: adds, executions, a delete, re-adds, replaces in place,
    inserts and removals that shift the same side on consecutive cycles."""
    tb = await BookTB.start(dut, idle, backpressure)
    P = _px(500)
    msgs = [A(3, 1, "S", 100, P)]
    for i in range(2, 12):
        msgs.append(A(3, i, "S", i, P))
    for i in range(2, 12):
        msgs += [E(3, i, 1), X(3, i, 1)]
    msgs += [E(3, 1, 100), A(3, 1000, "S", 5, P), D(3, 1000), A(3, 1001, "S", 6, P + TICK)]
    msgs += [U(3, 1001, 1002, 7, P + TICK), U(3, 1002, 1003, 8, P + TICK), E(3, 1003, 8),
             A(3, 1004, "B", 9, P - TICK), E(3, 1004, 1), E(3, 1004, 1), D(3, 1004)]
    msgs += [A(3, 2000 + i, "B", 1 + i, P - TICK * (i % 5) - 1) for i in range(10)]
    msgs += [D(3, 2000 + i) for i in (4, 9, 3, 8, 0, 5)]
    msgs += [U(3, 2001, 2100, 3, P - 1), U(3, 2100, 2101, 4, P - 2), D(3, 2101), D(3, 2002)]
    await tb.run(msgs)


@cocotb.test(skip=not MAIN)
@cocotb.parametrize(**MODES)
async def test_replace_chain(dut, idle, backpressure):
    """One order replaced 60 times (each U names the ref the previous one added), interleaved with adds at
    the same levels."""
    tb = await BookTB.start(dut, idle, backpressure)
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


@cocotb.test(skip=not MAIN or snippet_path() is None)
@cocotb.parametrize(**MODES)
async def test_real_snippet(dut, idle, backpressure):
    """The recorded NASDAQ snippet, every message: identical rows with the default sizing."""
    from tickgate.feed.source import iter_messages
    tb = await BookTB.start(dut, idle, backpressure)
    msgs = list(iter_messages(snippet_path()))
    got = await tb.run(msgs)
    c = tb.counters()
    dut._log.info("real snippet: %d messages, %d rows compared, identical; %d levels/orders went to depth "
                  "overflow (never the BBO)", len(msgs), len(got), c["out_of_window"])
    want = _model_counters(tb.model.stats)
    assert {k: c[k] for k in want} == want, (c, want)
    assert c["no_slot"] == c["table_full"] == c["locate_mismatch"] == c["out_of_range"] == 0, c


SYNTH = [("normal", {}), ("far", {}), ("chain", {}), ("unknown", {}), ("deep", {}),
         ("collide", dict(collide_hash="xorfold", collide_bits=BOOK.buckets.bit_length() - 1))]


@cocotb.test(skip=not MAIN)
@cocotb.parametrize(**MODES)
async def test_synth(dut, idle, backpressure):
    """tickgate.feed.synth in every stress mode. normal/far/chain/unknown must be exact; deep may overflow
    the tracked depth and collide fills buckets: there every unflagged row must be the model's and every
    symbol that was never flagged must have exactly the model's rows."""
    from tickgate.feed.synth import synth_bytes
    tb = await BookTB.start(dut, idle, backpressure)
    for n, (mode, opts) in enumerate(SYNTH):
        if n:
            await tb.reset()
        msgs = list(synth_bytes(2500 if mode != "deep" else 6000, 6, seed=11 + n + 7 * idle, mode=mode,
                                **opts))
        exact = mode not in ("deep", "collide")
        got = await tb.run(msgs, exact=exact)
        c = tb.counters()
        dut._log.info("synth %s: %d rows, counters %s, flagged locates %s", mode, len(got),
                      {k: v for k, v in c.items() if v}, sorted(getattr(tb, "flagged_locates", ())))
        if mode == "collide":
            assert c["table_full"] > 0 and tb.flagged_locates, c
        if exact:
            want = _model_counters(tb.model.stats)
            assert {k: c[k] for k in want} == want, (c, want)


@cocotb.test(skip=not MAIN)
async def test_stale_and_rate(dut):
    """``stale`` reaches the rows' flags. Rate: book ops (A/E/C/X/D/U) are taken one every 2 cycles (a
    REPLACE's add half uses the order table in the cycle after it); other messages (H, Y, S, ...) one per
    cycle, also between book ops."""
    tb = await BookTB.start(dut, False, False)
    dut.stale.value = 1
    msgs = [A(1, 10 + i, "B", 1, _px(100 + i % 10)) for i in range(40)]
    got = await tb.run(msgs)
    assert all(f["stale"] for _, f in got)
    acc = tb.source.accepted[-len(msgs):]
    assert [b - a for a, b in zip(acc, acc[1:])] == [2] * (len(msgs) - 1), "book ops not one every 2 cycles"
    assert (await tb.lookup(1))["flags"]["stale"] == 1
    dut.stale.value = 0
    await tb.reset()
    msgs = []
    for i in range(20):
        msgs += [A(2, 100 + i, "S", 5, _px(200 + i % 7)), H(2, "T"), U(2, 100 + i, 300 + i, 6, _px(201)), S(),
                 Y(2, "1"), D(2, 300 + i), S("Q")]
    await tb.run(msgs)
    acc = tb.source.accepted[-len(msgs):]
    assert acc[-1] - acc[0] == len(msgs) - 1, "book ops interleaved with other messages: not one per cycle"


async def _line_rate(tb, msgs, **kw):
    at = wire_cycles(msgs)
    book = [c for raw, c in zip(msgs, at) if raw[:1] in b"AFECXDU"]
    assert min(b - a for a, b in zip(book, book[1:])) >= 2         # what the rate rule relies on
    got = await tb.run(msgs, at=at, **kw)
    return got, at


@cocotb.test(skip=not MAIN)
async def test_line_rate(dut):
    """A feed at line rate (MoldUDP64 blocks back to back, 8 bytes a cycle, BookOps spaced as the wire
    allows) is never held off: the shortest book message is 21 bytes with its length (D), so two book
    messages end at least 2 cycles apart; shorter non-book messages (S: 14 bytes) may follow in the next
    cycle, also right after a REPLACE. Worst-case runs of D/X/E/U/S, then the real snippet if present;
    rows exact, latency exact."""
    tb = await BookTB.start(dut, False, False)
    rng = random.Random(21)
    msgs = [A(9, 1000 + i, rng.choice("BS"), rng.randint(1, 900), _px(300 + rng.randint(-6, 6)))
            for i in range(60)]
    live = list(range(1000, 1060))
    nxt = 5000
    for _ in range(400):
        r = rng.random()
        ref = rng.choice(live)
        if r < 0.3:
            msgs.append(D(9, ref))
            live.remove(ref)
        elif r < 0.5:
            msgs.append(rng.choice([X, E, C])(9, ref, rng.randint(1, 300)))
        elif r < 0.75:
            msgs += [U(9, ref, nxt, rng.randint(1, 900), _px(300 + rng.randint(-6, 6))), S()]
            live.remove(ref)
            live.append(nxt)
            nxt += 1
        else:
            msgs.append(A(9, nxt, rng.choice("BS"), rng.randint(1, 900), _px(300 + rng.randint(-6, 6))))
            live.append(nxt)
            nxt += 1
        if len(live) < 10:
            for _ in range(10):
                msgs.append(A(9, nxt, rng.choice("BS"), rng.randint(1, 900), _px(300 + rng.randint(-6, 6))))
                live.append(nxt)
                nxt += 1
    got, at = await _line_rate(tb, msgs)
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert 1 in gaps and 2 in gaps, "the stimulus should reach the tightest spacings"
    dut._log.info("line rate: %d messages in %d cycles, %d rows, never held off", len(msgs), at[-1] + 1, len(got))
    path = snippet_path()
    if path is not None:
        from tickgate.feed.source import iter_messages
        await tb.reset()
        msgs = list(iter_messages(path))
        got, at = await _line_rate(tb, msgs)
        dut._log.info("real snippet at line rate: %d messages in %d cycles, %d rows, never held off",
                      len(msgs), at[-1] + 1, len(got))


@cocotb.test(skip=not MAIN)
async def test_locate_mismatch(dut):
    """An execute naming an order of another locate (ITCH forbids it) is ignored, counted, and every later
    row is flagged degraded."""
    tb = await BookTB.start(dut, False, False)
    msgs = [A(1, 10, "B", 100, 5000), A(2, 11, "S", 100, 6000), E(2, 10, 50), A(1, 12, "B", 1, 5001)]
    got = await tb.run(msgs, skip_model={2}, exact=False)
    assert [(r[0], f["degraded"]) for r, f in got] == [(1, 0), (2, 0), (4, 1)]
    assert tb.counters()["locate_mismatch"] == 1


# --- edge cases on the small build ----------------------------------------------------------------------

@cocotb.test(skip=not SMALL)
@cocotb.parametrize(**MODES)
async def test_collisions_and_full(dut, idle, backpressure):
    """Five refs in one bucket: four fit, the fifth is dropped, counted, and flags its symbol degraded;
    operations on it count as unknown; the others keep working, including through freed ways."""
    tb = await BookTB.start(dut, idle, backpressure)
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
    got = await tb.run(msgs, skip_model={4, 5}, exact=False)
    c = tb.counters()
    assert c["table_full"] == 1 and c["unknown_execute"] == 1, c
    flags = {row[0]: f["degraded"] for row, f in got}
    assert flags == {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 8: 1, 9: 1, 10: 0}, flags
    assert (await tb.lookup(5))["flags"]["degraded"] == 1


@cocotb.test(skip=not SMALL)
@cocotb.parametrize(**MODES)
async def test_slots_exhausted(dut, idle, backpressure):
    """Four slots: the fifth locate's first add gets one flagged all-zero row, its later ops only count;
    locates beyond the table are counted out of range; the others stay exact."""
    tb = await BookTB.start(dut, idle, backpressure)
    msgs = [A(10 + i, 100 + i, "B", 10, _px(50 + i)) for i in range(4)]      # slots 0..3
    msgs += [H(14, "T"), A(14, 200, "S", 5, _px(60)), A(14, 201, "S", 5, _px(61)), E(14, 200, 1),
             A(10, 300, "B", 20, _px(50)), A(63, 400, "B", 1, 1), A(64, 500, "B", 1, 1), E(64, 500, 1)]
    skip = {5, 6, 7, 9, 10, 11}    # the model keeps no book for them here
    got = await tb.run(msgs, skip_model=skip, exact=False)
    rows = [(r, f["degraded"]) for r, f in got]
    assert rows == [((1, 10, _px(50), 10, 0, 0), 0), ((2, 11, _px(51), 10, 0, 0), 0),
                    ((3, 12, _px(52), 10, 0, 0), 0), ((4, 13, _px(53), 10, 0, 0), 0),
                    ((6, 14, 0, 0, 0, 0), 1), ((9, 10, _px(50), 30, 0, 0), 0),
                    ((10, 63, 0, 0, 0, 0), 1)], rows
    c = tb.counters()
    assert (c["no_slot"], c["out_of_range"], c["unknown_execute"]) == (3, 2, 1), c
    r = await tb.lookup(14)
    assert (r["out_of_range"], r["no_slot"], chr(r["trading_state"])) == (1, 1, "T"), r


@cocotb.test(skip=not SMALL)
@cocotb.parametrize(**MODES)
async def test_depth_overflow(dut, idle, backpressure):
    """K = 4 tracked levels a side: the fifth level goes to overflow, a better add pushes the worst out,
    the BBO stays exact while a tracked level is left, the side is flagged when only overflow is left,
    and exact again once a tracked level returns or the overflow drains."""
    tb = await BookTB.start(dut, idle, backpressure)
    L = 1
    msgs = [A(L, 10 + i, "B", 10 + i, _px(100 - i)) for i in range(5)]    # 5 bids: 100..96; 96 overflows
    msgs += [A(L, 20, "B", 1, _px(101)),          # 5: best; pushes 97 out
             A(L, 21, "B", 1, _px(98) + 50),      # 6: between tracked levels: tracked, pushes 98 out
             A(L, 22, "B", 2, _px(97)),           # 7: at/below the bound: overflow
             D(L, 20), D(L, 10), D(L, 11),        # 8-10: bids 98.50 only... then
             D(L, 21),                            # 11: tracked side empty, overflow left: flagged
             A(L, 23, "B", 5, _px(90)),           # 12: worse than the bound: overflow, still flagged
             A(L, 24, "B", 5, _px(99)),           # 13: better than the bound: tracked again, exact
             D(L, 24), D(L, 12), D(L, 13), D(L, 14), D(L, 22), D(L, 23),   # 14-19: overflow drains
             A(L, 25, "B", 3, _px(80))]           # 20: exact again
    got = await tb.run(msgs, exact=False)
    flags = [(r[0], f["out_of_window"]) for r, f in got]
    assert [s for s, f in flags if f] and all(f for s, f in flags if 12 <= s <= 13), flags
    assert flags[-1] == (21, 0), flags
    assert tb.counters()["out_of_window"] >= 3
    r = await tb.lookup(L)
    assert r["bids"] == [(_px(80), 3), (0, 0)] and r["bid_overflow"] == 0, r
    # a random deep flow: more prices than tracked levels
    await tb.reset()
    msgs = random_feed(random.Random(99 + idle + 2 * backpressure), 1500, symbols=range(1, 4), spread=6)
    got = await tb.run(msgs, exact=False)
    assert tb.flagged_locates, "expected some depth overflow"
    assert sum(1 for _, f in got if not _flagged(f)) > len(got) // 5     # K = 4 against 13 prices a side


@cocotb.test(skip=not SMALL)
@cocotb.parametrize(**MODES)
async def test_overflow_replace_smaller(dut, idle, backpressure):
    """A REPLACE of an out-of-window order by a smaller one, also out of the window: the side's overflow
    goes down by the difference (it must not wrap), and drains to zero when the new order goes."""
    tb = await BookTB.start(dut, idle, backpressure)
    L = 1
    msgs = [A(L, 10 + i, "B", 10, _px(100 - i)) for i in range(4)]    # 4 tracked bids: 100..97
    msgs += [A(L, 30, "B", 100, _px(90)),         # 4: overflow 100
             U(L, 30, 31, 50, _px(91)),           # 5: overflow 100 - 100 + 50
             D(L, 31),                            # 6: overflow 0
             D(L, 10), D(L, 11), D(L, 12), D(L, 13)]       # 7-10: side empty, nothing out of the window
    got = await tb.run(msgs, exact=False)
    assert not got[-1][1]["out_of_window"], got[-1]
    r = await tb.lookup(L)
    assert r["bid_overflow"] == 0 and r["bids"] == [(0, 0), (0, 0)], r


@cocotb.test(skip=not MAIN)
@cocotb.parametrize(**MODES)
async def test_window_random(dut, idle, backpressure):
    """Random deep flows (up to 41 prices a side against K tracked levels): every row, the out_of_window
    flag included, equal to the depth-window model's, and every unflagged row to the full book's."""
    tb = await BookTB.start(dut, idle, backpressure)
    rng = random.Random(5 + idle + 2 * backpressure)
    msgs = random_feed(rng, 3000, symbols=range(1, 3), spread=20)
    full = OrderBook()
    for raw in msgs:
        full.apply(raw)
    live = [D(o.locate, ref) for ref, o in full.orders()]      # then drain: every overflow must reach 0
    rng.shuffle(live)
    msgs += live
    got = await tb.run(msgs, exact=False, window=True)
    assert tb.counters()["out_of_window"] > 100
    assert any(f["out_of_window"] for _, f in got), "expected rows flagged out_of_window while draining"
    # the final state beyond the BBO: each side's top lookup_depth levels and whether it has overflow
    wb = WindowedBook(BOOK.depth)
    for raw in msgs:
        wb.apply(raw)
    ld = BOOK.lookup_depth
    for loc in (1, 2):
        r = await tb.lookup(loc)
        for name, buy in (("bids", True), ("asks", False)):
            w = wb.side(loc, buy)
            want = [tuple(lv) for lv in w.levels[:ld]] + [(0, 0)] * (ld - len(w.levels[:ld]))
            assert r[name] == want, (loc, name, r[name], want)
            assert r[f"{name[:-1]}_overflow"] == int(w.ovf != 0), (loc, name, r, w.ovf)
