"""The order book: BookOp stream in, TopOfBook stream out, plus a BBO/state lookup port for the risk gate.

:class:`MarketBook` keeps

* an **order table**: ``capacity`` orders in ``ways`` block RAMs (one per way) of ``capacity // ways``
  buckets, indexed by an XOR fold of the 64-bit order reference (:meth:`MarketBook.bucket_of`) and matched
  by a full 64-bit tag compare. An add that finds its bucket full is dropped, counted (``table_full``) and
  its symbol is flagged ``degraded`` for good (until reset): the book never silently misses an order.
* **price levels**: per symbol (``locate < symbols``; larger locates are counted in ``out_of_range`` and
  ignored) and side, the exact aggregate size of ``window`` levels of ``tick`` price units each, plus a
  ``window``-bit occupancy bitmap.
* a **top-of-book** record per symbol (what the lookup port answers and the output stream prints).

Window policy (no recentering): a symbol's window base is fixed by its first add whose price is a multiple
of ``tick``: the window covers ``window`` ticks centred on that price (``base = price/tick - window/2``,
clamped at 0), the same range for bids and asks. An order outside the window (or at a price that is not a
multiple of ``tick``) stays in the order table (so its executions, cancels and deletes are still matched)
but not in the levels; it is counted in ``out_of_window`` and, while any such order is live, its symbol's
``out_of_window`` flag is set: the best price printed for that symbol may then be wrong (the true best
could be outside the window), and the flag says so. Recentering is left for later (it needs a sweep of the
symbol's orders).

Semantics follow :class:`tickgate.model.book.OrderBook` (duplicate adds ignored, first wins; adds of 0
shares or price 0 ignored; executions clamp at the shares left; unknown references counted per kind, no
book change; a replace of an unknown reference adds nothing). One difference by design: an operation on
an existing order is matched on its reference *and* the message's locate (ITCH guarantees they agree); a
mismatch counts as an unknown reference.

A TopOfBook record is emitted for exactly those messages that change their symbol's best bid or best ask
(price or size). Its flags: ``stale`` is the ``stale`` input (a MoldUDP64 gap), ``degraded`` and
``out_of_window`` are the symbol's flags after the message.

Latency and rate: one BookOp per cycle, except REPLACE, which takes two cycles (it is run as a delete
and an add; the input is not ready in the cycle after a REPLACE). From the input handshake to the output
handshake is exactly :attr:`MarketBook.LATENCY` cycles (``LATENCY + 1`` for a REPLACE) while the output is
ready. Read-modify-write hazards between consecutive operations (same order, bucket, level or symbol) are
resolved by forwarding from the last two writes of each memory, never by stalling. Every block RAM output
is registered. Backpressure on the output is absorbed by a FIFO; the input is held off (credits) only when
the FIFO could overflow. After reset the block sweeps its memories to zero (input not ready) for
``symbols * 2 * window`` cycles (or ``capacity // ways``, whichever is larger).

Timing: not yet measured on the ECP5 (place and route of the default sizing is still to do). The longest
path is expected in stage 2 (forwarding mux, four 64-bit tag compares, way select, the new entry and the
symbol-state update in one cycle); if it misses 156 MHz, split the tag compare into its own stage (the
forwarding then covers three writes instead of two).

Lookup port: ``lookup.locate``/``lookup.valid`` in at cycle 0, ``lookup.result``/``lookup.result_valid``
out at cycle :attr:`MarketBook.LOOKUP_LATENCY` (2); the answer reflects every message whose TopOfBook
stage finished before the request.
"""

# No `from __future__ import annotations`: Amaranth reads the annotations as shapes.
from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .book_records import BookFlags, BookOp, BookOpKind, TopOfBook

__all__ = ["BOOK_DEFAULTS", "BookState", "LookupSignature", "CountersSignature", "MarketBook"]

#: Default sizing, in one place. Estimated ECP5 block RAM (18 kbit each): order table ~56, price levels
#: 2 x 32 (written once, read twice: Yosys duplicates it), the rest a few: about 125 of the 85F's 208.
BOOK_DEFAULTS = dict(capacity=8192, ways=4, symbols=64, window=128, tick=100)


