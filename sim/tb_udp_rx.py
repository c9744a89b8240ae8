"""cocotb tests of :class:`tickgate.fpga.udp_rx.UDPReceiver` (behind AXIStreamTop), run by tests/test_udp_rx.py.

Frames are built with scapy; :func:`udp_model` is the reference: per frame, the counter it must bump and the
bytes it must forward. Every test runs with and without source idle cycles and sink backpressure.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import cocotb
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from tickgate.fpga.udp_rx import DEFAULT_GROUP, DEFAULT_PORT, LATENCY, LATENCY_MAX, TPIDS, UDP_COUNTERS, multicast_mac
from tickgate.sim.tb import MODES, StreamTB, back_to_back

GROUP = "233.54.12.111"
OTHER_GROUP = "233.54.12.112"
SRC_MAC = "00:11:22:33:44:55"

#: Cycles from a frame's first input beat to its first output beat (its deciding beat, 5 or 6, not realigned),
#: with no stalls, by VLAN tags (UDPReceiver).
FIRST_BEAT_LATENCY = {0: 6, 1: 6, 2: 7}


def _mac(value: int) -> str:
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def udp_frame(payload: bytes, *, dst=GROUP, dport=DEFAULT_PORT, mac=None, pad=True, ip=None, udp=None,
              vlans=()) -> bytes:
    """An Ethernet II / IPv4 / UDP frame (FCS stripped), padded to 60 bytes like a MAC would. ``vlans``: VLAN
    IDs, outermost first; with two, the outer tag is 802.1ad (S-tag), the inner 802.1Q."""
    mac = mac or _mac(multicast_mac(struct.unpack(">I", bytes(map(int, dst.split("."))))[0]))
    pkt = Ether(dst=mac, src=SRC_MAC)
    for k, vid in enumerate(vlans):
        pkt = pkt / (Dot1AD(vlan=vid) if k == 0 and len(vlans) == 2 else Dot1Q(vlan=vid))
    frame = bytes(pkt / IP(src="10.0.0.1", dst=dst, ttl=8, **(ip or {}))
                  / UDP(sport=12345, dport=dport, **(udp or {})) / Raw(payload))
    return frame.ljust(60, b"\0") if pad else frame


def vlan_tags(frame: bytes) -> tuple[int, int | None]:
    """(number of VLAN tags, innermost VLAN ID) as UDPReceiver sees them (at most two)."""
    tags, vid, pos = 0, None, 12
    while tags < 2 and len(frame) >= pos + 4 and struct.unpack_from(">H", frame, pos)[0] in TPIDS:
        vid = struct.unpack_from(">H", frame, pos + 2)[0] & 0xFFF
        tags += 1
        pos += 4
    return tags, vid


def _sum16(buf: bytes) -> int:
    s = sum(struct.unpack(f">{len(buf) // 2}H", buf))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp_model(frame: bytes, *, dst_ip=DEFAULT_GROUP, dst_port=DEFAULT_PORT, dst_mac=None, match_mac=False,
              match_ip=True, match_port=True, match_vlan=False, vlan_id=0, zero_checksum_ok=False):
    """(counter name, forwarded bytes or None) for one frame, as UDPReceiver's docstring specifies."""
    dst_mac = multicast_mac(dst_ip) if dst_mac is None else dst_mac
    tags, vid = vlan_tags(frame)
    o = 14 + 4 * tags                       # IPv4 header offset
    if len(frame) < o + 28:
        return "truncated", None
    ethertype, = struct.unpack_from(">H", frame, o - 2)
    vihl, proto = frame[o], frame[o + 9]
    if ethertype != 0x0800 or vihl >> 4 != 4 or proto != 17:
        return "not_udp", None
    flags_frag, = struct.unpack_from(">H", frame, o + 6)
    if vihl & 15 != 5 or flags_frag & 0x3FFF:
        return "unsupported", None
    if _sum16(frame[o:o + 20]) != 0xFFFF and not (zero_checksum_ok and frame[o + 10:o + 12] == b"\0\0"):
        return "bad_checksum", None
    total, = struct.unpack_from(">H", frame, o + 2)
    udp_len, = struct.unpack_from(">H", frame, o + 24)
    if total != udp_len + 20 or udp_len <= 8:
        return "bad_length", None
    ip_dst, = struct.unpack_from(">I", frame, o + 16)
    port, = struct.unpack_from(">H", frame, o + 22)
    mac = int.from_bytes(frame[0:6], "big")
    if ((match_ip and ip_dst != dst_ip) or (match_port and port != dst_port) or (match_mac and mac != dst_mac)
            or (match_vlan and vid != vlan_id)):
        return "not_ours", None
    if len(frame) < o + total:
        return "bad_length", frame[o + 28:] or None
    payload = frame[o + 28:o + total]
    # cross-check against scapy's own parse
    parsed = Ether(frame)
    assert bytes(parsed[UDP].payload)[:len(payload)] == payload
    return "ok", payload


