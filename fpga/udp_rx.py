"""Ethernet / IPv4 / UDP receive filter."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .stream import BYTES, ByteStream, keep_mask, popcount_keep

__all__ = ["UDPReceiver", "UDP_COUNTERS", "DEFAULT_GROUP", "DEFAULT_PORT", "multicast_mac"]

#: Default destination: 233.54.12.111:26477 (a NASDAQ TotalView-ITCH multicast group).
DEFAULT_GROUP = (233 << 24) | (54 << 16) | (12 << 8) | 111
DEFAULT_PORT = 26477

#: Header bytes before the UDP payload: Ethernet 14 + IPv4 20 + UDP 8.
HEADER_BYTES = 42

#: Counter names, in the order of precedence used to pick one reason per frame.
UDP_COUNTERS = ("ok", "truncated", "not_udp", "unsupported", "bad_checksum", "bad_length", "not_ours")


def multicast_mac(group: int) -> int:
    """The Ethernet multicast address of an IPv4 group (01:00:5e + low 23 bits), as a 48-bit integer."""
    return 0x01005E000000 | (group & 0x7FFFFF)


class UDPReceiver(wiring.Component):
    """Keep the UDP datagrams of one IPv4 destination (group) and port; forward their payloads.

    The input carries whole Ethernet II frames, FCS already stripped, one frame per ``last``. A frame is
    forwarded when it is IPv4 (EtherType 0x0800, version 4, IHL 5, not a fragment), protocol 17, its header
    checksum is right, IPv4 total length = UDP length + 20 with a non-empty payload, and its destination
    address and port equal ``dst_ip``/``dst_port`` (and its destination MAC equals ``dst_mac`` when
    ``match_mac`` is set). The UDP checksum is not checked (optional in IPv4; checking it would need the
    whole datagram before the verdict). IPv4 options (IHL > 5) are not supported: such frames are dropped
    and counted as ``unsupported``.

    The output is the UDP payload, its first byte in lane 0 (a 2-lane shift), trimmed to the UDP length
    (Ethernet padding removed), one datagram per ``last``.

    Every frame increments exactly one counter of ``counters``, the first that applies in this order:
    ``truncated`` (the frame ends inside the 42 header bytes), ``not_udp`` (EtherType, version or protocol),
    ``unsupported`` (IHL != 5, or a fragment), ``bad_checksum`` (IPv4 header), ``bad_length`` (total length
    != UDP length + 20, empty payload, or the frame ends before the IPv4 total length), ``not_ours``
    (destination), else ``ok``. Frames dropped at the header emit nothing. The verdict is taken when the
    sixth beat (bytes 40..47) arrives; a frame that ends before its total length is only known to be short
    at its end, so the payload received so far has been forwarded with ``last`` on its final byte, and
    the frame is counted in ``bad_length``, not ``ok`` (a MoldUDP64 receiver downstream sees the short
    packet as a count mismatch).

    Rate: one beat per cycle in and out, including back-to-back frames; ``i_stream.ready`` only drops
    when the output is stalled (``i_stream.ready = ~o_stream.valid | o_stream.ready``).

    Latency: the output register is loaded in the cycle the input beat completing an output beat is
    accepted. With no stalls, the first payload beat is valid 7 cycles after the frame's first beat is
    accepted (2 cycles after the beat holding the first payload byte), and the last payload beat 1 cycle
    after the input beat holding the last payload byte, or 2 cycles when that byte sits in lanes 2..7 of
    the frame's final beat (one extra flush beat, overlapped with the next frame's first beat).

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
    dst_mac : ``In(48)``, with ``match_mac : In(1)`` enabling the MAC check
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
            "match_mac": In(1),
            "counters": Out(wiring.Signature({name: Out(counter_width) for name in UDP_COUNTERS})),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        cur = i.payload.data
        avail = popcount_keep(i.payload.keep)            # bytes in the input beat

        beat = Signal(range(7))                           # beat index in the frame, saturating at 6
        hdr = Signal(data.ArrayLayout(8, 5 * BYTES))      # frame bytes 0..39
        csum = Signal(20)                                 # running IPv4 header sum
        emitting = Signal()                               # payload bytes still to forward from the input
        rem = Signal(16)                                  # payload bytes not yet forwarded
        left = Signal(48)                                 # lanes 2..7 of the previous beat
        flush = Signal()                                  # an output beat made of `left` alone is due
        flush_n = Signal(range(7))
        flush_short = Signal()

        can_load = ~o.valid | o.ready
        m.d.comb += i.ready.eq(can_load)
        take = Signal()
        m.d.comb += take.eq(i.valid & i.ready)

        def byte(n):
            return hdr[n] if n < 5 * BYTES else cur.word_select(n - 5 * BYTES, 8)

        def be(offset, size):
            return Cat(*(byte(offset + k) for k in reversed(range(size))))

        def be16(lane):
            return Cat(cur.word_select(lane + 1, 8), cur.word_select(lane, 8))

        # Header capture and the IPv4 header sum (bytes 14..33: lanes 6.. of beat 1 to lane 1 of beat 4).
        with m.If(take):
            with m.Switch(beat):
                for b in range(5):
                    with m.Case(b):
                        m.d.sync += hdr.as_value().word_select(b, 64).eq(cur)
            with m.Switch(beat):
                with m.Case(0):
                    m.d.sync += csum.eq(0)
                with m.Case(1):
                    m.d.sync += csum.eq(csum + be16(6))
                with m.Case(2, 3):
                    m.d.sync += csum.eq(csum + be16(0) + be16(2) + be16(4) + be16(6))
                with m.Case(4):
                    m.d.sync += csum.eq(csum + be16(0))
            with m.If(i.payload.last):
                m.d.sync += beat.eq(0)
            with m.Elif(beat != 6):
                m.d.sync += beat.eq(beat + 1)

        fold1 = Signal(17)
        fold2 = Signal(17)
        m.d.comb += [
            fold1.eq(csum[:16] + csum[16:]),
            fold2.eq(fold1[:16] + fold1[16]),
        ]

        ethertype = be(12, 2)
        version, ihl = hdr[14][4:8], hdr[14][0:4]
        total_length = be(16, 2)
        flags_fragment = be(20, 2)
        protocol = hdr[23]
        udp_length = be(38, 2)

        r_not_udp = (ethertype != 0x0800) | (version != 4) | (protocol != 17)
        r_unsupported = (ihl != 5) | flags_fragment[13] | (flags_fragment[:13] != 0)
        r_bad_checksum = fold2[:16] != 0xFFFF
        r_bad_length = (total_length != udp_length + 20) | (udp_length <= 8)
        r_not_ours = ((be(30, 4) != self.dst_ip) | (be(36, 2) != self.dst_port) |
                      (self.match_mac & (be(0, 6) != self.dst_mac)))

        inc = {name: Signal(name=f"inc_{name}") for name in UDP_COUNTERS}
        truncated = take & i.payload.last & ((beat < 5) | ((beat == 5) & (avail < 2)))
        decide = take & (beat == 5) & ~truncated
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
        m.d.comb += pb.eq(Mux(avail > 2, avail - 2, 0))

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
                m.d.sync += left.eq(cur[16:])
                with m.If(~i.payload.last):
                    m.d.sync += [emitting.eq(1), rem.eq(plen)]
                with m.Elif(pb == 0):
                    m.d.comb += inc["bad_length"].eq(1)
                with m.Else():
                    m.d.sync += [
                        flush.eq(1),
                        flush_n.eq(Mux(plen < pb, plen, pb)),
                        flush_short.eq(plen > pb),
                    ]

        # Payload beats (beat 6 onwards).
        ba = Signal(range(9))                             # bytes available for this output beat
        m.d.comb += ba.eq(6 + Mux(avail < 2, avail, 2))
        with m.If(take & (beat == 6) & emitting):
            m.d.sync += left.eq(cur[16:])
            m.d.comb += [emit.eq(1), e_data.eq(Cat(left, cur[:16]))]
            with m.If(rem <= ba):
                m.d.comb += [e_n.eq(rem), e_last.eq(1), e_ok.eq(1)]
                m.d.sync += emitting.eq(0)
            with m.Elif(i.payload.last & (avail > 2)):
                m.d.comb += e_n.eq(8)
                m.d.sync += [
                    emitting.eq(0),
                    flush.eq(1),
                    flush_n.eq(Mux(rem - 8 < avail - 2, rem - 8, avail - 2)),
                    flush_short.eq(rem - 8 > avail - 2),
                ]
            with m.Elif(i.payload.last):
                m.d.comb += [e_n.eq(ba), e_last.eq(1), e_short.eq(1)]
                m.d.sync += emitting.eq(0)
            with m.Else():
                m.d.comb += e_n.eq(8)
                m.d.sync += rem.eq(rem - 8)

        # A flush beat never coincides with a payload beat: it follows a frame's final beat, and the
        # input beat accepted alongside it is the next frame's first (header) beat.
        with m.If(flush & can_load):
            m.d.comb += [
                emit.eq(1), e_data.eq(left), e_n.eq(flush_n), e_last.eq(1),
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