class BookState(data.Struct):
    """What the lookup port answers for one locate."""
    bid_px: unsigned(32)
    bid_sz: unsigned(32)
    ask_px: unsigned(32)
    ask_sz: unsigned(32)
    trading_state: unsigned(8)   # last H code (ASCII, e.g. ord("T")), 0 until one is seen
    reg_sho: unsigned(8)         # last Y code (ASCII "0"/"1"/"2"), 0 until one is seen
    flags: BookFlags
    out_of_range: unsigned(1)    # locate >= symbols: nothing is known about it


class LookupSignature(wiring.Signature):
    """Requester's view: drive ``locate``/``valid``; ``result``/``result_valid`` follow 2 cycles later."""

    def __init__(self):
        super().__init__({
            "valid": Out(1),
            "locate": Out(16),
            "result_valid": In(1),
            "result": In(BookState),
        })


#: Counter names, each a 32-bit wrapping count.
COUNTERS = ("unknown_execute", "unknown_cancel", "unknown_delete", "unknown_replace", "duplicate_adds",
            "invalid_adds", "overfills", "table_full", "out_of_window", "out_of_range")


class CountersSignature(wiring.Signature):
    def __init__(self):
        super().__init__({name: Out(32) for name in COUNTERS})


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
    seq: unsigned(32)
    locate: unsigned(16)
    ref: unsigned(64)
    buy: unsigned(1)
    shares: unsigned(32)
    price: unsigned(32)
    code: unsigned(8)


def _log2(n):
    return n.bit_length() - 1


def _priority(bits, width, high):
    """(any, index) of the highest (``high``) or lowest set bit of ``bits``: a log2(width)-deep tree."""
    if width == 1:
        return bits[0], Const(0, 0)
    half = width // 2
    lo_any, lo_idx = _priority(bits[:half], half, high)
    hi_any, hi_idx = _priority(bits[half:], half, high)
    take_hi = hi_any if high else ~lo_any
    return lo_any | hi_any, Mux(take_hi, Cat(hi_idx, Const(1, 1)), Cat(lo_idx, Const(0, 1)))


