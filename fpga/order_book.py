"""The order book: BookOp stream in, TopOfBook stream out, plus a state lookup port for the risk gate.

:class:`MarketBook` (v2) keeps

* a **locate -> slot table**: ``locates`` entries (block RAM), one per stock locate below ``locates``
  (larger locates are counted in ``out_of_range`` and ignored). A locate gets one of ``symbols`` book slots
  on its first valid add (a slot counter; slots are never freed). When the slots run out, the add is
  dropped and counted (``no_slot``), and the first such add of a locate emits one all-zero row flagged
  ``degraded``: that symbol's book is not kept, and the flagged row says so (the lookup port answers
  ``no_slot``). The table also holds each locate's trading state (H) and Reg SHO action (Y), with or
  without a slot, encoded in 3 + 2 bits (codes outside ITCH's H/P/Q/T and 0/1/2 read back as ``?``).
* an **order table**: ``capacity`` orders in ``ways`` block RAMs of ``capacity // ways`` buckets, indexed by
  an XOR fold of the 64-bit reference (:meth:`MarketBook.bucket_of`), matched by a full 64-bit tag
  compare. Each entry holds the order's slot, side, price and shares left. An add that finds its bucket
  full is dropped, counted (``table_full``) and flags its symbol ``degraded`` until reset.
* **price levels**: per slot and side, the best ``depth`` (K) levels as a sorted array of (price, size),
  best first, in one block-RAM word per slot (both sides, read and written whole). An add/execute/cancel/
  delete compares its price with all K entries in parallel: it updates a level, inserts a new one at its
  sorted position (shifting the worse ones down) or removes an emptied one (shifting up). Exact for any
  price (no tick grid).

Depth overflow (the ``out_of_window`` flag bit and counter keep v1's names): when a side would hold more
than K levels, the worst fall off. Per side the word keeps ``ovf``, the shares of live orders not in the
array, and a bound ``B``: every untracked order's price is at or worse than ``B``, every tracked level is
strictly better than ``B``. An add is tracked only if the side has no overflow or its price is strictly
better than ``B``, and there is room or it beats the K-th level (which is then pushed out: its shares go to
``ovf`` and its price becomes ``B``); otherwise it goes to ``ovf`` (``B`` moves to it if better). So an
order is tracked exactly when a tracked level has its price: no per-order bit is needed, an execute/
cancel/delete takes its shares off the matching level or, if none matches, off ``ovf``. ``B`` is
meaningless (and reset) once ``ovf`` reaches 0. The best price of a side is exact while the side has a
tracked level; when the array empties while ``ovf > 0`` the best is unknown, the side reads (0, 0) and the
symbol's rows carry ``out_of_window`` (the bit means "depth overflow: this BBO may be wrong") until a
tracked level returns or the overflow drains. ``counters.out_of_window`` counts levels and orders that
went to overflow.

Semantics follow :class:`tickgate.model.book.OrderBook` exactly (duplicate adds ignored, first wins; adds
of 0 shares or price 0 ignored; executions clamp at the shares left; unknown references counted per kind;
a replace of an unknown reference adds nothing; a replace whose new reference is live still removes the
original), with one exception for input ITCH forbids: an execute/cancel/delete/replace is applied only if
the order belongs to the message's own locate (the level word is read by the message's locate, which
saves a cycle). A mismatch is counted (``locate_mismatch``), the message is ignored and every later row
is flagged ``degraded`` (the book may differ from the model from then on).

A TopOfBook record is emitted for exactly those messages that change their symbol's best bid or best ask
(price or size) -- the model's rows -- and, beyond the model, for messages that change the symbol's
``degraded`` or ``out_of_window`` flag (so a consumer learns at once that a symbol went unreliable, and
when it is exact again), plus the flagged row of a locate refused a slot. Flags: ``stale`` is the ``stale`` input,
``degraded`` the symbol's table-full flag (or a locate mismatch seen), ``out_of_window`` a side's best
unknown.

Latency and rate: :attr:`MarketBook.LATENCY` (6) cycles from the BookOp handshake to the TopOfBook record
(valid on ``o_stream`` while it is ready) for every message, REPLACE included; ``applied``/
``applied_seq`` strobe at the same cycle for every message, row or not. Rate: 1 op/cycle; REPLACE 2 (it
runs as a delete and an add micro-op; the input is not ready in the cycle after it, and the other ops'
records wait one cycle so every message has the same latency). Read-modify-write hazards between
consecutive micro-ops (same order, bucket, locate or slot) are resolved by forwarding from the last two
writes of each memory, never by stalling. Every block-RAM output is registered. Output backpressure is
absorbed by a FIFO (bypassed when empty); the input is held off only when the FIFO could overflow. After
reset the block sweeps its memories to zero (input not ready) for :attr:`MarketBook.clear_cycles`.

Pipeline (micro-op issued at cycle 0): 0 order-table and slot-table reads; 2 tag compare, order and slot
read-modify-write, level-word read; 4 level read-modify-write (the K-wide compare/shift: the critical
loop), BBO change; 5 row register; 6 record out (REPLACE's add half, issued at 1, skips the row register).

Timing (measured, Yosys synth_ecp5 + nextpnr-ecp5 --85k CABGA381 speed 8, the book alone with
capacity=1024, symbols=64, depth=12, locates=1024): 26.0k LUT4, 13.1k FF, 81 DP16KD, **38 MHz** after
routing: far from 156.25 MHz. The critical path is the level stage's loop: the forwarding select
(write-history address compare) -> the 1.7 kbit word mux -> side mux -> K price compares (carry chains) ->
insert/remove shift -> size add -> the forwarding register. To close timing: register the forwarding
selects one stage early (the previous op's slot and side are known at stage 3), forward only the side
being modified, split the stage in two (compare/thermometer codes, then shift and add) with a
back-to-back correction against the previous op's insert position, and reconsider K.

Lookup port: ``lookup.locate``/``lookup.valid`` in at cycle 0, ``lookup.result``/``lookup.result_valid``
at cycle :attr:`MarketBook.LOOKUP_LATENCY` (4): BBO, the top ``lookup_depth`` levels of each side, trading
state, Reg SHO, flags, per-side overflow; it reflects every message whose level stage finished before it.
"""

