"""Deterministic synthetic ITCH 5.0 feeds, generated as a stream in constant memory.

The feed starts like a trading day: ``S 'O'``, one ``R`` directory message per symbol (locates
``1..symbols``), ``S 'S'``, ``H 'T'`` per symbol, ``S 'Q'``; then order flow from 09:30:00. Each symbol has
a price anchor ``m`` (in ticks of $0.01 = 100 price units) that takes a random walk: bids rest at or below
``m``, asks at or above ``m + 1``, so the book never crosses; when ``m`` moves, the orders it would cross
are executed (a sweep of ``E`` messages). Order life cycles mix adds (``A``, some ``F``), partial and full
executions (``E``, ``C``), partial cancels (``X``), deletes (``D``) and replaces (``U``, new reference) in
roughly NASDAQ's proportions, plus ``P`` trades, ``Q`` crosses, ``I`` NOII, ``Y`` Reg SHO and halts (``H 'H'``
then ``H 'T'``). Timestamps increase strictly; bursts put many messages a few nanoseconds apart.

In the default (normal) mode every ``E/C/X/D/U`` refers to a live order with enough shares, every ``X``
is partial, and executions never exceed the shares left. The live-order count is held near a target per
symbol, so memory is bounded by ``symbols x orders_per_symbol`` whatever the message count.

Stress modes (combine freely, ``mode="deep,far"``):

``deep``     many levels and many orders per level (``deep_orders`` live orders a symbol over
             ``deep_levels`` levels a side).
``collide``  every new order reference has the same ``collide_bits``-bit :func:`ref_hash`:
             ``collide_hash="low"``: the reference's low bits, which are also the low bits of any odd
             multiplicative hash ``(ref * M) mod 2**64`` (they depend only on the low bits of ``ref``);
             ``"crc32"``: the low bits of ``zlib.crc32`` of the reference as 8 big-endian bytes;
             ``"xorfold"``: the XOR of the reference's ``collide_bits``-bit chunks (the gateware order
             table's bucket index, ``MarketBook.bucket_of``, with ``collide_bits = log2(buckets)``).
``chain``    one order per symbol is replaced over and over (``chain_length`` replaces a chain).
``far``      a ``far_fraction`` of adds is placed at least ``far_ticks`` ticks beyond the best price on
             its own side (so even further from the opposite side).
``unknown``  a ``unknown_fraction`` of ``E/C/X/D/U`` names an order that was never added (references
             from ``UNKNOWN_REF_BASE`` up); a ``U``'s new reference is then never used again.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..wire import itch

__all__ = [
    "MODES", "SynthConfig", "SynthStats", "Synth", "synth", "synth_bytes", "write_synth", "ref_hash",
    "symbol_name", "HASHES", "TICK", "UNKNOWN_REF_BASE", "MARKET_OPEN_NS",
]

TICK = 100                         # $0.01 in ITCH price units (1/10000 dollar)
MARKET_OPEN_NS = 34_200 * 10**9    # 09:30:00
UNKNOWN_REF_BASE = 1 << 62         # "unknown" mode references start here; normal ones stay far below
MODES = ("normal", "deep", "collide", "chain", "far", "unknown")
_MAX_PRICE = 1_999_999_900         # ITCH's largest price, $199,999.99
_MAX_TS = (1 << 48) - 1
_MASK64 = (1 << 64) - 1


HASHES = ("low", "crc32", "xorfold")


def ref_hash(ref: int, kind: str = "low", bits: int = 12) -> int:
    """The ``bits``-bit hash (table index) that ``collide`` mode makes equal for every reference:
    ``"low"``: ``ref``'s low bits (equal low bits also for ``(ref * odd) mod 2**64``); ``"crc32"``: low bits
    of ``zlib.crc32(ref.to_bytes(8, "big"))``; ``"xorfold"``: XOR of ``ref``'s ``bits``-bit chunks."""
    mask = (1 << bits) - 1
    if kind == "low":
        return ref & mask
    if kind == "crc32":
        return zlib.crc32(ref.to_bytes(8, "big")) & mask
    if kind == "xorfold":
        h = 0
        for shift in range(0, 64, bits):
            h ^= (ref >> shift) & mask
        return h
    raise ValueError(f"collide_hash must be one of {', '.join(HASHES)}, not {kind!r}")


