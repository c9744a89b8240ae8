"""The order book: BookOp stream in, TopOfBook stream out, plus a state lookup port for the risk gate.

:class:`MarketBook` (v3) keeps

* a **locate -> slot table**: ``locates`` entries (block RAM), one per stock locate below ``locates``
  (larger locates are counted in ``out_of_range`` and ignored). A locate gets one of ``symbols`` book slots
  on its first valid add (a slot counter; slots are never freed). When the slots run out, the add is
  dropped and counted (``no_slot``), and the first such add of a locate emits one all-zero row flagged
  ``degraded``: that symbol's book is not kept, and the flagged row says so (the lookup port answers
  ``no_slot``). The table also holds each locate's trading state (H) and Reg SHO action (Y), with or
  without a slot, encoded in 3 + 2 bits (codes outside ITCH's H/P/Q/T and 0/1/2 read back as ``?``).
* an **order table**: ``capacity`` orders in ``ways`` block RAMs of ``capacity // ways`` buckets, indexed by
  an XOR fold of the 64-bit reference (:meth:`MarketBook.bucket_of`), matched by a full 64-bit tag
  compare. Each entry holds the order's locate, side, price and shares left. An add that finds its bucket
  full is dropped, counted (``table_full``) and flags its symbol ``degraded`` until reset.
* **price levels**: per slot and side, the best ``depth`` (K) levels as a sorted array of (price, size),
  best first, with the side's overflow state and ``degraded`` bit, in one block-RAM word per (slot, side)
  (two RAMs, bids and asks, each K x 65 + 82 bits wide, read both and written one side at a time; besides
  the levels, the overflow, the bound and the flag, the word carries a "live" bit per entry (size != 0)
  and whether the overflow is non-zero, kept exact by the writer so that no reader tests a 32- or 48-bit
  value for zero). A level
  op has a delete part (take shares off a price) and an add part (put shares on a price): an
  execute/cancel/delete is a delete part, an add an add part, and a REPLACE both at once (its add half
  applied after its delete half, as the model does). It compares both prices with all K entries in
  parallel, then updates a level, removes an emptied one (shifting up) and/or inserts a new one at its
  sorted position (shifting down): every entry of the new array is one of its old neighbours ``i-1``,
  ``i``, ``i+1`` or the new level. Exact for any price (no tick grid).

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

Latency and rate: :attr:`MarketBook.LATENCY` (7) cycles from the BookOp handshake to the TopOfBook record
(valid on ``o_stream`` while it is ready) for every message, REPLACE included; ``applied``/
``applied_seq`` strobe at the same cycle for every message, row or not.

Rate: book ops (ADD, EXECUTE, CANCEL, DELETE, REPLACE) are taken at most one every 2 cycles; every other
kind (H, Y, S, R, P, Q, I, ...: no order or level read-modify-write) one per cycle, also in the cycle
between two book ops and in the cycle right after a REPLACE. ``i_stream.ready`` falls only for a book op
offered in the cycle after a book op (it looks at the offered op's kind), while the output FIFO could
overflow, and during the post-reset sweep. This never holds a line-rate feed off: the input is 8 bytes a
cycle, every book message is at least 21 bytes with its MoldUDP64 length (D 19+2; X 25, E 33, C 38, A 38,
F 42, U 37), so the last bytes of two book messages are at least floor(21 / 8) = 2 input words apart, and
the splitter and decoder pass messages on with a fixed latency; non-book messages (as short as 14 bytes,
S) may come one cycle apart and are taken so. Tested (``test_line_rate``): message blocks packed back to
back at 8 bytes a cycle, worst-case D/X/E/U/S runs and the whole NASDAQ snippet, each message offered at
the cycle its last byte would arrive, none held off. Under output backpressure or after input idles the
book still takes a book op every 2 cycles.

Pipeline (message taken at cycle 0; a REPLACE's add half, the "radd", runs one cycle behind it in the order
table only, using the order-table read port the next message never needs):

* 0: order-table read (the ref; a radd: the new ref), locate-table read. RAM outputs are registered (2).
* 2: order stage P: every compare stage A needs, registered: per way, the RAM entry's tag against the ref
  (and valid), its locate against the message's; the same for each write the read missed (made at 0, 1
  and 2: their refs and locates are registers; whether they share this bucket was registered at 1), merged
  per way into what the newest of them says; and for the write the op at A makes at 3. Locate-table read-modify-write (slot allocation for a valid add, H/Y codes: a
  one-cycle loop; the write reaches the RAM from registers a cycle later, and the read forwards the last
  three writes).
* 3: order stage A: per way the newest of {RAM, the missed writes (merged at P), the write being made now}
  gives its hit/valid/locate bits and its entry (all selects registers: no compare here); hit, free way,
  found, decisions and counters, registered. Level read of both sides of the slot (address from a
  register). The order table and the level words have no read-old-data emulation (``no_rw_check``): their
  readers forward the write made in the read's own cycle.
* 4: order stage B: the order-table write; the level op (the hit entry's price/side/shares; for a REPLACE
  also its add half, decided by the radd in stage A this cycle and read from the radd's B registers at
  level stage A; a radd whose new ref shares the original's bucket sees the original's way as free and
  not matching).
* 4 (also): both sides' words leave the RAM; the op's side (registered copies) picks its own and the other
  side's word into registers, or the level write before the last when it is for the same slot and side.
  The op's prices against the prices of the last level write as it will be at 5 (its entries, new level
  and bound), registered; the op's compare operands registered in copies, one per group of entries.
* 5: level stage A: the side's word from that register or from the last level write (select registered
  at 4, in 4 copies to split its fanout over the word's bits), registered for B; both prices against the
  K entries (equality, the add price's order, the sizes) and the bound, each compared on every source
  before the select (compare, then select; the last write's price compares are stage 4's registers); the
  new sizes of the overflow precomputed; the other side's best and flags; all registered. Counts decided
  at order stage A are registered here too.
* 6: level stage B: the entries' new sizes; removal/insert positions (thermometer codes) and from them a
  2-bit select per entry (the entry, the one below, the one above or the new level) and for the overflow
  and bound; registered
  unresolved (the candidates and the selects) into the last-write register, which one 4:1 mux level
  resolves for the RAM write (and the lookup copy) at 7 and for stage A's forwarding. Whether the row
  changed anything a row shows is registered in parts; so are the candidates of the side's best.
* 7: record out: the row (this side's best resolved from its candidates), its emit decision and
  out_of_window flag combined from those parts.

So the read-modify-write loops take 2 cycles (order table: A decide -> B write -> its compares at the
next op's P; levels: A compare -> B shift/add -> write register -> next A), which the 2-cycle spacing of
book ops allows without stalls; every block-RAM output is registered and every forwarding select is a
register. A slot is allocated at P, before the order table says whether the add's ref is a duplicate: a
duplicate add of a locate without a slot yet takes one (the model has no slots; no row differs). Output
backpressure is absorbed by a FIFO (bypassed when empty); the input is held off only when the FIFO could
overflow. After reset the block sweeps its memories to zero (input not ready) for
:attr:`MarketBook.clear_cycles`.

Timing: see docs/gateware.md and ``python benchmarks/bench_synth.py market_book`` (Yosys synth_ecp5 +
nextpnr-ecp5, LFE5UM5G-85F CABGA381 speed 8, the default sizing).

Lookup port: ``lookup.locate``/``lookup.valid`` in at cycle 0, ``lookup.result``/``lookup.result_valid``
at cycle :attr:`MarketBook.LOOKUP_LATENCY` (4): BBO, the top ``lookup_depth`` levels of each side, trading
state, Reg SHO, flags, per-side overflow; it reflects every message whose level write (stage 7) was made
before its level read: a lookup issued at cycle c sees every message taken at c - 6 or earlier.
"""

# No `from __future__ import annotations`: Amaranth reads the annotations as shapes.
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .book_records import BookFlags, BookOp, BookOpKind, TopOfBook
from .counters import count as count_event

__all__ = ["BOOK_DEFAULTS", "COUNTERS", "LATENCY", "LOOKUP_LATENCY", "Level", "book_state", "LookupSignature", "CountersSignature",
           "MarketBook", "TRADING_STATES", "REG_SHO_ACTIONS"]

#: Default sizing, in one place. Estimated ECP5 block RAM (DP16KD, 18 kbit): order table 64, level words
#: 2 x 512 x 849 bits ~48, lookup copy of the top 4 ~16, locate table 16384 x 17 bits twice (pipeline and
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
LATENCY = 7
#: Cycles from a lookup request to its answer.
LOOKUP_LATENCY = 4


#: BookOpKinds that read-modify-write the order table and the levels: at most one every 2 cycles.
_BOOK_KINDS = (BookOpKind.ADD, BookOpKind.EXECUTE, BookOpKind.CANCEL, BookOpKind.DELETE, BookOpKind.REPLACE)


class _UKind(enum.Enum, shape=3):
    NOP = 0
    ADD = 1
    REDUCE = 2        # execute or cancel
    DELETE = 3
    REPL = 4          # replace: delete `ref`; its add half (new ref) runs one cycle behind in the order table
    STATE = 6
    SHO = 7


class _UOp(data.Struct):
    valid: unsigned(1)
    kind: _UKind
    op: BookOpKind
    oor: unsigned(1)      # locate >= locates (set from stage 2 on: 0 in u0 and u1)
    seq: unsigned(32)
    locate: unsigned(16)
    ref: unsigned(64)
    buy: unsigned(1)
    shares: unsigned(32)
    price: unsigned(32)
    code: unsigned(8)
    sized: unsigned(1)    # shares != 0 and price != 0 (what an ADD needs; from stage 2 on, as oor)