class _FwdMemory:
    """A block RAM read at cycle c and read-modify-written at cycle c+2.

    :meth:`read` takes an address at cycle c and returns the value at cycle c+2 as it is after every write
    made before cycle c+2: the (registered) RAM output, overridden by the last two writes (made at c and
    c+1, which a read-before-write port misses) when their address matches. Write with ``we``/``waddr``/
    ``wdata`` (comb). While ``clearing`` the write port sweeps zeros instead.
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
        # hist[0]: the write made one cycle ago, hist[1]: two cycles ago.
        self._hist = []
        for i in range(2):
            h = (Signal(name=f"{name}_h{i}_en"), Signal(range(depth), name=f"{name}_h{i}_addr"),
                 Signal(shape, name=f"{name}_h{i}_data"))
            self._hist.append(h)
        src = (wp.en, wp.addr, wp.data)
        for h in self._hist:
            m.d.sync += [h[0].eq(src[0]), h[1].eq(src[1]), h[2].eq(src[2])]
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
        """Plain read: the RAM content after writes made before cycle c, at cycle c+2 (no forwarding)."""
        return self._port(addr)[1]


class MarketBook(wiring.Component):
    """Order table + price levels + top of book. See the module docstring for policy and semantics.

    Parameters (defaults in :data:`BOOK_DEFAULTS`): ``capacity`` orders (power of two), ``ways`` per
    bucket (power of two), ``symbols`` locates tracked (power of two), ``window`` price levels per side
    (power of two, >= 2), ``tick`` price units per level, ``fifo_depth`` output FIFO entries.

    Ports: ``i_stream`` (BookOp), ``o_stream`` (TopOfBook), ``lookup`` (:class:`LookupSignature`),
    ``counters`` (:class:`CountersSignature`), ``stale`` in.

    Latency :attr:`LATENCY` cycles from BookOp handshake to TopOfBook handshake (REPLACE: one more);
    rate one op per cycle (REPLACE: two cycles); lookup answered in :attr:`LOOKUP_LATENCY` cycles.
    """

    LATENCY = 10
    LOOKUP_LATENCY = 2

    def __init__(self, *, capacity=None, ways=None, symbols=None, window=None, tick=None, fifo_depth=16):
        p = dict(BOOK_DEFAULTS)
        for k, v in dict(capacity=capacity, ways=ways, symbols=symbols, window=window, tick=tick).items():
            if v is not None:
                p[k] = v
        for k in ("capacity", "ways", "symbols", "window"):
            v = p[k]
            if not isinstance(v, int) or v < 1 or v & (v - 1):
                raise TypeError(f"{k} must be a positive power of two, not {v!r}")
        if p["window"] < 2:
            raise TypeError(f"window must be at least 2, not {p['window']!r}")
        if p["ways"] > p["capacity"]:
            raise TypeError(f"ways ({p['ways']}) must not exceed capacity ({p['capacity']})")
        if p["symbols"] > 1 << 16:
            raise TypeError(f"symbols must be at most 65536, not {p['symbols']!r}")
        if not isinstance(p["tick"], int) or not 1 <= p["tick"] < 1 << 16:
            raise TypeError(f"tick must be an integer in 1..65535, not {p['tick']!r}")
        if not isinstance(fifo_depth, int) or fifo_depth < self.LATENCY + 2:
            raise TypeError(f"fifo_depth must be an integer >= {self.LATENCY + 2}, not {fifo_depth!r}")
        self.capacity, self.ways, self.symbols = p["capacity"], p["ways"], p["symbols"]
        self.window, self.tick, self.fifo_depth = p["window"], p["tick"], fifo_depth
        self.buckets = self.capacity // self.ways
        super().__init__({
            "i_stream": In(stream.Signature(BookOp)),
            "o_stream": Out(stream.Signature(TopOfBook)),
            "lookup": In(LookupSignature()),
            "counters": Out(CountersSignature()),
            "stale": In(1),
        })

    @property
    def clear_cycles(self):
        """Cycles the post-reset memory sweep takes."""
        return max(self.buckets, self.symbols * 2 * self.window, self.symbols)

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
        W, S, TICK = self.window, self.symbols, self.tick
        wbits, sbits = _log2(W), _log2(S)

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
            "valid": 1, "ref": 64, "locate": 16, "buy": 1, "shares": 32, "idx": wbits, "inwin": 1,
        })
        sym_layout = data.StructLayout({
            "base_valid": 1, "base": 32, "degraded": 1, "oow_live": range(self.capacity + 1),
            "trading_state": 8, "reg_sho": 8,
        })
        side_layout = data.StructLayout({"px": 32, "sz": 32})
        tob_layout = data.StructLayout({"bid": side_layout, "ask": side_layout})

        ways = [fwdmem(f"way{i}", entry_layout, self.buckets) for i in range(self.ways)]
        sym = fwdmem("sym", sym_layout, S)
        levels = fwdmem("levels", 32, S * 2 * W)
        bitmap = fwdmem("bitmap", W, S * 2)
        tob = fwdmem("tob", tob_layout, S)

        counters = {name: getattr(self.counters, name) for name in ("unknown_execute", "unknown_cancel",
                    "unknown_delete", "unknown_replace", "duplicate_adds", "invalid_adds", "overfills",
                    "table_full", "out_of_window", "out_of_range")}

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

        # ---- stage 0: BookOp -> micro-op; issue table and symbol reads
        op = self.i_stream.payload
        u0 = Signal(_UOp)
        with m.If(hold.valid):
            m.d.comb += u0.eq(hold)
            m.d.sync += hold.valid.eq(0)
        with m.Elif(accept):
            m.d.comb += [
                u0.valid.eq(1), u0.op.eq(op.kind), u0.last.eq(1), u0.seq.eq(op.seq),
                u0.locate.eq(op.locate), u0.ref.eq(op.ref), u0.buy.eq(op.buy), u0.shares.eq(op.shares),
                u0.price.eq(op.price), u0.code.eq(op.code),
            ]
            with m.If(op.locate >= S):
                m.d.comb += u0.kind.eq(_UKind.NOP)
                count("out_of_range", op.kind.as_value().matches(
                    BookOpKind.ADD, BookOpKind.EXECUTE, BookOpKind.CANCEL, BookOpKind.DELETE,
                    BookOpKind.REPLACE, BookOpKind.TRADING_STATE, BookOpKind.REG_SHO))
            with m.Else():
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
                        ]
                    with m.Case(BookOpKind.TRADING_STATE):
                        m.d.comb += u0.kind.eq(_UKind.STATE)
                    with m.Case(BookOpKind.REG_SHO):
                        m.d.comb += u0.kind.eq(_UKind.SHO)
                    with m.Default():
                        m.d.comb += u0.kind.eq(_UKind.NOP)

        bucket0 = self.bucket_of(u0.ref)
        way_rd = [w.read(bucket0) for w in ways]
        sym_rd = sym.read(u0.locate[:sbits] if sbits else 0)

        # ---- stage 1: price -> ticks (multiply by the reciprocal; exact for every 32-bit price)
        u1 = Signal(_UOp)
        u2 = Signal(_UOp)
        m.d.sync += [u1.eq(u0), u2.eq(u1)]
        lt = (TICK - 1).bit_length()
        shift = 32 + lt
        recip = -(-(1 << shift) // TICK)
        q2 = Signal(32)
        m.d.sync += q2.eq((u1.price * recip) >> shift)

        # ---- stage 2: order table and symbol state read-modify-write
        hits = Signal(self.ways)
        frees = Signal(self.ways)
        for i, e in enumerate(way_rd):
            m.d.comb += [hits[i].eq(e.valid & (e.ref == u2.ref)), frees[i].eq(~e.valid)]
        hit = hits.any()
        hit_entry = Signal(entry_layout)
        for i, e in enumerate(way_rd):
            with m.If(hits[i]):
                m.d.comb += hit_entry.eq(e)
        hit_way_1h = hits          # at most one way holds a given ref
        free_1h = frees & -frees   # lowest free way
        found = hit & (hit_entry.locate == u2.locate)

        # the window index of the micro-op's price (adds)
        exact = q2 * TICK == u2.price
        base_new = Mux(q2 >= W // 2, q2 - W // 2, 0)
        base = Mux(sym_rd.base_valid, sym_rd.base, base_new)
        add_idx = (q2 - base)[:wbits]
        add_inwin = exact & (q2 >= base) & (q2 - base < W)

        # the previous micro-op's REPL_DEL result, for its REPL_ADD
        rd_found = Signal()
        rd_buy = Signal()

        sym_new = Signal(sym_layout)
        m.d.comb += sym_new.eq(sym_rd)
        entry_new = Signal(entry_layout)
        way_we = Signal(self.ways)

        # level op handed to stage 3
        lv_valid = Signal()
        lv_inc = Signal()
        lv_mag = Signal(32)
        lv_buy = Signal()
        lv_idx = Signal(wbits)

        k = u2.kind
        is_add = u2.valid & (k == _UKind.ADD) | (k == _UKind.REPL_ADD) & rd_found
        add_buy = Mux(k == _UKind.REPL_ADD, rd_buy, u2.buy)
        with m.If(u2.valid):
            with m.If(is_add):
                with m.If(~sym_rd.base_valid & exact):
                    m.d.comb += [sym_new.base_valid.eq(1), sym_new.base.eq(base_new)]
                with m.If(hit):
                    count("duplicate_adds")
                with m.Elif((u2.shares == 0) | (u2.price == 0)):
                    count("invalid_adds")
                with m.Elif(frees == 0):
                    count("table_full")
                    m.d.comb += sym_new.degraded.eq(1)
                with m.Else():
                    m.d.comb += [
                        way_we.eq(free_1h),
                        entry_new.valid.eq(1), entry_new.ref.eq(u2.ref), entry_new.locate.eq(u2.locate),
                        entry_new.buy.eq(add_buy), entry_new.shares.eq(u2.shares),
                        entry_new.idx.eq(add_idx), entry_new.inwin.eq(add_inwin),
                        lv_valid.eq(add_inwin), lv_inc.eq(1), lv_mag.eq(u2.shares), lv_buy.eq(add_buy),
                        lv_idx.eq(add_idx),
                    ]
                    with m.If(~add_inwin):
                        count("out_of_window")
                        m.d.comb += sym_new.oow_live.eq(sym_rd.oow_live + 1)
            with m.If(k.as_value().matches(_UKind.REDUCE, _UKind.DELETE, _UKind.REPL_DEL)):
                with m.If(found):
                    full = (k != _UKind.REDUCE) | (u2.shares >= hit_entry.shares)
                    count("overfills", (k == _UKind.REDUCE) & (u2.shares > hit_entry.shares))
                    m.d.comb += [
                        way_we.eq(hit_way_1h),
                        entry_new.eq(hit_entry),
                        lv_valid.eq(hit_entry.inwin), lv_inc.eq(0), lv_buy.eq(hit_entry.buy),
                        lv_idx.eq(hit_entry.idx),
                    ]
                    with m.If(full):
                        m.d.comb += [entry_new.valid.eq(0), lv_mag.eq(hit_entry.shares)]
                        with m.If(~hit_entry.inwin):
                            m.d.comb += sym_new.oow_live.eq(sym_rd.oow_live - 1)
                    with m.Else():
                        m.d.comb += [entry_new.shares.eq(hit_entry.shares - u2.shares),
                                     lv_mag.eq(u2.shares)]
                with m.Else():
                    count("unknown_execute", u2.op == BookOpKind.EXECUTE)
                    count("unknown_cancel", u2.op == BookOpKind.CANCEL)
                    count("unknown_delete", u2.op == BookOpKind.DELETE)
                    count("unknown_replace", u2.op == BookOpKind.REPLACE)
            with m.If(k == _UKind.REPL_DEL):
                m.d.sync += [rd_found.eq(found), rd_buy.eq(hit_entry.buy)]
                with m.If(found):
                    m.d.comb += lv_buy.eq(hit_entry.buy)
            with m.If(k == _UKind.REPL_ADD):
                m.d.comb += lv_buy.eq(rd_buy)
            with m.If(k == _UKind.STATE):
                m.d.comb += sym_new.trading_state.eq(u2.code)
            with m.If(k == _UKind.SHO):
                m.d.comb += sym_new.reg_sho.eq(u2.code)
        with m.If(~u2.valid | (k != _UKind.REPL_DEL)):
            m.d.sync += rd_found.eq(0)

        b2 = self.bucket_of(u2.ref)
        for i, w in enumerate(ways):
            m.d.comb += [w.we.eq(way_we[i]), w.waddr.eq(b2), w.wdata.eq(entry_new)]
        m.d.comb += [sym.we.eq(u2.valid & (k != _UKind.NOP)), sym.waddr.eq(u2.locate), sym.wdata.eq(sym_new)]

        # ---- stage 3: level op; issue level and bitmap reads
        lv_layout = data.StructLayout({
            "valid": 1, "inc": 1, "mag": 32, "buy": 1, "idx": wbits, "base": 32,
            "degraded": 1, "oow": 1,
        })
        lv2 = Signal(lv_layout)
        m.d.comb += [
            lv2.valid.eq(u2.valid & lv_valid), lv2.inc.eq(lv_inc), lv2.mag.eq(lv_mag), lv2.buy.eq(lv_buy),
            lv2.idx.eq(lv_idx), lv2.base.eq(Mux(sym_new.base_valid, sym_new.base, 0)),
            lv2.degraded.eq(sym_new.degraded), lv2.oow.eq(sym_new.oow_live != 0),
        ]
        # messages that do not change levels but are REPL_ADD still need the side of their REPL_DEL
        stages_u = [u2]
        stages_lv = [lv2]
        for i in range(3, 10):
            u, lv = Signal(_UOp, name=f"u{i}"), Signal(lv_layout, name=f"lv{i}")
            m.d.sync += [u.eq(stages_u[-1]), lv.eq(stages_lv[-1])]
            stages_u.append(u)
            stages_lv.append(lv)
        u = dict(zip(range(2, 10), stages_u))
        lv = dict(zip(range(2, 10), stages_lv))

        def loc(i):
            return u[i].locate[:sbits] if sbits else Const(0, 0)

        lvl_rd = levels.read(Cat(lv[3].idx, lv[3].buy, loc(3)))
        bm_rd = bitmap.read(Cat(lv[3].buy, loc(3)))

        # ---- stage 5: level and bitmap read-modify-write
        new_sz = Mux(lv[5].inc, lvl_rd + lv[5].mag, Mux(lvl_rd > lv[5].mag, lvl_rd - lv[5].mag, 0))
        bit = Const(1, W) << lv[5].idx
        new_bm = Mux(new_sz != 0, bm_rd | bit, bm_rd & ~bit)
        m.d.comb += [
            levels.we.eq(lv[5].valid), levels.waddr.eq(Cat(lv[5].idx, lv[5].buy, loc(5))),
            levels.wdata.eq(new_sz),
            bitmap.we.eq(lv[5].valid), bitmap.waddr.eq(Cat(lv[5].buy, loc(5))), bitmap.wdata.eq(new_bm),
        ]
        bm6 = Signal(W)
        m.d.sync += bm6.eq(new_bm)

        # ---- stage 6: best level of the side; read its size (sees stage 5's write, not later ones)
        bid_any, bid_idx = _priority(bm6, W, high=True)
        ask_any, ask_idx = _priority(bm6, W, high=False)
        best_any = Mux(lv[6].buy, bid_any, ask_any)
        best_idx = Mux(lv[6].buy, bid_idx, ask_idx)
        best_sz8 = levels.read_raw(Cat(best_idx, lv[6].buy, loc(6)))
        tob_rd = tob.read(loc(6))

        # ---- stage 7: best price
        any7 = Signal()
        idx7 = Signal(wbits)
        m.d.sync += [any7.eq(best_any), idx7.eq(best_idx)]
        any8 = Signal()
        px8 = Signal(32)
        m.d.sync += [any8.eq(any7), px8.eq((lv[7].base + idx7) * TICK)]

        # ---- stage 8: top-of-book read-modify-write and the change decision
        side_old = Signal(side_layout)
        side_new = Signal(side_layout)
        m.d.comb += side_old.eq(Mux(lv[8].buy, tob_rd.bid.as_value(), tob_rd.ask.as_value()))
        with m.If(lv[8].valid):
            with m.If(any8):
                m.d.comb += [side_new.px.eq(px8), side_new.sz.eq(best_sz8)]
        with m.Else():
            m.d.comb += side_new.eq(side_old)
        tob_new = Signal(tob_layout)
        m.d.comb += tob_new.eq(tob_rd)
        with m.If(lv[8].buy):
            m.d.comb += tob_new.bid.eq(side_new)
        with m.Else():
            m.d.comb += tob_new.ask.eq(side_new)
        m.d.comb += [tob.we.eq(u[8].valid & lv[8].valid), tob.waddr.eq(loc(8)), tob.wdata.eq(tob_new)]

        # a REPLACE compares the side after its add half with the side before its delete half
        rpl_before = Signal(side_layout)
        rpl_touched = Signal()
        m.d.sync += [rpl_before.eq(side_old), rpl_touched.eq(lv[8].valid)]
        is_radd = u[8].kind == _UKind.REPL_ADD
        before = Mux(is_radd, rpl_before.as_value(), side_old.as_value())
        touched = lv[8].valid | is_radd & rpl_touched
        emit = u[8].valid & u[8].last & touched & (before != side_new.as_value())

        row = Signal(TopOfBook)
        row_valid = Signal()
        m.d.sync += [
            row_valid.eq(emit),
            row.seq.eq(u[8].seq), row.locate.eq(u[8].locate),
            row.bid_px.eq(tob_new.bid.px), row.bid_sz.eq(tob_new.bid.sz),
            row.ask_px.eq(tob_new.ask.px), row.ask_sz.eq(tob_new.ask.sz),
            row.flags.stale.eq(self.stale), row.flags.degraded.eq(lv[8].degraded),
            row.flags.out_of_window.eq(lv[8].oow),
        ]
        # ---- stage 9: into the output FIFO; the message retires
        m.d.comb += [
            out_fifo.w_data.eq(row), out_fifo.w_en.eq(row_valid),
            retire.eq(u[9].valid & u[9].last),
            self.o_stream.payload.eq(out_fifo.r_data), self.o_stream.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]

        # ---- lookup port: plain reads of the top of book and the symbol state
        la = self.lookup.locate[:sbits] if sbits else 0
        l_tob = tob.read_raw(la)
        l_sym = sym.read_raw(la)
        l_oor = [Signal(name="l_oor1"), Signal(name="l_oor2")]
        l_v = [Signal(name="l_v1"), Signal(name="l_v2")]
        m.d.sync += [l_oor[0].eq(self.lookup.locate >= S), l_oor[1].eq(l_oor[0]),
                     l_v[0].eq(self.lookup.valid), l_v[1].eq(l_v[0])]
        res = self.lookup.result
        with m.If(~l_oor[1]):
            m.d.comb += [
                res.bid_px.eq(l_tob.bid.px), res.bid_sz.eq(l_tob.bid.sz),
                res.ask_px.eq(l_tob.ask.px), res.ask_sz.eq(l_tob.ask.sz),
                res.trading_state.eq(l_sym.trading_state), res.reg_sho.eq(l_sym.reg_sho),
                res.flags.degraded.eq(l_sym.degraded), res.flags.out_of_window.eq(l_sym.oow_live != 0),
            ]
        m.d.comb += [res.flags.stale.eq(self.stale), res.out_of_range.eq(l_oor[1]),
                     self.lookup.result_valid.eq(l_v[1])]
        return m
