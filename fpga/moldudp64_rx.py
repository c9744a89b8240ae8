"""MoldUDP64 receiver: session and sequence tracking, gap detection, A/B dedupe at packet granularity."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .stream import ByteStream, keep_mask, popcount_keep

__all__ = ["MoldUDP64Receiver", "MOLD_COUNTERS", "MIN_MESSAGE", "LATENCY", "LATENCY_MAX"]

#: Header: session 10 bytes, sequence u64, count u16 (tickgate.wire.moldudp64.HEADER).
HEADER_BYTES = 20
#: Shortest message (without its 2-byte length) the block walker follows: a block of 9 or more bytes
#: starts at most once per 8-byte beat. ITCH 5.0's shortest message is 11 bytes.
MIN_MESSAGE = 7

#: Cycles from the input beat holding a packet's last byte to the output beat holding it (valid), with no
#: stalls; LATENCY_MAX when that byte needs the flush beat (see MoldUDP64Receiver).
LATENCY = 1
LATENCY_MAX = 2

MOLD_COUNTERS = (
    "accepted",     # data packets forwarded whole (in sequence, or after a gap)
    "duplicate",    # data packets entirely at or below the expected sequence (dropped)
    "overlap",      # data packets starting below and ending above the expected sequence (new tail forwarded)
    "unsequenced",  # packets with sequence 0 (anonymised captures): data forwarded, sequencing untouched
    "heartbeat",    # count 0
    "end_session",  # count 0xFFFF
    "truncated",    # shorter than the 20-byte header (dropped)
    "session",      # new sessions adopted (the first packet after reset included)
    "gap",          # gaps detected (a packet, heartbeat or end of session ahead of the expected sequence)
    "missed",       # messages skipped over by gaps (sum of sequence - expected)
    "count_error",  # forwarded packets whose message blocks do not match count (see docstring)
)


class MoldUDP64Receiver(wiring.Component):
    """Track one MoldUDP64 session; forward each new message block once.

    The input is a stream of UDP payloads (one per ``last``), e.g. from
    :class:`tickgate.fpga.udp_rx.UDPReceiver`. The 20-byte header is checked when beat 2 arrives:

    * A packet with sequence number 0 is *unsequenced* (sequence numbers start at 1; anonymised captures
      zero the header): counted in ``unsequenced``, its message blocks forwarded as they are (``user`` 0),
      session and sequence tracking untouched, as tickgate.feed.source delivers such packets.
    * A session name other than the current one (or the first packet after reset) is adopted and counted
      in ``session``; the expected sequence becomes the packet's (the receiver joins mid-session at the
      first packet's sequence, without a gap).
    * A data packet (count 1..0xFFFE) whose sequence is the expected one is forwarded; one ahead of it is
      a gap (``gap`` counted, ``missed`` += the messages skipped, the sticky ``status.gap`` set with
      ``status.first_missing`` holding the first missing sequence if it was clear) and is forwarded; one
      ending at or below the expected sequence is dropped as ``duplicate``; one that starts below and ends
      above it is a partial overlap: its first ``expected - sequence`` message blocks (already forwarded)
      are skipped and the rest forwarded, counted in ``overlap``. So two copies of a feed (A/B) merged into
      one input come out once and losslessly, whatever their packet boundaries. There is no reorder
      buffer: a packet ahead of the expected sequence is a gap at once (a late packet that would have
      filled it is then a duplicate), as ``tickgate.wire.moldudp64.Receiver(max_pending=0)``.
    * Heartbeats (count 0) and end of session (count 0xFFFF) are counted and carry the next expected
      sequence: one ahead of the expected sequence is a gap. Nothing is forwarded for them.
    * A packet shorter than the header is dropped as ``truncated``. Every packet bumps exactly one of
      ``accepted``, ``duplicate``, ``overlap``, ``unsequenced``, ``heartbeat``, ``end_session``, ``truncated``.

    The output is the message-block area (u16 length + message, repeated) of each forwarded packet (from
    the first new block for a partial overlap), first byte in lane 0, one packet per ``last``; ``user``
    holds the sequence number of its first message. Forwarding is cut-through, so the message blocks are
    checked as they pass: a forwarded packet whose blocks are not exactly ``count`` blocks ending at the
    packet's end (a block running past the end, blocks missing or extra bytes) or has a message shorter
    than :data:`MIN_MESSAGE` bytes (not followed: the walker sees one block start per beat) is counted in
    ``count_error`` when it ends; it has been forwarded (a partial overlap whose first new block the walker
    cannot reach forwards nothing), and the expected sequence has advanced by its ``count``.

    ``gap_clear`` (a strobe) clears ``status.gap``; a gap in the same cycle wins.

    Rate: one beat per cycle in and out, back-to-back packets included; ``i_stream.ready`` only drops
    when the output is stalled. Latency: the output register is loaded in the cycle the input beat
    completing an output beat is accepted. With no stalls, output beat *k* of a whole packet is accepted
    4 + *k* cycles after the packet's first input beat; the output beat holding the packet's last byte
    :data:`LATENCY` = 1 cycle after the input beat holding it, or :data:`LATENCY_MAX` = 2 when it lies
    past the realignment shift of the final beat (a flush beat following the packet's last input beat,
    overlapped with the next packet). A partial overlap's tail starts at any lane and follows the same rule.

    Members
    -------
    i_stream : ``In(ByteStream())``
    o_stream : ``Out(ByteStream(user=64))``
    gap_clear : ``In(1)``
    status : ``Out``: ``has_session``, ``session`` (10 bytes, wire order), ``expected`` (next sequence),
        ``gap`` (sticky), ``first_missing``
    counters : ``Out(Signature({name: Out(counter_width) for name in MOLD_COUNTERS}))``
    """

    def __init__(self, *, counter_width: int = 32):
        if not isinstance(counter_width, int) or counter_width <= 0:
            raise TypeError(f"counter_width must be a positive integer, not {counter_width!r}")
        super().__init__({
            "i_stream": In(ByteStream()),
            "o_stream": Out(ByteStream(user=64)),
            "gap_clear": In(1),
            "status": Out(wiring.Signature({
                "has_session": Out(1),
                "session": Out(data.ArrayLayout(8, 10)),
                "expected": Out(64),
                "gap": Out(1),
                "first_missing": Out(64),
            })),
            "counters": Out(wiring.Signature({name: Out(counter_width) for name in MOLD_COUNTERS})),
        })

    def elaborate(self, platform):
        m = Module()
        i, o, st = self.i_stream, self.o_stream, self.status
        cur = i.payload.data
        last = i.payload.last
        avail = popcount_keep(i.payload.keep)

        can_load = ~o.valid | o.ready
        m.d.comb += i.ready.eq(can_load)
        take = Signal()
        m.d.comb += take.eq(i.valid & i.ready)

        beat = Signal(range(4))                           # beat index in the packet, saturating at 3
        boff = Signal(16)                                 # packet offset of the current beat
        hdr = Signal(data.ArrayLayout(8, 16))             # packet bytes 0..15
        with m.If(take):
            with m.Switch(beat):
                for b in range(2):
                    with m.Case(b):
                        m.d.sync += hdr.as_value().word_select(b, 64).eq(cur)
            with m.If(last):
                m.d.sync += [beat.eq(0), boff.eq(0)]
            with m.Else():
                m.d.sync += boff.eq(boff + 8)
                with m.If(beat != 3):
                    m.d.sync += beat.eq(beat + 1)

        def byte(n):
            return hdr[n] if n < 16 else cur.word_select(n - 16, 8)

        def be(offset, size):
            return Cat(*(byte(offset + k) for k in reversed(range(size))))

        session = Cat(*(byte(k) for k in range(10)))
        seq = be(10, 8)
        count = be(18, 2)

        # --- header verdict ---
        inc = {name: Signal(name=f"inc_{name}") for name in MOLD_COUNTERS if name != "missed"}
        missed_add = Signal(64)
        truncated = take & last & ((beat < 2) | ((beat == 2) & (avail < 4)))
        decide = take & (beat == 2) & ~truncated
        m.d.comb += inc["truncated"].eq(truncated)

        cur_session = st.session.as_value()
        new_session = ~st.has_session | (session != cur_session)
        end_seq = Signal(65)
        m.d.comb += end_seq.eq(seq + count)
        control = (count == 0) | (count == 0xFFFF)
        fwd = Signal()                                     # forward this packet (valid with `decide`)
        gap_event = Signal()

        overlap = Signal()                                 # a partial overlap (valid with `decide`)
        with m.If(decide):
            with m.If(seq == 0):
                m.d.comb += [inc["unsequenced"].eq(1), fwd.eq(~control)]
            with m.Else():
                with m.If(new_session):
                    m.d.comb += inc["session"].eq(1)
                    m.d.sync += [st.has_session.eq(1), st.session.eq(session)]
                    m.d.sync += st.expected.eq(Mux(control, seq, end_seq))
                    m.d.comb += fwd.eq(~control)
                with m.Elif(control):
                    with m.If(seq > st.expected):
                        m.d.comb += gap_event.eq(1)
                        m.d.sync += st.expected.eq(seq)
                with m.Elif(seq == st.expected):
                    m.d.comb += fwd.eq(1)
                    m.d.sync += st.expected.eq(end_seq)
                with m.Elif(seq > st.expected):
                    m.d.comb += [fwd.eq(1), gap_event.eq(1)]
                    m.d.sync += st.expected.eq(end_seq)
                with m.Elif(end_seq <= st.expected):
                    m.d.comb += inc["duplicate"].eq(1)
                with m.Else():
                    m.d.comb += [inc["overlap"].eq(1), overlap.eq(1), fwd.eq(1)]
                    m.d.sync += st.expected.eq(end_seq)
                with m.If(count == 0):
                    m.d.comb += inc["heartbeat"].eq(1)
                with m.Elif(count == 0xFFFF):
                    m.d.comb += inc["end_session"].eq(1)
                m.d.comb += inc["accepted"].eq(fwd & ~overlap)

        m.d.comb += inc["gap"].eq(gap_event)
        with m.If(gap_event):
            m.d.comb += missed_add.eq(seq - st.expected)
            m.d.sync += st.gap.eq(1)
            with m.If(~st.gap):
                m.d.sync += st.first_missing.eq(st.expected)
        with m.Elif(self.gap_clear):
            m.d.sync += st.gap.eq(0)

        # --- message-block walker (every beat of every packet; judged for forwarded packets) ---
        start = Signal(16, init=HEADER_BYTES)            # packet offset of the next block
        blocks = Signal(16)
        hi_pend = Signal()                                # a block's length straddles into this beat
        hi = Signal(8)
        short = Signal()                                  # a message shorter than MIN_MESSAGE was seen
        n_start, n_blocks, n_hi_pend, n_short = (Signal.like(s, name=f"n_{s.name}")
                                                 for s in (start, blocks, hi_pend, short))
        m.d.comb += [n_start.eq(start), n_blocks.eq(blocks), n_hi_pend.eq(hi_pend), n_short.eq(short)]
        lane = Signal(3)
        m.d.comb += lane.eq((start - boff)[:3])
        length = Signal(16)
        with m.If(hi_pend):
            m.d.comb += [length.eq(Cat(cur[:8], hi)), n_hi_pend.eq(0),
                         n_start.eq(start + 2 + length), n_short.eq(short | (length < MIN_MESSAGE))]
        with m.Elif(~short & (start >= boff) & (start < boff + avail)):
            m.d.comb += n_blocks.eq(blocks + 1)
            with m.If((lane == 7) | (lane + 1 >= avail)):
                m.d.comb += n_hi_pend.eq(1)
            with m.Else():
                m.d.comb += [length.eq(Cat(cur.word_select(lane + 1, 8), cur.word_select(lane, 8))),
                             n_start.eq(start + 2 + length), n_short.eq(length < MIN_MESSAGE)]
        with m.If(take):
            with m.If(last):
                m.d.sync += [start.eq(HEADER_BYTES), blocks.eq(0), hi_pend.eq(0), short.eq(0)]
            with m.Else():
                m.d.sync += [start.eq(n_start), blocks.eq(n_blocks), hi_pend.eq(n_hi_pend), short.eq(n_short),
                             hi.eq(cur.word_select(lane, 8))]

        pkt_fwd = Signal()                                # the current packet is being forwarded
        pkt_count = Signal(16)
        with m.If(decide):
            m.d.sync += [pkt_fwd.eq(fwd), pkt_count.eq(count)]
        fwd_now = Mux(beat == 2, fwd & decide, pkt_fwd)
        count_now = Mux(beat == 2, count, pkt_count)
        packet_end = take & last & (beat >= 2) & fwd_now
        blocks_ok = (n_start == boff + avail) & (n_blocks == count_now) & ~n_hi_pend & ~n_short
        m.d.comb += inc["count_error"].eq(packet_end & ~blocks_ok)

        # --- re-alignment. The output starts at packet byte S (20, or a partial overlap's first new block,
        # found by the walker) with S in input beat j at lane L. Output beat k is bytes S+8k..S+8k+7: with
        # shift = L (1..7) lanes shift..7 of input beat j+k and lanes 0..shift-1 of beat j+k+1; with L = 0
        # (shift 8) input beat j+k itself.
        first_seq = Signal(64)
        emitting = Signal()                               # started: output beats follow the input beats
        armed = Signal()                                  # partial overlap: waiting for block `skip`
        skip = Signal(16)
        shift = Signal(range(9), init=4)
        prev = Signal(64)
        flush = Signal()
        flush_n = Signal(range(8))
        emit = Signal()
        e_data = Signal(64)
        e_n = Signal(range(9))
        e_last = Signal()

        with m.If(take):
            m.d.sync += prev.eq(cur)
        with m.If(decide & fwd):
            m.d.sync += first_seq.eq(Mux(overlap, st.expected, seq))
            with m.If(overlap):
                m.d.sync += [armed.eq(~last), skip.eq(st.expected - seq)]
            with m.Else():
                m.d.sync += shift.eq(4)
                with m.If(~last):
                    m.d.sync += emitting.eq(1)
                with m.Elif(avail > 4):
                    m.d.sync += [flush.eq(1), flush_n.eq(avail - 4)]

        # A partial overlap's first new block starts in this beat at lane `lane`.
        found = Signal()
        m.d.comb += found.eq(take & armed & ~hi_pend & ~short & (start >= boff) & (start < boff + avail) &
                             (blocks == skip))
        with m.If(take & armed & last):
            m.d.sync += armed.eq(0)
        with m.If(found):
            m.d.sync += [armed.eq(0), shift.eq(Mux(lane == 0, 8, lane))]
            with m.If(lane == 0):
                # The tail starts at lane 0: this beat is its first output beat.
                m.d.comb += [emit.eq(1), e_data.eq(cur), e_n.eq(avail), e_last.eq(last)]
                m.d.sync += emitting.eq(~last)
            with m.Elif(~last):
                m.d.sync += emitting.eq(1)
            with m.Else():
                m.d.sync += [flush.eq(1), flush_n.eq(avail - lane)]

        window = Signal(64)
        with m.Switch(shift):
            for k in range(1, 9):
                with m.Case(k):
                    m.d.comb += window.eq(Cat(prev, cur)[8 * k: 8 * k + 64])
        with m.If(take & emitting):
            m.d.comb += [emit.eq(1), e_data.eq(window)]
            with m.If(last & (avail > shift)):
                m.d.comb += e_n.eq(8)
                m.d.sync += [emitting.eq(0), flush.eq(1), flush_n.eq(avail - shift)]
            with m.Elif(last):
                m.d.comb += [e_n.eq(8 - shift + avail), e_last.eq(1)]
                m.d.sync += emitting.eq(0)
            with m.Else():
                m.d.comb += e_n.eq(8)

        # A flush beat follows a packet's last beat; the input beat accepted with it starts the next packet.
        flush_data = Signal(64)
        with m.Switch(shift):
            for k in range(1, 8):
                with m.Case(k):
                    m.d.comb += flush_data.eq(prev[8 * k:])
        with m.If(flush & can_load):
            m.d.comb += [emit.eq(1), e_data.eq(flush_data), e_n.eq(flush_n), e_last.eq(1)]
            m.d.sync += flush.eq(0)

        with m.If(emit):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.data.eq(e_data),
                o.payload.keep.eq(keep_mask(e_n)),
                o.payload.last.eq(e_last),
                o.payload.user.eq(first_seq),
            ]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)

        for name in MOLD_COUNTERS:
            counter = getattr(self.counters, name)
            if name == "missed":
                m.d.sync += counter.eq(counter + missed_add)
            else:
                with m.If(inc[name]):
                    m.d.sync += counter.eq(counter + 1)
        return m