class _Mem:
    """A block RAM with one write port (``we``/``waddr``/``wdata``, comb; zeros while ``clearing``) and
    registered reads: :meth:`read` takes an address at cycle c and returns the RAM's value as of the
    start of cycle c (writes made at c and later are missed) from a register at c+2.

    ``collisions_forwarded=True``: every reader overrides the value read at c with the write made at c when
    the addresses match, so what the RAM returns then does not matter: the memory is marked
    ``no_rw_check`` and read through a combinational port and a register (which Yosys's memory_dff merges
    into the block RAM as a port that returns don't-care on a collision), so Yosys adds no soft logic
    emulating read-old-data (an address compare, a bypass register and a mux on the read data). Simulation
    still returns the old data."""

    def __init__(self, m, name, shape, depth, clearing, clear_addr, collisions_forwarded=False):
        self._m, self.shape = m, shape
        self._fwd = collisions_forwarded
        attrs = {"no_rw_check": 1} if collisions_forwarded else None
        self.mem = m.submodules[name] = memory.Memory(shape=shape, depth=depth, init=[], attrs=attrs)
        wp = self.mem.write_port()
        self.we = Signal(name=f"{name}_we")
        self.waddr = Signal(range(depth), name=f"{name}_waddr")
        self.wdata = Signal(shape, name=f"{name}_wdata")
        with m.If(clearing):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(clear_addr), wp.data.eq(0)]
        with m.Else():
            m.d.comb += [wp.en.eq(self.we), wp.addr.eq(self.waddr), wp.data.eq(self.wdata)]

    def read_data(self, addr):
        """The read data at c+1 for an address at c (the block RAM's output), for a consumer that registers it."""
        if self._fwd:
            rp = self.mem.read_port(domain="comb")
            data = Signal(self.shape, reset_less=True)
            self._m.d.sync += data.eq(rp.data)
        else:
            rp = self.mem.read_port()
            data = rp.data
        self._m.d.comb += rp.addr.eq(addr)
        return data

    def read(self, addr):
        raw = Signal(self.shape)
        self._m.d.sync += raw.eq(self.read_data(addr))
        return raw


def _dup_reg(m, value, n, name):
    """``n`` (1..4) registers of ``value`` (one cycle late) that synthesis keeps apart, to split a
    high-fanout net: copies differ in polarity and in having a reset (so no FF merge folds them); each
    copy is returned as a Value equal to the registered ``value`` (as wide as it)."""
    if not 1 <= n <= 4:
        raise ValueError(f"_dup_reg makes 1 to 4 distinct copies, not {n}")
    width = len(value)
    out = []
    for k in range(n):
        inv, rl = k & 1, bool(k & 2)
        r = Signal(width, name=f"{name}_d{k}", reset_less=rl, init=0 if not inv else (1 << width) - 1)
        m.d.sync += r.eq(~value if inv else value)
        out.append(~r if inv else r)
    return out


def _eq(a, b):
    """``a == b`` as an XOR and a reduce. Yosys's alumacc merges an ``==`` with a ``<``/``>`` on the same
    operands into the subtract's carry chain (its equality then waits for the chain and a LUT tree after
    it); this keeps the equality a LUT tree of its own, in parallel with the chain."""
    return ~(a ^ b).any()


def _encode_code(code, alphabet, other):
    """An ITCH code byte -> its 1-based index in ``alphabet`` (what the locate table stores); ``other`` for
    any code not in it."""
    v = Const(other)
    for i, c in enumerate(alphabet):
        v = Mux(code == ord(c), i + 1, v)
    return v


def _decode_code(index, alphabet, other):
    """The inverse of :func:`_encode_code`: 0 (none seen) -> 0, ``other`` -> ``"?"``."""
    v = Mux(index == other, ord("?"), 0)
    for i, c in enumerate(alphabet):
        v = Mux(index == i + 1, ord(c), v)
    return v


def _log2(n):
    return n.bit_length() - 1