# No `from __future__ import annotations`: Amaranth reads the annotations as shapes.
from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .book_records import BookFlags, BookOp, BookOpKind, TopOfBook

__all__ = ["BOOK_DEFAULTS", "COUNTERS", "LATENCY", "LOOKUP_LATENCY", "Level", "book_state", "LookupSignature", "CountersSignature",
           "MarketBook", "TRADING_STATES", "REG_SHO_ACTIONS"]

#: Default sizing, in one place. Estimated ECP5 block RAM (DP16KD, 18 kbit): order table 64, level words
#: 512 x 1697 bits ~48, lookup copy of the top 4 ~15, locate table 16384 x 17 bits twice (pipeline and
#: lookup read ports) ~34: about 160 of the 85F's 208.
BOOK_DEFAULTS = dict(capacity=8192, ways=4, symbols=512, depth=12, locates=16384, lookup_depth=4)

#: Trading-state and Reg SHO codes the locate table stores (index + 1; 0 = none seen, 7/3 = another code).
TRADING_STATES = "HPQT"
REG_SHO_ACTIONS = "012"

#: Counter names, each a 32-bit wrapping count.
COUNTERS = ("unknown_execute", "unknown_cancel", "unknown_delete", "unknown_replace", "duplicate_adds",
            "invalid_adds", "overfills", "table_full", "out_of_window", "out_of_range", "no_slot",
            "locate_mismatch")


class Level(data.Struct):
    px: unsigned(32)
    sz: unsigned(32)          # 0: empty entry (then px is 0 too)


def book_state(depth):
    """What the lookup port answers for one locate, with the top ``depth`` levels of each side."""
    return data.StructLayout({
        "bid_px": 32, "bid_sz": 32, "ask_px": 32, "ask_sz": 32,
        "trading_state": 8,        # last H code (ASCII), 0 until one is seen, "?" for an unexpected code
        "reg_sho": 8,              # last Y code (ASCII), likewise
        "flags": BookFlags,
        "out_of_range": 1,         # locate >= locates, or no slot: no book is known for it
        "no_slot": 1,              # the locate was refused a slot (slots exhausted)
        "bid_overflow": 1,         # the side has orders beyond the tracked levels
        "ask_overflow": 1,
        "bids": data.ArrayLayout(Level, depth),   # best first; empty entries are (0, 0)
        "asks": data.ArrayLayout(Level, depth),
    })


class LookupSignature(wiring.Signature):
    """Requester's view: drive ``locate``/``valid``; ``result``/``result_valid`` follow 4 cycles later."""

    def __init__(self, depth=BOOK_DEFAULTS["lookup_depth"]):
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise TypeError(f"depth must be a positive integer, not {depth!r}")
        self.depth = depth
        super().__init__({
            "valid": Out(1),
            "locate": Out(16),
            "result_valid": In(1),
            "result": In(book_state(depth)),
        })


class CountersSignature(wiring.Signature):
    def __init__(self):
        super().__init__({name: Out(32) for name in COUNTERS})


#: Cycles from a BookOp handshake to its TopOfBook record / ``applied`` strobe (every kind, REPLACE included).
LATENCY = 6
#: Cycles from a lookup request to its answer.
LOOKUP_LATENCY = 4


class _UKind(enum.Enum, shape=3):
    NOP = 0
    ADD = 1
    REDUCE = 2        # execute or cancel
    DELETE = 3
    REPL_DEL = 4      # first half of a replace
    REPL_ADD = 5      # second half (ref = new ref)
    STATE = 6
    SHO = 7