def good_frames(rng: random.Random, n: int) -> list[bytes]:
    # every payload length 1..24 covers all lane alignments and the padded (<18 byte) case
    lengths = list(range(1, 25)) + [rng.randrange(25, 400) for _ in range(n)] + [1472]
    return [udp_frame(bytes(rng.randrange(256) for _ in range(k))) for k in lengths]


def bad_frames(rng: random.Random) -> list[bytes]:
    p = lambda k=30: bytes(rng.randrange(256) for _ in range(k))
    good = udp_frame(p(50))
    out = [
        good[:1], good[:8], good[:14], good[:33], good[:40], good[:41],                   # truncated
        udp_frame(p(), ip={"chksum": 0x1234}),                                            # bad_checksum
        udp_frame(p(), ip={"len": 20 + 8 + 30 + 1}),                                      # IP len != UDP len + 20
        udp_frame(p(), udp={"len": 8 + 30 - 1}),                                          # UDP len != IP len - 20
        udp_frame(b"", pad=True),                                                         # empty payload
        udp_frame(p(40), pad=False, ip={"len": 20 + 8 + 45}, udp={"len": 8 + 45}),        # frame shorter than IP len
        udp_frame(p(3), pad=False, ip={"len": 20 + 8 + 5}, udp={"len": 8 + 5})[:44],      # short, 2 payload bytes
        udp_frame(p(3), pad=False, ip={"len": 20 + 8 + 5}, udp={"len": 8 + 5})[:42],      # short, no payload bytes
        bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=SRC_MAC) / ARP(pdst="10.0.0.2")).ljust(60, b"\0"),  # not_udp
        bytes(Ether(src=SRC_MAC) / IPv6(dst="ff02::1") / UDP(dport=DEFAULT_PORT) / Raw(p())),
        bytes(Ether(dst=_mac(multicast_mac(DEFAULT_GROUP)), src=SRC_MAC) / IP(dst=GROUP) /
              TCP(dport=DEFAULT_PORT) / Raw(p())),
        udp_frame(p(), ip={"options": [IPOption_NOP()] * 4}),                            # unsupported (IHL 6)
        udp_frame(p(), ip={"flags": "MF"}),                                               # fragment
        udp_frame(p(), ip={"frag": 3}),
        udp_frame(p(), dst=OTHER_GROUP),                                                  # not_ours
        udp_frame(p(), dport=DEFAULT_PORT + 1),
    ]
    frames = []
    for f in out:
        frames.append(f)
        frames.append(udp_frame(p(rng.randrange(1, 64))))                                 # a good one after each
    return frames


class UdpRxTB(StreamTB):
    """UDPReceiver's filter registers (``INPUTS``: its defaults, no MAC or VLAN match) and counters."""

    INPUTS = dict(dst_ip=DEFAULT_GROUP, dst_port=DEFAULT_PORT, dst_mac=multicast_mac(DEFAULT_GROUP), match_mac=0,
                  match_ip=1, match_port=1, match_vlan=0, vlan_id=0, zero_checksum_ok=0)

    def set_inputs(self, **values):
        """As :meth:`ClockedTB.set_inputs`, flags given as bools too (the model takes the same keywords)."""
        super().set_inputs(**{k: int(v) for k, v in values.items()})

    def counters(self) -> dict:
        return {name: int(getattr(self.dut, f"counters__{name}").value) for name in UDP_COUNTERS}


async def check(tb, frames, **model_args):
    expect = [udp_model(f, **model_args) for f in frames]
    want_out = [payload for _, payload in expect if payload is not None]
    want_counts = {name: 0 for name in UDP_COUNTERS}
    for name, _ in expect:
        want_counts[name] += 1
    for f in frames:
        await tb.source.send(f)
    got = await tb.recv_all(len(want_out))
    await tb.drain()
    assert tb.sink.empty(), "extra output packets"
    for k, (frame, want) in enumerate(zip(got, want_out)):
        assert frame.tdata == want, f"packet {k}: got {frame.tdata.hex()} want {want.hex()}"
    assert tb.counters() == want_counts
    return expect


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_good_frames(dut, idle, backpressure):
    """Every payload length 1..24, random lengths, a full 1472-byte datagram: exact bytes out, ok counted."""
    tb = await UdpRxTB.start(dut, idle, backpressure)
    rng = random.Random(11)
    frames = good_frames(rng, 20)
    await check(tb, frames)
    if not idle and not backpressure:
        # full rate: the source never waited, frames back to back
        assert back_to_back([c for c, _ in tb.beats_in]), "input stalled"


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_bad_frames(dut, idle, backpressure):
    """Each kind of bad frame between good ones: nothing of a dropped frame is forwarded, one count each."""
    tb = await UdpRxTB.start(dut, idle, backpressure)
    frames = bad_frames(random.Random(5))
    expect = await check(tb, frames)
    reasons = {name for name, _ in expect}
    assert reasons == set(UDP_COUNTERS), reasons      # the list exercises every counter


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_match_mac(dut, idle, backpressure):
    """With match_mac set, a frame to the right group/port but another MAC is not ours."""
    tb = await UdpRxTB.start(dut, idle, backpressure, match_mac=1)
    p = bytes(range(20))
    frames = [udp_frame(p, mac="01:00:5e:00:00:01"), udp_frame(p), udp_frame(p, mac=SRC_MAC)]
    await check(tb, frames, match_mac=True)