def _is_pow2(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1 and not v & (v - 1)


class _FwdMemory:
    """A block RAM read at cycle c and read-modify-written at cycle c+2.

    :meth:`read` takes an address at cycle c and returns the value at cycle c+2 as it is after every write
    made before cycle c+2: the registered RAM output, overridden by the writes the read port misses when
    their address matches. Write with ``we``/``waddr``/``wdata`` (comb). While ``clearing`` the write port
    sweeps zeros instead. :meth:`read_raw` is a plain registered read.

    With ``wdelay=1`` a write reaches the RAM one cycle after it is made, from registers (so no logic sits
    between the decision and the RAM's write enable, address and data pins, which fan out to every block
    RAM of a deep table); the read then forwards the last three writes (made at c-1, c and c+1) instead of
    two. Either way the selects are registers.
    """

    def __init__(self, m, name, shape, depth, clearing, clear_addr, wdelay=0):
        self.shape, self.depth, self._m, self._name = shape, depth, m, name
        self.mem = m.submodules[name] = memory.Memory(shape=shape, depth=depth, init=[])
        wp = self.mem.write_port()
        self.we = Signal(name=f"{name}_we")
        self.waddr = Signal(range(depth), name=f"{name}_waddr")
        self.wdata = Signal(shape, name=f"{name}_wdata")
        # the logical write stream (the sweep's zeros while clearing)
        src = (Signal(name=f"{name}_s_en"), Signal(range(depth), name=f"{name}_s_addr"),
               Signal(shape, name=f"{name}_s_data"))
        m.d.comb += [src[0].eq(clearing | self.we), src[1].eq(Mux(clearing, clear_addr, self.waddr)),
                     src[2].eq(Mux(clearing, 0, self.wdata))]
        self._src = src
        self._hist = []          # [i]: the write made i + 1 cycles ago
        for i in range(2 + wdelay):
            h = (Signal(name=f"{name}_h{i}_en"), Signal(range(depth), name=f"{name}_h{i}_addr"),
                 Signal(shape, name=f"{name}_h{i}_data"))
            m.d.sync += [h[0].eq(src[0]), h[1].eq(src[1]), h[2].eq(src[2])]
            self._hist.append(h)
            src = h
        phys = self._hist[0] if wdelay else self._src
        m.d.comb += [wp.en.eq(phys[0]), wp.addr.eq(phys[1]), wp.data.eq(phys[2])]
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
        m.d.sync += a1.eq(rp.addr)
        # the selects are registered: at c+1 the write being made (h0 at c+2) and h0 (h1 at c+2) are
        # compared with the address read at c
        nh = len(self._hist)
        addrs = [self._src[1]] + [h[1] for h in self._hist[:-1]]
        sel = [Signal(name=f"{n}_sel{i}") for i in range(nh)]
        m.d.sync += [sel[i].eq(addrs[i] == a1) for i in range(nh)]
        merged = Signal(self.shape, name=f"{n}_merged")
        m.d.comb += merged.eq(raw)
        for i in reversed(range(nh)):                     # newest last, so it wins
            en, _, hdata = self._hist[i]
            with m.If(en & sel[i]):
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
        self._MustUse__silence = True       # refused below: no UnusedElaboratable warning; cleared at the end
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
        self._MustUse__silence = False

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
        K, S, NL, LD, W = self.depth, self.symbols, self.locates, self.lookup_depth, self.ways
        sbits = max(1, _log2(S))
        lbits = _log2(NL)
        bbits = max(1, _log2(self.buckets))

        # ---- post-reset sweep of every memory. The locate table (whose forwarding compares its write address)
        # and the input's ready have sweep counters of their own, so the sweep's register does not sit in the
        # middle of them and of every other memory's write port (separate feedback loops: no FF merge folds
        # them into one)
        def sweep_state(name):
            clearing = Signal(init=1, name=f"{name}clearing")
            clear_addr = Signal(range(self.clear_cycles + 1), name=f"{name}clear_addr")
            with m.If(clearing):
                m.d.sync += clear_addr.eq(clear_addr + 1)
                with m.If(clear_addr == self.clear_cycles - 1):
                    m.d.sync += clearing.eq(0)
            return clearing, clear_addr
        clearing, clear_addr = sweep_state("")

        def sweep(name, shape, depth, collisions_forwarded=False):
            return _Mem(m, name, shape, depth, clearing, clear_addr[:max(1, _log2(depth))], collisions_forwarded)

        def bucket(ref):
            b = self.bucket_of(ref)
            return b if isinstance(b, int) is False else Const(b, bbits)

        lwid = max(1, lbits)
        entry_layout = data.StructLayout({      # loc: the order's locate (for the locate-mismatch check)
            "valid": 1, "ref": 64, "loc": lwid, "buy": 1, "shares": 32, "price": 32,
        })
        body_layout = data.StructLayout({"buy": 1, "shares": 32, "price": 32})   # what a hit reads
        # what stage A selects for the hit: the body, and against the op at A (u3) its remaining shares and
        # the compares order stage B needs (under: shares < u3.shares, same: shares == u3.shares, same_px:
        # price == u3.price), computed on each source before the select so that B's order-table write data
        # and the level op's REPLACE test start from registers
        hit_layout = data.StructLayout({"buy": 1, "shares": 32, "price": 32, "rem": 32, "under": 1, "same": 1,
                                        "same_px": 1})

        def _body(e):
            v = Signal(body_layout)
            m.d.comb += [v.buy.eq(e.buy), v.shares.eq(e.shares), v.price.eq(e.price)]
            return v
        loc_layout = data.StructLayout({"has": 1, "lost": 1, "slot": sbits, "state": 3, "sho": 2})
        # live[i] == (lv[i].sz != 0) and ovf_nz == (ovf != 0), kept by level stage B (see emlive)
        side_layout = data.StructLayout({
            "lv": data.ArrayLayout(Level, K), "ovf": 48, "bound": 32, "degraded": 1,
            "live": K, "ovf_nz": 1,
        })
        top_layout = data.StructLayout({
            "lv": data.ArrayLayout(Level, LD), "ovf": 1, "unknown": 1, "degraded": 1,
        })

        # the order table's and the level words' readers forward every write their read misses, the one made in
        # the read's own cycle included (stage A's hn[2] and the lw/lw2 selects)
        ways = [sweep(f"way{i}", entry_layout, self.buckets, True) for i in range(W)]
        lt_clearing, lt_clear_addr = sweep_state("loctab_")
        loctab = _FwdMemory(m, "loctab", loc_layout, NL, lt_clearing, lt_clear_addr[:max(1, lbits)], wdelay=1)
        sides = [sweep(f"side{b}", side_layout, max(2, S), True) for b in (0, 1)]      # [0] asks, [1] bids
        tops = [sweep(f"top{b}", top_layout, max(2, S)) for b in (0, 1)]

        counters = {name: getattr(self.counters, name) for name in COUNTERS}

        # events are seen in the stages below and counted one cycle later (registered increment)
        events = {name: Signal(name=f"ev_{name}") for name in COUNTERS}
        for name in COUNTERS:
            count_event(m, counters[name], events[name], name=f"inc_{name}")

        def count(name, cond=1):
            with m.If(cond):
                m.d.comb += events[name].eq(1)

        # ---- credits: the FIFO must take every row of every message in flight
        out_fifo = m.submodules.out_fifo = fifo.SyncFIFO(width=TopOfBook.as_shape().size,
                                                         depth=self.fifo_depth)
        in_flight = Signal(range(self.fifo_depth + 1))
        retire = Signal()
        accept = Signal()
        # both sums made on registers, accept (the input's handshake) only picks one
        m.d.sync += in_flight.eq(Mux(accept, in_flight + 1 - retire, in_flight - retire))

        # ---- rate: a book op (ADD/EXECUTE/CANCEL/DELETE/REPLACE) is not taken in the cycle after another
        op = self.i_stream.payload
        in_book = op.kind.as_value().matches(*(k.value for k in _BOOK_KINDS))
        book_prev = Signal()
        m.d.sync += book_prev.eq(accept & in_book)
        in_clearing, _ = sweep_state("input_")
        # Room for the op's row, registered: the FIFO's level plus the rows in flight is at most the last
        # cycle's sum plus its accept (a row retires or leaves the FIFO, never more than one enters), so
        # `room` is that bound below the depth, made from registers with accept picking one compare (at most
        # one cycle early when the FIFO is nearly full under backpressure; never late).
        room = Signal(init=1)
        pending = out_fifo.level + in_flight
        m.d.sync += room.eq(Mux(accept, pending + 1 < self.fifo_depth, pending < self.fifo_depth))
        m.d.comb += self.i_stream.ready.eq(~in_clearing & ~(book_prev & in_book) & room)
        m.d.comb += accept.eq(self.i_stream.valid & self.i_stream.ready)

        # ---- stage 0: BookOp -> micro-op; order-table and locate-table reads
        # Only valid, op and kind are gated by the handshake; every other field is a don't-care while valid
        # is 0 (every use is under valid), so the handshake drives a few bits, not the whole micro-op. u0 is
        # driven by plain assignments only (see newB below on mixed drivers and Icarus).
        u0 = Signal(_UOp)
        ukind = Signal(_UKind)
        with m.Switch(op.kind):
            with m.Case(BookOpKind.ADD):
                m.d.comb += ukind.eq(_UKind.ADD)
            with m.Case(BookOpKind.EXECUTE, BookOpKind.CANCEL):
                m.d.comb += ukind.eq(_UKind.REDUCE)
            with m.Case(BookOpKind.DELETE):
                m.d.comb += ukind.eq(_UKind.DELETE)
            with m.Case(BookOpKind.REPLACE):
                m.d.comb += ukind.eq(_UKind.REPL)
            with m.Case(BookOpKind.TRADING_STATE):
                m.d.comb += ukind.eq(_UKind.STATE)
            with m.Case(BookOpKind.REG_SHO):
                m.d.comb += ukind.eq(_UKind.SHO)
            with m.Default():
                m.d.comb += ukind.eq(_UKind.NOP)
        m.d.comb += [
            # (ANDs, not Mux(accept, x, 0): Yosys turns that into a sync reset, an LSR fed by the handshake)
            u0.valid.eq(accept), u0.op.eq(op.kind.as_value() & accept.replicate(4)),
            u0.kind.eq(ukind.as_value() & accept.replicate(3)),
            u0.seq.eq(op.seq), u0.locate.eq(op.locate), u0.ref.eq(op.ref), u0.buy.eq(op.buy),
            u0.shares.eq(op.shares), u0.price.eq(op.price), u0.code.eq(op.code),
        ]
        us = [u0] + [Signal(_UOp, name=f"u{i}") for i in range(1, 7)]
        m.d.sync += [us[i].eq(us[i - 1]) for i in range(1, 7)]
        u1, u2, u3, u4, u5, u6 = us[1:]
        # oor and sized are first read at stage 2: made from u1's fields at stage 1, not behind the input's
        # handshake (in the pipeline that is the decoder's field muxes and a skid's; u0's and u1's are 0)
        m.d.sync += [u2.oor.eq(u1.locate >= NL), u2.sized.eq((u1.shares != 0) & (u1.price != 0))]

        # A REPLACE's add half (the "radd") looks its new reference up one cycle after the message, through
        # the order table only (a non-book message may be taken in that cycle: it reads the locate table).
        # Order-table stages: 0 read, 1 (RAM), 2 P (compares), 3 A (decisions), 4 B (write).
        ra_v = [Signal(name=f"ra_v{i}") for i in range(5)]          # ra_v[i]: radd at order stage i
        ra_ref = [Signal(64, name=f"ra_ref{i}") for i in range(5)]
        # ra_v[0] is set for an out-of-range locate too (its read is a don't-care: no book op is taken in that
        # cycle) and cleared at stage 1, where the REPLACE is u1
        m.d.sync += [ra_v[0].eq(accept & (op.kind == BookOpKind.REPLACE)), ra_ref[0].eq(op.new_ref),
                     ra_v[1].eq(ra_v[0] & (u1.locate < NL)), ra_ref[1].eq(ra_ref[0])]
        for i in range(2, 5):
            m.d.sync += [ra_v[i].eq(ra_v[i - 1]), ra_ref[i].eq(ra_ref[i - 1])]

        ra_bkt = Signal(bbits)                  # the radd's bucket, hashed when its REPLACE is taken
        m.d.sync += ra_bkt.eq(bucket(op.new_ref))
        rd_addr = Signal(bbits)
        m.d.comb += rd_addr.eq(Mux(ra_v[0], ra_bkt, bucket(op.ref)))   # not gated by accept
        way_raw = [w.read(rd_addr) for w in ways]
        # an[k]: the bucket read k + 1 cycles ago (= the bucket of the op at order stage k + 1)
        an = [Signal(bbits, name=f"a{k + 1}") for k in range(5)]
        m.d.sync += [an[0].eq(rd_addr)] + [an[k].eq(an[k - 1]) for k in range(1, 5)]
        # same_s[d]: the op at order stage 1 has the bucket of the op at stage 1 + d, registered (so at P,
        # whether the P op's bucket is that of the op at stage 2 + d: A, B and the two stages after B)
        same_s = [Signal(name=f"same_bkt{d}") for d in range(1, 5)]
        m.d.sync += [same_s[d - 1].eq(an[0] == an[d]) for d in range(1, 5)]
        loc_rd = loctab.read(op.locate[:lbits] if lbits else 0)

        # the (ref, locate) each order-table op looks up and writes (a radd: the new ref, its REPLACE's
        # locate), at stages P, A, B
        kref = [Signal(64, name=f"kref_{s}") for s in "PAB"]
        kloc = [Signal(lwid, name=f"kloc_{s}") for s in "PAB"]
        m.d.sync += [kref[0].eq(Mux(ra_v[1], ra_ref[1], u1.ref)),
                     kloc[0].eq(Mux(ra_v[1], u2.locate, u1.locate)[:lwid]),
                     kref[1].eq(kref[0]), kloc[1].eq(kloc[0]), kref[2].eq(kref[1]), kloc[2].eq(kloc[1])]

        # ---- order-table write stream (made at B) and its history: hn[k] is the write made k + 1 cycles ago
        ow_en = Signal(W)
        ow_addr = Signal(bbits)
        ow_data = Signal(entry_layout)
        hn = []
        src = (ow_en, ow_addr, ow_data)
        for k in range(3):
            h = (Signal(W, name=f"oh{k}_en"), Signal(bbits, name=f"oh{k}_addr"),
                 Signal(entry_layout, name=f"oh{k}_data"))
            m.d.sync += [h[0].eq(src[0]), h[1].eq(src[1]), h[2].eq(src[2])]
            hn.append(h)
            src = h

        # ---- order stage P (stage 2): every compare stage A needs, registered. A at cycle c uses the read
        # made at c - 3, which misses the writes made at c - 3 (then hn[2]), c - 2 (hn[1]), c - 1 (hn[0]) and
        # the one made at c by the op then at B (the op at A now). For each, and for each way's RAM value:
        # does it hold the ref (valid), does it hold the locate, and which way it wrote.
        ob_new = Signal()
        p_raw_hit, p_raw_loc, p_raw_valid = Signal(W), Signal(W), Signal(W)
        way_r = [Signal(body_layout, name=f"way{i}_r") for i in range(W)]
        for i in range(W):
            r = way_raw[i]
            m.d.sync += [p_raw_hit[i].eq(r.valid & (r.ref == kref[0])), p_raw_loc[i].eq(r.loc == kloc[0]),
                         p_raw_valid[i].eq(r.valid), way_r[i].eq(_body(r))]
        p_sel = [Signal(W, name=f"p_sel_h{k}") for k in range(3)]
        # hn[0] at A was made at B during P: ow_*, whose ref/locate are B's key
        cands = [(ow_en, ow_addr, ow_data.valid, kref[2], kloc[2]),
                 (hn[0][0], hn[0][1], hn[0][2].valid, hn[0][2].ref, hn[0][2].loc),
                 (hn[1][0], hn[1][1], hn[1][2].valid, hn[1][2].ref, hn[1][2].loc)]
        c_sel, c_hit, c_loc = [], [], []
        for k, (en, addr, valid, ref, loc) in enumerate(cands):          # addr: the bucket of same_s[k + 1]
            sel, hit_k, loc_k = Signal(W, name=f"c_sel_h{k}"), Signal(name=f"c_hit_h{k}"), Signal(name=f"c_loc_h{k}")
            m.d.comb += [sel.eq(Mux(same_s[k + 1], en, 0)), hit_k.eq(valid & (ref == kref[0])),
                         loc_k.eq(loc == kloc[0])]
            c_sel.append(sel), c_hit.append(hit_k), c_loc.append(loc_k)
        # for stage A's data mux: per way, one-hot over {the history writes (the newest that hit it), the RAM}
        p_ram = Signal(W)
        for k in range(3):
            newer = Const(0, W)
            for n in range(k):
                newer = newer | c_sel[n]
            m.d.sync += p_sel[k].eq(c_sel[k] & ~newer)
        m.d.sync += p_ram.eq(~(c_sel[0] | c_sel[1] | c_sel[2]))
        # per way, what the newest of those writes says (hit, valid, locate), merged here so that stage A
        # picks between three sources (the write made now, the history, the RAM) for its decisions
        h_sel, h_hit, h_valid, h_loc = Signal(W), Signal(W), Signal(W), Signal(W)
        for i in range(W):
            hit_i, valid_i, loc_i = Const(0), Const(0), Const(0)
            for k in reversed(range(3)):             # oldest first, so the newest wins
                hit_i = Mux(c_sel[k][i], c_hit[k], hit_i)
                valid_i = Mux(c_sel[k][i], cands[k][2], valid_i)
                loc_i = Mux(c_sel[k][i], c_loc[k], loc_i)
            m.d.sync += [h_sel[i].eq(Cat(*(c[i] for c in c_sel)).any()), h_hit[i].eq(hit_i),
                         h_valid[i].eq(valid_i), h_loc[i].eq(loc_i)]
        # the write made at A's own cycle (by the op now at A): same bucket, and its key
        p_cur_same, p_cur_hit, p_cur_loc = Signal(), Signal(), Signal()
        m.d.sync += [p_cur_same.eq(same_s[0]), p_cur_hit.eq(kref[1] == kref[0]),
                     p_cur_loc.eq(kloc[1] == kloc[0])]

        # P: locate-table read-modify-write (slot allocation for a valid add, H and Y codes). The add's slot
        # is allocated before the order table says whether its ref is a duplicate (a duplicate add of a
        # locate without a slot yet takes one; the model has no slots, so no row differs).
        alloc = Signal(range(S + 1))            # next free slot
        loc_new = Signal(loc_layout)
        m.d.comb += loc_new.eq(loc_rd)
        loc_we = Signal()
        slot2 = Signal(sbits)                   # the message's slot (allocated now for a first add)
        has2 = Signal()
        lost_row = Signal()
        m.d.comb += [slot2.eq(Mux(loc_rd.has, loc_rd.slot, alloc[:sbits])), has2.eq(loc_rd.has & ~u2.oor)]

        def valid_add_r(u):
            return u.sized

        with m.If(u2.valid & u2.oor):
            count("out_of_range", u2.kind != _UKind.NOP)
        with m.Elif(u2.valid):
            with m.Switch(u2.kind):
                with m.Case(_UKind.ADD):
                    with m.If(valid_add_r(u2) & ~loc_rd.has):
                        with m.If(alloc < S):
                            m.d.comb += [has2.eq(1), loc_we.eq(1),
                                         loc_new.has.eq(1), loc_new.slot.eq(alloc[:sbits])]
                            m.d.sync += alloc.eq(alloc + 1)
                        with m.Else():
                            count("no_slot")
                            with m.If(~loc_rd.lost):
                                m.d.comb += [loc_we.eq(1), loc_new.lost.eq(1), lost_row.eq(1)]
                with m.Case(_UKind.STATE):
                    m.d.comb += [loc_we.eq(1), loc_new.state.eq(_encode_code(u2.code, TRADING_STATES, 7))]
                with m.Case(_UKind.SHO):
                    m.d.comb += [loc_we.eq(1), loc_new.sho.eq(_encode_code(u2.code, REG_SHO_ACTIONS, 3))]
        m.d.comb += [loctab.we.eq(loc_we), loctab.waddr.eq(u2.locate[:lbits] if lbits else 0),
                     loctab.wdata.eq(loc_new)]
        la = Signal(data.StructLayout({"has": 1, "slot": sbits, "lost_row": 1}))    # has: a slot (an ADD: given)
        m.d.sync += [la.has.eq(has2), la.slot.eq(slot2), la.lost_row.eq(lost_row)]

        # level-table read: both sides of the slot, from a register (at A); at stage 4 the op's side picks its
        # own and the other side's word into the registers level stage A reads
        side_rd = [s.read_data(la.slot) for s in sides]

        # ---- order stage A (stage 3): per way, the newest of {the write being made now, the last three
        # writes, the RAM}; hits and decisions from the P compares (every select here is a register)
        ob_wwe = Signal(W)                    # the B op's way-write mask (its write is being made now)
        radd_entry = Signal(entry_layout)     # what a radd at B writes (registers only)
        is_radd = ra_v[3]
        def _hit_src(e, name):            # a source of stage A's hit select, with u3's compares
            v = Signal(hit_layout, name=name)
            d = Signal(33, name=f"{name}_d")
            m.d.comb += [v.buy.eq(e.buy), v.shares.eq(e.shares), v.price.eq(e.price),
                         d.eq(e.shares - u3.shares), v.rem.eq(d[:32]), v.under.eq(d[32]),
                         v.same.eq(_eq(e.shares, u3.shares)), v.same_px.eq(_eq(e.price, u3.price))]
            return v
        hn_body = [_hit_src(h[2], f"oh{k}_src") for k, h in enumerate(hn)]
        radd_body = _hit_src(radd_entry, "radd_src")
        hits, frees, locs = Signal(W), Signal(W), Signal(W)
        now_w = Signal(W)                     # per way: its newest write is the one being made now
        for i in range(W):
            hv, vv, lv_ = Signal(name=f"way{i}_hit"), Signal(name=f"way{i}_valid"), Signal(name=f"way{i}_loc")
            m.d.comb += [hv.eq(p_raw_hit[i]), vv.eq(p_raw_valid[i]), lv_.eq(p_raw_loc[i])]
            with m.If(h_sel[i]):
                m.d.comb += [hv.eq(h_hit[i]), vv.eq(h_valid[i]), lv_.eq(h_loc[i])]
            # the write being made now: B holds a radd (a new entry) or the REPLACE of the radd at A (its
            # original, deleted); nothing else can be at B while a book op is at A (book ops 2 apart)
            m.d.comb += now_w[i].eq(p_cur_same & ob_wwe[i])
            with m.If(now_w[i]):
                m.d.comb += [hv.eq(ob_new & p_cur_hit), vv.eq(ob_new), lv_.eq(p_cur_loc)]
            m.d.comb += [hits[i].eq(hv), frees[i].eq(~vv), locs[i].eq(lv_)]
        hit = hits.any()
        # The hit entry (at most one way holds the ref: adds of a live ref are refused) is one AND-OR over
        # the RAM word of each way and the three history writes, then the write being made now over it. The
        # AND-OR's selects are P's registers (a way's RAM word where it holds the ref and no history write is
        # newer; a history write where it holds the ref and is a way's newest), one or two LUT levels beside
        # the sources' subtracts. They ignore what the write being made now does to a way: when it deletes
        # the entry (a radd of its own REPLACE's ref), A finds no hit, and no hit's entry is used (ob_hit,
        # rd_buy and buy4 are read under found, or on an ADD's own side).
        g_now = Signal()
        m.d.comb += g_now.eq((hits & now_w).any())
        he = 0
        for i in range(W):
            he = he | Mux(p_ram[i] & p_raw_hit[i], _hit_src(way_r[i], f"way{i}_src").as_value(), 0)
        for k in range(3):
            he = he | Mux((p_sel[k] & h_hit).any(), hn_body[k].as_value(), 0)
        he = Mux(g_now, radd_body.as_value(), he)
        hit_entry = Signal(hit_layout)
        m.d.comb += hit_entry.eq(he)
        free_1h = Signal(W)
        m.d.comb += free_1h.eq(frees & -frees)   # lowest free way
        found_w = Signal(W)
        m.d.comb += found_w.eq(hits & locs)
        found = found_w.any()

        mismatch_seen = Signal()                # sticky: an op named an order of another locate
        rd_found = Signal()                     # the REPLACE one cycle ahead found its order
        rd_buy = Signal()

        # stage-A outcome (registered into stage B)
        a_wwe = Signal(W)          # ways written at B
        a_new = Signal()           # B writes a new entry (an add); else B updates the hit entry
        a_ins = Signal()           # main ADD inserted (level add)
        a_found = Signal()         # main REDUCE/DELETE/REPL found its order (level delete)
        a_degrade = Signal()       # main ADD: table full
        # A decides only what the order-table write and the level op need; what is only counted (and the
        # locate mismatch) is decided at B from A's hit/found/full registered (ob_hit_any, ...)
        k = u3.kind
        with m.If(is_radd):
            with m.If(rd_found & ~hit & valid_add_r(u4) & (frees != 0)):
                m.d.comb += [a_wwe.eq(free_1h), a_new.eq(1)]
        with m.If(u3.valid & ~u3.oor):
            with m.Switch(k):
                with m.Case(_UKind.ADD):
                    with m.If(~hit & valid_add_r(u3) & la.has):
                        with m.If(frees == 0):
                            m.d.comb += a_degrade.eq(1)
                        with m.Else():
                            m.d.comb += [a_wwe.eq(free_1h), a_new.eq(1), a_ins.eq(1)]
                with m.Case(_UKind.REDUCE, _UKind.DELETE, _UKind.REPL):
                    with m.If(found):
                        m.d.comb += [a_wwe.eq(found_w), a_found.eq(1)]
        with m.If(u3.valid & (k == _UKind.REPL)):
            m.d.sync += [rd_found.eq(found & ~u3.oor), rd_buy.eq(hit_entry.buy)]
        with m.Else():
            m.d.sync += rd_found.eq(0)
        ob_hit_any, ob_fnd, ob_full, ob_rdf = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [ob_hit_any.eq(hit), ob_fnd.eq(found), ob_full.eq(frees == 0), ob_rdf.eq(rd_found)]

        # ---- order stage B (stage 4): write the order table; build the level op
        ob_radd, ob_found, ob_ins, ob_deg = Signal(), Signal(), Signal(), Signal()
        # the hit entry (its ref and locate are B's key) and u4's compares, in two register copies: `ob_hit`
        # for the order-table write (`upd`), `ob_hit_lv` for the level op. One register feeding both was
        # placed by the order table's write port, 2.7 ns of routing from the level op's subtract (the routed
        # critical path at 125.1 MHz)
        ob_hit, ob_hit_lv = (data.View(hit_layout, v) for v in _dup_reg(m, hit_entry.as_value(), 2, "ob_hit"))
        lb = Signal(data.StructLayout({"has": 1, "slot": sbits, "lost_row": 1}))
        m.d.sync += [
            ob_wwe.eq(a_wwe), ob_radd.eq(is_radd), ob_new.eq(a_new), ob_found.eq(a_found),
            ob_ins.eq(a_ins), ob_deg.eq(a_degrade),
            lb.has.eq(la.has), lb.slot.eq(la.slot), lb.lost_row.eq(la.lost_row),
        ]
        # the counts decided from A's outcome, and the locate mismatch (the REPLACE of a radd at B is at u5)
        mis4 = Signal()
        m.d.comb += mis4.eq(mismatch_seen)
        with m.If(ob_radd & ob_rdf):
            with m.If(ob_hit_any):
                count("duplicate_adds")
            with m.Elif(~valid_add_r(u5)):
                count("invalid_adds")
            with m.Elif(ob_full):
                count("table_full")
        with m.If(u4.valid & ~u4.oor):
            with m.Switch(u4.kind):
                with m.Case(_UKind.ADD):
                    with m.If(ob_hit_any):
                        count("duplicate_adds")
                    with m.Elif(~valid_add_r(u4)):
                        count("invalid_adds")
                    with m.Elif(lb.has & ob_full):
                        count("table_full")
                with m.Case(_UKind.REDUCE, _UKind.DELETE, _UKind.REPL):
                    with m.If(~ob_fnd & ob_hit_any):
                        count("locate_mismatch")
                        m.d.sync += mismatch_seen.eq(1)
                        m.d.comb += mis4.eq(1)
        # an order op whose ref is in no way (found with another locate is a mismatch above): one AND per
        # counter, outside the branches above, so Yosys makes no sync reset of it (an LSR pin shared by the
        # four increments, 6.9-7.2 ns routed)
        unknown = (u4.valid & ~u4.oor & ~ob_fnd & ~ob_hit_any &
                   ((u4.kind == _UKind.REDUCE) | (u4.kind == _UKind.DELETE) | (u4.kind == _UKind.REPL)))
        for name in ("execute", "cancel", "delete", "replace"):
            count(f"unknown_{name}", unknown & (u4.op == getattr(BookOpKind, name.upper())))
        ob_buy = Signal()
        m.d.sync += ob_buy.eq(Mux(is_radd, rd_buy, u3.buy))
        # the main op's side at stage 4 (= my_buy4), in copies for the level words' side muxes
        buy4 = _dup_reg(m, Mux(k == _UKind.ADD, u3.buy, hit_entry.buy), 4, "buy4")
        # a radd's entry: all registers (the op at A forwards it in the same cycle)
        m.d.comb += [radd_entry.valid.eq(1), radd_entry.ref.eq(kref[2]), radd_entry.loc.eq(kloc[2]),
                     radd_entry.buy.eq(ob_buy), radd_entry.shares.eq(u5.shares), radd_entry.price.eq(u5.price)]
        # u4.shares >= the hit entry's shares (without a hit ob_hit is all 0 and full 0 for a REDUCE: only
        # found ops read full, s_d4 and sd_zero)
        full = (u4.kind != _UKind.REDUCE) | ob_hit.under | ob_hit.same
        upd = Signal(entry_layout)
        m.d.comb += [upd.valid.eq(~full), upd.ref.eq(kref[2]), upd.loc.eq(kloc[2]), upd.buy.eq(ob_hit.buy),
                     upd.price.eq(ob_hit.price), upd.shares.eq(ob_hit.rem)]
        new_e = Signal(entry_layout)
        m.d.comb += [new_e.valid.eq(1), new_e.ref.eq(kref[2]), new_e.loc.eq(kloc[2]), new_e.buy.eq(ob_buy),
                     new_e.shares.eq(u4.shares), new_e.price.eq(u4.price)]
        with m.If(ob_radd):
            m.d.comb += new_e.eq(radd_entry)
        m.d.comb += [ow_en.eq(ob_wwe), ow_addr.eq(an[3]), ow_data.eq(Mux(ob_new, new_e, upd))]
        for i, w in enumerate(ways):
            m.d.comb += [w.we.eq(ow_en[i]), w.waddr.eq(ow_addr), w.wdata.eq(ow_data)]
        count("overfills", ~ob_radd & ob_found & (u4.kind == _UKind.REDUCE) & ob_hit.under)

        # the level op of the main micro-op u4 (a REPLACE: its delete and its add half together)
        lv_layout = data.StructLayout({
            "valid": 1, "has": 1, "slot": sbits, "lost_row": 1, "mismatch": 1, "degrade": 1, "buy": 1,
            "del_en": 1, "p_d": 32, "s_d": 32, "add_en": 1, "p_a": 32, "s_a": 32, "x": 32, "sda": signed(33),
            "sd_zero": 1, "x_zero": 1,
            "radd_wait": 1,   # a REPLACE that found its order: its add half is the radd's, decided at order A
        })
        lv5 = Signal(lv_layout)
        cmp_layout = data.StructLayout({
            "buy": 1, "del_en": 1, "add_en": 1, "radd_wait": 1, "p_d": 32, "s_d": 32, "p_a": 32, "s_a": 32,
            "sd_zero": 1, "a_zero": 1,       # a_zero: p_a == 0 and s_a == 0 (an empty level's eq0)
        })
        main4 = u4.valid & ~ob_radd
        is_repl4 = u4.kind == _UKind.REPL
        full_lv = (u4.kind != _UKind.REDUCE) | ob_hit_lv.under | ob_hit_lv.same      # full, on the copy
        my_buy4 = Mux(u4.kind == _UKind.ADD, u4.buy, ob_hit_lv.buy)       # the main op's side
        s_d4 = Mux(full_lv, ob_hit_lv.shares, u4.shares)
        sda4 = u4.shares - ob_hit_lv.shares
        same_px4 = ob_hit_lv.same_px        # ob_hit_lv.price == u4.price, compared at stage 3 on each source
        # the radd at order A this cycle decides the REPLACE's add half; its outcome is read from the B
        # registers when the REPLACE is at level A (op5 below), so no level-op register waits for it
        ob_rfull = Signal()
        m.d.sync += ob_rfull.eq(is_radd & rd_found & ~hit & valid_add_r(u4) & (frees == 0))
        x4 = Mux(is_repl4 & same_px4, sda4, u4.shares)
        # what level stage A compares the side's entries with: registered in lv5 and, for the compares, in
        # copies (cmp5 below)
        cmp4 = Signal(cmp_layout)
        m.d.comb += [
            cmp4.buy.eq(my_buy4), cmp4.del_en.eq(main4 & ob_found), cmp4.add_en.eq(main4 & ob_ins),
            cmp4.radd_wait.eq(main4 & is_repl4 & ob_found),
            cmp4.p_d.eq(ob_hit_lv.price), cmp4.s_d.eq(s_d4), cmp4.p_a.eq(u4.price), cmp4.s_a.eq(u4.shares),
            cmp4.sd_zero.eq(Mux(full_lv, ob_hit_lv.shares == 0, u4.shares == 0)),
            cmp4.a_zero.eq((u4.price == 0) & (u4.shares == 0)),
        ]
        m.d.sync += [
            lv5.valid.eq(u4.valid), lv5.has.eq(lb.has), lv5.slot.eq(lb.slot), lv5.lost_row.eq(lb.lost_row),
            lv5.mismatch.eq(mis4),
            lv5.degrade.eq(main4 & ob_deg),
            lv5.buy.eq(cmp4.buy), lv5.del_en.eq(cmp4.del_en), lv5.add_en.eq(cmp4.add_en),
            lv5.radd_wait.eq(cmp4.radd_wait),
            lv5.p_d.eq(cmp4.p_d), lv5.s_d.eq(cmp4.s_d), lv5.p_a.eq(cmp4.p_a), lv5.s_a.eq(cmp4.s_a),
            lv5.x.eq(x4), lv5.sda.eq(sda4), lv5.sd_zero.eq(cmp4.sd_zero),
            # with a found REPLACE at the same price, ob_hit_lv.same is u4.shares == the order's shares
            lv5.x_zero.eq(Mux(is_repl4 & same_px4, ob_hit_lv.same, u4.shares == 0)),
        ]

        # ---- level write history: B (stage 6) results land in lw, which writes the RAM one cycle later
        lw_v, lw2_v = Signal(), Signal()
        lw_slot, lw2_slot = Signal(sbits), Signal(sbits)
        lw_buy, lw2_buy = Signal(), Signal()
        # B registers its result unresolved (`pend_layout`: the entries' candidates and a select code per
        # entry), so the insert decision drives a few code bits, not every bit of the side word; one 4:1 mux
        # level resolves it for its readers (the RAM write, stage A's forwarding, lw2).
        pend_layout = data.StructLayout({
            "em": data.ArrayLayout(Level, K),         # the entries after the size updates
            "em_live": K,                             # and which of them are live
            "new": Level,                             # the add's new level (live)
            "code": data.ArrayLayout(2, K),           # entry j: 0 em[j], 1 em[j+1] (0 past the end), 2 em[j-1], 3 new
            "ovf": data.ArrayLayout(48, 3), "ovf_sel": 2,     # 0 no change to the window, 1 to overflow, 2 push
            "ovf_nz": data.ArrayLayout(1, 3),                 # each overflow candidate != 0
            "bound1": 32, "bound_sel": 2,                     # 0 bound1, 1 em[K-1].px (push), 2 new.px
            "degraded": 1,
        })

        def resolve(pv, name):
            r = Signal(side_layout, name=name)
            for j in range(K):
                up = pv.em[j + 1].as_value() if j + 1 < K else zero_lv
                down = pv.em[j - 1].as_value() if j else zero_lv
                up_live = pv.em_live[j + 1] if j + 1 < K else 0
                down_live = pv.em_live[j - 1] if j else 0
                c = pv.code[j]
                m.d.comb += [
                    r.lv[j].eq(Mux(c[1], Mux(c[0], pv.new.as_value(), down), Mux(c[0], up, pv.em[j].as_value()))),
                    r.live[j].eq(Mux(c[1], Mux(c[0], 1, down_live), Mux(c[0], up_live, pv.em_live[j]))),
                ]
            m.d.comb += [
                r.ovf.eq(Mux(pv.ovf_sel[1], pv.ovf[2], Mux(pv.ovf_sel[0], pv.ovf[1], pv.ovf[0]))),
                r.ovf_nz.eq(Mux(pv.ovf_sel[1], pv.ovf_nz[2], Mux(pv.ovf_sel[0], pv.ovf_nz[1], pv.ovf_nz[0]))),
                r.bound.eq(Mux(pv.bound_sel[1], pv.new.px, Mux(pv.bound_sel[0], pv.em[K - 1].px, pv.bound1))),
                r.degraded.eq(pv.degraded),
            ]
            return r
        zero_lv = Const(0, Level.as_shape().size)
        lw_p = Signal(pend_layout)
        lw_data = resolve(lw_p, "lw_data")
        lw2_data = Signal(side_layout)        # the write before: resolved when it moves down
        lw_new = Signal()                     # lw was written last cycle: write it to the RAM now
        weB = Signal()
        lvB = Signal(lv_layout)
        newB = Signal(pend_layout)            # the B result (unresolved)
        with m.If(weB):
            m.d.sync += [lw_v.eq(1), lw_slot.eq(lvB.slot), lw_buy.eq(lvB.buy), lw_p.eq(newB),
                         lw2_v.eq(lw_v), lw2_slot.eq(lw_slot), lw2_buy.eq(lw_buy), lw2_data.eq(lw_data)]
        m.d.sync += lw_new.eq(weB)
        for b in (0, 1):
            m.d.comb += [sides[b].we.eq(lw_new & (lw_buy == b)), sides[b].waddr.eq(lw_slot),
                         sides[b].wdata.eq(lw_data)]
            t = tops[b]
            m.d.comb += [t.we.eq(lw_new & (lw_buy == b)), t.waddr.eq(lw_slot),
                         t.wdata.degraded.eq(lw_data.degraded), t.wdata.ovf.eq(lw_data.ovf_nz),
                         t.wdata.unknown.eq(~lw_data.live[0] & lw_data.ovf_nz)]
            for i in range(LD):
                m.d.comb += t.wdata.lv[i].eq(lw_data.lv[i])

        # forwarding selects for stage A (stage 5), computed at stage 4 from the op's (slot, side)
        # level stage B writes the side (lw, then the RAM): registered at level stage A, one copy for lw's
        # enables, one for the selects below
        # the level op at level A: a REPLACE's add half (or its table-full degrade) from the radd, now at order B
        op5 = Signal(lv_layout)
        m.d.comb += [op5.eq(lv5), op5.add_en.eq(lv5.add_en | lv5.radd_wait & ob_radd & ob_new),
                     op5.degrade.eq(lv5.degrade | lv5.radd_wait & ob_rfull)]
        we_B_in = op5.valid & op5.has & (op5.del_en | op5.add_en | op5.degrade)
        # level B makes a write: copies for lw's enables (weB), sel1 and fwd2's next values, lw2_next's mux
        # (a side word wide), and pc5's select
        we_B = _dup_reg(m, we_B_in, 4, "weB")

        def match(v, slot, b, buy, key=lb.slot):     # a write (v, slot, side b) is for (key, buy)
            return v & (slot == key) & (b == buy)

        # The op at stage 4 reads its side's word at level stage A from lw as it will be then (sel1: B's result
        # being made now, or the last one), else from the word registered here: lw2 as it will be at A when its
        # slot and side match (decided here), or the RAM's. So stage A picks from two sources.
        lw2_next = Signal(side_layout)
        m.d.comb += lw2_next.eq(Mux(we_B[2], lw_data, lw2_data))
        side_own, side_other = Signal(side_layout), Signal(side_layout)
        # the side word's parts (each entry, the overflow, the bound, the flag): each select copy drives a share
        parts = [f"lv{i}" for i in range(K)] + ["ovf", "bound", "degraded", "live", "ovf_nz"]

        def part(w, fld):
            return w.lv[int(fld[2:])] if fld.startswith("lv") else getattr(w, fld)
        NDUP = len(buy4)
        # Whether lw2 as it will be at A is for (this slot, side s), per side, decided a cycle early from the
        # next values of every register it reads (lw/lw2 after this cycle's weB, we_B[1], lb.slot = la.slot) and
        # registered in NDUP copies: at stage 4 each part's selects are then a 2:1 pick by its buy4 copy
        # of registers, not a slot compare and a mux chain ahead of ~1700 mux bits (the routed critical path
        # at 102.8 MHz ran lb -> slot compare -> we_B[1] mux -> the side words' muxes by the block RAM).
        wb = we_B[1]
        lw_v_n, lw_slot_n, lw_buy_n = Mux(wb, 1, lw_v), Mux(wb, lvB.slot, lw_slot), Mux(wb, lvB.buy, lw_buy)
        lw2_v_n, lw2_slot_n, lw2_buy_n = Mux(wb, lw_v, lw2_v), Mux(wb, lw_slot, lw2_slot), Mux(wb, lw_buy, lw2_buy)
        fwd2 = [_dup_reg(m, Mux(we_B_in, match(lw_v_n, lw_slot_n, lw_buy_n, side, key=la.slot),
                                match(lw2_v_n, lw2_slot_n, lw2_buy_n, side, key=la.slot)), NDUP, f"fwd2_s{side}")
                for side in (0, 1)]
        for j, fld in enumerate(parts):
            b = buy4[j % NDUP]
            f0, f1 = fwd2[0][j % NDUP], fwd2[1][j % NDUP]
            own2 = Mux(b, f1, f0)
            oth2 = Mux(b, f0, f1)
            m.d.sync += [
                part(side_own, fld).eq(Mux(own2, part(lw2_next, fld),
                                           Mux(b, part(side_rd[1], fld), part(side_rd[0], fld)))),
                part(side_other, fld).eq(Mux(oth2, part(lw2_next, fld),
                                             Mux(b, part(side_rd[0], fld), part(side_rd[1], fld)))),
            ]
        # sel1, registered (this side's drives every bit of its word: NDUP copies, each for a share)
        def sel1(buy):         # lw as it will be at A matches
            return Mux(we_B[1], match(1, lvB.slot, lvB.buy, buy), match(lw_v, lw_slot, lw_buy, buy))
        dsel1 = _dup_reg(m, sel1(my_buy4), NDUP, "sel1")
        osel1 = _dup_reg(m, sel1(~my_buy4), 1, "osel1")[0]

        # ---- level stage A (stage 5): compares
        # The side's word e is lw (resolved from its candidates by their select codes) or the registered own
        # word (dsel1). e itself is registered for B's data; the compares B decides on are made on every
        # source before the select instead (each entry of the own word; each candidate of lw: its entries
        # after B's size updates, the new level, an empty level past the ends) and the 1-bit results are
        # picked by the same selects, so no compare waits for the resolve (compare, then select).
        e = Signal(side_layout)
        for j, fld in enumerate(parts):
            m.d.comb += part(e, fld).eq(Mux(dsel1[j % NDUP], part(lw_data, fld), part(side_own, fld)))
        o = Signal(side_layout)
        m.d.comb += o.eq(Mux(osel1, lw_data, side_other))
        # The op's compare operands in NCMP register copies, one per group of neighbouring entries (and the
        # last for the bound and overflow), so no one register drives compares across the whole side word
        # (the routed critical path at 119.9 MHz: an lv5 operand -> 2.87 ns of routing -> compares).
        NCMP = 4
        cmp5 = [data.View(cmp_layout, v) for v in _dup_reg(m, cmp4.as_value(), NCMP, "cmp5")]
        # lw's candidate prices (its entries, its new level, its bound1) against the op's two prices, compared
        # at stage 4 (px_cmp, after level stage B's code) and registered, so no lw compare is made here
        pc_layout = data.StructLayout({"eqa": 1, "gta": 1, "eqd": 1, "gtd": 1})
        pc5 = Signal(data.ArrayLayout(pc_layout, K + 2))
        radd_add5 = ob_radd & ob_new        # with radd_wait: the REPLACE's add half is made (as in op5)

        def grp(i):                 # the copy entry i's compares read
            return cmp5[i * NCMP // K]
        flag_names = ("md", "zd", "ma", "ba", "eq0")

        def lv_flags(lv, live, c, pc=None):
            """The compares B needs of one level (eq0 only for entry 0), on copy c; its price's compares
            from ``pc`` (registered at stage 4, for lw's candidates) or made here."""
            if pc is None:
                eqa, gt, eqd = _eq(lv.px, c.p_a), c.p_a > lv.px, _eq(lv.px, c.p_d)
            else:
                eqa, gt, eqd = pc.eqa, pc.gta, pc.eqd
            return {"md": live & eqd & c.del_en, "zd": lv.sz == c.s_d,
                    "ma": live & eqa & (c.add_en | c.radd_wait & radd_add5),
                    "ba": ~live | Mux(c.buy, gt, ~gt & ~eqa), "eq0": eqa & (lv.sz == c.s_a)}

        def empty(c):               # lv_flags of an empty level past either end
            return {"md": Const(0), "zd": c.sd_zero, "ma": Const(0), "ba": Const(1), "eq0": c.a_zero}
        cand = [lv_flags(lw_p.em[j], lw_p.em_live[j], grp(j), pc5[j]) for j in range(K)]
        cand_new = lv_flags(lw_p.new, Const(1), cmp5[0], pc5[K])
        flags = {f: Signal(K, name=f"a_{f}") for f in flag_names}
        for i in range(K):
            own = lv_flags(side_own.lv[i], side_own.live[i], grp(i))
            up = cand[i + 1] if i + 1 < K else empty(grp(i))
            down = cand[i - 1] if i else empty(grp(i))
            c = lw_p.code[i]
            for f in flag_names:
                lw_f = Mux(c[1], Mux(c[0], cand_new[f], down[f]), Mux(c[0], up[f], cand[i][f]))
                m.d.comb += flags[f][i].eq(Mux(dsel1[i % NDUP], lw_f, own[f]))
        md, zd, ma, ba = flags["md"], flags["zd"], flags["ma"], flags["ba"]

        cl = cmp5[NCMP - 1]         # the bound's and the overflow's compares and sums

        def beats(gt, eq):          # a price strictly better than the bound, from their compares
            return Mux(cl.buy, gt, ~gt & ~eq)

        def bound_pick(half):       # p_a ("a") or p_d ("d") beats e's bound, computed on each source
            def pre(j):
                return beats(pc5[j][f"gt{half}"], pc5[j][f"eq{half}"])
            bs = lw_p.bound_sel
            lw_f = Mux(bs[1], pre(K), Mux(bs[0], pre(K - 1), pre(K + 1)))
            px = cl.p_a if half == "a" else cl.p_d
            return Mux(dsel1[parts.index("bound") % NDUP], lw_f, beats(px > side_own.bound, _eq(px, side_own.bound)))

        def ovf_pick(fn):           # fn(ovf) for e's overflow, computed on each source
            os_ = lw_p.ovf_sel
            lw_f = Mux(os_[1], fn(lw_p.ovf[2]), Mux(os_[0], fn(lw_p.ovf[1]), fn(lw_p.ovf[0])))
            return Mux(dsel1[parts.index("ovf") % NDUP], lw_f, fn(side_own.ovf))
        B_layout = data.StructLayout({
            "op": lv_layout, "e": side_layout, "live": K, "md": K, "rm": K, "ma": K, "mn": K, "ba": K,
            "ovf_any": 1, "ovf_eq_d": 1, "beats": 1, "beats_d": 1, "o_d": 48, "o_a": 48, "o_da": 48, "o_k": 48,
            "new_eq0": 1, "o_px": 32, "o_sz": 32, "o_unk": 1, "o_deg": 1,
        })
        bq = Signal(B_layout)
        m.d.sync += [
            bq.op.eq(op5), bq.e.eq(e), bq.live.eq(e.live), bq.md.eq(md), bq.rm.eq(md & zd), bq.ma.eq(ma),
            bq.mn.eq(ma & ~(md & zd)), bq.ba.eq(ba),
            bq.ovf_any.eq(e.ovf_nz), bq.ovf_eq_d.eq(ovf_pick(lambda v: v == cl.s_d)),
            bq.beats.eq(bound_pick("a")), bq.beats_d.eq(bound_pick("d")),
            bq.o_d.eq(e.ovf - cl.s_d), bq.o_a.eq(e.ovf + cl.s_a), bq.o_da.eq(e.ovf + op5.sda),    # sda signed: a smaller replace lowers it
            bq.o_k.eq(e.ovf + e.lv[K - 1].sz),
            bq.new_eq0.eq(flags["eq0"][0]),
            bq.o_px.eq(o.lv[0].px), bq.o_sz.eq(o.lv[0].sz),
            bq.o_unk.eq(~o.live[0] & o.ovf_nz), bq.o_deg.eq(o.degraded),
        ]

        # ---- level stage B (stage 6): the new side, its row
        q = bq
        m.d.comb += lvB.eq(q.op)
        eB = q.e
        Rt = Signal(K)               # Rt[i]: at or after the removed entry
        for i in range(K):
            m.d.comb += Rt[i].eq(q.rm[:i + 1].any())
        rm_any = Rt[K - 1]
        # the deleted order is untracked iff its price has no level (md), which by the bound's invariant
        # (with overflow, tracked levels are strictly better than B, untracked orders at or worse) is a
        # compare stage A makes: no OR over the K entries here
        del_untracked = q.op.del_en & q.ovf_any & ~q.beats_d
        ovf1_any = Mux(del_untracked, ~q.ovf_eq_d, q.ovf_any)
        bound1 = Mux(del_untracked & q.ovf_eq_d, 0, eB.bound)
        hit_a = q.mn.any()          # the add's price has a level the delete half leaves (ma & ~rm, from A)
        bap = Signal(K)              # p_a strictly better than entry i after the delete half (or it is empty)
        for i in range(K):
            nxt = q.ba[i + 1] if i + 1 < K else 1
            m.d.comb += bap[i].eq(Mux(Rt[i], nxt, q.ba[i]))
        ins = q.op.add_en & ~hit_a & (~ovf1_any | q.beats) & bap[K - 1]
        to_ovf = q.op.add_en & ~hit_a & ~ins
        push = ins & q.live[K - 1] & ~rm_any

        # entry i after the size updates, and whether it is live: a removal (rm) empties it; an add to it
        # cannot (a valid add has shares, and a same-price replace leaves the new order's), nor can a
        # delete that does not remove it (size != s_d). The same holds for rq.f0_live and rq.ovf2_any.
        emod = []
        emlive = Signal(K)
        for i in range(K):
            v = Signal(Level, name=f"emod{i}")
            m.d.comb += [v.px.eq(eB.lv[i].px),
                         v.sz.eq(Mux(q.ma[i], eB.lv[i].sz + q.op.x, Mux(q.md[i], eB.lv[i].sz - q.op.s_d, eB.lv[i].sz))),
                         emlive[i].eq(q.live[i] & ~q.rm[i])]
            emod.append(v)
        # newB is driven whole, by unconditional assignments only: a signal driven partly by a process and
        # partly by plain connections comes out of Yosys' write_verilog with per-slice `always @*` blocks
        # that have no time-0 trigger, and on Icarus a slice whose source never changes stays X for ever.
        # Entry j: after an insert above it, the entry above (or j itself if the removal closed the gap);
        # the insert's position, the new level; otherwise j, or j + 1 after a removal at or above j.
        # Each code is made for an insert and without one, and `ins` (the deepest input) picks last.
        codes = []
        for j in range(K):
            c_ins = Mux(bap[j], 3, Rt[j])
            if j:
                c_ins = Mux(bap[j - 1], Mux(Rt[j - 1], 0, 2), c_ins)
            c = Signal(2, name=f"code{j}")
            m.d.comb += c.eq(Mux(ins, c_ins, Rt[j]))
            codes.append(c)
        o_dk = Signal(48)
        m.d.comb += o_dk.eq(q.o_k - q.op.s_d)
        m.d.comb += [
            newB.em.eq(Cat(*(v.as_value() for v in emod))), newB.em_live.eq(emlive),
            newB.new.px.eq(q.op.p_a), newB.new.sz.eq(q.op.s_a),
            newB.code.eq(Cat(*codes)),
            # the pushed-out entry is the K-th after the delete half (smaller if the delete took from it)
            newB.ovf[2].eq(Mux(del_untracked | q.md[K - 1], o_dk, q.o_k)),
            newB.ovf[1].eq(Mux(del_untracked, q.o_da, q.o_a)),
            newB.ovf[0].eq(Mux(del_untracked, q.o_d, eB.ovf)),
            newB.ovf_sel.eq(Mux(push, 2, Mux(to_ovf, 1, 0))),
            newB.ovf_nz.eq(Cat(ovf1_any, Const(0b11, 2))),     # to_ovf adds shares; a push a live level
            newB.bound1.eq(bound1),
            newB.bound_sel.eq(Mux(push, 1, Mux(to_ovf & (~ovf1_any | q.beats), 2, 0))),
            newB.degraded.eq(eB.degraded | q.op.degrade),
        ]
        count("out_of_window", q.op.valid & q.op.has & (to_ovf | push))

        # The op at stage 4 reads lw at level A as it will be then: B's result being made now (weB) or the
        # last one. The prices of lw's candidates are registers either way (B's are bq's entries and op), so
        # their compares with the op's prices (registers at stage 4) are made here on both and picked by weB
        # into pc5. B's bound1 is compared as eB.bound: it differs only when it is 0, and then the overflow
        # is empty, and every use of the bound's compares (beats, beats_d) is masked by a nonzero overflow.
        def px_cmp(px):
            return Cat(_eq(px, cmp4.p_a), cmp4.p_a > px, _eq(px, cmp4.p_d), cmp4.p_d > px)
        for j in range(K + 2):
            if j < K:
                now, last = px_cmp(eB.lv[j].px), px_cmp(lw_p.em[j].px)
            elif j == K:
                now, last = px_cmp(q.op.p_a), px_cmp(lw_p.new.px)
            else:
                now, last = px_cmp(eB.bound), px_cmp(lw_p.bound1)
            m.d.sync += pc5[j].eq(Mux(we_B[3], now, last))
        m.d.comb += weB.eq(we_B[0])

        # row: only this side can change; the other side's best and flags come from stage A. Whether it is
        # emitted and its out_of_window flag are registered here in parts and combined at stage 7 (so the
        # insert decision above feeds registers, not the emit logic too)
        ins0 = ins & bap[0]
        rq = Signal(data.StructLayout({
            "valid": 1, "has": 1, "lost_row": 1, "ins0": 1, "new_eq0": 1, "rt0": 1, "ma0": 1, "md0": 1,
            "x_zero": 1, "sd_zero": 1, "f0_live": 1, "ovf2_any": 1, "unk_before": 1, "deg_changed": 1,
            "o_unk": 1,
        }))
        m.d.sync += [
            rq.valid.eq(q.op.valid), rq.has.eq(q.op.has), rq.lost_row.eq(q.op.lost_row), rq.ins0.eq(ins0),
            rq.new_eq0.eq(q.new_eq0), rq.rt0.eq(Rt[0]), rq.ma0.eq(q.ma[0]), rq.md0.eq(q.md[0]),
            rq.x_zero.eq(q.op.x_zero), rq.sd_zero.eq(q.op.sd_zero),
            rq.f0_live.eq(ins0 | Mux(Rt[0], emlive[1] if K > 1 else 0, emlive[0])),
            rq.ovf2_any.eq(push | to_ovf | ovf1_any),
            rq.unk_before.eq(~q.live[0] & q.ovf_any),
            rq.deg_changed.eq(q.op.degrade & ~(eB.degraded | q.o_deg)),
            rq.o_unk.eq(q.o_unk),
        ]

        row = Signal(TopOfBook)
        m.d.comb += [
            row.seq.eq(u6.seq), row.locate.eq(u6.locate),
            row.flags.stale.eq(self.stale),
            row.flags.degraded.eq(q.op.mismatch | q.op.lost_row |
                                  q.op.has & (eB.degraded | q.op.degrade | q.o_deg)),
        ]
        # this side's best is resolved at stage 7 from entry 0's candidates; the row register holds the other
        # side's (or 0) in both places
        mine_bid, mine_ask = q.op.has & q.op.buy, q.op.has & ~q.op.buy
        # ANDs, not Mux(c, x, 0), which Yosys maps to a sync reset: 64 LSR pins on one LUT (failing paths)
        m.d.comb += [
            row.bid_px.eq(q.o_px & mine_ask.replicate(32)), row.bid_sz.eq(q.o_sz & mine_ask.replicate(32)),
            row.ask_px.eq(q.o_px & mine_bid.replicate(32)), row.ask_sz.eq(q.o_sz & mine_bid.replicate(32)),
        ]
        best_c = Signal(data.StructLayout({"em0": Level, "em1": Level, "new": Level, "code": 2,
                                           "bid": 1, "ask": 1}))
        m.d.sync += [best_c.em0.eq(newB.em[0]), best_c.em1.eq(newB.em[1] if K > 1 else zero_lv),
                     best_c.new.eq(newB.new), best_c.code.eq(newB.code[0]),
                     best_c.bid.eq(mine_bid), best_c.ask.eq(mine_ask)]
        best = Signal(Level)
        m.d.comb += best.eq(Mux(best_c.code[1], best_c.new.as_value(),
                                Mux(best_c.code[0], best_c.em1.as_value(), best_c.em0.as_value())))

        # ---- stage 7: record out (row registered; emit and out_of_window from the parts above)
        o_row_q, o_done = Signal(TopOfBook), Signal()
        m.d.sync += [o_row_q.eq(row), o_done.eq(u6.valid)]
        unk_after = ~rq.f0_live & rq.ovf2_any
        bbo_changed = Mux(rq.ins0, ~rq.new_eq0, rq.rt0 | rq.ma0 & ~rq.x_zero | rq.md0 & ~rq.ma0 & ~rq.sd_zero)
        ow_changed = ~rq.o_unk & (rq.unk_before ^ unk_after)
        o_valid, o_row = Signal(), Signal(TopOfBook)
        m.d.comb += [
            o_valid.eq(rq.valid & (rq.has & (bbo_changed | rq.deg_changed | ow_changed) | rq.lost_row)),
            o_row.eq(o_row_q), o_row.flags.out_of_window.eq(rq.has & (unk_after | rq.o_unk)),
            o_row.bid_px.eq(Mux(best_c.bid, best.px, o_row_q.bid_px)),
            o_row.bid_sz.eq(Mux(best_c.bid, best.sz, o_row_q.bid_sz)),
            o_row.ask_px.eq(Mux(best_c.ask, best.px, o_row_q.ask_px)),
            o_row.ask_sz.eq(Mux(best_c.ask, best.sz, o_row_q.ask_sz)),
        ]
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
        l_ask, l_bid = (t.read(l_loc.slot) for t in tops)
        l_loc3, l_loc4 = Signal(loc_layout), Signal(loc_layout)
        m.d.sync += [l_loc3.eq(l_loc), l_loc4.eq(l_loc3)]
        res = lk.result
        known = ~l_oor[3] & l_loc4.has
        with m.If(known):
            m.d.comb += [
                res.bid_px.eq(l_bid.lv[0].px), res.bid_sz.eq(l_bid.lv[0].sz),
                res.ask_px.eq(l_ask.lv[0].px), res.ask_sz.eq(l_ask.lv[0].sz),
                res.flags.degraded.eq(l_bid.degraded | l_ask.degraded | mismatch_seen),
                res.flags.out_of_window.eq(l_bid.unknown | l_ask.unknown),
                res.bid_overflow.eq(l_bid.ovf), res.ask_overflow.eq(l_ask.ovf),
                res.bids.eq(l_bid.lv), res.asks.eq(l_ask.lv),
            ]
        with m.If(~l_oor[3]):
            m.d.comb += [res.trading_state.eq(_decode_code(l_loc4.state, TRADING_STATES, 7)),
                         res.reg_sho.eq(_decode_code(l_loc4.sho, REG_SHO_ACTIONS, 3)),
                         res.no_slot.eq(l_loc4.lost)]
        m.d.comb += [res.flags.stale.eq(self.stale), res.out_of_range.eq(~known),
                     lk.result_valid.eq(l_v[3])]
        return m