class _UOp(data.Struct):
    valid: unsigned(1)
    kind: _UKind
    op: BookOpKind
    last: unsigned(1)     # the last micro-op of its message (0 only for REPL_DEL)
    oor: unsigned(1)      # locate >= locates
    seq: unsigned(32)
    locate: unsigned(16)
    ref: unsigned(64)
    buy: unsigned(1)
    shares: unsigned(32)
    price: unsigned(32)
    code: unsigned(8)


def _log2(n):
    return n.bit_length() - 1


def _is_pow2(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1 and not v & (v - 1)


class _FwdMemory:
    """A block RAM read at cycle c and read-modify-written at cycle c+2.

    :meth:`read` takes an address at cycle c and returns the value at cycle c+2 as it is after every write
    made before cycle c+2: the registered RAM output, overridden by the last two writes (made at c and c+1,
    which the read port misses) when their address matches. Write with ``we``/``waddr``/``wdata`` (comb).
    While ``clearing`` the write port sweeps zeros instead. :meth:`read_raw` is a plain registered read.
    """

    def __init__(self, m, name, shape, depth, clearing, clear_addr):
        self.shape, self.depth, self._m, self._name = shape, depth, m, name
        self.mem = m.submodules[name] = memory.Memory(shape=shape, depth=depth, init=[])
        wp = self.mem.write_port()
        self.we = Signal(name=f"{name}_we")
        self.waddr = Signal(range(depth), name=f"{name}_waddr")
        self.wdata = Signal(shape, name=f"{name}_wdata")
        with m.If(clearing):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(clear_addr), wp.data.eq(0)]
        with m.Else():
            m.d.comb += [wp.en.eq(self.we), wp.addr.eq(self.waddr), wp.data.eq(self.wdata)]
        self._hist = []          # [0]: the write made one cycle ago, [1]: two cycles ago
        src = (wp.en, wp.addr, wp.data)
        for i in range(2):
            h = (Signal(name=f"{name}_h{i}_en"), Signal(range(depth), name=f"{name}_h{i}_addr"),
                 Signal(shape, name=f"{name}_h{i}_data"))
            m.d.sync += [h[0].eq(src[0]), h[1].eq(src[1]), h[2].eq(src[2])]
            self._hist.append(h)
            src = h
        self._ports = 0

    def _port(self, addr):
        m, n = self._m, f"{self._name}_r{self._ports}"
        self._ports += 1
        rp = self.mem.read_port()
        m.d.comb += rp.addr.eq(addr)
        raw = Signal(self.shape, name=f"{n}_raw")
        m.d.sync += raw.eq(rp.data)           # the registered RAM output
        return rp, raw, n

    def read(self, addr):
        m = self._m
        rp, raw, n = self._port(addr)
        a1 = Signal(range(self.depth), name=f"{n}_a1")
        a2 = Signal(range(self.depth), name=f"{n}_a2")
        m.d.sync += [a1.eq(rp.addr), a2.eq(a1)]
        merged = Signal(self.shape, name=f"{n}_merged")
        m.d.comb += merged.eq(raw)
        for en, haddr, hdata in reversed(self._hist):     # newest last, so it wins
            with m.If(en & (haddr == a2)):
                m.d.comb += merged.eq(hdata)
        return merged

    def read_raw(self, addr):
        return self._port(addr)[1]


