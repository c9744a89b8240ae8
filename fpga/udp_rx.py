"""Ethernet / IPv4 / UDP receive filter."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .stream import BYTES, ByteStream, keep_mask, popcount_keep

__all__ = ["UDPReceiver", "UDP_COUNTERS", "DEFAULT_GROUP", "DEFAULT_PORT", "multicast_mac", "LATENCY",
           "LATENCY_MAX", "TPIDS"]

#: Default destination: 233.54.12.111:26477 (a NASDAQ TotalView-ITCH multicast group).
DEFAULT_GROUP = (233 << 24) | (54 << 16) | (12 << 8) | 111
DEFAULT_PORT = 26477

#: Header bytes before the UDP payload: Ethernet 14 + IPv4 20 + UDP 8, plus 4 per VLAN tag (at most 2).
HEADER_BYTES = 42
MAX_TAGS = 2
#: EtherTypes that announce a VLAN tag (802.1Q, 802.1ad), as tickgate.wire.net.parse_udp_frame accepts them.
TPIDS = (0x8100, 0x88A8)

#: Cycles from the input beat holding a datagram's last payload byte to the output beat holding it (valid),
#: with no stalls; LATENCY_MAX when that byte needs the flush beat (see UDPReceiver).
LATENCY = 1
LATENCY_MAX = 2

#: Counter names, in the order of precedence used to pick one reason per frame.
UDP_COUNTERS = ("ok", "truncated", "not_udp", "unsupported", "bad_checksum", "bad_length", "not_ours")


def multicast_mac(group: int) -> int:
    """The Ethernet multicast address of an IPv4 group (01:00:5e + low 23 bits), as a 48-bit integer."""
    return 0x01005E000000 | (group & 0x7FFFFF)


class UDPReceiver(wiring.Component):
    """Keep the UDP datagrams of one IPv4 destination (group) and port; forward their payloads.

    The input carries whole Ethernet II frames, FCS already stripped, one frame per ``last``, untagged or
    with one or two VLAN tags (EtherType 0x8100 or 0x88A8 for each, as ``tickgate.wire.net.parse_udp_frame``
    accepts them). A frame is forwarded when it is IPv4 (EtherType 0x0800 after the tags, version 4, IHL 5,
    not a fragment), protocol 17, its header checksum is right (or 0 while ``zero_checksum_ok`` is set: an
    anonymised capture or a sender with checksum offload), IPv4 total length = UDP length + 20 with a
    non-empty payload, and it is ours: destination address ``dst_ip`` (while ``match_ip``), port
    ``dst_port`` (while ``match_port``), destination MAC ``dst_mac`` (while ``match_mac``), innermost VLAN
    ID ``vlan_id`` (while ``match_vlan``; an untagged frame then is not ours). The UDP checksum is not
    checked (optional in IPv4; checking it would need the whole datagram before the verdict). IPv4 options
    (IHL > 5) are not supported: such frames are dropped and counted as ``unsupported``.

    The output is the UDP payload, its first byte in lane 0 (a 2-lane shift, 6 lanes with one tag),
    trimmed to the UDP length (Ethernet padding removed), one datagram per ``last``.

    Every frame increments exactly one counter of ``counters``, the first that applies in this order:
    ``truncated`` (the frame ends inside its 42 + 4 x tags header bytes), ``not_udp`` (EtherType, version or
    protocol), ``unsupported`` (IHL != 5, or a fragment), ``bad_checksum`` (IPv4 header), ``bad_length``
    (total length != UDP length + 20, empty payload, or the frame ends before the IPv4 total length),
    ``not_ours`` (destination), else ``ok``. Frames dropped at the header emit nothing. The verdict is taken
    when the beat holding the header's last byte arrives (beat 5, bytes 40..47; beat 6 with two tags); a
    frame that ends before its total length is only known to be short at its end, so the payload received
    so far has been forwarded with ``last`` on its final byte, and the frame is counted in ``bad_length``,
    not ``ok`` (a MoldUDP64 receiver downstream sees the short packet as a count mismatch).

    Timing structure (for Fmax): the field checks are registered on the beat before the deciding one; the
    header checksum's verdict is registered on the deciding beat and applied the next cycle (a bad
    checksum then cancels the frame before any of it is emitted), so the counter of a frame dropped at its
    header is bumped one cycle after the deciding beat; the header sum adds each beat's words one cycle
    late (``bw``), and the output ``keep`` comes from registered masks.

    Rate: one beat per cycle in and out, including back-to-back frames, tagged or not; ``i_stream.ready``
    only drops when the output is stalled (``i_stream.ready = ~o_stream.valid | o_stream.ready``).

    Latency: the output register is loaded in the cycle the input beat completing an output beat is
    accepted. With no stalls, the first payload beat is valid 7 cycles after the frame's first beat is
    accepted untagged or with one tag, 8 with two (2 cycles after the beat holding the first payload byte
    untagged or with two tags, 1 with one); the last payload beat :data:`LATENCY` = 1 cycle after the input
    beat holding the last payload byte, or :data:`LATENCY_MAX` = 2 cycles when that byte sits in the lanes
    past the shift of the frame's final beat (lanes 2..7; 6..7 with one tag): one extra flush beat,
    overlapped with the next frame's first beat.

    Parameters
    ----------
    dst_ip, dst_port, dst_mac : int
        Initial values of the matching ports (defaults 233.54.12.111, 26477 and that group's MAC).
    counter_width : int
        Width of each counter; counters wrap.

    Members
    -------
    i_stream : ``In(ByteStream())``
    o_stream : ``Out(ByteStream())``
    dst_ip : ``In(32)``, IPv4 destination, most significant byte first on the wire (233.54.12.111 is 0xE9360C6F)
    dst_port : ``In(16)``
    dst_mac : ``In(48)``
    vlan_id : ``In(12)``
    match_ip, match_port : ``In(1)``, initially 1; match_mac, match_vlan : ``In(1)``, initially 0
    zero_checksum_ok : ``In(1)``, initially 0
    counters : ``Out(Signature({name: Out(counter_width) for name in UDP_COUNTERS}))``
    """

    def __init__(self, *, dst_ip: int = DEFAULT_GROUP, dst_port: int = DEFAULT_PORT, dst_mac: int | None = None,
                 counter_width: int = 32):
        for name, value, bits in (("dst_ip", dst_ip, 32), ("dst_port", dst_port, 16)):
            if not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise TypeError(f"{name} must be an integer in 0..{(1 << bits) - 1}, not {value!r}")
        if dst_mac is None:
            dst_mac = multicast_mac(dst_ip)
        if not isinstance(dst_mac, int) or not 0 <= dst_mac < 1 << 48:
            raise TypeError(f"dst_mac must be a 48-bit integer, not {dst_mac!r}")
        if not isinstance(counter_width, int) or counter_width <= 0:
            raise TypeError(f"counter_width must be a positive integer, not {counter_width!r}")
        self._counter_width = counter_width
        super().__init__({
            "i_stream": In(ByteStream()),
            "o_stream": Out(ByteStream()),
            "dst_ip": In(32, init=dst_ip),
            "dst_port": In(16, init=dst_port),
            "dst_mac": In(48, init=dst_mac),
            "vlan_id": In(12),
            "match_ip": In(1, init=1),
            "match_port": In(1, init=1),
            "match_mac": In(1),
            "match_vlan": In(1),
            "zero_checksum_ok": In(1),
            "counters": Out(wiring.Signature({name: Out(counter_width) for name in UDP_COUNTERS})),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        cur = i.payload.data
        avail = popcount_keep(i.payload.keep)            # bytes in the input beat

        beat = Signal(range(8))                           # beat index in the frame, saturating at 7
        hdr = Signal(data.ArrayLayout(8, 6 * BYTES))      # frame bytes 0..47
        tag1 = Signal()                                   # a VLAN tag at bytes 12..15
        tag2 = Signal()                                   # and a second one at bytes 16..19
        # Running IPv4 header sums (two's complement, 20 bits) for 0, 1 and 2 tags: words 14..33, 18..37, 22..41.
        # Each beat's words are summed into `bw` (registered), and `bw` is added into `csum` the next cycle:
        # two short adder chains instead of one long one; the header sum is csum + bw.
        csum = [Signal(20, name=f"csum{t}") for t in range(MAX_TAGS + 1)]
        bw = [Signal(18, name=f"bw{t}") for t in range(MAX_TAGS + 1)]
        emitting = Signal()                               # payload bytes still to forward from the input
        rem = Signal(16)                                  # payload bytes not yet forwarded
        prev = Signal(64)                                 # the previous input beat
        shift6 = Signal()                                 # this frame's payload starts at lane 6 (one tag)
        flush = Signal()                                  # an output beat made of `prev` alone is due
        flush_mask = Signal(BYTES)                        # keep of the flush beat
        flush_short = Signal()
        rem_mask = Signal(BYTES)                          # keep_mask(min(rem, 8))
        rem_le8 = Signal()                                # rem <= 8
        rm8_mask = Signal(BYTES)                          # keep_mask(clamp(rem - 8, 0, 8)), kept with `rem`

        can_load = ~o.valid | o.ready
        m.d.comb += i.ready.eq(can_load)
        take = Signal()
        m.d.comb += take.eq(i.valid & i.ready)

        def lane_be16(lane):
            return Cat(cur.word_select(lane + 1, 8), cur.word_select(lane, 8))

        def beat_words(lanes):
            """Sum of the big-endian 16-bit words of the current beat starting at ``lanes``, as a tree."""
            terms = [lane_be16(n).as_unsigned() for n in lanes]
            while len(terms) > 1:
                terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)]
            return terms[0]

        # Words of each beat in each variant's header (frame offsets 14+4t .. 33+4t).
        words = {0: {1: [6], 2: [0, 2, 4, 6], 3: [0, 2, 4, 6], 4: [0]},
                 1: {2: [2, 4, 6], 3: [0, 2, 4, 6], 4: [0, 2, 4]},
                 2: {2: [6], 3: [0, 2, 4, 6], 4: [0, 2, 4, 6], 5: [0]}}
        is_tpid = lambda v: (v == TPIDS[0]) | (v == TPIDS[1])

        for t in range(MAX_TAGS + 1):
            m.d.sync += [csum[t].eq(csum[t] + bw[t]), bw[t].eq(0)]
        with m.If(take):
            with m.Switch(beat):
                for b in range(6):
                    with m.Case(b):
                        m.d.sync += hdr.as_value().word_select(b, 64).eq(cur)
            for t in range(MAX_TAGS + 1):
                with m.Switch(beat):
                    with m.Case(0):
                        m.d.sync += [csum[t].eq(0), bw[t].eq(0)]
                    for b, lanes in words[t].items():
                        with m.Case(b):
                            m.d.sync += bw[t].eq(beat_words(lanes))
            with m.If(beat == 1):
                m.d.sync += tag1.eq(is_tpid(lane_be16(4)))
            with m.If(beat == 2):
                m.d.sync += tag2.eq(tag1 & is_tpid(lane_be16(0)))
            m.d.sync += prev.eq(cur)
            with m.If(i.payload.last):
                m.d.sync += [beat.eq(0), tag1.eq(0), tag2.eq(0)]
            with m.Elif(beat != 7):
                m.d.sync += beat.eq(beat + 1)

        # The verdict's field checks are registered on the beat before the deciding one (beat 4 untagged or
        # with one tag, beat 5 with two), from `hdr` and that beat, so the deciding beat only combines
        # registered flags (plus, with one tag, the port and UDP length that arrive in the deciding beat).
        def fb(t, n):
            """Frame byte ``n`` of variant ``t`` (tags) on its pre-decision beat."""
            p = 5 if t == 2 else 4
            return hdr[n] if n < p * BYTES else cur.word_select(n - p * BYTES, 8)

        def fbe(t, offset, size):
            return Cat(*(fb(t, offset + 4 * t + k) for k in reversed(range(size))))

        r_not_udp_q, r_unsupported_q, r_zero_csum_q, r_bad_length_q, r_not_ours_q = (
            Signal(name=n) for n in ("r_not_udp_q", "r_unsupported_q", "r_zero_csum_q", "r_bad_length_q",
                                     "r_not_ours_q"))
        tl20_q = Signal(16)                                # IPv4 total length - 20 (one tag: UDP length check)
        tl20_le8_q = Signal()
        plen_q = Signal(16)                                # payload length (total length - 28)
        plen_le8_q = Signal()
        plen_mask_q = Signal(BYTES)                        # keep_mask(min(payload length, 8))
        plen_m8_mask_q = Signal(BYTES)                     # keep_mask(clamp(payload length - 8, 0, 8))
        variants = {}
        for t in range(MAX_TAGS + 1):
            ethertype = fbe(t, 12, 2)
            vihl = fbe(t, 14, 1)
            total_length = fbe(t, 16, 2)
            flags_fragment = fbe(t, 20, 2)
            protocol = fbe(t, 23, 1)
            checksum = fbe(t, 24, 2)
            v = {
                "not_udp": (ethertype != 0x0800) | (vihl[4:8] != 4) | (protocol != 17),
                "unsupported": (vihl[0:4] != 5) | flags_fragment[13] | (flags_fragment[:13] != 0),
                "zero_csum": checksum == 0,
                "tl20": (total_length - 20)[:16],
                "plen": (total_length - 28)[:16],
                "total_length": total_length,
            }
            vid = Cat(fb(t, 11 + 4 * t), fb(t, 10 + 4 * t)[:4]) if t else 0
            not_ours = ((self.match_ip & (fbe(t, 30, 4) != self.dst_ip)) |
                        (self.match_mac & (Cat(*(fb(t, k) for k in reversed(range(6)))) != self.dst_mac)) |
                        (self.match_vlan & ((vid != self.vlan_id) if t else 1)))
            if t != 1:
                udp_length = fbe(t, 38, 2)
                not_ours = not_ours | (self.match_port & (fbe(t, 36, 2) != self.dst_port))
                v["bad_length"] = (total_length != udp_length + 20) | (udp_length <= 8)
            else:
                v["bad_length"] = 0
            v["not_ours"] = not_ours
            variants[t] = v

        def load(v):
            tl = v["total_length"]                         # compares on it, not on the differences
            p3 = (tl[:3] + 4)[:3]                          # (total length - 28) mod 8
            return [r_not_udp_q.eq(v["not_udp"]), r_unsupported_q.eq(v["unsupported"]),
                    r_zero_csum_q.eq(v["zero_csum"]), r_bad_length_q.eq(v["bad_length"]),
                    r_not_ours_q.eq(v["not_ours"]), tl20_q.eq(v["tl20"]), tl20_le8_q.eq(tl <= 28),
                    plen_q.eq(v["plen"]), plen_le8_q.eq(tl <= 36),
                    plen_mask_q.eq(Mux(tl >= 36, 0xFF, keep_mask(p3))),
                    plen_m8_mask_q.eq(Mux(tl >= 44, 0xFF, Mux(tl < 36, 0, keep_mask(p3))))]

        with m.If(take & (beat == 4) & ~tag2):
            with m.If(tag1):
                m.d.sync += load(variants[1])
            with m.Else():
                m.d.sync += load(variants[0])
        with m.If(take & (beat == 5) & tag2):
            m.d.sync += load(variants[2])

        def sum_ok(s):
            # fold(s) == 0xFFFF for a sum of ten words (s < 2**20): s[:16] == 0xFFFF - s[16:], a pure compare.
            return (s[4:16] == 0xFFF) & (s[:4] == ~s[16:20])

        # With one tag the UDP destination port (bytes 40..41) and length (42..43) are in the deciding beat.
        one_tag = tag1 & ~tag2
        port_now = Cat(cur.word_select(1, 8), cur.word_select(0, 8))
        ulen_now = Cat(cur.word_select(3, 8), cur.word_select(2, 8))
        r_not_udp = r_not_udp_q
        r_unsupported = r_unsupported_q
        hsum = [(csum[t] + bw[t])[:20] for t in range(MAX_TAGS + 1)]
        r_bad_checksum = (~Mux(tag2, sum_ok(hsum[2]), Mux(tag1, sum_ok(hsum[1]), sum_ok(hsum[0]))) &
                          ~(self.zero_checksum_ok & r_zero_csum_q))
        r_bad_length = Mux(one_tag, (ulen_now != tl20_q) | tl20_le8_q, r_bad_length_q)
        r_not_ours = r_not_ours_q | (one_tag & self.match_port & (port_now != self.dst_port))

        # Lanes of the header's last beat that still belong to the header.
        skip = Signal(range(8))
        m.d.comb += skip.eq(Mux(tag1 & ~tag2, 6, 2))
        dbeat = Mux(tag2, 6, 5)                            # the beat holding the header's last byte
        inc = {name: Signal(name=f"inc_{name}") for name in UDP_COUNTERS}
        truncated = take & i.payload.last & ((beat < 5) | ((beat == 5) & (tag2 | (avail < skip))) |
                                             ((beat == 6) & tag2 & (avail < 2)))
        decide = take & (beat == dbeat) & ~truncated
        m.d.comb += inc["truncated"].eq(truncated)

        # Output beat, loaded into o_stream's register when `emit`.
        emit = Signal()
        e_data = Signal(64)
        e_keep = Signal(BYTES)
        e_last = Signal()
        e_ok = Signal()
        e_short = Signal()

        plen = plen_q
        # keep of the payload lanes of the deciding beat (lanes skip..), moved to lane 0; likewise, on a
        # payload beat, of the lanes past the joined ones (the flush beat's share of a final beat).
        tail_mask = Signal(BYTES)
        m.d.comb += tail_mask.eq(Mux(shift6, i.payload.keep >> 6, i.payload.keep >> 2))
        pb_mask = Signal(BYTES)
        m.d.comb += pb_mask.eq(Mux(tag1 & ~tag2, i.payload.keep >> 6, i.payload.keep >> 2))

        # The deciding beat starts an acceptable frame (all checks but the header checksum, which needs the
        # last header word); the whole verdict is registered and counted the next cycle, when a bad checksum
        # also cancels the frame (`kill`) before anything of it has been emitted: the first payload output
        # beat is loaded one cycle after the deciding beat at the earliest.
        dec_q = Signal()
        v_not_udp, v_unsupported, v_bad_checksum, v_bad_length, v_not_ours, v_empty = (
            Signal(name=n) for n in ("v_not_udp", "v_unsupported", "v_bad_checksum", "v_bad_length",
                                     "v_not_ours", "v_empty"))
        m.d.sync += dec_q.eq(decide)
        with m.If(decide):
            m.d.sync += [v_not_udp.eq(r_not_udp), v_unsupported.eq(r_unsupported), v_bad_checksum.eq(r_bad_checksum),
                         v_bad_length.eq(r_bad_length), v_not_ours.eq(r_not_ours),
                         v_empty.eq(i.payload.last & (pb_mask == 0))]
            with m.If(~(r_not_udp | r_unsupported | r_bad_length | r_not_ours)):
                m.d.sync += shift6.eq(tag1 & ~tag2)
                with m.If(~i.payload.last):
                    m.d.sync += [emitting.eq(1), rem.eq(plen), rm8_mask.eq(plen_m8_mask_q),
                                 rem_mask.eq(plen_mask_q), rem_le8.eq(plen_le8_q)]
                with m.Elif(pb_mask != 0):
                    m.d.sync += [
                        flush.eq(1),
                        flush_mask.eq(plen_mask_q & pb_mask),
                        flush_short.eq((plen_mask_q & ~pb_mask) != 0),
                    ]
        kill = Signal()
        m.d.comb += kill.eq(dec_q & v_bad_checksum & ~v_not_udp & ~v_unsupported)
        with m.If(dec_q):
            with m.If(v_not_udp):
                m.d.comb += inc["not_udp"].eq(1)
            with m.Elif(v_unsupported):
                m.d.comb += inc["unsupported"].eq(1)
            with m.Elif(v_bad_checksum):
                m.d.comb += inc["bad_checksum"].eq(1)
            with m.Elif(v_bad_length):
                m.d.comb += inc["bad_length"].eq(1)
            with m.Elif(v_not_ours):
                m.d.comb += inc["not_ours"].eq(1)
            with m.Elif(v_empty):
                m.d.comb += inc["bad_length"].eq(1)

        # Payload beats (after the deciding beat). `kept` bytes of `prev` (lanes 8-kept..7) lead each
        # output beat; the current beat's first 8-kept lanes complete it.
        kept = Mux(shift6, 2, 6)
        ba_mask = Signal(BYTES)                           # keep of the bytes available for this output beat
        m.d.comb += ba_mask.eq(Mux(i.payload.last, Mux(shift6, Cat(Const(0b11, 2), i.payload.keep),
                                                       Cat(Const(0x3F, 6), i.payload.keep))[:BYTES], 0xFF))
        joined = Mux(shift6, Cat(prev[48:], cur[:48]), Cat(prev[16:], cur[:16]))
        with m.If(take & emitting & ~kill):
            m.d.comb += [emit.eq(1), e_data.eq(joined)]
            with m.If(rem_le8 & ((rem_mask & ~ba_mask) == 0)):
                m.d.comb += [e_keep.eq(rem_mask), e_last.eq(1), e_ok.eq(1)]
                m.d.sync += emitting.eq(0)
            with m.Elif(i.payload.last & (tail_mask != 0)):
                m.d.comb += e_keep.eq(0xFF)
                m.d.sync += [
                    emitting.eq(0),
                    flush.eq(1),
                    flush_mask.eq(rm8_mask & tail_mask),
                    flush_short.eq((rm8_mask & ~tail_mask) != 0),
                ]
            with m.Elif(i.payload.last):
                m.d.comb += [e_keep.eq(ba_mask), e_last.eq(1), e_short.eq(1)]
                m.d.sync += emitting.eq(0)
            with m.Else():
                m.d.comb += e_keep.eq(0xFF)
                m.d.sync += [rem.eq(rem - 8), rem_mask.eq(rm8_mask), rem_le8.eq(rem <= 16),
                             rm8_mask.eq(Mux(rem >= 24, 0xFF, Mux(rem < 16, 0, keep_mask(rem[:3]))))]

        # A flush beat never coincides with a payload beat: it follows a frame's final beat, and the
        # input beat accepted alongside it is the next frame's first (header) beat.
        with m.If(flush & can_load & ~kill):
            m.d.comb += [
                emit.eq(1), e_data.eq(Mux(shift6, prev[48:], prev[16:])), e_keep.eq(flush_mask), e_last.eq(1),
                e_ok.eq(~flush_short), e_short.eq(flush_short),
            ]
            m.d.sync += flush.eq(0)

        with m.If(kill):
            m.d.sync += [emitting.eq(0), flush.eq(0)]

        m.d.comb += inc["ok"].eq(e_ok)

        with m.If(emit):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.data.eq(e_data),
                o.payload.keep.eq(e_keep),
                o.payload.last.eq(e_last),
            ]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)

        for name in UDP_COUNTERS:
            counter = getattr(self.counters, name)
            # A short payload (e_short) and a header verdict never fall in one cycle (see the flush note).
            bump = inc[name] | e_short if name == "bad_length" else inc[name]
            with m.If(bump):
                m.d.sync += counter.eq(counter + 1)
        return m