def assert_latency(tb, frames, **model_args):
    """Every output beat is an input beat (not realigned), accepted exactly LATENCY cycles after it: output beat
    k of a frame is its input beat d + k (d: the beat holding the payload's first byte), accepted
    FIRST_BEAT_LATENCY[tags] + k cycles after the frame's first beat, and the beat holding the last payload
    byte carries tlast. Only valid for a run without stalls (frames forwarded whole)."""
    assert LATENCY_MAX == LATENCY
    outs = iter(tb.beats_out)
    ins = iter(tb.beats_in)
    for frame, start in zip(frames, tb.frames_in):
        tags, _ = vlan_tags(frame)
        beats = [next(ins)[0] for _ in range((len(frame) + 7) // 8)]
        assert beats[0] == start
        first = 14 + 4 * tags + 28                        # frame offset of the first payload byte
        plen = len(udp_model(frame, **model_args)[1])
        d, end = first // 8, (first + plen - 1) // 8
        for k, b in enumerate(range(d, end + 1)):
            cycle, last = next(outs)
            assert cycle - beats[b] == LATENCY, (tags, plen, k, cycle - beats[b])
            assert cycle - start == FIRST_BEAT_LATENCY[tags] + k, (tags, plen, k, cycle - start)
            assert last == (b == end)
    assert next(outs, None) is None, "more output beats than payload beats"


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_latency(dut, idle, backpressure):
    """Without stalls, output beat k of a frame is accepted exactly 6 + k cycles after its first input beat, one
    cycle after its input beat, whatever the payload's length (no flush beat)."""
    tb = await UdpRxTB.start(dut, idle, backpressure)
    rng = random.Random(3)
    frames = [udp_frame(bytes(rng.randrange(256) for _ in range(k))) for k in (1, 2, 6, 7, 8, 9, 14, 15, 16, 100, 18)]
    await check(tb, frames)
    if idle or backpressure:
        return
    assert_latency(tb, frames)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_vlan(dut, idle, backpressure):
    """0, 1 and 2 VLAN tags (802.1Q; 802.1ad + 802.1Q), every payload length 1..24 (every lane alignment), mixed
    back to back: exact bytes, full rate, first-beat latency 6 / 6 / 7 + k, every beat 1 cycle."""
    tb = await UdpRxTB.start(dut, idle, backpressure)
    rng = random.Random(21)
    frames = []
    for k in list(range(1, 25)) + [rng.randrange(25, 300) for _ in range(6)] + [1472]:
        for vlans in ((), (141,), (100, 142)):
            frames.append(udp_frame(bytes(rng.randrange(256) for _ in range(k)), vlans=vlans))
    rng.shuffle(frames)
    expect = await check(tb, frames)
    assert {name for name, _ in expect} == {"ok"}
    if not idle and not backpressure:
        assert back_to_back([c for c, _ in tb.beats_in]), "input stalled"
        assert_latency(tb, frames)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_vlan_bad(dut, idle, backpressure):
    """Tagged frames: truncated inside the longer header, not IPv4 after the tag, bad checksum, VLAN match."""
    tb = await UdpRxTB.start(dut, idle, backpressure, match_vlan=1, vlan_id=141)
    rng = random.Random(22)
    p = lambda k=30: bytes(rng.randrange(256) for _ in range(k))
    one = udp_frame(p(20), vlans=(141,), pad=False)
    two = udp_frame(p(20), vlans=(7, 141), pad=False)
    frames = [
        one[:44], one[:45], one[:46], one[:47],                    # 1 tag: header ends at 46
        two[:47], two[:48], two[:49], two[:50], two[:51],          # 2 tags: header ends at 50
        udp_frame(p(), vlans=(141,), ip={"chksum": 0x1234}),
        bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=SRC_MAC) / Dot1Q(vlan=141) / ARP(pdst="10.0.0.2")).ljust(60, b"\0"),
        udp_frame(p(), vlans=(142,)), udp_frame(p()), udp_frame(p(), vlans=(141, 142)),   # other VLAN, untagged
        udp_frame(p(), vlans=(141,)), udp_frame(p(), vlans=(9, 141)),
        udp_frame(p(), vlans=(141,), dst=OTHER_GROUP),
    ]
    expect = await check(tb, frames, match_vlan=True, vlan_id=141)
    assert [name for name, _ in expect].count("not_ours") == 4
    assert {"truncated", "bad_checksum", "not_udp", "ok", "bad_length"} <= {name for name, _ in expect}


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_promiscuous(dut, idle, backpressure):
    """match_ip/match_port off: any destination is ours; zero_checksum_ok: a zero IPv4 checksum passes."""
    tb = await UdpRxTB.start(dut, idle, backpressure, match_ip=0, match_port=0, zero_checksum_ok=1)
    rng = random.Random(23)
    p = lambda k=30: bytes(rng.randrange(256) for _ in range(k))
    frames = [udp_frame(p(), dst="10.1.2.3", dport=1), udp_frame(p(), ip={"chksum": 0}, vlans=(141,)),
              udp_frame(p(), ip={"chksum": 0x1111}), udp_frame(p(), dst="0.0.0.0", dport=0, ip={"chksum": 0})]
    expect = await check(tb, frames, match_ip=False, match_port=False, zero_checksum_ok=True)
    assert [name for name, _ in expect] == ["ok", "ok", "bad_checksum", "ok"]