class MarketBook(wiring.Component):
    """Locate table + order table + top-K price levels + top of book. See the module docstring for policy,
    semantics and timing.

    Parameters (defaults in :data:`BOOK_DEFAULTS`): ``capacity`` orders and ``ways`` per bucket (powers of
    two), ``symbols`` book slots (power of two), ``depth`` (K) tracked levels per side (2..32),
    ``locates`` size of the locate table (power of two, <= 65536), ``lookup_depth`` levels per side the
    lookup port returns (1..depth), ``fifo_depth`` output FIFO entries.

    Ports: ``i_stream`` (BookOp), ``o_stream`` (TopOfBook), ``lookup`` (:class:`LookupSignature`),
    ``counters`` (:class:`CountersSignature`), ``stale`` in, ``applied``/``applied_seq`` out (one-cycle
    strobe and the seq of each message as it takes effect, :attr:`LATENCY` cycles after its handshake).
    """

    LATENCY = LATENCY
    LOOKUP_LATENCY = LOOKUP_LATENCY

    def __init__(self, *, capacity=None, ways=None, symbols=None, depth=None, locates=None,
                 lookup_depth=None, fifo_depth=16):
        p = dict(BOOK_DEFAULTS)
        given = dict(capacity=capacity, ways=ways, symbols=symbols, depth=depth, locates=locates,
                     lookup_depth=lookup_depth)
        p.update({k: v for k, v in given.items() if v is not None})
        for k in ("capacity", "ways", "symbols", "locates"):
            if not _is_pow2(p[k]):
                raise TypeError(f"{k} must be a positive power of two, not {p[k]!r}")
        if p["ways"] > p["capacity"]:
            raise TypeError(f"ways ({p['ways']}) must not exceed capacity ({p['capacity']})")
        if p["symbols"] > 1 << 16 or p["locates"] > 1 << 16:
            raise TypeError("symbols and locates must be at most 65536")
        if not isinstance(p["depth"], int) or isinstance(p["depth"], bool) or not 2 <= p["depth"] <= 32:
            raise TypeError(f"depth must be an integer in 2..32, not {p['depth']!r}")
        ld = p["lookup_depth"]
        if not isinstance(ld, int) or isinstance(ld, bool) or not 1 <= ld <= p["depth"]:
            raise TypeError(f"lookup_depth must be an integer in 1..depth ({p['depth']}), not {ld!r}")
        if not isinstance(fifo_depth, int) or fifo_depth < self.LATENCY + 2:
            raise TypeError(f"fifo_depth must be an integer >= {self.LATENCY + 2}, not {fifo_depth!r}")
        self.capacity, self.ways, self.symbols = p["capacity"], p["ways"], p["symbols"]
        self.depth, self.locates, self.lookup_depth = p["depth"], p["locates"], ld
        self.fifo_depth = fifo_depth
        self.buckets = self.capacity // self.ways
        self.state_layout = book_state(ld)
        super().__init__({
            "i_stream": In(stream.Signature(BookOp)),
            "o_stream": Out(stream.Signature(TopOfBook)),
            "lookup": In(LookupSignature(ld)),
            "counters": Out(CountersSignature()),
            "stale": In(1),
            "applied": Out(1),
            "applied_seq": Out(32),
        })

    @property
    def clear_cycles(self):
        """Cycles the post-reset memory sweep takes."""
        return max(self.buckets, self.symbols, self.locates)

    def bucket_of(self, ref):
        """The bucket of an order reference: XOR fold of the 64-bit ref. Works on ints and on Values."""
        bits = _log2(self.buckets)
        if bits == 0:
            return 0
        mask = (1 << bits) - 1
        h = ref & mask
        for sh in range(bits, 64, bits):
            h = h ^ ((ref >> sh) & mask)
        return h

    def elaborate(self, platform):
        m = Module()
        K, S, NL, LD = self.depth, self.symbols, self.locates, self.lookup_depth
        sbits = max(1, _log2(S))
        lbits = _log2(NL)

        # ---- post-reset sweep of every memory
        clearing = Signal(init=1)
        clear_addr = Signal(range(self.clear_cycles + 1))
        with m.If(clearing):
            m.d.sync += clear_addr.eq(clear_addr + 1)
            with m.If(clear_addr == self.clear_cycles - 1):
                m.d.sync += clearing.eq(0)

        def fwdmem(name, shape, depth):
            return _FwdMemory(m, name, shape, depth, clearing, clear_addr[:max(1, _log2(depth))])

        entry_layout = data.StructLayout({
            "valid": 1, "ref": 64, "slot": sbits, "buy": 1, "shares": 32, "price": 32,
        })
        loc_layout = data.StructLayout({"has": 1, "lost": 1, "slot": sbits, "state": 3, "sho": 2})
        side_layout = data.StructLayout({
            "lv": data.ArrayLayout(Level, K), "ovf": 48, "bound": 32,
        })
        word_layout = data.StructLayout({"bid": side_layout, "ask": side_layout, "degraded": 1})
        top_layout = data.StructLayout({
            "bids": data.ArrayLayout(Level, LD), "asks": data.ArrayLayout(Level, LD),
            "degraded": 1, "bid_ovf": 1, "ask_ovf": 1, "bid_unknown": 1, "ask_unknown": 1,
        })

        ways = [fwdmem(f"way{i}", entry_layout, self.buckets) for i in range(self.ways)]
        loctab = fwdmem("loctab", loc_layout, NL)
        words = fwdmem("levels", word_layout, max(2, S))
        tops = fwdmem("tops", top_layout, max(2, S))

        counters = {name: getattr(self.counters, name) for name in COUNTERS}

        def count(name, cond=1):
            with m.If(cond):
                m.d.sync += counters[name].eq(counters[name] + 1)

        # ---- credits: the FIFO must take every row of every message in flight
        out_fifo = m.submodules.out_fifo = fifo.SyncFIFO(width=TopOfBook.as_shape().size,
                                                         depth=self.fifo_depth)
        in_flight = Signal(range(self.fifo_depth + 1))
        retire = Signal()
        accept = Signal()
        m.d.sync += in_flight.eq(in_flight + accept - retire)
        hold = Signal(_UOp)      # the REPL_ADD half of a REPLACE, issued the cycle after
        m.d.comb += self.i_stream.ready.eq(~clearing & ~hold.valid &
                                           (out_fifo.level + in_flight < self.fifo_depth))
        m.d.comb += accept.eq(self.i_stream.valid & self.i_stream.ready)

        # ---- stage 0: BookOp -> micro-op; issue the order-table and locate-table reads
        op = self.i_stream.payload
        u0 = Signal(_UOp)
        with m.If(hold.valid):
            m.d.comb += u0.eq(hold)
            m.d.sync += hold.valid.eq(0)
        with m.Elif(accept):
            m.d.comb += [
                u0.valid.eq(1), u0.op.eq(op.kind), u0.last.eq(1), u0.seq.eq(op.seq),
                u0.locate.eq(op.locate), u0.ref.eq(op.ref), u0.buy.eq(op.buy), u0.shares.eq(op.shares),
                u0.price.eq(op.price), u0.code.eq(op.code), u0.oor.eq(op.locate >= NL),
            ]
            with m.Switch(op.kind):
                with m.Case(BookOpKind.ADD):
                    m.d.comb += u0.kind.eq(_UKind.ADD)
                with m.Case(BookOpKind.EXECUTE, BookOpKind.CANCEL):
                    m.d.comb += u0.kind.eq(_UKind.REDUCE)
                with m.Case(BookOpKind.DELETE):
                    m.d.comb += u0.kind.eq(_UKind.DELETE)
                with m.Case(BookOpKind.REPLACE):
                    m.d.comb += [u0.kind.eq(_UKind.REPL_DEL), u0.last.eq(0)]
                    m.d.sync += [
                        hold.valid.eq(1), hold.kind.eq(_UKind.REPL_ADD), hold.op.eq(op.kind),
                        hold.last.eq(1), hold.seq.eq(op.seq), hold.locate.eq(op.locate),
                        hold.ref.eq(op.new_ref), hold.shares.eq(op.shares), hold.price.eq(op.price),
                        hold.oor.eq(op.locate >= NL),
                    ]
                with m.Case(BookOpKind.TRADING_STATE):
                    m.d.comb += u0.kind.eq(_UKind.STATE)
                with m.Case(BookOpKind.REG_SHO):
                    m.d.comb += u0.kind.eq(_UKind.SHO)
                with m.Default():
                    m.d.comb += u0.kind.eq(_UKind.NOP)

        way_rd = [w.read(self.bucket_of(u0.ref)) for w in ways]
        loc_rd = loctab.read(u0.locate[:lbits] if lbits else 0)

        u1 = Signal(_UOp)
        u2 = Signal(_UOp)
        m.d.sync += [u1.eq(u0), u2.eq(u1)]

        # ---- stage 2: tag compare; order-table and locate-table read-modify-write; level-word read
        hits = Signal(self.ways)
        frees = Signal(self.ways)
        for i, e in enumerate(way_rd):
            m.d.comb += [hits[i].eq(e.valid & (e.ref == u2.ref)), frees[i].eq(~e.valid)]
        hit = hits.any()
        hit_entry = Signal(entry_layout)
        for i, e in enumerate(way_rd):
            with m.If(hits[i]):
                m.d.comb += hit_entry.eq(e)
        free_1h = frees & -frees   # lowest free way

        alloc = Signal(range(S + 1))            # next free slot
        mismatch_seen = Signal()                # sticky: an op named an order of another locate
        rd_found = Signal()                     # the previous micro-op was a REPL_DEL that found its order
        rd_buy = Signal()

        loc_new = Signal(loc_layout)
        m.d.comb += loc_new.eq(loc_rd)
        loc_we = Signal()
        entry_new = Signal(entry_layout)
        way_we = Signal(self.ways)

        slot2 = Signal(sbits)                   # the message's slot (allocated now for a first add)
        has2 = Signal()
        m.d.comb += [slot2.eq(loc_rd.slot), has2.eq(loc_rd.has & ~u2.oor)]

        # level op handed to stage 4
        lv_layout = data.StructLayout({
            "valid": 1, "inc": 1, "buy": 1, "price": 32, "mag": 32, "slot": sbits, "has": 1,
            "degrade": 1, "lost_row": 1, "mismatch": 1,
        })
        lv2 = Signal(lv_layout)
        m.d.comb += [lv2.slot.eq(slot2), lv2.has.eq(has2), lv2.mismatch.eq(mismatch_seen)]

        k = u2.kind
        found = hit & has2 & (hit_entry.slot == loc_rd.slot)
        valid_add = (u2.shares != 0) & (u2.price != 0)
        with m.If(u2.valid & u2.oor):
            count("out_of_range", k != _UKind.NOP)
        with m.Elif(u2.valid):
            with m.Switch(k):
                with m.Case(_UKind.ADD):
                    with m.If(hit):
                        count("duplicate_adds")
                    with m.Elif(~valid_add):
                        count("invalid_adds")
                    with m.Else():
                        can = Signal()
                        with m.If(loc_rd.has):
                            m.d.comb += can.eq(1)
                        with m.Elif(alloc < S):
                            m.d.comb += [can.eq(1), slot2.eq(alloc[:sbits]), has2.eq(1), loc_we.eq(1),
                                         loc_new.has.eq(1), loc_new.slot.eq(alloc[:sbits])]
                            m.d.sync += alloc.eq(alloc + 1)
                        with m.Else():
                            count("no_slot")
                            with m.If(~loc_rd.lost):
                                m.d.comb += [loc_we.eq(1), loc_new.lost.eq(1), lv2.lost_row.eq(1)]
                        with m.If(can):
                            with m.If(frees == 0):
                                count("table_full")
                                m.d.comb += lv2.degrade.eq(1)
                            with m.Else():
                                m.d.comb += [
                                    way_we.eq(free_1h),
                                    entry_new.valid.eq(1), entry_new.ref.eq(u2.ref), entry_new.slot.eq(slot2),
                                    entry_new.buy.eq(u2.buy), entry_new.shares.eq(u2.shares),
                                    entry_new.price.eq(u2.price),
                                    lv2.valid.eq(1), lv2.inc.eq(1), lv2.buy.eq(u2.buy),
                                    lv2.price.eq(u2.price), lv2.mag.eq(u2.shares),
                                ]
                with m.Case(_UKind.REDUCE, _UKind.DELETE, _UKind.REPL_DEL):
                    with m.If(found):
                        full = (k != _UKind.REDUCE) | (u2.shares >= hit_entry.shares)
                        count("overfills", (k == _UKind.REDUCE) & (u2.shares > hit_entry.shares))
                        m.d.comb += [
                            way_we.eq(hits), entry_new.eq(hit_entry),
                            lv2.valid.eq(1), lv2.inc.eq(0), lv2.buy.eq(hit_entry.buy),
                            lv2.price.eq(hit_entry.price),
                        ]
                        with m.If(full):
                            m.d.comb += [entry_new.valid.eq(0), lv2.mag.eq(hit_entry.shares)]
                        with m.Else():
                            m.d.comb += [entry_new.shares.eq(hit_entry.shares - u2.shares),
                                         lv2.mag.eq(u2.shares)]
                    with m.Elif(hit):
                        count("locate_mismatch")
                        m.d.sync += mismatch_seen.eq(1)
                        m.d.comb += lv2.mismatch.eq(1)
                    with m.Else():
                        count("unknown_execute", u2.op == BookOpKind.EXECUTE)
                        count("unknown_cancel", u2.op == BookOpKind.CANCEL)
                        count("unknown_delete", u2.op == BookOpKind.DELETE)
                        count("unknown_replace", u2.op == BookOpKind.REPLACE)
                with m.Case(_UKind.REPL_ADD):
                    with m.If(rd_found):
                        with m.If(hit):
                            count("duplicate_adds")
                        with m.Elif(~valid_add):
                            count("invalid_adds")
                        with m.Elif(frees == 0):
                            count("table_full")
                            m.d.comb += lv2.degrade.eq(1)
                        with m.Else():
                            m.d.comb += [
                                way_we.eq(free_1h),
                                entry_new.valid.eq(1), entry_new.ref.eq(u2.ref), entry_new.slot.eq(slot2),
                                entry_new.buy.eq(rd_buy), entry_new.shares.eq(u2.shares),
                                entry_new.price.eq(u2.price),
                                lv2.valid.eq(1), lv2.inc.eq(1), lv2.buy.eq(rd_buy),
                                lv2.price.eq(u2.price), lv2.mag.eq(u2.shares),
                            ]
                with m.Case(_UKind.STATE):
                    m.d.comb += loc_we.eq(1)
                    for i, c in enumerate(TRADING_STATES):
                        with m.If(u2.code == ord(c)):
                            m.d.comb += loc_new.state.eq(i + 1)
                    with m.If(~u2.code.matches(*(ord(c) for c in TRADING_STATES))):
                        m.d.comb += loc_new.state.eq(7)
                with m.Case(_UKind.SHO):
                    m.d.comb += loc_we.eq(1)
                    for i, c in enumerate(REG_SHO_ACTIONS):
                        with m.If(u2.code == ord(c)):
                            m.d.comb += loc_new.sho.eq(i + 1)
                    with m.If(~u2.code.matches(*(ord(c) for c in REG_SHO_ACTIONS))):
                        m.d.comb += loc_new.sho.eq(3)
        m.d.sync += [rd_found.eq(u2.valid & (k == _UKind.REPL_DEL) & found), rd_buy.eq(hit_entry.buy)]

        b2 = self.bucket_of(u2.ref)
        for i, w in enumerate(ways):
            m.d.comb += [w.we.eq(way_we[i]), w.waddr.eq(b2), w.wdata.eq(entry_new)]
        m.d.comb += [loctab.we.eq(loc_we), loctab.waddr.eq(u2.locate[:lbits] if lbits else 0),
                     loctab.wdata.eq(loc_new)]
        word_rd = words.read(slot2)

        # ---- stage 3: carry the micro-op and its level op
        u3, u4 = Signal(_UOp), Signal(_UOp)
        lv3, lv4 = Signal(lv_layout), Signal(lv_layout)
        m.d.sync += [u3.eq(u2), u4.eq(u3), lv3.eq(lv2), lv4.eq(lv3)]

        # ---- stage 4: level read-modify-write (the K-wide compare and shift), BBO change
        op4 = lv4
        side = Signal(side_layout)
        m.d.comb += side.eq(Mux(op4.buy, word_rd.bid.as_value(), word_rd.ask.as_value()))
        e = side.lv
        p, d = op4.price, op4.mag
        live = [Signal(name=f"live{i}") for i in range(K)]
        match = Signal(K)
        better = Signal(K)       # p strictly better than entry i (or entry i empty): 0..01..1
        zero = Signal(K)         # entry i would empty (its size equals the shares taken)
        for i in range(K):
            m.d.comb += [
                live[i].eq(e[i].sz != 0),
                match[i].eq(live[i] & (e[i].px == p)),
                better[i].eq(~live[i] | Mux(op4.buy, p > e[i].px, p < e[i].px)),
                zero[i].eq(e[i].sz == d),
            ]
        hit_lv = match.any()
        ovf_any = side.ovf != 0
        beats_bound = Mux(op4.buy, p > side.bound, p < side.bound)
        new_side = Signal(side_layout)
        m.d.comb += new_side.eq(side)
        to_ovf = Signal()       # an add goes to overflow
        push = Signal()         # an add pushes the K-th level out
        with m.If(op4.valid & op4.has):
            with m.If(op4.inc):
                with m.If(hit_lv):
                    for i in range(K):
                        with m.If(match[i]):
                            m.d.comb += new_side.lv[i].sz.eq(e[i].sz + d)
                with m.Elif((~ovf_any | beats_bound) & better[K - 1]):
                    for i in range(K):
                        with m.If(better[i]):
                            if i == 0:
                                m.d.comb += [new_side.lv[0].px.eq(p), new_side.lv[0].sz.eq(d)]
                            else:
                                with m.If(better[i - 1]):
                                    m.d.comb += new_side.lv[i].eq(e[i - 1])
                                with m.Else():
                                    m.d.comb += [new_side.lv[i].px.eq(p), new_side.lv[i].sz.eq(d)]
                    with m.If(live[K - 1]):
                        m.d.comb += [push.eq(1), new_side.ovf.eq(side.ovf + e[K - 1].sz),
                                     new_side.bound.eq(e[K - 1].px)]
                with m.Else():
                    m.d.comb += [to_ovf.eq(1), new_side.ovf.eq(side.ovf + d)]
                    with m.If(~ovf_any | beats_bound):
                        m.d.comb += new_side.bound.eq(p)
            with m.Else():
                with m.If(hit_lv):
                    removed = Signal(K)      # entries at or after an emptied match shift up
                    for i in range(K):
                        m.d.comb += removed[i].eq((match[:i + 1] & zero[:i + 1]).any())
                    for i in range(K):
                        nxt = e[i + 1].as_value() if i + 1 < K else Const(0, Level.as_shape().size)
                        with m.If(removed[i]):
                            m.d.comb += new_side.lv[i].eq(nxt)
                        with m.Elif(match[i]):
                            m.d.comb += new_side.lv[i].sz.eq(e[i].sz - d)
                with m.Else():
                    m.d.comb += new_side.ovf.eq(side.ovf - d)
                    with m.If(side.ovf == d):
                        m.d.comb += new_side.bound.eq(0)
        count("out_of_window", to_ovf | push)

        word_new = Signal(word_layout)
        m.d.comb += word_new.eq(word_rd)
        with m.If(op4.buy):
            m.d.comb += word_new.bid.eq(new_side)
        with m.Else():
            m.d.comb += word_new.ask.eq(new_side)
        with m.If(op4.degrade):
            m.d.comb += word_new.degraded.eq(1)
        we4 = u4.valid & op4.has & (op4.valid | op4.degrade)
        m.d.comb += [words.we.eq(we4), words.waddr.eq(op4.slot), words.wdata.eq(word_new)]

        def bbo(w):
            return Cat(w.bid.lv[0].px, w.bid.lv[0].sz, w.ask.lv[0].px, w.ask.lv[0].sz)

        def unknown(s):
            return ~s.lv[0].sz.any() & s.ovf.any()

        top_new = Signal(top_layout)
        m.d.comb += [
            top_new.degraded.eq(word_new.degraded),
            top_new.bid_ovf.eq(word_new.bid.ovf != 0), top_new.ask_ovf.eq(word_new.ask.ovf != 0),
            top_new.bid_unknown.eq(unknown(word_new.bid)), top_new.ask_unknown.eq(unknown(word_new.ask)),
        ]
        for i in range(LD):
            m.d.comb += [top_new.bids[i].eq(word_new.bid.lv[i]), top_new.asks[i].eq(word_new.ask.lv[i])]
        m.d.comb += [tops.we.eq(we4), tops.waddr.eq(op4.slot), tops.wdata.eq(top_new)]

        def shown(w):      # what a row shows of a slot: its BBO and its flags
            return Cat(bbo(w), unknown(w.bid) | unknown(w.ask), w.degraded)

        # a REPLACE compares the slot after its add half with the slot before its delete half
        before_held = Signal(130)
        m.d.sync += before_held.eq(shown(word_rd))
        before = Mux(u4.kind == _UKind.REPL_ADD, before_held, shown(word_rd))
        after = shown(word_new)
        emit = u4.valid & u4.last & (op4.has & (before != after) | op4.lost_row)

        row = Signal(TopOfBook)
        m.d.comb += [
            row.seq.eq(u4.seq), row.locate.eq(u4.locate),
            row.flags.stale.eq(self.stale),
            row.flags.degraded.eq(op4.mismatch | op4.lost_row | op4.has & word_new.degraded),
            row.flags.out_of_window.eq(op4.has & (unknown(word_new.bid) | unknown(word_new.ask))),
        ]
        with m.If(op4.has):
            m.d.comb += [row.bid_px.eq(word_new.bid.lv[0].px), row.bid_sz.eq(word_new.bid.lv[0].sz),
                         row.ask_px.eq(word_new.ask.lv[0].px), row.ask_sz.eq(word_new.ask.lv[0].sz)]

        # ---- stage 5: row register (skipped by REPLACE's add half, issued a cycle later); stage 6: out
        last4 = u4.valid & u4.last
        is_radd = u4.kind == _UKind.REPL_ADD
        r5, r5_row, r5_done = Signal(), Signal(TopOfBook), Signal()
        m.d.sync += [r5.eq(emit & ~is_radd), r5_row.eq(row), r5_done.eq(last4 & ~is_radd)]
        o_valid, o_row, o_done = Signal(), Signal(TopOfBook), Signal()
        with m.If(last4 & is_radd):
            m.d.sync += [o_valid.eq(emit), o_row.eq(row), o_done.eq(1)]
        with m.Else():
            m.d.sync += [o_valid.eq(r5), o_row.eq(r5_row), o_done.eq(r5_done)]
        m.d.comb += [self.applied.eq(o_done), self.applied_seq.eq(o_row.seq), retire.eq(o_done)]

        # output: the FIFO is bypassed while empty
        m.d.comb += [
            out_fifo.w_data.eq(o_row), out_fifo.w_en.eq(o_valid & (out_fifo.r_rdy | ~self.o_stream.ready)),
            self.o_stream.valid.eq(out_fifo.r_rdy | o_valid),
            self.o_stream.payload.eq(Mux(out_fifo.r_rdy, out_fifo.r_data, o_row)),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]

        # ---- lookup port: locate table (2 cycles), then the slot's top levels (2 cycles)
        lk = self.lookup
        l_loc = loctab.read_raw(lk.locate[:lbits] if lbits else 0)
        l_oor = [Signal(name=f"l_oor{i}") for i in range(4)]
        l_v = [Signal(name=f"l_v{i}") for i in range(4)]
        m.d.sync += [l_oor[0].eq(lk.locate >= NL), l_v[0].eq(lk.valid)]
        for i in range(1, 4):
            m.d.sync += [l_oor[i].eq(l_oor[i - 1]), l_v[i].eq(l_v[i - 1])]
        l_top = tops.read_raw(l_loc.slot)
        l_loc3, l_loc4 = Signal(loc_layout), Signal(loc_layout)
        m.d.sync += [l_loc3.eq(l_loc), l_loc4.eq(l_loc3)]
        res = lk.result
        known = ~l_oor[3] & l_loc4.has
        with m.If(known):
            m.d.comb += [
                res.bid_px.eq(l_top.bids[0].px), res.bid_sz.eq(l_top.bids[0].sz),
                res.ask_px.eq(l_top.asks[0].px), res.ask_sz.eq(l_top.asks[0].sz),
                res.flags.degraded.eq(l_top.degraded | mismatch_seen),
                res.flags.out_of_window.eq(l_top.bid_unknown | l_top.ask_unknown),
                res.bid_overflow.eq(l_top.bid_ovf), res.ask_overflow.eq(l_top.ask_ovf),
                res.bids.eq(l_top.bids), res.asks.eq(l_top.asks),
            ]
        with m.If(~l_oor[3]):
            with m.Switch(l_loc4.state):
                for i, c in enumerate(TRADING_STATES):
                    with m.Case(i + 1):
                        m.d.comb += res.trading_state.eq(ord(c))
                with m.Case(7):
                    m.d.comb += res.trading_state.eq(ord("?"))
            with m.Switch(l_loc4.sho):
                for i, c in enumerate(REG_SHO_ACTIONS):
                    with m.Case(i + 1):
                        m.d.comb += res.reg_sho.eq(ord(c))
                with m.Case(3):
                    m.d.comb += res.reg_sho.eq(ord("?"))
            m.d.comb += res.no_slot.eq(l_loc4.lost)
        m.d.comb += [res.flags.stale.eq(self.stale), res.out_of_range.eq(~known),
                     lk.result_valid.eq(l_v[3])]
        return m
