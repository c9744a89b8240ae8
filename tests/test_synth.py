"""The synthetic ITCH generator: deterministic, valid in normal mode, and each stress mode does what it says."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from tickgate.feed.binaryfile import BinaryFileReader
from tickgate.feed.synth import (
    MARKET_OPEN_NS, TICK, UNKNOWN_REF_BASE, Synth, SynthConfig, ref_hash, symbol_name, synth, synth_bytes,
    write_synth,
)


class LocalBook:
    """A minimal order book that checks every reference against live orders, counting what is wrong."""

    def __init__(self):
        self.orders: dict[int, list] = {}      # ref -> [locate, side, price, shares]
        self.unknown = 0
        self.overdrawn = 0
        self.adds: list = []                  # (msg, best bid, best ask) at the time of each add

    def best(self, locate: int, side: str):
        prices = [o[2] for o in self.orders.values() if o[0] == locate and o[1] == side]
        if not prices:
            return None
        return max(prices) if side == "B" else min(prices)

    def _take(self, ref: int, n: int | None):
        o = self.orders.get(ref)
        if o is None:
            self.unknown += 1
            return
        if n is None:
            del self.orders[ref]
            return
        if n > o[3] or n <= 0:
            self.overdrawn += 1
        o[3] -= n
        if o[3] <= 0:
            del self.orders[ref]

    def apply(self, m, track_bbo: bool = False):
        t = m.TYPE
        if t in "AF":
            assert m.order_reference_number not in self.orders, "duplicate live reference"
            assert m.shares > 0 and m.price > 0
            if track_bbo:
                self.adds.append((m, self.best(m.stock_locate, "B"), self.best(m.stock_locate, "S")))
            self.orders[m.order_reference_number] = [m.stock_locate, m.buy_sell_indicator, m.price, m.shares]
        elif t in "EC":
            self._take(m.order_reference_number, m.executed_shares)
        elif t == "X":
            o = self.orders.get(m.order_reference_number)
            if o is not None and m.canceled_shares >= o[3]:
                self.overdrawn += 1      # normal mode promises partial cancels only
            self._take(m.order_reference_number, m.canceled_shares)
        elif t == "D":
            self._take(m.order_reference_number, None)
        elif t == "U":
            o = self.orders.pop(m.original_order_reference_number, None)
            if o is None:
                self.unknown += 1
                return
            assert m.new_order_reference_number not in self.orders
            self.orders[m.new_order_reference_number] = [o[0], o[1], m.price, m.shares]


def _check_crossing(book: LocalBook, locates) -> None:
    for loc in locates:
        b, a = book.best(loc, "B"), book.best(loc, "S")
        assert b is None or a is None or b < a, f"locate {loc} crossed: {b} >= {a}"


def test_same_seed_same_bytes_and_different_seed_differs():
    a = b"".join(synth_bytes(20_000, 8, seed=7))
    b = b"".join(synth_bytes(20_000, 8, seed=7))
    c = b"".join(synth_bytes(20_000, 8, seed=8))
    assert a == b
    assert a != c


def test_preamble_and_exact_count():
    msgs = list(synth(5_000, symbols=5, seed=1))
    assert len(msgs) == 5_000
    assert msgs[0].TYPE == "S" and msgs[0].event_code == "O"
    r = [m for m in msgs[1:6]]
    assert [m.TYPE for m in r] == ["R"] * 5
    assert [m.stock_locate for m in r] == [1, 2, 3, 4, 5]
    assert [m.stock.rstrip() for m in r] == [symbol_name(i) for i in range(5)]
    assert [m.TYPE for m in msgs[6:13]] == ["S", "H", "H", "H", "H", "H", "S"]
    assert all(m.trading_state == "T" for m in msgs[7:12])
    assert msgs[13].timestamp > MARKET_OPEN_NS
    # Tiny budgets cut the preamble short rather than overrun.
    assert len(list(synth(3, symbols=5))) == 3
    assert list(synth(0)) == []


def test_symbol_names_unique():
    names = [symbol_name(i) for i in range(65_535)]
    assert len(set(names)) == len(names)
    assert all(1 <= len(n) <= 8 and n.isalpha() for n in names)


def test_normal_mode_is_valid():
    msgs = list(synth(60_000, symbols=6, seed=3))
    ts = [m.timestamp for m in msgs]
    assert all(b > a for a, b in zip(ts, ts[1:])), "timestamps must increase strictly"
    book = LocalBook()
    halted = set()
    for i, m in enumerate(msgs):
        book.apply(m)
        if m.TYPE == "H":
            (halted.add if m.trading_state == "H" else halted.discard)(m.stock_locate)
        if m.TYPE in "ECP":
            assert m.stock_locate not in halted, "no executions while halted"
        if i % 2_000 == 0:
            _check_crossing(book, range(1, 7))
    assert book.unknown == 0 and book.overdrawn == 0
    _check_crossing(book, range(1, 7))
    counts = Counter(m.TYPE for m in msgs)
    # Every order life-cycle message shows up, in a plausible mix.
    for t in "AFEXCDUPQIYH":
        assert counts[t] > 0, f"no {t!r} messages"
    assert counts["A"] + counts["F"] > counts["D"] > counts["U"] > counts["X"]
    assert all(m.price % TICK == 0 for m in msgs if m.TYPE in "AFU")


def test_bursts_and_halts_happen():
    gen = Synth(messages=100_000, symbols=4, seed=5, halt_probability=1e-4)
    msgs = list(gen)
    assert gen.stats.bursts > 0 and gen.stats.halts > 0
    states = [m.trading_state for m in msgs if m.TYPE == "H"]
    assert "H" in states and states.count("T") > 4     # 4 in the preamble, then resumes
    gaps = [b.timestamp - a.timestamp for a, b in zip(msgs, msgs[1:])]
    assert sum(g <= 20 for g in gaps) > 1_000          # burst gaps are a few ns


def test_deep_mode_builds_deep_books():
    book = LocalBook()
    for m in synth(30_000, symbols=2, seed=2, mode="deep"):
        book.apply(m)
    assert book.unknown == 0 and book.overdrawn == 0
    levels = Counter((o[0], o[1], o[2]) for o in book.orders.values())
    per_side = Counter((loc, side) for loc, side, _ in levels)
    assert max(per_side.values()) >= 100, "deep mode should rest on many levels"
    assert max(levels.values()) >= 20, "deep mode should stack many orders on a level"


@pytest.mark.parametrize("kind", ["low", "crc32", "xorfold"])
def test_collide_mode_refs_share_hash_bits(kind):
    bits = 10
    cfg = SynthConfig(messages=20_000, symbols=4, seed=4, mode="collide", collide_bits=bits, collide_hash=kind)
    refs = []
    book = LocalBook()
    for m in Synth(cfg):
        book.apply(m)
        if m.TYPE in "AF":
            refs.append(m.order_reference_number)
        elif m.TYPE == "U":
            refs.append(m.new_order_reference_number)
    assert book.unknown == 0 and book.overdrawn == 0
    assert len(refs) == len(set(refs)) > 5_000
    mask = (1 << bits) - 1
    assert {ref_hash(r, kind, bits) for r in refs} == {cfg.collide_value & mask}
    assert all(0 < r < UNKNOWN_REF_BASE for r in refs)
    if kind == "low":
        # Equal low bits of the reference mean equal low bits of any odd multiplicative hash.
        assert len({(r * 0x9E3779B97F4A7C15) & mask for r in refs}) == 1
    elif kind == "crc32":
        assert len({zlib.crc32(r.to_bytes(8, "big")) & mask for r in refs}) == 1
    else:
        # The gateware order table's bucket index: XOR fold of 10-bit chunks.
        folds = set()
        for r in refs:
            h = 0
            for shift in range(0, 64, bits):
                h ^= (r >> shift) & mask
            folds.add(h)
        assert len(folds) == 1


def test_chain_mode_replaces_one_order_many_times():
    gen = Synth(messages=60_000, symbols=2, seed=6, mode="chain", chain_length=500)
    book = LocalBook()
    successor = {}
    for m in gen:
        book.apply(m)
        if m.TYPE == "U":
            successor[m.original_order_reference_number] = m.new_order_reference_number
    assert book.unknown == 0 and book.overdrawn == 0
    # Follow the replace chains from their roots.
    roots = set(successor) - set(successor.values())
    longest = 0
    for r in roots:
        n = 0
        while r in successor:
            r = successor[r]
            n += 1
        longest = max(longest, n)
    assert longest == gen.stats.longest_chain == 500


def test_far_mode_prices_far_from_the_touch():
    far = 3_000
    gen = Synth(messages=30_000, symbols=4, seed=9, mode="far", far_ticks=far, far_fraction=0.1)
    book = LocalBook()
    n_far = 0
    for m in gen:
        if m.TYPE in "AF":
            bid, ask = book.best(m.stock_locate, "B"), book.best(m.stock_locate, "S")
            if m.buy_sell_indicator == "B" and bid is not None and m.price <= bid - far * TICK:
                n_far += 1
            elif m.buy_sell_indicator == "S" and ask is not None and m.price >= ask + far * TICK:
                n_far += 1
        book.apply(m)
    assert book.unknown == 0 and book.overdrawn == 0
    assert gen.stats.far_adds > 500
    assert n_far >= gen.stats.far_adds - 8      # the rest were added while their side was empty


def test_unknown_mode_names_never_added_orders():
    gen = Synth(messages=40_000, symbols=4, seed=10, mode="unknown", unknown_fraction=0.05)
    book = LocalBook()
    for m in gen:
        book.apply(m)
    assert gen.stats.unknown_refs > 100
    assert book.unknown == gen.stats.unknown_refs
    assert book.overdrawn == 0


def test_modes_combine_and_bad_options_fail_clearly(tmp_path):
    cfg = SynthConfig(messages=5_000, symbols=3, mode="deep,far,collide,chain,unknown")
    assert cfg.mode == ("deep", "far", "collide", "chain", "unknown")
    stats = write_synth(tmp_path / "s.itch.gz", cfg)
    msgs = list(BinaryFileReader(tmp_path / "s.itch.gz", decode=True))
    assert len(msgs) == stats.messages == 5_000
    assert msgs == list(Synth(cfg))
    with pytest.raises(ValueError, match="unknown synth mode 'wide'"):
        SynthConfig(mode="deep,wide")
    with pytest.raises(ValueError, match="symbols"):
        SynthConfig(symbols=0)
    with pytest.raises(ValueError, match="collide_hash"):
        SynthConfig(collide_hash="md5")


def test_xorfold_collisions_hit_one_gateware_bucket():
    pytest.importorskip("amaranth")
    from tickgate.fpga.order_book import MarketBook

    book = MarketBook()
    book._MustUse__silence = True      # only its hash is used, never elaborated
    bits = book.buckets.bit_length() - 1
    refs = [m.order_reference_number for m in synth(3_000, 4, mode="collide", collide_hash="xorfold",
                                                     collide_bits=bits) if m.TYPE in "AF"]
    assert len(refs) > 1_000 and len({book.bucket_of(r) for r in refs}) == 1
