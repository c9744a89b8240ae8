"""ITCH splitter: MoldUDP64 message blocks (a byte stream) -> whole ITCH messages.

See :class:`ItchSplitter`.
"""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..wire import itch
from .book_records import MAX_ITCH_LEN, TYPE_CODES, ItchMessage
from .counters import count_strobe
from .stream import BYTES, ByteStream, length_prefixes, onehot_pick, popcount_keep

__all__ = ["ItchSplitter", "LATENCY", "SPLIT_USER", "SPLIT_COUNTERS"]

#: Cycles from the input beat carrying a message's last byte to the message on ``o_stream`` (see the class).
LATENCY = 1

#: ``i_stream``'s ``user``: ``runt``, set on every beat from the one completing a length prefix under 7 (zero
#: included) to the packet's end (as :data:`tickgate.fpga.moldudp64_rx.MOLD_USER`'s ``runt``). See the class.
SPLIT_USER = data.StructLayout({"runt": 1})

#: The splitter's counters, in port order.
SPLIT_COUNTERS = ("zero_length", "oversize", "truncated", "unflagged_runt")

# Body bytes can start at any lane, so a message spans at most this many words.
_SLOTS = (BYTES - 1 + MAX_ITCH_LEN + BYTES - 1) // BYTES


class _Phase(enum.Enum, shape=2):
    LEN_HI = 0   # next byte is the high byte of a length prefix
    LEN_LO = 1   # high byte saved in `hi`, next byte is the low byte
    BODY = 2     # `rem` bytes of a message remain, from lane `lane` of the current word
    SKIP = 3     # `rem` bytes of an over-long message remain, to be dropped


