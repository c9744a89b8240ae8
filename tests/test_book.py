"""The reference order book: ITCH 5.0 semantics per message type, robustness counters, and properties
(share conservation, BBO == brute force, packing into MoldUDP64 packets does not matter)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickgate.model.book import Bbo, OrderBook, Order, fields_struct
from tickgate.model.replay import ModelReplay
from tickgate.wire import itch
from tickgate.wire.itch import LAYOUTS, ItchFormatError

# ---------------------------------------------------------------- message builders

_TS = [34_200 * 10**9]


def _h(loc: int) -> dict:
    _TS[0] += 1000
    return dict(stock_locate=loc, tracking_number=0, timestamp=_TS[0])


def A(ref, side, shares, price, loc=1, stock="AAPL"):
    return itch.AddOrder(**_h(loc), order_reference_number=ref, buy_sell_indicator=side, shares=shares,
                         stock=stock.ljust(8), price=price)


def F(ref, side, shares, price, loc=1, stock="AAPL"):
    return itch.AddOrderMpid(**_h(loc), order_reference_number=ref, buy_sell_indicator=side, shares=shares,
                             stock=stock.ljust(8), price=price, attribution="NITE")


def E(ref, n, loc=1):
    return itch.OrderExecuted(**_h(loc), order_reference_number=ref, executed_shares=n, match_number=7)


def C(ref, n, px, loc=1):
    return itch.OrderExecutedWithPrice(**_h(loc), order_reference_number=ref, executed_shares=n, match_number=8,
                                       printable="Y", execution_price=px)


def X(ref, n, loc=1):
    return itch.OrderCancel(**_h(loc), order_reference_number=ref, canceled_shares=n)


def D(ref, loc=1):
    return itch.OrderDelete(**_h(loc), order_reference_number=ref)


def U(old, new, shares, price, loc=1):
    return itch.OrderReplace(**_h(loc), original_order_reference_number=old, new_order_reference_number=new,
                             shares=shares, price=price)


def R(loc, stock):
    return itch.StockDirectory(**_h(loc), stock=stock.ljust(8), market_category="Q", financial_status_indicator="N",
                               round_lot_size=100, round_lots_only="N", issue_classification="C",
                               issue_sub_type="Z ", authenticity="P", short_sale_threshold_indicator="N",
                               ipo_flag=" ", luld_reference_price_tier="1", etp_flag="N", etp_leverage_factor=0,
                               inverse_indicator=" ")


def H(loc, stock, state, reason=""):
    return itch.StockTradingAction(**_h(loc), stock=stock.ljust(8), trading_state=state, reserved=" ",
                                   reason=reason.ljust(4))


def Y(loc, stock, action):
    return itch.RegShoRestriction(**_h(loc), stock=stock.ljust(8), reg_sho_action=action)


def S(event):
    return itch.SystemEvent(**_h(0), event_code=event)


def run(*msgs, book=None) -> tuple[OrderBook, list[bool]]:
    book = book or OrderBook()
    return book, [book.apply(itch.encode(m)) for m in msgs]


# ---------------------------------------------------------------- decoding derived from the layouts

@pytest.mark.parametrize("code", list("AFECXDU"))
def test_fields_struct_matches_layout_decode(code):
    t = itch.BY_CODE[code]
    names = [f.name for f in t.layout.fields if f.kind != "alpha" and f.name not in ("message_type",)
             and f.size != 6]
    s = fields_struct(code, tuple(names))
    values = tuple(range(1, len(t.layout.fields)))
    msg = t.cls._make(tuple("B" if f.kind == "char" else (" " * f.size if f.kind == "alpha" else v)
                            for f, v in zip(t.layout.fields[1:], values)))
    raw = itch.encode(msg)
    got = s.unpack_from(raw)
    want = tuple(getattr(msg, n) for n in names)
    assert tuple(g.decode() if isinstance(g, bytes) else g for g in got) == want


def test_fields_struct_rejects_out_of_order():
    with pytest.raises(ValueError, match="offset order"):
        fields_struct("A", ("price", "shares"))


# ---------------------------------------------------------------- adds

def test_add_sets_bbo_both_sides_and_reports_changes():
    book, changed = run(A(1, "B", 100, 1_000_000), A(2, "S", 200, 1_000_100), A(3, "B", 50, 999_900),
                        A(4, "B", 25, 1_000_000), F(5, "S", 10, 1_000_000))
    assert changed == [True, True, False, True, True]
    assert book.bbo(1) == Bbo(1_000_000, 125, 1_000_000, 10)   # crossed books are kept as they are
    assert book.bbo(99) == (0, 0, 0, 0)
    assert book.order(3) == Order(1, "B", 999_900, 50)
    assert len(book) == 5 and book.locates() == [1]


def test_add_deeper_level_does_not_change_bbo():
    book, changed = run(A(1, "S", 100, 500), A(2, "S", 100, 600), A(3, "B", 100, 400), A(4, "B", 100, 300))
    assert changed == [True, False, True, False]
    assert book.changed_locate == 1


def test_symbols_are_independent():
    book, _ = run(A(1, "B", 100, 500, loc=1), A(2, "B", 300, 700, loc=2))
    assert book.bbo(1) == (500, 100, 0, 0) and book.bbo(2) == (700, 300, 0, 0)


# ---------------------------------------------------------------- executions, cancels, deletes

def test_execute_partial_then_full_removes_order():
    book, changed = run(A(1, "B", 100, 500), A(2, "B", 40, 490), E(1, 30), E(1, 70))
    assert changed == [True, False, True, True]
    assert book.order(1) is None
    assert book.bbo(1) == (490, 40, 0, 0)
    assert book.stats.overfills == 0


def test_execute_with_price_reduces_the_resting_level_not_the_execution_price():
    book, changed = run(A(1, "S", 100, 500), A(2, "S", 100, 510), C(2, 60, 500))
    assert changed == [True, False, False]          # level 510 is not the best
    assert book.levels(1, "S") == {500: 100, 510: 40}
    _, changed = run(C(1, 100, 999), book=book)
    assert changed == [True]
    assert book.bbo(1) == (0, 0, 510, 40)


def test_partial_cancel_and_cancel_of_everything():
    book, changed = run(A(1, "S", 100, 500), X(1, 40), X(1, 60))
    assert changed == [True, True, True]
    assert book.order(1) is None and book.bbo(1) == (0, 0, 0, 0)


def test_zero_share_execution_changes_nothing():
    book, changed = run(A(1, "B", 100, 500), E(1, 0), X(1, 0))
    assert changed == [True, False, False]
    assert book.order(1).shares == 100


def test_delete_best_level_falls_back_to_next():
    book, changed = run(A(1, "B", 100, 500), A(2, "B", 100, 490), A(3, "B", 100, 480), D(1), D(3), D(2))
    assert changed == [True, False, False, True, False, True]
    assert book.bbo(1) == (0, 0, 0, 0) and len(book) == 0


def test_overfill_clamps_to_zero_and_counts():
    book, changed = run(A(1, "B", 100, 500), A(2, "B", 50, 500), E(1, 150), X(2, 80))
    assert changed == [True, True, True, True]
    assert book.stats.overfills == 2 and book.stats.anomalies == 2
    assert book.bbo(1) == (0, 0, 0, 0) and len(book) == 0


# ---------------------------------------------------------------- replace

def test_replace_removes_original_entirely_and_adds_new_on_same_side_and_locate():
    book, changed = run(A(1, "S", 100, 500, loc=3), E(1, 30, loc=3), U(1, 2, 200, 520, loc=9))
    assert changed == [True, True, True]
    assert book.order(1) is None
    assert book.order(2) == Order(3, "S", 520, 200)         # locate and side of the original
    assert book.bbo(3) == (0, 0, 520, 200) and book.bbo(9) == (0, 0, 0, 0)
    assert book.changed_locate == 3


def test_replace_that_leaves_the_bbo_unchanged_reports_no_change():
    book, changed = run(A(1, "B", 100, 500), A(2, "B", 100, 490), U(1, 3, 100, 500), U(2, 4, 300, 480))
    assert changed == [True, False, False, False]
    assert book.levels(1, "B") == {500: 100, 480: 300}


def test_replace_to_a_worse_price_moves_the_best():
    book, changed = run(A(1, "B", 100, 500), A(2, "B", 100, 490), U(1, 3, 100, 480))
    assert changed[-1] is True and book.bbo(1) == (490, 100, 0, 0)


def test_replace_of_unknown_ref_adds_nothing_and_later_refs_to_the_new_order_are_unknown():
    book, changed = run(U(77, 78, 100, 500), D(78))
    assert changed == [False, False]
    assert book.stats.unknown_refs == {"U": 1, "D": 1}
    assert len(book) == 0


# ---------------------------------------------------------------- robustness

def test_unknown_refs_are_counted_per_type_and_never_crash():
    book, changed = run(E(1, 10), C(2, 10, 500), X(3, 10), D(4), U(5, 6, 10, 500), D(4))
    assert not any(changed)
    assert book.stats.unknown_refs == {"E": 1, "C": 1, "X": 1, "D": 2, "U": 1}
    assert book.stats.unknown_ref_total == 6 and book.stats.anomalies == 0


def test_duplicate_add_is_ignored_first_wins_and_counted():
    book, changed = run(A(1, "B", 100, 500), E(1, 60), A(1, "S", 300, 510, loc=2), F(1, "B", 5, 600))
    assert changed == [True, True, False, False]
    assert book.order(1) == Order(1, "B", 500, 40)      # the executed shares stay executed
    assert book.stats.duplicate_adds == 2 and book.bbo(2) == (0, 0, 0, 0)


def test_replace_onto_a_live_ref_removes_the_original_and_keeps_the_live_order():
    book, changed = run(A(1, "B", 100, 500), A(2, "B", 100, 490), U(1, 2, 300, 510))
    assert changed[-1] is True
    assert book.order(1) is None and book.order(2) == Order(1, "B", 490, 100)
    assert book.stats.duplicate_adds == 1


@pytest.mark.parametrize("shares, price", [(0, 500), (100, 0)])
def test_adds_with_zero_shares_or_price_are_ignored_and_counted(shares, price):
    book, changed = run(A(1, "B", shares, price), A(2, "B", 100, 400), U(2, 3, shares, price), D(1))
    assert changed == [False, True, True, False]
    assert book.stats.invalid_adds == 2 and book.stats.unknown_refs == {"D": 1}
    assert len(book) == 0


def test_unknown_message_type_is_counted():
    book = OrderBook()
    assert book.apply(b"Z" + bytes(20)) is False
    assert book.stats.unknown_types == 1


def test_truncated_book_message_raises_a_clear_error():
    with pytest.raises(ItchFormatError, match="zero-length"):
        OrderBook().apply(b"")
    raw = itch.encode(A(1, "B", 100, 500))
    with pytest.raises(ItchFormatError, match="'A' message is 20 bytes, expected 36"):
        OrderBook().apply(raw[:20])


# ---------------------------------------------------------------- top-N

def test_top_n_both_sides_in_price_order():
    msgs = [A(i, "B", 10 * i, 1000 - 10 * (i % 4)) for i in range(1, 9)]
    msgs += [A(100 + i, "S", i, 2000 + 10 * i) for i in range(1, 6)]
    book, _ = run(*msgs)
    bids, asks = book.top(1, 3)
    assert bids == [(1000, 40 + 80), (990, 10 + 50), (980, 20 + 60)]
    assert asks == [(2010, 1), (2020, 2), (2030, 3)]
    assert book.top(1, 100)[1] == [(2000 + 10 * i, i) for i in range(1, 6)]
    assert book.top(5, 2) == ([], [])
    with pytest.raises(ValueError):
        book.top(1, 0)


# ---------------------------------------------------------------- state messages

def test_directory_trading_state_reg_sho_and_system_events():
    book, changed = run(S("O"), R(7, "AAPL"), H(7, "AAPL", "H", "LUDP"), Y(7, "AAPL", "1"),
                        H(8, "MSFT", "T"), S("Q"))
    assert not any(changed)
    s = book.symbols[7]
    assert (s.symbol, s.trading_state, s.trading_reason, s.reg_sho, s.round_lot_size) == ("AAPL", "H", "LUDP", "1", 100)
    assert book.symbols[8].symbol == "MSFT" and book.symbols[8].trading_state == "T"
    assert book.system_events == ["O", "Q"]
    assert book.symbol(7) == "AAPL" and book.locate_by_symbol("aapl") == 7 and book.locate_by_symbol("X") is None
    assert book.stats.by_type == {"S": 2, "R": 1, "H": 2, "Y": 1}


def test_apply_message_matches_apply():
    from tickgate.feed.synth import synth

    msgs = list(synth(3000, symbols=4, seed=3, mode="unknown"))
    a, b = OrderBook(), OrderBook()
    for m in msgs:
        assert a.apply(itch.encode(m)) == b.apply_message(m)
    assert a.stats == b.stats
    assert dict(a.orders()) == dict(b.orders())
    assert all(a.bbo(loc) == b.bbo(loc) for loc in range(1, 5))


# ---------------------------------------------------------------- properties

REFS = st.integers(1, 12)
PRICES = st.sampled_from([0, 100, 200, 300, 400, 500])
SHARES = st.sampled_from([0, 1, 50, 100, 300])


@st.composite
def ops(draw):
    kind = draw(st.sampled_from("AAAFEECXDDU"))
    loc = draw(st.integers(1, 2))
    if kind in "AF":
        return (A if kind == "A" else F)(draw(REFS), draw(st.sampled_from("BS")), draw(SHARES), draw(PRICES), loc=loc)
    if kind == "E":
        return E(draw(REFS), draw(SHARES), loc=loc)
    if kind == "C":
        return C(draw(REFS), draw(SHARES), draw(PRICES), loc=loc)
    if kind == "X":
        return X(draw(REFS), draw(SHARES), loc=loc)
    if kind == "D":
        return D(draw(REFS), loc=loc)
    return U(draw(REFS), draw(REFS), draw(SHARES), draw(PRICES), loc=loc)


class BruteBook:
    """The same semantics, written the obvious way: a dict of orders, BBO recomputed from scratch."""

    def __init__(self):
        self.orders: dict[int, list] = {}

    def apply(self, m) -> None:
        t, o = m.TYPE, self.orders
        if t in "AF":
            if m.order_reference_number not in o and m.shares and m.price:
                o[m.order_reference_number] = [m.stock_locate, m.buy_sell_indicator, m.price, m.shares]
        elif t in "ECX":
            ref = m.order_reference_number
            if ref in o:
                n = m.canceled_shares if t == "X" else m.executed_shares
                o[ref][3] -= min(n, o[ref][3])
                if not o[ref][3]:
                    del o[ref]
        elif t == "D":
            o.pop(m.order_reference_number, None)
        elif t == "U":
            old = o.pop(m.original_order_reference_number, None)
            if old and m.new_order_reference_number not in o and m.shares and m.price:
                o[m.new_order_reference_number] = [old[0], old[1], m.price, m.shares]

    def levels(self, loc, side) -> dict[int, int]:
        out: dict[int, int] = {}
        for l_, s, px, sh in self.orders.values():
            if l_ == loc and s == side:
                out[px] = out.get(px, 0) + sh
        return out

    def bbo(self, loc) -> tuple[int, int, int, int]:
        b, a = self.levels(loc, "B"), self.levels(loc, "S")
        bp = max(b) if b else 0
        ap = min(a) if a else 0
        return bp, b.get(bp, 0), ap, a.get(ap, 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops(), max_size=60))
def test_book_matches_brute_force_and_conserves_shares(msgs):
    book, brute = OrderBook(), BruteBook()
    for m in msgs:
        before = {loc: book.bbo(loc) for loc in (1, 2)}
        changed = book.apply(itch.encode(m))
        brute.apply(m)
        after = {loc: book.bbo(loc) for loc in (1, 2)}
        assert changed == (before != after)
        if changed:
            assert before[book.changed_locate] != after[book.changed_locate]
        for loc in (1, 2):
            assert after[loc] == brute.bbo(loc)
            for side in "BS":
                levels = book.levels(loc, side)
                assert all(v > 0 for v in levels.values())
                live = sum(o.shares for _, o in book.orders() if o.locate == loc and o.side == side)
                assert sum(levels.values()) == live
                assert levels == brute.levels(loc, side)
                assert book.top(loc, 10)[0 if side == "B" else 1] == sorted(
                    levels.items(), reverse=(side == "B"))[:10]
    assert {r: list(o) for r, o in book.orders()} == {r: o for r, o in brute.orders.items()}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), max_messages=st.integers(1, 40), max_payload=st.integers(72, 1500),
       ab_lines=st.booleans())
def test_result_does_not_depend_on_moldudp64_packing(seed, max_messages, max_payload, ab_lines):
    """Packed into packets of any size, through the receiver (with an A/B copy of every packet), the
    same messages come out and the book gives the same rows."""
    from tickgate.feed.synth import synth_bytes
    from tickgate.wire.moldudp64 import Packet, Receiver, pack_messages

    msgs = list(synth_bytes(400, symbols=3, seed=seed, mode="unknown"))
    want = list(ModelReplay().run(msgs))
    rx = Receiver()
    got_msgs = []
    for p in pack_messages(msgs, "SESSION01", 1, max_messages=max_messages, max_payload=max_payload):
        wire = p.encode()
        got_msgs += [m for _, m in rx.feed(Packet.decode(wire))]
        if ab_lines:
            assert rx.feed(Packet.decode(wire)) == []
    assert rx.stats.gaps == 0 and got_msgs == msgs
    assert list(ModelReplay().run(got_msgs)) == want


def test_depth_one_of_the_generic_path_equals_the_contract_path():
    from tickgate.feed.synth import synth_bytes

    msgs = list(synth_bytes(5000, symbols=5, seed=11, mode="deep,unknown"))
    fast = list(ModelReplay().run(msgs))
    generic = ModelReplay()
    assert list(generic._run_depth(msgs)) == fast


def test_changed_flag_equals_bbo_change_on_a_synthetic_feed():
    from tickgate.feed.synth import synth_bytes

    book = OrderBook()
    last: dict[int, tuple] = {}
    for raw in synth_bytes(20000, symbols=6, seed=5, mode="deep,far,chain,unknown"):
        loc = book.locate_of(raw)
        changed = book.apply(raw)
        if loc is None:
            assert not changed
            continue
        now = book.bbo(loc)
        assert changed == (now != last.get(loc, (0, 0, 0, 0)))
        last[loc] = now


def test_struct_error_is_wrapped():
    assert issubclass(ItchFormatError, ValueError)
    with pytest.raises(ItchFormatError):
        OrderBook().apply(b"U" + bytes(10))
    assert struct.calcsize(fields_struct("U", ("original_order_reference_number",)).format) == \
        LAYOUTS["U"]["original_order_reference_number"].offset + 8
