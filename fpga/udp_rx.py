"""Ethernet / IPv4 / UDP receive filter."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .counters import count
from .stream import BYTES, ByteStream, keep_mask

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

#: Cycles from the input beat holding any payload byte to the output beat holding it (valid), with no stalls:
#: the output is not realigned, so there is no flush beat and LATENCY_MAX (kept for callers) is the same.
LATENCY = 1
LATENCY_MAX = 1

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

    The output is the UDP payload, one datagram per ``last``, **not realigned**: every output beat is an
    input beat with ``keep`` cleared outside the payload, so the first keeps lanes 2..7 (untagged or two
    tags: the payload starts at frame byte 42 or 50) or 6..7 (one tag: byte 46), or fewer when the payload
    ends there; the beat holding the payload's last byte (UDP length: Ethernet padding removed) carries
    ``last`` and keeps the lanes up to it; beats between keep what the input kept. The consumer must
    accept a first beat that starts at lane 2 or 6 (:class:`tickgate.fpga.moldudp64_rx.MoldUDP64Receiver`
    does).

    Every frame increments exactly one counter of ``counters``, the first that applies in this order:
    ``truncated`` (the frame ends inside its 42 + 4 x tags header bytes), ``not_udp`` (EtherType, version or
    protocol), ``unsupported`` (IHL != 5, or a fragment), ``bad_checksum`` (IPv4 header), ``bad_length``
    (total length != UDP length + 20, empty payload, or the frame ends before the IPv4 total length),
    ``not_ours`` (destination), else ``ok``. Frames dropped at the header emit nothing. The verdict is taken
    when the beat holding the header's last byte arrives (the deciding beat: beat 5, bytes 40..47; beat 6
    with two tags), which also carries the payload's first lanes; a frame that ends before its total length
    is only known to be short at its end, so the payload received so far has been forwarded with ``last``
    on its final byte, and the frame is counted in ``bad_length``, not ``ok`` (a MoldUDP64 receiver
    downstream sees the short packet as a count mismatch). Counters lag their frame's verdict (or end) by
    one cycle (the increments are registered).

    Timing structure (for Fmax): the field checks and the whole IPv4 header sum are registered on the beat
    holding the header's last word, the beat before the deciding one (the sum as carry-save levels and one
    carry chain: the running sum ``csum``, the previous beat's words ``bw``, registered a cycle late, and
    that beat's words), so the deciding beat only compares registered values (plus, with one tag, the UDP
    port and length, which arrive in it); the output ``keep`` comes from registered masks, and the output
    register's payload is loaded with every accepted beat, only ``valid`` depending on the verdict.

    Rate: one beat per cycle in and out, including back-to-back frames, tagged or not; ``i_stream.ready``
    only drops when the output is stalled (``i_stream.ready = ~o_stream.valid | o_stream.ready``).

    Latency: with no stalls every payload byte leaves :data:`LATENCY` = 1 cycle after the input beat holding
    it (no flush beat: :data:`LATENCY_MAX` = 1 too); output beat *k* of a frame (input beat 5 + *k*, 6 + *k*
    with two tags) is accepted 6 + *k* cycles after the frame's first beat (7 + *k* with two tags).

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
        kp = i.payload.keep
        last = i.payload.last

        beat = Signal(range(8))                           # beat index in the frame, saturating at 7
        hdr = Signal(data.ArrayLayout(8, 6 * BYTES))      # frame bytes 0..47
        tag1 = Signal()                                   # a VLAN tag at bytes 12..15
        tag2 = Signal()                                   # and a second one at bytes 16..19
        # Running IPv4 header sums (two's complement, 20 bits) for 0, 1 and 2 tags: words 14..33, 18..37, 22..41.
        # Each beat's words are summed into `bw` (registered), and `bw` is added into `csum` the next cycle:
        # two short adder chains instead of one long one.
        csum = [Signal(20, name=f"csum{t}") for t in range(MAX_TAGS + 1)]
        bw = [Signal(18, name=f"bw{t}") for t in range(MAX_TAGS + 1)]
        hsum_q = Signal(20)                               # the whole header sum, registered on its last beat
        emitting = Signal()                               # payload beats follow (after the deciding beat)
        rem = Signal(16)                                  # payload bytes from lane 0 of the next input beat
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

        def csa_sum(terms, width=20):
            """Sum of ``terms``: 3:2 carry-save levels, then one carry chain."""
            terms = [Value.cast(t).as_unsigned() for t in terms]
            while len(terms) > 2:
                a, b, c = terms[:3]
                terms = terms[3:] + [(a ^ b ^ c)[:width], (((a & b) | (a & c) | (b & c)) << 1)[:width]]
            return (terms[0] + terms[1])[:width]

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
            with m.If(last):
                m.d.sync += [beat.eq(0), tag1.eq(0), tag2.eq(0)]
            with m.Elif(beat != 7):
                m.d.sync += beat.eq(beat + 1)

        # The header's last word arrives the beat before the deciding one (beat 4 untagged or with one tag,
        # beat 5 with two). On that beat the whole sum (csum + bw + that beat's words) is registered, and so
        # are the field checks, from `hdr` and that beat: the deciding beat only combines registered flags
        # (plus, with one tag, the port and UDP length that arrive in the deciding beat).
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
        first_mask_q = Signal(BYTES)                       # payload lanes of the deciding beat
        first_end_q = Signal()                             # the payload ends in the deciding beat
        variants = {}
        for t in range(MAX_TAGS + 1):
            ethertype = fbe(t, 12, 2)
            vihl = fbe(t, 14, 1)
            total_length = fbe(t, 16, 2)
            flags_fragment = fbe(t, 20, 2)
            protocol = fbe(t, 23, 1)
            checksum = fbe(t, 24, 2)
            last_beat = max(words[t])
            v = {
                "not_udp": (ethertype != 0x0800) | (vihl[4:8] != 4) | (protocol != 17),
                "unsupported": (vihl[0:4] != 5) | flags_fragment[13] | (flags_fragment[:13] != 0),
                "zero_csum": checksum == 0,
                "tl20": (total_length - 20)[:16],
                "total_length": total_length,
                "hsum": csa_sum([csum[t], bw[t]] + [lane_be16(n) for n in words[t][last_beat]]),
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

        def load(t):
            v = variants[t]
            tl = v["total_length"]                         # compares on it, not on differences
            # The payload starts at lane s of the deciding beat and ends (exclusive) at offset tl - c from
            # its lane 0: untagged 14 + tl - 40, one tag 18 + tl - 40, two tags 22 + tl - 48.
            s, c = (6, 22) if t == 1 else (2, 26)
            lane3 = (tl[:3] + (-c % 8))[:3]                # (tl - c) mod 8
            return [r_not_udp_q.eq(v["not_udp"]), r_unsupported_q.eq(v["unsupported"]),
                    r_zero_csum_q.eq(v["zero_csum"]), r_bad_length_q.eq(v["bad_length"]),
                    r_not_ours_q.eq(v["not_ours"]), tl20_q.eq(v["tl20"]), tl20_le8_q.eq(tl <= 28),
                    hsum_q.eq(v["hsum"]),
                    first_mask_q.eq(Mux(tl >= c + 8, 0xFF, keep_mask(lane3)) & ~keep_mask(s)),
                    first_end_q.eq(tl <= c + 8),
                    rem.eq((tl - (c + 8))[:16]), rem_le8.eq(tl <= c + 16),
                    rem_mask.eq(Mux(tl >= c + 16, 0xFF, Mux(tl <= c + 8, 0, keep_mask(lane3)))),
                    rm8_mask.eq(Mux(tl >= c + 24, 0xFF, Mux(tl <= c + 16, 0, keep_mask(lane3))))]

        with m.If(take & (beat == 4) & ~tag2):
            with m.If(tag1):
                m.d.sync += load(1)
            with m.Else():
                m.d.sync += load(0)
        with m.If(take & (beat == 5) & tag2):
            m.d.sync += load(2)

        def sum_ok(s):
            # fold(s) == 0xFFFF for a sum of ten words (s < 2**20): s[:16] == 0xFFFF - s[16:], a pure compare.
            return (s[4:16] == 0xFFF) & (s[:4] == ~s[16:20])

        # With one tag the UDP destination port (bytes 40..41) and length (42..43) are in the deciding beat.
        one_tag = tag1 & ~tag2
        port_now = Cat(cur.word_select(1, 8), cur.word_select(0, 8))
        ulen_now = Cat(cur.word_select(3, 8), cur.word_select(2, 8))
        r_bad_checksum = ~sum_ok(hsum_q) & ~(self.zero_checksum_ok & r_zero_csum_q)
        r_bad_length = Mux(one_tag, (ulen_now != tl20_q) | tl20_le8_q, r_bad_length_q)
        r_not_ours = r_not_ours_q | (one_tag & self.match_port & (port_now != self.dst_port))
        hdr_ok = ~(r_not_udp_q | r_unsupported_q | r_bad_checksum | r_bad_length | r_not_ours)

        dbeat = Mux(tag2, 6, 5)                            # the beat holding the header's last byte
        ev = {name: Signal(name=f"ev_{name}") for name in UDP_COUNTERS}
        truncated = take & last & ((beat < dbeat) | ((beat == dbeat) & ~Mux(one_tag, kp[5], kp[1])))
        decide = take & (beat == dbeat) & ~truncated
        m.d.comb += ev["truncated"].eq(truncated)

        # Output: the input beats, not realigned, `keep` cleared outside the payload. The deciding beat
        # carries the payload's first lanes (2..7; 6..7 with one tag), emitted in the same cycle.
        emit = Signal()
        e_keep = Signal(BYTES)
        e_last = Signal()
        m.d.comb += [e_keep.eq(kp & Mux(emitting, Mux(rem_le8, rem_mask, 0xFF), first_mask_q)),
                     e_last.eq(last | Mux(emitting, rem_le8, first_end_q))]
        # The verdict and the events are plain expressions (continuous assignments), not processes: Icarus,
        # in the -g2012 mode cocotb runs it in, does not start an `always @*` block at time 0, and a block
        # whose inputs keep their initial values would leave a counter's increment X.
        prior = Const(0, 1)
        for name, flag in (("not_udp", r_not_udp_q), ("unsupported", r_unsupported_q),
                           ("bad_checksum", r_bad_checksum), ("bad_length", r_bad_length), ("not_ours", r_not_ours)):
            m.d.comb += ev[name].eq(decide & ~prior & flag)
            prior = prior | flag
        done_first = first_end_q & ((first_mask_q & ~kp) == 0)  # the whole payload is in the deciding beat
        done_rem = (rem_mask & ~kp) == 0                   # the rest of the payload is in this beat
        good = decide & hdr_ok
        pay = take & emitting                              # a payload beat after the deciding one
        m.d.comb += [
            emit.eq((good & Mux(one_tag, kp[6], kp[2])) | pay),
            ev["ok"].eq((good & done_first) | (pay & rem_le8 & done_rem)),
        ]
        # The frame ended before its payload did (nothing or part of it came): bad_length.
        short = (good & ~done_first & last) | (pay & Mux(rem_le8, ~done_rem, last))

        with m.If(good & ~done_first & ~last):
            m.d.sync += emitting.eq(1)
        with m.If(pay):
            with m.If(rem_le8 | last):
                m.d.sync += emitting.eq(0)
            with m.Else():
                m.d.sync += [rem.eq(rem - 8), rem_mask.eq(rm8_mask), rem_le8.eq(rem <= 16),
                             rm8_mask.eq(Mux(rem >= 24, 0xFF, Mux(rem < 16, 0, keep_mask(rem[:3]))))]

        # Only `valid` depends on the verdict; the payload is loaded with every accepted beat.
        with m.If(emit):
            m.d.sync += o.valid.eq(1)
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(take):
            m.d.sync += [
                o.payload.data.eq(cur),
                o.payload.keep.eq(e_keep),
                o.payload.last.eq(e_last),
            ]

        # At most one event per cycle (each input beat belongs to one frame): counted a cycle later.
        for name in UDP_COUNTERS:
            event = ev[name] | short if name == "bad_length" else ev[name]
            count(m, getattr(self.counters, name), event, name=f"inc_{name}")
        return m