class ItchSplitter(wiring.Component):
    """Split MoldUDP64 message blocks into ITCH messages.

    ``i_stream`` is a 64-bit byte stream (:func:`tickgate.fpga.stream.ByteStream` with ``user`` =
    :data:`SPLIT_USER`) carrying, per packet,
    the MoldUDP64 message blocks: a big-endian u16 length, then that many message bytes, repeated. A
    packet may start at any lane: its first beat's ``keep`` marks lanes lo..7 (lo = 0..7; a one-beat packet
    lo..hi), so an upstream block need not realign its output to lane 0; ``last`` marks the final beat,
    whose ``keep`` marks lanes 0..hi (contiguous ``keep`` in every beat; lo > 0 only on a first beat). A
    message and its length prefix may start at any lane and span words.

    Structure (for Fmax): every lane's candidate length prefix is decoded in parallel from the beat (its
    end beat and lane, zero/over-long, whether it ends in this beat) and one is selected one-hot by the
    registered lane of the next prefix (the first kept lane at a packet's start); a message's beats are
    kept as they come and rotated to byte 0 only into the output register; counters are bumped a cycle late.

    ``o_stream`` carries one :class:`~tickgate.fpga.book_records.ItchMessage` per message: its bytes
    (wire byte *i* in ``bytes[i]``, bytes past ``length`` zero), its length, ``seq``, which counts the
    emitted messages from 1 since reset, and its type classification (``type_ok``, ``type_known``, as
    :func:`~tickgate.fpga.book_records.classify`).

    Latency: :data:`LATENCY` = 1 cycle. For every beat not flagged ``runt`` (every beat of a well-formed
    ITCH feed: the shortest message is 12 bytes), each message ending in it is valid on ``o_stream``
    exactly one cycle after it is accepted.

    Rate: one input beat per cycle while ``o_stream`` is ready, at any alignment, when every length is 7
    or more: at most one message then ends in a beat, and the next one's body always reaches past it.
    A shorter message (or a zero length) puts a second length prefix in its beat, so the producer flags
    that beat and every later one of its packet (``user.runt``; the MoldUDP64 receiver's block walker
    does): a flagged beat is parsed one prefix per cycle and taken in the cycle after its last parse (one
    cycle per prefix parsed in it, plus one; a message ending in it is emitted the cycle after the parse
    of its end). So ``i_stream.ready`` is a function of registers only: ``done`` for a flagged beat, and
    ``~o_stream.valid | o_stream.ready`` otherwise (a combinational path from ``o_stream.ready``: nothing
    is lost under backpressure), never of the beat's bytes. A beat that needs a second parse but is not
    flagged breaks that contract: it is counted in ``unflagged_runt`` and the rest of its packet is
    dropped (no message of it is emitted from that prefix on).

    Malformed input is counted, dropped, and never stops the stream:

    * ``zero_length``: a length prefix of 0 (the two prefix bytes are skipped);
    * ``oversize``: a length above 50 (the message's bytes are skipped);
    * ``truncated``: a packet that ends inside a length prefix or a message (including a skipped
      over-long one); the partial message is discarded and parsing restarts with the next packet;
    * ``unflagged_runt``: a packet whose rest was dropped because a beat needing a second parse was not
      flagged ``runt`` (a producer's fault, never the feed's when the MoldUDP64 receiver feeds it).
    """

    def __init__(self, *, counter_width: int = 32):
        if not isinstance(counter_width, int) or counter_width <= 0:
            raise TypeError(f"counter_width must be a positive integer, not {counter_width!r}")
        super().__init__({
            "i_stream": In(ByteStream(BYTES, user=SPLIT_USER)),
            "o_stream": Out(stream.Signature(ItchMessage)),
            **{name: Out(counter_width) for name in SPLIT_COUNTERS},
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream

        w = i.payload.data
        kp = i.payload.keep                          # contiguous: lanes lo..hi-1 (lo > 0 only on a first beat)
        last = i.payload.last
        runt = i.payload.user.runt                   # this beat may hold a second length prefix

        def lane(k):
            return w.word_select(k, 8)

        # --- state -------------------------------------------------------------------------------------------
        sop = Signal(init=1)                         # the next beat starts a packet
        phase = Signal(_Phase)
        qh = Signal(BYTES)                           # one-hot: lane of the next length prefix in the beat parsed
                                                     # next (PREFIX; BODY/SKIP: the end beat), 0 = none there
        eh = Signal(BYTES)                           # BODY/SKIP: one-hot lane of the last byte in the end beat
        end_here = Signal()                          # BODY/SKIP: the next beat is the end beat (kcnt == 0)
        kcnt = Signal(13)                            # BODY/SKIP: beats before the end beat
        hi = Signal(8)                               # LEN_LO: the saved high length byte
        length = Signal(range(MAX_ITCH_LEN + 1))     # BODY: message length
        first = Signal(range(BYTES))                 # BODY: lane of the message's first byte in slot 0
        jh = Signal(_SLOTS, init=1)                  # BODY: one-hot slot the current beat goes into
        buf = Signal(data.ArrayLayout(8 * BYTES, _SLOTS - 1))

        # --- every candidate length prefix, computed in parallel and selected one-hot ----------------------
        # Candidate l (0..6): the prefix at lanes l, l+1 of this beat, body from lane l+2. Candidate 7: the
        # prefix's high byte at lane 7 alone. Candidate 8 (LEN_LO): `hi` and lane 0, body from lane 1.
        # E = offset (from lane 0 of this beat) of the message's last byte = body start - 1 + length.
        first_kept = Cat(kp[0], *(kp[k] & ~kp[k - 1] for k in range(1, BYTES)))
        in_msg = (phase == _Phase.BODY) | (phase == _Phase.SKIP)
        endvalid = (eh & kp).any()                   # the end beat holds the message's last byte
        parse = ((phase == _Phase.LEN_HI) | (phase == _Phase.LEN_LO) | (in_msg & end_here & endvalid))
        sel = Signal(BYTES + 1)
        m.d.comb += sel.eq(Mux(phase == _Phase.LEN_LO, 1 << BYTES, Mux(sop, first_kept, qh)))

        cands = []
        for c, (ln, bs, here, two) in enumerate(length_prefixes(w, kp, hi)):
            e = Signal(17, name=f"e{c}")
            m.d.comb += e.eq(ln + (bs - 1))
            lo7 = Signal(7, name=f"lo7_{c}")          # the low end of E without the long carry chain
            m.d.comb += lo7.eq(ln[:6] + (bs - 1))
            small = ln[6:] == 0
            cands.append(dict(
                len=ln, here=here, two=two, bs=bs, e=lo7,
                zero=ln == 0, long=ln > MAX_ITCH_LEN,
                d0=small & (lo7 < 8), d1=small & (lo7[3:] == 1),
                kc=(e - 8)[3:16],
                # a zero length: is there more of this beat after it?
                zmore=(kp[bs] if bs < BYTES else 0),
            ))
            cd = cands[-1]
            # The outcome, per candidate (selected one-hot below: short paths to the few registers it drives).
            cd["o_none"] = ~Value.cast(here)
            cd["o_lo"] = here & ~Value.cast(two)
            cd["o_zero"] = here & two & cd["zero"]
            cd["o_long"] = here & two & ~cd["zero"] & cd["long"]
            cd["o_body"] = here & two & ~cd["zero"] & ~cd["long"]
            cd["stall"] = here & two & Mux(cd["zero"], cd["zmore"], ~cd["long"] & cd["d0"])

        def pick(key, width=1):
            return onehot_pick(sel, [cd[key] for cd in cands], width)

        o_none, o_lo, o_zero, o_long, o_body = (pick(k) for k in ("o_none", "o_lo", "o_zero", "o_long", "o_body"))
        # (with no candidate selected, e.g. a message ending at lane 7: none)
        o_none = o_none | (sel == 0)
        n_len = pick("len", 16)
        n_d0 = pick("d0")
        n_d1 = pick("d1")
        n_kc = pick("kc", 13)
        n_e3 = pick("e", 3)                          # lane of the last byte
        n_hi = onehot_pick(sel, [lane(c) for c in range(BYTES)], 8)
        n_first = onehot_pick(sel, [cd["bs"] % BYTES for cd in cands], 3)
        n_body_here = onehot_pick(sel, [int(cd["bs"] < BYTES) for cd in cands])
        n_zmore = pick("zmore")
        # one-hot lane after a zero length (0: the next beat)
        n_znext = onehot_pick(sel, [(1 << cd["bs"]) & 0xFF for cd in cands], BYTES)
        eh_new = Signal(BYTES)
        m.d.comb += eh_new.eq(Const(1, BYTES) << n_e3)
        qh_new = Signal(BYTES)                       # lane after the message's end (0: next beat, lane 0)
        m.d.comb += qh_new.eq((Const(2, BYTES + 1) << n_e3)[:BYTES])

        # --- the message: slots 0..j-1 from `buf`, slot j the current beat; rotate by `first`, mask -----------
        view = Signal(8 * BYTES * _SLOTS)
        m.d.comb += view.eq(Cat(*(Mux(jh[n], w, buf[n]) if n < _SLOTS - 1 else w for n in range(_SLOTS))))
        body = Signal(8 * MAX_ITCH_LEN)
        with m.Switch(first):
            for n in range(BYTES):
                with m.Case(n):
                    m.d.comb += body.eq(view[8 * n: 8 * (n + MAX_ITCH_LEN)])
        masked = Cat(*(body[8 * n: 8 * n + 8] & (length > n).replicate(8) for n in range(MAX_ITCH_LEN)))
        # The type, classified as the message is registered, so the decoder's kind, field selects and counters
        # start at flip-flops. Its byte 0 is kept in `tbyte` when it arrives (not taken from the rotation),
        # except for a message that starts at lane 0 of the beat it ends in (`first_live`): at most 8 bytes,
        # shorter than every ITCH type, so only `type_known` looks at that lane.
        tbyte = Signal(8)
        n_tbyte = _or([lane(cands[c]["bs"]) & sel[c].replicate(8) for c in range(BYTES + 1)
                       if cands[c]["bs"] < BYTES])
        first0 = Signal(init=1)                      # first == 0, loaded with it
        first_live = Signal()
        m.d.comb += first_live.eq(jh[0] & first0)
        type_ok = Cat(*((tbyte == ord(code)) & (length == itch.LAYOUTS[code].size) for code in TYPE_CODES))
        known = lambda byte: _or([byte == ord(code) for code in TYPE_CODES])
        type_known = Mux(first_live, known(lane(0)), known(tbyte))

        # --- control -----------------------------------------------------------------------------------------
        # `ready` is made from registers only: a flagged beat is parsed (go) until a parse needs no further
        # cycle, then taken with no parse (pop); an unflagged one is parsed and taken in one cycle.
        can_out = ~o.valid | o.ready
        done = Signal()                              # the flagged beat on the input is parsed: take it
        drop = Signal()                              # the rest of the packet is being dropped
        pop = runt & done
        go = Signal()
        m.d.comb += go.eq(i.valid & can_out & ~pop & ~drop)
        stall = Signal()                             # this beat needs another cycle (the next block ends in it)
        m.d.comb += stall.eq(parse & pick("stall"))
        held = stall & runt                          # ... and gets it
        lost = stall & ~runt                         # ... but is taken now: the contract is broken
        m.d.comb += i.ready.eq(drop | Mux(runt, done, can_out))
        m.d.sync += done.eq(go & runt & ~stall)

        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        # The message's bytes, length and type load whenever the output may change, not only on emission:
        # they are read only with `valid`, which the parse sets. Each 64-bit chunk's enable is ~valid | ready
        # from its own copy of `valid` (same rule, kept apart by its own feedback), so no single net enables
        # all 462 flip-flops.
        emit = Signal()                              # set where `valid` is set, below
        payload = o.payload.bytes.as_value()
        fields = [(payload[lo:lo + 64], masked[lo:lo + 64]) for lo in range(0, len(masked), 64)]
        fields.append((Cat(o.payload.length, o.payload.type_ok, o.payload.type_known),
                       Cat(length, type_ok, type_known)))
        for k, (dst, src) in enumerate(fields):
            v = Signal(name=f"o_valid_c{k}")
            m.d.sync += v.eq(v & ~o.ready | emit)
            with m.If(~v | o.ready):
                m.d.sync += dst.eq(src)

        # Counter increments are registered (set by the branches below) and added a cycle later (off the
        # parsing paths).
        inc_truncated = count_strobe(m, self.truncated, name="inc_truncated")
        inc_zero = count_strobe(m, self.zero_length, name="inc_zero")
        inc_oversize = count_strobe(m, self.oversize, name="inc_oversize")
        inc_unflagged = count_strobe(m, self.unflagged_runt, name="inc_unflagged")

        def packet_end(truncated):
            """The beat is the packet's last (and is consumed): count a truncation (the restart at the next
            packet is done below for every consumed last beat)."""
            return [inc_truncated.eq(1)] if truncated is not None else []

        # The message's slots: slot n loads the input while it is the slot the next beat goes into (jh[n]),
        # taken or not (it is read only once filled, and then jh has moved on); slot 0 also while no message
        # is in progress and on a consumed end beat, which is where a new message's first beat comes from
        # (a beat parsed but not consumed, or with no message in it, is loaded again). The enables are
        # registers, not the parse.
        for n in range(_SLOTS - 1):
            with m.If(jh[n] | ((~in_msg | (end_here & go)) if n == 0 else 0)):
                m.d.sync += buf[n].eq(w)

        with m.If(drop & i.valid & last):
            m.d.sync += [drop.eq(0), sop.eq(1), phase.eq(_Phase.LEN_HI)]
        with m.If(go):
            m.d.sync += sop.eq(last & ~held)
            with m.If(lost):
                m.d.sync += [inc_unflagged.eq(1), drop.eq(~last)]
            with m.If(in_msg & ~end_here):
                # The message (or skip) runs past this beat.
                m.d.sync += [kcnt.eq(kcnt - 1), end_here.eq(kcnt == 1)]
                with m.If(phase == _Phase.BODY):
                    m.d.sync += jh.eq(jh << 1)
                    with m.If(jh[0]):
                        m.d.sync += tbyte.eq(lane(0))     # a body that starts at lane 0 of this beat
                with m.If(last):
                    m.d.sync += packet_end(1)
            with m.Elif(in_msg & ~endvalid):
                # The packet ended before the message did.
                m.d.sync += packet_end(1)
            with m.Else():
                with m.If(in_msg & (phase == _Phase.BODY)):
                    m.d.sync += [o.valid.eq(1), o.payload.seq.eq(o.payload.seq + 1)]   # the previous seq + 1
                    m.d.comb += emit.eq(1)
                # What a new message needs is loaded whatever the prefix turns out to be (it is only read in
                # BODY/SKIP/LEN_LO, and the message being emitted has been read this cycle): only the
                # phase, the next prefix lane and the counters depend on the outcome (short paths, few loads).
                m.d.sync += [length.eq(n_len[:6]), first.eq(n_first), first0.eq(n_first == 0), eh.eq(eh_new),
                             hi.eq(n_hi), tbyte.eq(n_tbyte), kcnt.eq(Mux(n_d0, 0, n_kc)),
                             end_here.eq(n_d0 | n_d1),
                             jh.eq(Mux(n_body_here & ~n_d0, 2, 1))]
                # A length prefix at the selected lane (none when the message ended at lane 7).
                with m.If(o_none):
                    m.d.sync += [phase.eq(_Phase.LEN_HI), qh.eq(1)]
                with m.Elif(o_lo):
                    m.d.sync += phase.eq(_Phase.LEN_LO)
                    with m.If(last):
                        m.d.sync += packet_end(1)
                with m.Elif(o_zero):
                    m.d.sync += [phase.eq(_Phase.LEN_HI), inc_zero.eq(1), qh.eq(Mux(n_zmore, n_znext, 1))]
                with m.Elif(o_long):
                    m.d.sync += [phase.eq(_Phase.SKIP), qh.eq(qh_new), inc_oversize.eq(1)]
                    with m.If(last):
                        m.d.sync += packet_end(1)
                with m.Else():
                    # A message; with n_d0 it lies wholly in this beat and is emitted next cycle from it (held).
                    m.d.sync += [phase.eq(_Phase.BODY), qh.eq(qh_new)]
                    with m.If(last & ~n_d0):
                        m.d.sync += packet_end(1)
            # Every consumed last beat ends the packet (a held beat is parsed again next cycle).
            with m.If(last & ~held):
                m.d.sync += phase.eq(_Phase.LEN_HI)

        return m


def _or(terms):
    return functools.reduce(operator.or_, terms)
