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
        csum = [Signal(20, name=f"csum{t}") for t in range(MAX_TAGS + 1)]
        emitting = Signal()                               # payload bytes still to forward from the input
        rem = Signal(16)                                  # payload bytes not yet forwarded
        rem_small = Signal()                              # rem < 16 (registered, keeps carry chains off the
                                                          # output path)
        prev = Signal(64)                                 # the previous input beat
        shift6 = Signal()                                 # this frame's payload starts at lane 6 (one tag)
        flush = Signal()                                  # an output beat made of `prev` alone is due
        flush_n = Signal(range(7))
        flush_short = Signal()

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

        with m.If(take):
            with m.Switch(beat):
                for b in range(6):
                    with m.Case(b):
                        m.d.sync += hdr.as_value().word_select(b, 64).eq(cur)
            for t in range(MAX_TAGS + 1):
                with m.Switch(beat):
                    with m.Case(0):
                        m.d.sync += csum[t].eq(0)
                    for b, lanes in words[t].items():
                        with m.Case(b):
                            m.d.sync += csum[t].eq(csum[t] + beat_words(lanes))
            with m.If(beat == 1):
                m.d.sync += tag1.eq(is_tpid(lane_be16(4)))
            with m.If(beat == 2):
                m.d.sync += tag2.eq(tag1 & is_tpid(lane_be16(0)))
            m.d.sync += prev.eq(cur)
            with m.If(i.payload.last):
                m.d.sync += [beat.eq(0), tag1.eq(0), tag2.eq(0)]
            with m.Elif(beat != 7):
                m.d.sync += beat.eq(beat + 1)

        def byte(n):
            return hdr[n] if n < 5 * BYTES else cur.word_select(n - 5 * BYTES, 8)

        def be(offset, size, shift=0):
            return Cat(*(byte(offset + shift + k) for k in reversed(range(size))))

        # Fields of the IPv4/UDP headers for 0, 1 and 2 tags. The verdict is taken at beat 5 (0 or 1 tag:
        # bytes up to 45 lie in hdr[0..39] and the current beat) or at beat 6 (2 tags: all of it in hdr).
        def field(offset, size):
            return Mux(tag2, Cat(*(hdr[offset + 8 + k] for k in reversed(range(size)))),
                       Mux(tag1, be(offset, size, 4), be(offset, size)))

        def sum_ok(s):
            # fold(s) == 0xFFFF for a sum of ten words (s < 2**20): s[:16] == 0xFFFF - s[16:], a pure compare.
            return (s[4:16] == 0xFFF) & (s[:4] == ~s[16:20])

        ethertype = field(12, 2)
        version, ihl = field(14, 1)[4:8], field(14, 1)[0:4]
        total_length = field(16, 2)
        flags_fragment = field(20, 2)
        protocol = field(23, 1)
        checksum = field(24, 2)
        udp_length = field(38, 2)
        vid = Mux(tag2, Cat(hdr[19], hdr[18][:4]), Cat(hdr[15], hdr[14][:4]))

        r_not_udp = (ethertype != 0x0800) | (version != 4) | (protocol != 17)
        r_unsupported = (ihl != 5) | flags_fragment[13] | (flags_fragment[:13] != 0)
        r_bad_checksum = (~Mux(tag2, sum_ok(csum[2]), Mux(tag1, sum_ok(csum[1]), sum_ok(csum[0]))) &
                          ~(self.zero_checksum_ok & (checksum == 0)))
        r_bad_length = (total_length != udp_length + 20) | (udp_length <= 8)
        r_not_ours = ((self.match_ip & (field(30, 4) != self.dst_ip)) |
                      (self.match_port & (field(36, 2) != self.dst_port)) |
                      (self.match_mac & (be(0, 6) != self.dst_mac)) |
                      (self.match_vlan & (~tag1 | (vid != self.vlan_id))))

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
        e_n = Signal(range(9))
        e_last = Signal()
        e_ok = Signal()
        e_short = Signal()

        plen = Signal(16)
        m.d.comb += plen.eq(udp_length - 8)
        pb = Signal(range(7))                             # payload bytes in the deciding beat
        m.d.comb += pb.eq(Mux(avail > skip, avail - skip, 0))

        with m.If(decide):
            with m.If(r_not_udp):
                m.d.comb += inc["not_udp"].eq(1)
            with m.Elif(r_unsupported):
                m.d.comb += inc["unsupported"].eq(1)
            with m.Elif(r_bad_checksum):
                m.d.comb += inc["bad_checksum"].eq(1)
            with m.Elif(r_bad_length):
                m.d.comb += inc["bad_length"].eq(1)
            with m.Elif(r_not_ours):
                m.d.comb += inc["not_ours"].eq(1)
            with m.Else():
                m.d.sync += shift6.eq(tag1 & ~tag2)
                with m.If(~i.payload.last):
                    m.d.sync += [emitting.eq(1), rem.eq(plen),
                                 rem_small.eq((udp_length[5:] == 0) & (udp_length[:5] < 24))]
                with m.Elif(pb == 0):
                    m.d.comb += inc["bad_length"].eq(1)
                with m.Else():
                    m.d.sync += [
                        flush.eq(1),
                        flush_n.eq(Mux(plen < pb, plen, pb)),
                        flush_short.eq(plen > pb),
                    ]

        # Payload beats (after the deciding beat). `kept` bytes of `prev` (lanes 8-kept..7) lead each
        # output beat; the current beat's first 8-kept lanes complete it.
        kept = Mux(shift6, 2, 6)
        ba = Signal(range(9))                             # bytes available for this output beat
        m.d.comb += ba.eq(kept + Mux(avail < 8 - kept, avail, 8 - kept))
        joined = Mux(shift6, Cat(prev[48:], cur[:48]), Cat(prev[16:], cur[:16]))
        rem4 = rem[:4]
        tail = Signal(range(9))                           # bytes of the current beat past the joined lanes
        m.d.comb += tail.eq(avail - (8 - kept))
        with m.If(take & emitting):
            m.d.comb += [emit.eq(1), e_data.eq(joined)]
            with m.If(rem_small & (rem4 <= ba)):
                m.d.comb += [e_n.eq(rem4), e_last.eq(1), e_ok.eq(1)]
                m.d.sync += emitting.eq(0)
            with m.Elif(i.payload.last & (avail > 8 - kept)):
                m.d.comb += e_n.eq(8)
                m.d.sync += [
                    emitting.eq(0),
                    flush.eq(1),
                    flush_n.eq(Mux(rem_small & (rem4 - 8 < tail), rem4 - 8, tail)),
                    flush_short.eq(~rem_small | (rem4 - 8 > tail)),
                ]
            with m.Elif(i.payload.last):
                m.d.comb += [e_n.eq(ba), e_last.eq(1), e_short.eq(1)]
                m.d.sync += emitting.eq(0)
            with m.Else():
                m.d.comb += e_n.eq(8)
                m.d.sync += [rem.eq(rem - 8), rem_small.eq((rem[5:] == 0) & (rem[:5] < 24))]

        # A flush beat never coincides with a payload beat: it follows a frame's final beat, and the
        # input beat accepted alongside it is the next frame's first (header) beat.
        with m.If(flush & can_load):
            m.d.comb += [
                emit.eq(1), e_data.eq(Mux(shift6, prev[48:], prev[16:])), e_n.eq(flush_n), e_last.eq(1),
                e_ok.eq(~flush_short), e_short.eq(flush_short),
            ]
            m.d.sync += flush.eq(0)

        m.d.comb += inc["ok"].eq(e_ok)

        with m.If(emit):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.data.eq(e_data),
                o.payload.keep.eq(keep_mask(e_n)),
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
