"""MoldUDP64 receiver: session and sequence tracking, gap detection, A/B dedupe at packet granularity."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .stream import BYTES as BYTES_PER_BEAT
from .stream import ByteStream, popcount_keep

__all__ = ["MoldUDP64Receiver", "MOLD_COUNTERS", "MIN_MESSAGE", "LATENCY", "LATENCY_MAX"]

#: Header: session 10 bytes, sequence u64, count u16 (tickgate.wire.moldudp64.HEADER).
HEADER_BYTES = 20
#: Shortest message (without its 2-byte length) the block walker follows: a block of 9 or more bytes
#: starts at most once per 8-byte beat. ITCH 5.0's shortest message is 11 bytes.
MIN_MESSAGE = 7

#: Cycles from the input beat holding any forwarded byte to the output beat holding it (valid), with no
#: stalls: the output is not realigned, so there is no flush beat and LATENCY_MAX (kept for callers) is
#: the same.
LATENCY = 1
LATENCY_MAX = 1

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

    The input is a stream of UDP payloads (one per ``last``, first byte in lane 0), e.g. from
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
    the first new block for a partial overlap), one packet per ``last``, **not realigned**: every output
    beat is an input beat, with ``keep`` cleared below the area, so a packet's first output beat keeps lanes
    4..7 (the area starts at packet byte 20) or, for a partial overlap, the lanes from its first new block
    (any lane); later beats keep what the input kept. The consumer must accept a first beat that does not
    start at lane 0 (:class:`tickgate.fpga.itch_split.ItchSplitter` does). ``user`` holds the sequence
    number of its first message. Forwarding is cut-through, so the message blocks are
    checked as they pass: a forwarded packet whose blocks are not exactly ``count`` blocks ending at the
    packet's end (a block running past the end, blocks missing or extra bytes) or has a message shorter
    than :data:`MIN_MESSAGE` bytes (not followed: the walker sees one block start per beat) is counted in
    ``count_error`` when it ends; it has been forwarded (a partial overlap whose first new block the walker
    cannot reach forwards nothing), and the expected sequence has advanced by its ``count``.

    ``gap_clear`` (a strobe) clears ``status.gap``; a gap in the same cycle wins.

    Rate: one beat per cycle in and out, back-to-back packets included; ``i_stream.ready`` only drops
    when the output is stalled. Latency: the output register is loaded in the cycle its input beat is
    accepted, so with no stalls every forwarded byte leaves :data:`LATENCY` = 1 cycle after the input beat
    holding it (no flush beat: :data:`LATENCY_MAX` = 1 too); output beat *k* of a whole packet (input beat
    2 + *k*) is accepted 3 + *k* cycles after the packet's first input beat.

    Structure (for Fmax): the session compare and the sequence number's high 48 bits against ``expected``
    are registered on beat 1, so the beat-2 verdict adds only 16-bit arithmetic (duplicate vs partial
    overlap, which no beat-2 output depends on, with a carry-save sign test); ``status.expected`` is
    written the cycle after the verdict; the block walker tracks the next block as (beats ahead, lane) with
    every lane's candidate length decoded in parallel; the ``count_error`` check and every counter
    increment are registered (counters lag their event by one or two cycles).

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
        self._counter_width = counter_width
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
        kp = i.payload.keep
        last = i.payload.last
        cw = self._counter_width

        def lane(k):
            return cur.word_select(k, 8)

        can_load = ~o.valid | o.ready
        m.d.comb += i.ready.eq(can_load)
        take = Signal()
        m.d.comb += take.eq(i.valid & i.ready)

        beat = Signal(range(4))                           # beat index in the packet, saturating at 3
        hdr = Signal(data.ArrayLayout(8, 8))              # packet bytes 0..7
        with m.If(take):
            with m.If(beat == 0):
                m.d.sync += hdr.as_value().eq(cur)
            with m.If(last):
                m.d.sync += beat.eq(0)
            with m.Elif(beat != 3):
                m.d.sync += beat.eq(beat + 1)

        # --- beat 1 (bytes 8..15): the session compare and the high 48 bits of the sequence number compared
        # with `expected`, registered, so that beat 2 (bytes 16..23: sequence low 16 bits, count, first
        # message bytes) only adds 16-bit arithmetic. `expected` only changes on a header verdict (beat 2
        # of a packet), at least two cycles before the next packet's beat 1.
        session_now = Cat(hdr.as_value(), lane(0), lane(1))
        s_hi_now = Cat(*(lane(k) for k in reversed(range(2, 8))))      # bytes 10..15, big-endian
        e_hi = st.expected[16:]
        e_lo = st.expected[:16]
        ns_q, hz_q, heq_q, hgt_q = (Signal(name=n) for n in ("ns_q", "hz_q", "heq_q", "hgt_q"))
        e_hi_m1 = Signal(48, init=(1 << 48) - 1)          # expected_hi - 1, kept with `expected`
        s_hi_q = Signal(48)
        s_hi1_q = Signal(48)
        hge2_q = Signal()                                 # expected_hi - seq_hi >= 2
        negx_q = Signal(19)                               # ~((expected_hi - seq_hi) * 2**16 + e_lo) when that is 0 or 1
        with m.If(take & (beat == 1)):
            m.d.sync += [
                ns_q.eq(~st.has_session | (session_now != st.session.as_value())),
                hz_q.eq(s_hi_now == 0),
                heq_q.eq(s_hi_now == e_hi),
                hgt_q.eq(s_hi_now > e_hi),
                s_hi_q.eq(s_hi_now),
                s_hi1_q.eq(s_hi_now + 1),
                hge2_q.eq((s_hi_now < e_hi) & (s_hi_now != e_hi_m1)),
                negx_q.eq(~Cat(e_lo, s_hi_now == e_hi_m1, Const(0, 2))),
            ]

        # --- header verdict (beat 2) ---
        s_lo = Cat(lane(1), lane(0))                      # bytes 16..17
        count = Cat(lane(3), lane(2))                     # bytes 18..19
        seq = Cat(s_lo, s_hi_q)
        sum17 = Signal(17)
        m.d.comb += sum17.eq(s_lo + count)
        end_seq = Cat(sum17[:16], Mux(sum17[16], s_hi1_q, s_hi_q))
        seq_zero = hz_q & (s_lo == 0)
        seq_eq = heq_q & (s_lo == e_lo)
        seq_gt = hgt_q | (heq_q & (s_lo > e_lo))
        # With seq < expected: end_seq <= expected <=> s_lo + count <= X, X = (expected_hi - seq_hi) * 2**16 +
        # e_lo: always when expected_hi - seq_hi >= 2 (hge2_q), else a 19-bit sign test of s_lo + count + ~X
        # (one carry-save level and one carry chain; ~X registered at beat 1).
        csa_a, csa_b, csa_c = s_lo, count, negx_q
        csa_s = Signal(19)
        csa_k = Signal(19)
        m.d.comb += [csa_s.eq(csa_a ^ csa_b ^ csa_c),
                     csa_k.eq(Cat(Const(0, 1), (csa_a & csa_b) | (csa_a & csa_c) | (csa_b & csa_c))[:19])]
        le_sum = Signal(19)
        m.d.comb += le_sum.eq(csa_s + csa_k)
        end_le = hge2_q | le_sum[18]

        inc = {name: Signal(name=f"inc_{name}") for name in MOLD_COUNTERS if name != "missed"}
        truncated = take & last & ((beat < 2) | ((beat == 2) & ~kp[3]))
        decide = take & (beat == 2) & ~truncated
        m.d.comb += inc["truncated"].eq(truncated)

        new_session = ns_q
        control = (count == 0) | (count == 0xFFFF)
        seq_lt = ~seq_eq & ~seq_gt
        # Shallow: what the beat-2 output needs (a whole packet forwarded). Deeper (end_le): duplicate vs
        # partial overlap, which only registers see (nothing of either is output on beat 2).
        fwd_whole = ~control & (seq_zero | new_session | ~seq_lt)
        sequenced = ~seq_zero
        overlap = Signal()
        m.d.comb += overlap.eq(sequenced & ~new_session & ~control & seq_lt & ~end_le)
        fwd = fwd_whole | overlap
        gap_event = Signal()
        m.d.comb += gap_event.eq(decide & sequenced & ~new_session & seq_gt)
        session_now_q = Signal(80)
        with m.If(take & (beat == 1)):
            m.d.sync += session_now_q.eq(session_now)
        # `expected` is written the cycle after the verdict (read again at the next packet's beat 1 at the
        # earliest; the status output lags by that cycle).
        e_we = Signal()
        e_new = Signal(64)
        m.d.sync += e_we.eq(decide & sequenced & (new_session | (control & seq_gt) | (~control & ~(seq_lt & end_le))))
        with m.If(decide):
            m.d.sync += e_new.eq(Mux(control, seq, end_seq))
        with m.If(e_we):
            m.d.sync += [st.expected.eq(e_new), e_hi_m1.eq(e_new[16:] - 1)]
        with m.If(decide):
            with m.If(seq_zero):
                m.d.comb += inc["unsequenced"].eq(1)
            with m.Else():
                with m.If(new_session):
                    m.d.comb += inc["session"].eq(1)
                    m.d.sync += [st.has_session.eq(1), st.session.as_value().eq(session_now_q)]
                with m.Elif(~control & seq_lt):
                    m.d.comb += [inc["duplicate"].eq(end_le), inc["overlap"].eq(~end_le)]
                with m.If(count == 0):
                    m.d.comb += inc["heartbeat"].eq(1)
                with m.Elif(count == 0xFFFF):
                    m.d.comb += inc["end_session"].eq(1)
                m.d.comb += inc["accepted"].eq(fwd_whole)

        m.d.comb += inc["gap"].eq(gap_event)
        missed_q = Signal(cw)                              # added into `missed` a cycle later
        m.d.sync += missed_q.eq(Mux(gap_event, (seq - st.expected)[:cw], 0))
        with m.If(gap_event):
            m.d.sync += st.gap.eq(1)
            with m.If(~st.gap):
                m.d.sync += st.first_missing.eq(st.expected)
        with m.Elif(self.gap_clear):
            m.d.sync += st.gap.eq(0)

        # --- message-block walker (every beat of every packet; judged for forwarded packets) ---
        # The next block starts `wk` beats from the current one (w_here: this beat, w_next: the next) at
        # lane `wl`; blocks of MIN_MESSAGE + 2 or more bytes start at most once per beat. Each lane's
        # candidate length is decoded in parallel and one is selected one-hot.
        wk = Signal(13, init=2)
        w_here = Signal()
        w_next = Signal()
        wl = Signal(BYTES_PER_BEAT, init=1 << 4)          # one-hot
        blocks = Signal(16)
        hi_pend = Signal()                                # a block's length straddles into this beat
        hi = Signal(8)
        short = Signal()                                  # a message shorter than MIN_MESSAGE was seen
        active = ~short & (hi_pend | w_here)
        sel = Signal(BYTES_PER_BEAT + 1)                  # candidate: lanes 0..7, 8 = the straddling length
        m.d.comb += sel.eq(Mux(short, 0, Mux(hi_pend, 1 << BYTES_PER_BEAT, Mux(w_here, wl, 0))))
        cands = []
        for c in range(BYTES_PER_BEAT + 1):
            if c == BYTES_PER_BEAT:
                ln, bs, here, two = Cat(lane(0), hi), 1, 1, 1
            elif c == BYTES_PER_BEAT - 1:
                ln, bs, here, two = Cat(lane(c), lane(c)), c + 2, kp[c], 0
            else:
                ln, bs, here, two = Cat(lane(c + 1), lane(c)), c + 2, kp[c], kp[c + 1]
            off = Signal(17, name=f"off{c}")              # next block's offset from lane 0 of this beat
            m.d.comb += off.eq(ln + bs)
            lo7 = Signal(7, name=f"lo7_{c}")              # its low end without the long carry chain
            m.d.comb += lo7.eq(ln[:6] + bs)
            small = ln[6:] == 0
            cands.append(dict(here=here, two=two, small=small, lo7=lo7, short=ln < MIN_MESSAGE,
                              nk1=small & (lo7[3:] == 1), nk2=small & (lo7[3:] == 2), wk=(off - 8)[3:16]))

        def pick(key, width=1):
            terms = []
            for c in range(BYTES_PER_BEAT + 1):
                v = cands[c][key]
                v = Const(v, width) if isinstance(v, int) else Value.cast(v)[:width]
                terms.append(v & sel[c].replicate(width))
            result = terms[0]
            for t in terms[1:]:
                result = result | t
            return result

        c_here = pick("here")                             # the block's first byte is in this beat
        c_two = pick("two")                               # and its whole length
        c_short = pick("short")
        c_lo7 = pick("lo7", 7)
        c_small = pick("small")
        c_nk1 = pick("nk1")
        c_nk2 = pick("nk2")
        c_wk = pick("wk", 13)
        c_wl = Signal(BYTES_PER_BEAT)
        m.d.comb += c_wl.eq(Const(1, BYTES_PER_BEAT) << c_lo7[:3])
        hi_byte = 0
        for c in range(BYTES_PER_BEAT):
            hi_byte = hi_byte | (lane(c) & sel[c].replicate(8))

        starts = active & c_here & ~hi_pend                 # a block starts here (counted)
        parsed = active & c_here & c_two                    # its length is complete here
        n_blocks = Mux(starts, blocks + 1, blocks)
        n_hi_pend = starts & ~c_two
        n_short = short | (parsed & c_short)
        with m.If(take):
            with m.If(last):
                m.d.sync += [wk.eq(2), w_here.eq(0), w_next.eq(0), wl.eq(1 << 4), blocks.eq(0), hi_pend.eq(0),
                             short.eq(0)]
            with m.Else():
                m.d.sync += [blocks.eq(n_blocks), hi_pend.eq(n_hi_pend), short.eq(n_short), hi.eq(hi_byte)]
                with m.If(parsed):
                    m.d.sync += [wk.eq(c_wk), w_here.eq(c_nk1), w_next.eq(c_nk2), wl.eq(c_wl)]
                with m.Elif(~n_hi_pend):
                    m.d.sync += [wk.eq(wk - 1), w_here.eq(w_next), w_next.eq(wk == 2)]

        # count_error: the check at a forwarded packet's end is registered and judged the next cycle.
        pkt_fwd = Signal()                                # the current packet is being forwarded
        pkt_count = Signal(16)
        with m.If(decide):
            m.d.sync += [pkt_fwd.eq(fwd), pkt_count.eq(count)]
        fwd_now = Mux(beat == 2, fwd & decide, pkt_fwd)
        count_now = Mux(beat == 2, count, pkt_count)
        chk = Signal()
        r_parsed, r_here, r_next, r_hp, r_short = (Signal(name=n) for n in ("r_parsed", "r_here", "r_next", "r_hp",
                                                                            "r_short"))
        r_lo7 = Signal(7)
        r_small = Signal()
        r_wl = Signal(BYTES_PER_BEAT)
        r_kp = Signal(BYTES_PER_BEAT)
        r_blocks = Signal(16)
        r_count = Signal(16)
        m.d.sync += chk.eq(take & last & (beat >= 2) & fwd_now)
        with m.If(take & last):
            m.d.sync += [r_parsed.eq(parsed), r_here.eq(w_here & ~hi_pend), r_next.eq(w_next), r_hp.eq(n_hi_pend),
                         r_short.eq(n_short), r_lo7.eq(c_lo7), r_small.eq(c_small), r_wl.eq(wl), r_kp.eq(kp), r_blocks.eq(n_blocks),
                         r_count.eq(count_now)]
        r_avail = popcount_keep(r_kp)
        r_end = Signal(BYTES_PER_BEAT + 1)                # one-hot: lane just past the data (8: next beat)
        m.d.comb += r_end.eq(~Cat(r_kp, Const(0, 1)) & Cat(Const(1, 1), r_kp))
        pos_ok = Mux(r_parsed, r_small & (r_lo7 == r_avail),
                     Mux(r_here, (Cat(r_wl, 0) & r_end) != 0, r_next & r_wl[0] & r_end[8]))
        m.d.comb += inc["count_error"].eq(chk & ~(pos_ok & (r_blocks == r_count) & ~r_hp & ~r_short))

        # --- output: the input beats, not realigned; `keep` cleared below the message area --------------
        # A whole packet's area starts at byte 20 (beat 2, lane 4); a partial overlap's at its first new
        # block (found by the walker, any lane of beat 3 or later).
        first_seq = Signal(64)
        emitting = Signal()                               # the rest of the packet is forwarded
        armed = Signal()                                  # partial overlap: waiting for block `skip`
        skip = Signal(16)
        emit = Signal()
        e_keep = Signal(BYTES_PER_BEAT)
        e_user = Signal(64)
        m.d.comb += e_user.eq(first_seq)

        with m.If(decide):
            m.d.sync += [first_seq.eq(Mux(seq_lt & sequenced & ~new_session, st.expected, seq)),
                         skip.eq(e_lo - s_lo), armed.eq(overlap & ~last)]
            with m.If(fwd_whole):
                m.d.sync += emitting.eq(~last)
                with m.If(kp[4]):
                    m.d.comb += [emit.eq(1), e_keep.eq(kp & 0xF0), e_user.eq(seq)]

        found = Signal()
        m.d.comb += found.eq(take & armed & w_here & ~hi_pend & ~short & (wl & kp).any() & (blocks == skip))
        with m.If(take & armed & last):
            m.d.sync += armed.eq(0)
        with m.If(found):
            m.d.sync += [armed.eq(0), emitting.eq(~last)]
            m.d.comb += [emit.eq(1), e_keep.eq(kp & ~(wl - 1))]
        with m.If(take & emitting):
            m.d.comb += [emit.eq(1), e_keep.eq(kp)]
            with m.If(last):
                m.d.sync += emitting.eq(0)

        with m.If(emit):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.data.eq(cur),
                o.payload.keep.eq(e_keep),
                o.payload.last.eq(last),
                o.payload.user.eq(e_user),
            ]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)

        # Counters: increments registered, added a cycle later.
        for name in MOLD_COUNTERS:
            counter = getattr(self.counters, name)
            if name == "missed":
                m.d.sync += counter.eq(counter + missed_q)
            else:
                q = Signal(name=f"incq_{name}")
                m.d.sync += [q.eq(inc[name]), counter.eq(counter + q)]
        return m