def _captures(kind: str) -> list[Path]:
    data = os.environ.get("TICKGATE_DATA")
    if not data:
        return []
    return sorted(p for p in (Path(data) / "pcap").glob(f"*-{kind}/*.pcap"))


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_captures(dut, idle, backpressure):
    """Every recorded capture (VLAN 141/142 tagged): the payloads equal tickgate.wire.net.parse_udp_frame's.
    Live captures with their group and port matched; the anonymised ones (0.0.0.0:0, checksum 0) with
    matching off and zero_checksum_ok, as the reference (tickgate.wire.pcap.mold_packets) reads them."""
    from tickgate.wire.net import parse_udp_frame
    from tickgate.wire.pcap import read_frames

    live, payloads = _captures("live"), _captures("payloads")
    tb = await UdpRxTB.start(dut, idle, backpressure)
    if not live:
        tb.log.warning("recorded captures not found (TICKGATE_DATA): skipped")
        return
    seen = 0
    for files, inputs in ((live, {}), (payloads, dict(match_ip=False, match_port=False, zero_checksum_ok=True))):
        by_dest = {}
        for path in files:
            for _ts, frame in read_frames(path):
                meta, payload = parse_udp_frame(frame, zero_checksum_ok=True)
                key = (meta.dst_ip, meta.dport)
                by_dest.setdefault(key, []).append((frame, payload, meta.vlan))
        for (ip, port), items in sorted(by_dest.items()):
            ip_int = struct.unpack(">I", bytes(map(int, ip.split("."))))[0]
            tb.set_inputs(dst_ip=ip_int, dst_port=port, match_ip=1, match_port=1, zero_checksum_ok=0)
            tb.set_inputs(**inputs)
            await tb.reset()
            frames = [f for f, _, _ in items]
            seen += len(frames)
            expect = await check(tb, frames, dst_ip=ip_int, dst_port=port, **inputs)
            assert [pl for _, pl in expect] == [pl for _, pl, _ in items]
            assert {vid for _, _, vid in items} <= {141, 142}
            if not idle and not backpressure:
                assert_latency(tb, frames, dst_ip=ip_int, dst_port=port, **inputs)
    assert seen == 139, seen


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_random_mix(dut, idle, backpressure):
    """A random shuffle of good and bad frames, with a port change half-way."""
    tb = await UdpRxTB.start(dut, idle, backpressure, seed=7)
    rng = random.Random(99)
    frames = good_frames(rng, 10) + bad_frames(rng)
    rng.shuffle(frames)
    await check(tb, frames)
    # retarget at runtime: the old port is no longer ours
    tb.set_inputs(dst_port=DEFAULT_PORT + 1)
    more = [udp_frame(b"x" * 30), udp_frame(b"y" * 31, dport=DEFAULT_PORT + 1)]
    before = tb.counters()
    for f in more:
        await tb.source.send(f)
    got = await tb.recv_all(1)
    await tb.drain()
    assert got[0].tdata == b"y" * 31
    after = tb.counters()
    assert after["not_ours"] - before["not_ours"] == 1 and after["ok"] - before["ok"] == 1


@cocotb.test()
async def test_smoke(dut):
    """A few frames, for the second simulator."""
    tb = await UdpRxTB.start(dut)
    frames = [udp_frame(bytes(range(k))) for k in (1, 9, 40)] + [udp_frame(b"z" * 9, dport=1)]
    await check(tb, frames)
