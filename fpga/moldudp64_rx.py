"""MoldUDP64 receiver: session and sequence tracking, gap detection, A/B dedupe at packet granularity."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .counters import count as count_event
from .stream import BYTES as BYTES_PER_BEAT
from .stream import ByteStream, length_prefixes, onehot_pick, popcount_keep

__all__ = ["MoldUDP64Receiver", "MOLD_COUNTERS", "MOLD_USER", "MIN_MESSAGE", "LATENCY", "LATENCY_MAX"]

#: Header: session 10 bytes, sequence u64, count u16 (tickgate.wire.moldudp64.HEADER).
HEADER_BYTES = 20
#: Shortest message (without its 2-byte length) the block walker follows: a block of 9 or more bytes
#: starts at most once per 8-byte beat. ITCH 5.0's shortest message is 11 bytes.
MIN_MESSAGE = 7

#: The output's ``user``: ``seq``, the sequence number of the packet's first forwarded message, and ``runt``,
#: set on every beat from the one completing the length of a message shorter than MIN_MESSAGE (a zero
#: length included) to the packet's end: only those beats can hold two length prefixes, which the ITCH
#: splitter then parses one per cycle.
MOLD_USER = data.StructLayout({"seq": 64, "runt": 1})

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

    The input is a stream of UDP payloads (one per ``last``) as :class:`tickgate.fpga.udp_rx.UDPReceiver`
    forwards them, not realigned: a packet's first beat keeps lanes 2..7 (frames untagged or with two VLAN
    tags) or 6..7 (one tag), told apart by its ``keep`` (lane 5 kept or not); other start lanes are not
    supported. The 20-byte header is checked when its last byte arrives (the deciding beat: beat 2 from
    lane 2, beat 3 from lane 6):

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
    beat is an input beat, with ``keep`` cleared below the area, so a packet's first output beat (its
    deciding beat) keeps lanes 6..7 (from lane 2: the area starts at packet byte 20) or 2..7 (from lane 6)
    or, for a partial overlap, the lanes from its first new block (any lane of a later beat); later beats
    keep what the input kept. The consumer must accept a first beat that does not
    start at lane 0 (:class:`tickgate.fpga.itch_split.ItchSplitter` does). ``user`` (:data:`MOLD_USER`)
    holds the sequence number of its first message (``seq``) and, per beat, the block walker's ``runt``
    flag. Forwarding is cut-through, so the message blocks are
    checked as they pass: a forwarded packet whose blocks are not exactly ``count`` blocks ending at the
    packet's end (a block running past the end, blocks missing or extra bytes) or has a message shorter
    than :data:`MIN_MESSAGE` bytes (not followed: the walker sees one block start per beat) is counted in
    ``count_error`` when it ends; it has been forwarded (a partial overlap whose first new block the walker
    cannot reach forwards nothing), and the expected sequence has advanced by its ``count``.

    ``gap_clear`` (a strobe) clears ``status.gap``; a gap in the same cycle wins.

    Rate: one beat per cycle in and out, back-to-back packets included; ``i_stream.ready`` only drops
    when the output is stalled. Latency: the output register is loaded in the cycle its input beat is
    accepted, so with no stalls every forwarded byte leaves :data:`LATENCY` = 1 cycle after the input beat
    holding it (no flush beat: :data:`LATENCY_MAX` = 1 too); output beat *k* of a whole packet (its
    deciding beat + *k*) is accepted 3 + *k* cycles (from lane 2) or 4 + *k* cycles (from lane 6) after
    the packet's first input beat.

    Structure (for Fmax): the session compare is registered on beat 1, and the sequence number's high 32
    bits against ``expected`` on the beat before the deciding one (from lane 6 the low 32 bits' compares
    too), so the verdict adds only 32-bit compares of the live low half, selected after their carry chains;
    duplicate vs partial overlap (which no output of the deciding beat depends on: a carry-save sign test)
    is registered and used from the next cycle on, as is the gap (``status.gap``, ``first_missing`` and
    ``missed`` lag by a cycle); ``status.expected`` is written the cycle after the verdict; the block walker
    tracks the next block as (beats ahead, lane) with every lane's candidate length decoded in parallel;
    the ``count_error`` check and every counter increment are registered (counters lag their event by one
    to three cycles); the output register's payload is loaded with every accepted beat, only ``valid``
    depending on the verdict.

    Members
    -------
    i_stream : ``In(ByteStream())``
    o_stream : ``Out(ByteStream(user=MOLD_USER))``
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
            "o_stream": Out(ByteStream(user=MOLD_USER)),
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

        def be(lanes):
            """The big-endian value of ``lanes`` of the current beat (the first lane most significant)."""
            return Cat(*(lane(k) for k in reversed(lanes)))

        can_load = ~o.valid | o.ready
        m.d.comb += i.ready.eq(can_load)
        take = Signal()
        m.d.comb += take.eq(i.valid & i.ready)

        beat = Signal(range(8))                           # beat index in the packet, saturating at 4
        s6 = Signal()                                     # the packet starts at lane 6 (else lane 2)
        s6_now = ~kp[5]                                   # ... as told by its first beat
        hdr = Signal(data.ArrayLayout(8, 8))              # the packet's first beat
        with m.If(take):
            with m.If(beat == 0):
                m.d.sync += [hdr.as_value().eq(cur), s6.eq(s6_now)]
            with m.If(last):
                m.d.sync += beat.eq(0)
            with m.Elif(beat != 4):
                m.d.sync += beat.eq(beat + 1)
        # The header (session 10 bytes, sequence 8, count 2) from lane 2: beat 0 session 0..5, beat 1 session
        # 6..9 and sequence 0..3, beat 2 sequence 4..7, count and the first 2 area bytes (lanes 6..7). From
        # lane 6: beat 0 session 0..1, beat 1 session 2..9, beat 2 the sequence, beat 3 the count, area from
        # lane 2. The verdict is taken on the deciding beat (2, or 3 from lane 6); the beat before it is `pre`.
        pre = Signal()
        dec_beat = Signal()
        m.d.comb += [pre.eq(Mux(s6, beat == 2, beat == 1)), dec_beat.eq(Mux(s6, beat == 3, beat == 2))]
        after = Mux(s6, beat >= 3, beat >= 2)             # the deciding beat or later

        # --- beat 1: the session compare, registered.
        session_now = Mux(s6, Cat(hdr[6], hdr[7], *(lane(k) for k in range(8))),
                          Cat(*(hdr[k] for k in range(2, 8)), *(lane(k) for k in range(4))))
        ns_q = Signal()
        session_now_q = Signal(80)
        with m.If(take & (beat == 1)):
            m.d.sync += [ns_q.eq(~st.has_session | (session_now != st.session.as_value())),
                         session_now_q.eq(session_now)]

        # --- `pre`: the sequence number's high 32 bits (bytes 10..13) compared with `expected`, registered,
        # so that the deciding beat only adds 32-bit arithmetic on the low half (live from lane 2; from lane 6
        # registered here too). `expected` only changes on a header verdict, at least two cycles before the
        # next packet's `pre` beat.
        hi_now = Mux(s6, be(range(0, 4)), be(range(4, 8)))
        e_hi = st.expected[32:]
        e_lo = st.expected[:32]
        hz_q, heq_q, hgt_q = (Signal(name=n) for n in ("hz_q", "heq_q", "hgt_q"))
        e_hi_m1 = Signal(32, init=(1 << 32) - 1)          # expected_hi - 1, kept with `expected`
        s_hi_q = Signal(32)
        s_hi1_q = Signal(32)
        lo_q = Signal(32)                                 # from lane 6: the low half, and its compares
        leq_q, lgt_q, lz_q = (Signal(name=n) for n in ("leq_q", "lgt_q", "lz_q"))
        hge2_q = Signal()                                 # expected_hi - seq_hi >= 2
        negx_q = Signal(35)                               # ~((expected_hi - seq_hi) * 2**32 + e_lo) when that is 0 or 1
        with m.If(take & pre):
            m.d.sync += [
                hz_q.eq(hi_now == 0),
                heq_q.eq(hi_now == e_hi),
                hgt_q.eq(hi_now > e_hi),
                s_hi_q.eq(hi_now),
                s_hi1_q.eq(hi_now + 1),
                lo_q.eq(be(range(4, 8))),
                leq_q.eq(be(range(4, 8)) == e_lo),
                lgt_q.eq(be(range(4, 8)) > e_lo),
                lz_q.eq(be(range(4, 8)) == 0),
                hge2_q.eq((hi_now < e_hi) & (hi_now != e_hi_m1)),
                negx_q.eq(~Cat(e_lo, hi_now == e_hi_m1, Const(0, 2))),
            ]

        # --- header verdict (the deciding beat) ---
        s_lo = Signal(32)                                 # sequence bytes 14..17
        count = Signal(16)                                # bytes 18..19
        m.d.comb += [s_lo.eq(Mux(s6, lo_q, be(range(0, 4)))), count.eq(Mux(s6, be([0, 1]), be([4, 5])))]
        seq = Cat(s_lo, s_hi_q)
        sum33 = Signal(33)
        m.d.comb += sum33.eq(s_lo + count)
        end_seq = Cat(sum33[:32], Mux(sum33[32], s_hi1_q, s_hi_q))
        # The compares take the live low half (from lane 2) or their registered results (from lane 6),
        # selected after the carry chains.
        lo_now = be(range(0, 4))
        seq_zero = hz_q & Mux(s6, lz_q, lo_now == 0)
        seq_eq = heq_q & Mux(s6, leq_q, lo_now == e_lo)
        seq_gt = hgt_q | (heq_q & Mux(s6, lgt_q, lo_now > e_lo))
        # With seq < expected: end_seq <= expected <=> s_lo + count <= X, X = (expected_hi - seq_hi) * 2**32 +
        # e_lo: always when expected_hi - seq_hi >= 2 (hge2_q), else a 35-bit sign test of s_lo + count + ~X
        # (one carry-save level and one carry chain; ~X registered at `pre`).
        csa_a, csa_b, csa_c = s_lo, count, negx_q
        csa_s = Signal(35)
        csa_k = Signal(35)
        m.d.comb += [csa_s.eq(csa_a ^ csa_b ^ csa_c),
                     csa_k.eq(Cat(Const(0, 1), (csa_a & csa_b) | (csa_a & csa_c) | (csa_b & csa_c))[:35])]
        le_sum = Signal(35)
        m.d.comb += le_sum.eq(csa_s + csa_k)
        end_le = hge2_q | le_sum[34]

        inc = {name: Signal(name=f"ev_{name}") for name in MOLD_COUNTERS if name != "missed"}
        truncated = take & last & (~after | (dec_beat & ~Mux(s6, kp[1], kp[5])))
        decide = take & dec_beat & ~truncated
        m.d.comb += inc["truncated"].eq(truncated)

        new_session = ns_q
        # count 0 / 0xFFFF decoded at both lanes the count may occupy, selected after the compares
        c_zero = Mux(s6, be([0, 1]) == 0, be([4, 5]) == 0)
        c_ones = Mux(s6, be([0, 1]) == 0xFFFF, be([4, 5]) == 0xFFFF)
        control = c_zero | c_ones
        seq_lt = ~seq_eq & ~seq_gt
        # Shallow: what the deciding beat's output needs (a whole packet forwarded). Deeper (end_le):
        # duplicate vs partial overlap, registered (`end_le_q`) and used from the next cycle on (nothing of
        # either is output on the deciding beat, and a partial overlap's first new block comes later).
        fwd_whole = ~control & (seq_zero | new_session | ~seq_lt)
        sequenced = ~seq_zero
        below = Signal()                                  # a data packet starting below `expected`
        m.d.comb += below.eq(sequenced & ~new_session & ~control & seq_lt)
        end_le_q = Signal()
        below_q = Signal()                                # `below`, a strobe the cycle after the verdict
        m.d.sync += below_q.eq(decide & below)
        m.d.sync += end_le_q.eq(end_le)                   # read only the cycle after a verdict: no enable
        gap_event = Signal()
        m.d.comb += gap_event.eq(decide & sequenced & ~new_session & seq_gt)
        # `expected` is written the cycle after the verdict (read again at the next packet's `pre` beat at the
        # earliest; the status output lags by that cycle).
        e_we_q = Signal()
        e_new = Signal(64)
        m.d.sync += e_we_q.eq(decide & sequenced & (new_session | (control & seq_gt) | (~control & ~seq_lt)))
        e_we = e_we_q | (below_q & ~end_le_q)             # a partial overlap advances it too
        m.d.sync += e_new.eq(Mux(control, seq, end_seq))  # likewise
        with m.If(e_we):
            m.d.sync += [st.expected.eq(e_new), e_hi_m1.eq(e_new[32:] - 1)]
        # Events are plain expressions, not processes: Icarus (-g2012, as cocotb runs it) does not start an
        # `always @*` block at time 0, and one whose inputs keep their initial values would leave an
        # increment X.
        counted = decide & sequenced
        m.d.comb += [inc["unsequenced"].eq(decide & seq_zero), inc["session"].eq(counted & new_session),
                     inc["heartbeat"].eq(counted & c_zero), inc["end_session"].eq(counted & c_ones),
                     inc["accepted"].eq(counted & fwd_whole)]
        # The new session is written the cycle after the verdict, from a register (`session_now_q` holds until
        # the next packet's beat 1, which comes later still), so the verdict logic drives one flip-flop, not
        # the 80 enables of the session register.
        ns_we_q = Signal()
        m.d.sync += ns_we_q.eq(counted & new_session)
        with m.If(ns_we_q):
            m.d.sync += [st.has_session.eq(1), st.session.as_value().eq(session_now_q)]

        m.d.comb += [inc["gap"].eq(gap_event), inc["duplicate"].eq(below_q & end_le_q),
                     inc["overlap"].eq(below_q & ~end_le_q)]
        # The gap is applied the cycle after the verdict (`expected` still holds its old value then).
        gap_q = Signal()
        missed_q = Signal(cw)                             # seq - expected, registered at the verdict
        m.d.sync += gap_q.eq(gap_event)
        m.d.sync += missed_q.eq((seq - st.expected)[:cw])  # likewise
        with m.If(gap_q):
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
        wl = Signal(BYTES_PER_BEAT, init=1 << 4)          # one-hot (set per start lane on beat 0)
        blocks = Signal(16)
        hi_pend = Signal()                                # a block's length straddles into this beat
        hi = Signal(8)
        short = Signal()                                  # a message shorter than MIN_MESSAGE was seen
        active = ~short & (hi_pend | w_here)
        sel = Signal(BYTES_PER_BEAT + 1)                  # candidate: lanes 0..7, 8 = the straddling length
        m.d.comb += sel.eq(Mux(short, 0, Mux(hi_pend, 1 << BYTES_PER_BEAT, Mux(w_here, wl, 0))))
        cands = []
        for c, (ln, bs, here, two) in enumerate(length_prefixes(cur, kp, hi)):
            off = Signal(17, name=f"off{c}")              # next block's offset from lane 0 of this beat
            m.d.comb += off.eq(ln + bs)
            lo7 = Signal(7, name=f"lo7_{c}")              # its low end without the long carry chain
            m.d.comb += lo7.eq(ln[:6] + bs)
            small = ln[6:] == 0
            cands.append(dict(here=here, two=two, small=small, lo7=lo7, short=ln < MIN_MESSAGE,
                              nk1=small & (lo7[3:] == 1), nk2=small & (lo7[3:] == 2), wk=(off - 8)[3:16]))

        def pick(key, width=1):
            return onehot_pick(sel, [cd[key] for cd in cands], width)

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
                with m.If(beat == 0):
                    # The first block: beat 2 lane 6 (from lane 2), beat 3 lane 2 (from lane 6).
                    m.d.sync += [wk.eq(Mux(s6_now, 2, 1)), w_here.eq(0), w_next.eq(~s6_now),
                                 wl.eq(Mux(s6_now, 1 << 2, 1 << 6))]

        # count_error: the check at a forwarded packet's end is registered and judged the next cycle.
        # A packet is forwarded whole (`pkt_whole`) or as a partial overlap (`pkt_below` & ~end_le_q, known
        # from the cycle after the verdict: the check is split likewise).
        pkt_whole = Signal()
        pkt_below = Signal()
        pkt_count = Signal(16)
        with m.If(decide):
            m.d.sync += [pkt_whole.eq(fwd_whole), pkt_below.eq(below), pkt_count.eq(count)]
        count_now = Mux(dec_beat, count, pkt_count)
        chk_whole = Signal()
        chk_below = Signal()
        chk_dec = Signal()                                # the packet ended on its deciding beat
        whole_q = Signal()                                # `fwd_whole`, a strobe the cycle after the verdict
        m.d.sync += [chk_dec.eq(decide & last), whole_q.eq(decide & fwd_whole)]
        chk = (chk_whole | (chk_dec & whole_q)) | ((chk_below | (chk_dec & below_q)) & ~end_le_q)
        r_parsed, r_here, r_next, r_hp, r_short = (Signal(name=n) for n in ("r_parsed", "r_here", "r_next", "r_hp",
                                                                            "r_short"))
        r_lo7 = Signal(7)
        r_small = Signal()
        r_wl = Signal(BYTES_PER_BEAT)
        r_kp = Signal(BYTES_PER_BEAT)
        r_blocks = Signal(16)
        r_count = Signal(16)
        m.d.sync += [chk_whole.eq(take & last & after & ~dec_beat & pkt_whole),
                     chk_below.eq(take & last & after & ~dec_beat & pkt_below)]
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
        # A whole packet's area starts at packet byte 20 (the deciding beat, lane 6 from lane 2, lane 2 from
        # lane 6); a partial overlap's at its first new block (found by the walker, any lane of a later beat).
        first_seq = Signal(64)
        emitting = Signal()                               # the rest of the packet is forwarded
        armed = Signal()                                  # below `expected`: waiting for block `skip`
        skip = Signal(16)
        found = Signal()
        m.d.comb += found.eq(take & armed & ~end_le_q & w_here & ~hi_pend & ~short & (wl & kp).any() &
                             (blocks == skip))

        with m.If(decide):
            m.d.sync += [first_seq.eq(seq),
                         skip.eq(e_lo - s_lo), armed.eq(below & ~last)]
            with m.If(fwd_whole):
                m.d.sync += emitting.eq(~last)
        with m.If(take & armed & last):
            m.d.sync += armed.eq(0)
        with m.If(below_q):
            m.d.sync += first_seq.eq(st.expected)
        with m.If(found):
            m.d.sync += [armed.eq(0), emitting.eq(~last)]
        with m.If(take & emitting & last):
            m.d.sync += emitting.eq(0)

        emit = Signal()
        m.d.comb += emit.eq((decide & fwd_whole & Mux(s6, kp[2], kp[6])) | found | (take & emitting))
        # Only `valid` depends on the verdict; the payload is loaded with every accepted beat.
        with m.If(emit):
            m.d.sync += o.valid.eq(1)
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(take):
            m.d.sync += [
                o.payload.data.eq(cur),
                o.payload.keep.eq(kp & Mux(found, ~(wl - 1), Mux(dec_beat, Mux(s6, 0xFC, 0xC0), 0xFF))),
                o.payload.last.eq(last),
                # a partial overlap's first sequence is the old `expected`, still there the cycle after
                # the verdict, and in `first_seq` from then on
                o.payload.user.seq.eq(Mux(dec_beat, seq, Mux(below_q, st.expected, first_seq))),
                o.payload.user.runt.eq(n_short),
            ]

        # Counters: increments registered, added a cycle later.
        for name in MOLD_COUNTERS:
            if name == "missed":
                event = Mux(gap_q, missed_q, 0)
            else:
                event = inc[name]
            count_event(m, getattr(self.counters, name), event, name=f"inc_{name}")
        return m