def symbol_name(index: int) -> str:
    """A made-up ticker for locate ``index + 1``: ``"SAAA"``, ``"SAAB"``, ... (letters A-Z, base 26)."""
    letters = ""
    n = index
    for _ in range(3):
        n, r = divmod(n, 26)
        letters = chr(65 + r) + letters
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(65 + r) + letters
    return ("S" + letters)[:8]


@dataclass(frozen=True)
class SynthConfig:
    messages: int = 100_000              # total messages, preamble included
    symbols: int = 16                    # locates 1..symbols, each with an R message
    seed: int = 0
    mode: tuple[str, ...] = ("normal",)  # see the module docstring; a "a,b" string is accepted too
    orders_per_symbol: int = 60          # live orders a symbol settles around (normal mode)
    deep_orders: int = 2_000             # ... in deep mode
    deep_levels: int = 200               # levels a side deep mode spreads over
    mean_gap_ns: float = 2_000.0         # mean time between messages outside bursts
    burst_probability: float = 0.002     # chance per message that a burst starts
    burst_length: tuple[int, int] = (20, 400)
    halt_probability: float = 2e-5       # chance per message that some symbol halts
    collide_bits: int = 12
    collide_hash: str = "low"            # "low", "crc32" or "xorfold", see ref_hash
    collide_value: int = 0x5A5           # the shared low bits (masked to collide_bits)
    chain_length: int = 1_000
    far_ticks: int = 5_000               # $50 beyond the best price on the order's side
    far_fraction: float = 0.05
    unknown_fraction: float = 0.02
    start_ns: int = 3 * 3600 * 10**9     # timestamp of the first message (S 'O')

    def __post_init__(self):
        mode = self.mode
        if isinstance(mode, str):
            mode = tuple(m.strip() for m in mode.split(",") if m.strip()) or ("normal",)
        mode = tuple(dict.fromkeys(mode))
        bad = [m for m in mode if m not in MODES]
        if bad:
            raise ValueError(f"unknown synth mode {', '.join(map(repr, bad))}; choose from {', '.join(MODES)}")
        if len(mode) > 1 and "normal" in mode:
            mode = tuple(m for m in mode if m != "normal")
        object.__setattr__(self, "mode", mode)
        if self.messages < 0:
            raise ValueError(f"messages must be >= 0, not {self.messages}")
        if not 1 <= self.symbols <= 65_535:
            raise ValueError(f"symbols must be 1..65535 (a stock locate is 16 bits), not {self.symbols}")
        if self.orders_per_symbol < 1 or self.deep_orders < 1 or self.deep_levels < 1:
            raise ValueError("orders_per_symbol, deep_orders and deep_levels must be >= 1")
        if self.mean_gap_ns < 1:
            raise ValueError(f"mean_gap_ns must be >= 1, not {self.mean_gap_ns}")
        if not 1 <= self.collide_bits <= 32:
            raise ValueError(f"collide_bits must be 1..32, not {self.collide_bits}")
        ref_hash(0, self.collide_hash, self.collide_bits)
        for name in ("burst_probability", "halt_probability", "far_fraction", "unknown_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        lo, hi = self.burst_length
        if not 1 <= lo <= hi:
            raise ValueError(f"burst_length must be (lo, hi) with 1 <= lo <= hi, not {self.burst_length}")
        if self.chain_length < 1 or self.far_ticks < 1:
            raise ValueError("chain_length and far_ticks must be >= 1")


@dataclass
class SynthStats:
    """What the generator emitted, for reports and for tests of the stress modes."""
    messages: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    orders_added: int = 0
    max_live_orders: int = 0
    sweeps: int = 0                # anchor moves that executed crossing orders
    bursts: int = 0
    halts: int = 0
    far_adds: int = 0
    unknown_refs: int = 0          # E/C/X/D/U messages naming a never-added order
    longest_chain: int = 0         # most replaces of one original order


class _Refs:
    """Fresh order references: increasing in normal mode; in collide mode all with one ``ref_hash``.
    CRC-32 and the XOR fold are affine over GF(2), so the references are ``x0 xor span(kernel)``, where
    the kernel holds the inputs whose hash change is zero."""

    def __init__(self, cfg: SynthConfig, rng: random.Random):
        self.collide = "collide" in cfg.mode
        self.n = rng.randrange(1_000_000, 5_000_000) if not self.collide else 0
        self.bits = cfg.collide_bits
        self.kind = cfg.collide_hash
        self.value = cfg.collide_value & ((1 << self.bits) - 1)
        if self.collide and self.kind != "low":
            self.x0, self.basis = self._kernel(lambda x: ref_hash(x, self.kind, self.bits))

    def _kernel(self, h) -> tuple[int, list[int]]:
        c0 = h(0)
        # Column i: the hash's response to flipping input bit i. Gaussian elimination over GF(2).
        # Only input bits 0..61 take part, so references stay below UNKNOWN_REF_BASE.
        cols = [h(1 << i) ^ c0 for i in range(62)]
        pivots: dict[int, tuple[int, int]] = {}   # pivot bit -> (reduced column, input combination)
        kernel = []
        for i, col in enumerate(cols):
            combo = 1 << i
            for bit in sorted(pivots, reverse=True):
                if col >> bit & 1:
                    pcol, pcombo = pivots[bit]
                    col ^= pcol
                    combo ^= pcombo
            if col:
                pivots[col.bit_length() - 1] = (col, combo)
            else:
                kernel.append(combo)
        # A particular solution x0 with low bits of crc32(x0) == value.
        want = self.value ^ c0
        x0 = 0
        for bit in sorted(pivots, reverse=True):
            if want >> bit & 1:
                pcol, pcombo = pivots[bit]
                want ^= pcol
                x0 ^= pcombo
        if want:
            raise AssertionError(f"{self.kind} hash value {self.value} not reachable from 62 input bits")
        return x0, kernel

    def next(self) -> int:
        self.n += 1
        if not self.collide:
            return self.n
        if self.kind == "low":
            return (self.n << self.bits) | self.value
        while True:
            x = self.x0
            j, k = self.n, 0
            while j:
                if j & 1:
                    x ^= self.basis[k]
                j >>= 1
                k += 1
            if x:      # 0 is not a valid order reference
                return x
            self.n += 1


class _Symbol:
    __slots__ = ("locate", "stock", "m", "live", "halted_until", "chain", "chain_count")

    def __init__(self, locate: int, stock: str, m: int):
        self.locate = locate
        self.stock = stock
        self.m = m                 # price anchor in ticks: bids <= m < m + 1 <= asks
        self.live: list[int] = []  # references of live orders (chain orders excluded)
        self.halted_until = -1     # message count at which trading resumes; -1 when trading
        self.chain = 0             # reference of the current replace-chain order (chain mode)
        self.chain_count = 0


class Synth:
    """The generator. Iterate it for message objects; ``stats`` fills in as you go."""

    def __init__(self, config: SynthConfig | None = None, **options):
        if config is not None and options:
            raise TypeError("give either a SynthConfig or keyword options, not both")
        self.config = config if config is not None else SynthConfig(**options)
        self.stats = SynthStats()

    def __iter__(self) -> Iterator:
        return self._run()

    # -- the generator ------------------------------------------------------------------------------
    def _run(self) -> Iterator:
        cfg = self.config
        rng = random.Random(cfg.seed)
        st = self.stats
        modes = set(cfg.mode)
        deep, chain, far, unknown = ("deep" in modes, "chain" in modes, "far" in modes, "unknown" in modes)
        target = cfg.deep_orders if deep else cfg.orders_per_symbol
        levels = cfg.deep_levels if deep else 12
        refs = _Refs(cfg, rng)
        # ref -> [locate, side, price ticks, shares, index in its symbol's live list (-1: chain order)]
        orders: dict[int, list] = {}
        syms = [_Symbol(i + 1, symbol_name(i).ljust(8), rng.randrange(2_000, 50_000)) for i in range(cfg.symbols)]
        # Activity is skewed like a real market: weight 1/rank^0.8 (Zipf-like), in a shuffled order.
        ranks = list(range(1, cfg.symbols + 1))
        rng.shuffle(ranks)
        cum, acc = [], 0.0
        for r in ranks:
            acc += 1.0 / r ** 0.8
            cum.append(acc)
        total_weight = acc
        ts = cfg.start_ns
        match = rng.randrange(1_000, 100_000)
        unknown_next = UNKNOWN_REF_BASE
        budget = cfg.messages
        burst_left = 0
        burst_sym: _Symbol | None = None

        def emit(msg):
            # Every message passes here to be counted (the loops check the budget).
            st.messages += 1
            code = msg.TYPE
            st.by_type[code] = st.by_type.get(code, 0) + 1
            return msg

        def tick_ts(gap: int) -> int:
            nonlocal ts
            ts += gap
            if ts > _MAX_TS:
                raise ValueError("synthetic timestamps ran past 2**48 ns; lower messages or mean_gap_ns")
            return ts

        # -- preamble: S O, R..., S S, H T..., S Q --------------------------------------------------
        pre = [itch.SystemEvent(0, 0, 0, "O")]
        for s in syms:
            pre.append(itch.StockDirectory(
                s.locate, 0, 0, s.stock, rng.choice("QGSNP"), " ", 100, "N", "C", "Z ", "P", "N", " ",
                rng.choice("12"), "N", 0, "N"))
        pre.append(itch.SystemEvent(0, 0, 0, "S"))
        pre += [itch.StockTradingAction(s.locate, 0, 0, s.stock, "T", " ", "    ") for s in syms]
        pre.append(itch.SystemEvent(0, 0, 0, "Q"))
        # Spread the preamble between start_ns and 09:30 (or tightly if start_ns is later).
        span = max(len(pre), MARKET_OPEN_NS - cfg.start_ns - len(pre))
        step = max(1, span // (len(pre) + 1))
        for i, msg in enumerate(pre):
            if st.messages >= budget:
                return
            yield emit(msg._replace(timestamp=tick_ts(step if i else 0)))
        ts = max(ts, MARKET_OPEN_NS)

        # -- helpers over the order table ------------------------------------------------------------
        def draw_shares() -> int:
            r = rng.random()
            if r < 0.55:
                return 100
            if r < 0.80:
                return 100 * rng.randint(2, 10)
            if r < 0.95:
                return rng.randint(1, 99)
            return rng.randint(1_000, 10_000)

        def near_price(s: _Symbol, side: str) -> int:
            # Levels away from the touch: geometric, mean ~levels/4, capped at `levels`.
            k = min(levels - 1, int(rng.expovariate(4.0 / levels)))
            if side == "B":
                return max(1, s.m - k)
            return min(_MAX_PRICE // TICK, s.m + 1 + k)

        def add_live(s: _Symbol, ref: int, side: str, price: int, shares: int) -> None:
            orders[ref] = [s.locate, side, price, shares, len(s.live)]
            s.live.append(ref)

        def remove(ref: int) -> None:
            o = orders.pop(ref)
            idx = o[4]
            if idx < 0:
                return
            s = syms[o[0] - 1]
            last = s.live.pop()
            if last != ref:
                s.live[idx] = last
                orders[last][4] = idx

        def pick_live(s: _Symbol, touch: bool) -> int:
            # touch=True: best of 3 random orders by distance from the touch (executions hit the top).
            live = s.live
            ref = live[rng.randrange(len(live))]
            if touch:
                for _ in range(2):
                    other = live[rng.randrange(len(live))]
                    if _dist(s, orders[other]) < _dist(s, orders[ref]):
                        ref = other
            return ref

        def new_unknown() -> int:
            nonlocal unknown_next
            unknown_next += 1
            st.unknown_refs += 1
            return unknown_next

        def best_on_side(s: _Symbol, side: str) -> int | None:
            best = None
            for r in s.live:
                o = orders[r]
                if o[1] == side and (best is None or (o[2] > best if side == "B" else o[2] < best)):
                    best = o[2]
            return best

        # -- order flow -----------------------------------------------------------------------------
        while st.messages < budget:
            if burst_left > 0:
                burst_left -= 1
                gap = rng.randint(1, 20)
                s = burst_sym if rng.random() < 0.8 else syms[bisect(cum, rng.random() * total_weight)]
            else:
                gap = 1 + int(rng.expovariate(1.0 / cfg.mean_gap_ns))
                s = syms[bisect(cum, rng.random() * total_weight)]
                if rng.random() < cfg.burst_probability:
                    lo, hi = cfg.burst_length
                    burst_left = rng.randint(lo, hi)
                    burst_sym = s
                    st.bursts += 1
            loc, stock = s.locate, s.stock
            halted = s.halted_until >= 0
            if halted and st.messages >= s.halted_until:
                s.halted_until = -1
                yield emit(itch.StockTradingAction(loc, 0, tick_ts(gap), stock, "T", " ", "    "))
                continue
            live = len(s.live)
            w_add = 450.0 * min(8.0, max(0.05, target / (live + 1.0)))
            if live == 0:
                w_rm = 0.0
            else:
                w_rm = 1.0
            # Weights per mille: add, D, U, E, C, X, P, I, Q, Y, halt, anchor move.
            weights = (
                w_add, 370 * w_rm, 80 * w_rm, 0 if halted else 20 * w_rm, 0 if halted else 3 * w_rm,
                20 * w_rm, 0 if halted else 10, 2, 0 if halted else 0.5, 0.5,
                0 if halted else cfg.halt_probability * 1000, 0 if halted else 8,
            )
            r = rng.random() * sum(weights)
            ev = 0
            while r >= weights[ev]:
                r -= weights[ev]
                ev += 1

            use_unknown = unknown and 1 <= ev <= 5 and rng.random() < cfg.unknown_fraction
            if ev == 0:  # add
                side = "B" if rng.random() < 0.5 else "S"
                if far and rng.random() < cfg.far_fraction:
                    price = self._far_price(s, side, best_on_side(s, side), cfg.far_ticks, rng)
                    if price is None:
                        side = "S" if side == "B" else "B"
                        price = self._far_price(s, side, best_on_side(s, side), cfg.far_ticks, rng)
                    if price is None:
                        price = near_price(s, side)
                    else:
                        st.far_adds += 1
                else:
                    price = near_price(s, side)
                shares = draw_shares()
                ref = refs.next()
                add_live(s, ref, side, price, shares)
                st.orders_added += 1
                if len(orders) > st.max_live_orders:
                    st.max_live_orders = len(orders)
                if rng.random() < 0.1:
                    yield emit(itch.AddOrderMpid(loc, 0, tick_ts(gap), ref, side, shares, stock, price * TICK,
                                                 rng.choice(("NSDQ", "SYNA", "SYNB", "SYNC"))))
                else:
                    yield emit(itch.AddOrder(loc, 0, tick_ts(gap), ref, side, shares, stock, price * TICK))
            elif ev == 1:  # delete
                if use_unknown:
                    ref = new_unknown()
                else:
                    ref = pick_live(s, False)
                    remove(ref)
                yield emit(itch.OrderDelete(loc, 0, tick_ts(gap), ref))
            elif ev == 2:  # replace
                if chain and rng.random() < 0.8:
                    yield emit(self._chain_step(s, orders, refs, rng, tick_ts(gap), near_price, draw_shares, st))
                    continue
                new = refs.next()
                if use_unknown:
                    old = new_unknown()
                    shares, price = draw_shares(), near_price(s, "B" if rng.random() < 0.5 else "S")
                else:
                    old = pick_live(s, False)
                    side = orders[old][1]
                    remove(old)
                    shares, price = draw_shares(), near_price(s, side)
                    add_live(s, new, side, price, shares)
                    st.orders_added += 1
                yield emit(itch.OrderReplace(loc, 0, tick_ts(gap), old, new, shares, price * TICK))
            elif ev in (3, 4):  # execution, E or C
                match += 1
                if use_unknown:
                    ref, n, price = new_unknown(), draw_shares(), s.m
                else:
                    ref = pick_live(s, True)
                    o = orders[ref]
                    n = o[3] if rng.random() < 0.6 or o[3] == 1 else rng.randint(1, o[3] - 1)
                    price = o[2]
                    o[3] -= n
                    if o[3] == 0:
                        remove(ref)
                if ev == 3:
                    yield emit(itch.OrderExecuted(loc, 0, tick_ts(gap), ref, n, match))
                else:
                    yield emit(itch.OrderExecutedWithPrice(loc, 0, tick_ts(gap), ref, n, match,
                                                           "Y" if rng.random() < 0.8 else "N", price * TICK))
            elif ev == 5:  # partial cancel
                if use_unknown:
                    yield emit(itch.OrderCancel(loc, 0, tick_ts(gap), new_unknown(), draw_shares()))
                    continue
                ref = pick_live(s, False)
                o = orders[ref]
                if o[3] < 2:   # cannot cancel part of one share: delete it instead
                    remove(ref)
                    yield emit(itch.OrderDelete(loc, 0, tick_ts(gap), ref))
                    continue
                n = rng.randint(1, o[3] - 1)
                o[3] -= n
                yield emit(itch.OrderCancel(loc, 0, tick_ts(gap), ref, n))
            elif ev == 6:  # non-displayed trade
                match += 1
                side = "B" if rng.random() < 0.5 else "S"
                yield emit(itch.Trade(loc, 0, tick_ts(gap), 0, side, draw_shares(), stock,
                                      (s.m if side == "B" else s.m + 1) * TICK, match))
            elif ev == 7:  # NOII
                paired = rng.randint(0, 50_000)
                imb = rng.randint(0, 20_000)
                ref_px = s.m * TICK
                yield emit(itch.Noii(loc, 0, tick_ts(gap), paired, imb, rng.choice("BSNO") if imb else "N", stock,
                                     ref_px, ref_px, ref_px, rng.choice("OCH"), rng.choice("L123456789ABC ")))
            elif ev == 8:  # cross
                match += 1
                yield emit(itch.CrossTrade(loc, 0, tick_ts(gap), rng.randint(100, 500_000), stock, s.m * TICK,
                                           match, rng.choice("OCHI")))
            elif ev == 9:  # Reg SHO
                yield emit(itch.RegShoRestriction(loc, 0, tick_ts(gap), stock, rng.choice("012")))
            elif ev == 10:  # halt: resumes after a few hundred to a few thousand messages
                s.halted_until = st.messages + rng.randint(200, 3_000)
                st.halts += 1
                yield emit(itch.StockTradingAction(loc, 0, tick_ts(gap), stock, "H", " ",
                                                   rng.choice(("LUDP", "T1  ", "T12 ", "MWC1"))))
            else:  # the anchor moves one tick; execute (sweep) whatever would now cross
                up = rng.random() < 0.5
                s.m = max(2, s.m + (1 if up else -1))
                crossed = [r for r in s.live if (orders[r][1] == "S" and orders[r][2] <= s.m) or
                           (orders[r][1] == "B" and orders[r][2] > s.m)]
                if s.chain and s.chain in orders:
                    o = orders[s.chain]
                    if (o[1] == "S" and o[2] <= s.m) or (o[1] == "B" and o[2] > s.m):
                        crossed.append(s.chain)
                if crossed:
                    st.sweeps += 1
                first = True
                for ref in crossed:
                    if st.messages >= budget:
                        return
                    match += 1
                    n = orders[ref][3]
                    remove(ref)
                    if ref == s.chain:
                        s.chain = 0
                    yield emit(itch.OrderExecuted(loc, 0, tick_ts(gap if first else rng.randint(1, 50)), ref, n,
                                                  match))
                    first = False

    @staticmethod
    def _far_price(s: _Symbol, side: str, best: int | None, far_ticks: int, rng: random.Random) -> int | None:
        extra = rng.randint(0, far_ticks)
        if side == "B":
            ref = min(best if best is not None else s.m, s.m)
            p = ref - far_ticks - extra
            return p if p >= 1 else None
        ref = max(best if best is not None else s.m + 1, s.m + 1)
        p = ref + far_ticks + extra
        return p if p <= _MAX_PRICE // TICK else None

    @staticmethod
    def _chain_price(s: _Symbol, side: str, near_price) -> int:
        # Two ticks behind the touch, so an anchor move between replaces rarely sweeps the chain away.
        return max(1, near_price(s, side) - 2) if side == "B" else near_price(s, side) + 2

    def _chain_step(self, s, orders, refs, rng, ts, near_price, draw_shares, st):
        """Replace the symbol's chain order, starting a new chain when it is gone or has reached
        ``chain_length``. Chain orders sit outside the live list, so only this step (and a sweep)
        touches them."""
        if not s.chain or s.chain not in orders or s.chain_count >= self.config.chain_length:
            if s.chain in orders:
                # The finished chain's last order goes back to the normal pool (it stays live).
                orders[s.chain][4] = len(s.live)
                s.live.append(s.chain)
            s.chain_count = 0
            # The new chain starts from a fresh add: 'U' needs a live original.
            side = "B" if rng.random() < 0.5 else "S"
            ref = refs.next()
            price, shares = self._chain_price(s, side, near_price), draw_shares()
            orders[ref] = [s.locate, side, price, shares, -1]
            s.chain = ref
            st.orders_added += 1
            return itch.AddOrder(s.locate, 0, ts, ref, side, shares, s.stock, price * TICK)
        old = s.chain
        new = refs.next()
        side = orders.pop(old)[1]
        price, shares = self._chain_price(s, side, near_price), draw_shares()
        orders[new] = [s.locate, side, price, shares, -1]
        s.chain = new
        s.chain_count += 1
        st.longest_chain = max(st.longest_chain, s.chain_count)
        st.orders_added += 1
        return itch.OrderReplace(s.locate, 0, ts, old, new, shares, price * TICK)


def _dist(s: _Symbol, o: list) -> int:
    return s.m - o[2] if o[1] == "B" else o[2] - s.m - 1


def synth(messages: int = 100_000, symbols: int = 16, seed: int = 0, mode: str | Iterable[str] = "normal",
          **options) -> Iterator:
    """Message objects of a synthetic feed (see :class:`SynthConfig` for ``options``)."""
    if not isinstance(mode, str):
        mode = tuple(mode)
    return iter(Synth(SynthConfig(messages=messages, symbols=symbols, seed=seed, mode=mode, **options)))


def synth_bytes(*args, **kwargs) -> Iterator[bytes]:
    """Like :func:`synth`, yielding each message's wire bytes."""
    encode = itch.encode
    return (encode(m) for m in synth(*args, **kwargs))


def write_synth(target, config: SynthConfig) -> SynthStats:
    """Write a synthetic feed as a BinaryFILE (``.gz`` compresses); returns the generator's stats."""
    from .binaryfile import BinaryFileWriter

    gen = Synth(config)
    with BinaryFileWriter(target) as w:
        for m in gen:
            w.write(m)
    return gen.stats
