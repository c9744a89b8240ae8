"""Ethernet/IPv4/UDP framing (cross-checked against scapy) and pcap/pcapng capture files, including a
byte-identical rewrite of every recorded capture."""

from __future__ import annotations

import collections
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.utils import checksum as scapy_checksum

from tests.conftest import PCAP_FILES
from tickgate.wire import moldudp64, net, pcap
from tickgate.wire.net import NetFormatError, NotUdpError

ipv4 = st.integers(0, 2**32 - 1).map(lambda i: "%d.%d.%d.%d" % tuple(i.to_bytes(4, "big")))
groups = st.integers(0xE0000000, 0xEFFFFFFF).map(lambda i: "%d.%d.%d.%d" % tuple(i.to_bytes(4, "big")))
ports = st.integers(0, 65535)


# --- layouts and checksums ----------------------------------------------------------------------------

def test_header_layouts_match_the_wire():
    assert (net.ETH_HEADER.size, net.VLAN_TAG.size, net.IPV4_HEADER.size, net.UDP_HEADER.size) == (14, 4, 20, 8)
    assert net.ETH_HEADER["ethertype"].offset == 12
    ip = net.IPV4_HEADER
    assert (ip["total_length"].offset, ip["protocol"].offset, ip["checksum"].offset, ip["src"].offset,
            ip["dst"].offset) == (2, 9, 10, 12, 16)
    assert (net.UDP_HEADER["dport"].offset, net.UDP_HEADER["length"].offset) == (2, 4)


@settings(max_examples=200)
@given(ipv4, ipv4, st.integers(0, 255), st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 10).map(lambda n: b"\x01" * (4 * n)), st.binary(max_size=40))
def test_ipv4_checksum_agrees_with_scapy(src, dst, ttl, ident, proto, tos, options, payload):
    built = bytes(IP(src=src, dst=dst, ttl=ttl, id=ident, proto=proto, tos=tos, options=options) / payload)
    ihl = (built[0] & 0xF) * 4
    header = built[:ihl]
    assert net.ipv4_checksum(header) == struct.unpack(">H", header[10:12])[0]
    assert net.ipv4_checksum(header) == scapy_checksum(header[:10] + b"\0\0" + header[12:])


@settings(max_examples=200)
@given(ipv4, ipv4, ports, ports, st.binary(max_size=301))
def test_udp_checksum_agrees_with_scapy(src, dst, sport, dport, payload):
    built = bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)
    segment = built[20:]
    want = struct.unpack(">H", segment[6:8])[0]
    src_i, dst_i = struct.unpack(">II", built[12:20])
    assert net.udp_checksum(src_i, dst_i, segment) == want


def test_checksum_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="20..60"):
        net.ipv4_checksum(b"\0" * 19)
    with pytest.raises(TypeError):
        net.ipv4_checksum("45000000")


# --- building and parsing frames -------------------------------------------------------------------------

def test_multicast_mac():
    assert net.multicast_mac("233.54.12.111") == "01:00:5e:36:0c:6f"
    assert net.multicast_mac("239.128.0.1") == "01:00:5e:00:00:01"  # bit 23 of the group is dropped
    with pytest.raises(ValueError, match="not a multicast"):
        net.multicast_mac("10.0.0.1")
    with pytest.raises(ValueError, match="not an IPv4 address"):
        net.multicast_mac("233.54.12")


def test_default_frame_is_a_nasdaq_style_multicast_datagram():
    frame = net.udp_frame(b"hello")
    assert len(frame) == net.MIN_FRAME  # padded as a MAC would
    pkt = Ether(frame)
    assert pkt.dst == "01:00:5e:36:0c:6f" and pkt[IP].dst == "233.54.12.111" and pkt[UDP].dport == 26477
    assert pkt[IP].flags == "DF" and pkt[IP].len == 20 + 8 + 5
    assert bytes(pkt[UDP].payload)[:5] == b"hello"
    meta, payload = net.parse_udp_frame(frame)
    assert payload == b"hello" and meta.payload_offset == 42 and meta.vlan is None and meta.ip_offset == 14
    assert len(net.udp_frame(b"hello", pad=False)) == 42 + 5


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=1500), groups, ipv4, ports, ports, st.none() | st.integers(0, 4095),
       st.integers(1, 255), st.booleans(), st.booleans())
def test_udp_frame_parse_roundtrip(payload, dst_ip, src_ip, sport, dport, vlan, ttl, with_sum, pad):
    frame = net.udp_frame(payload, dst_ip=dst_ip, src_ip=src_ip, sport=sport, dport=dport, vlan=vlan, ttl=ttl,
                          with_udp_checksum=with_sum, pad=pad, src_mac="02:11:22:33:44:55")
    meta, got = net.parse_udp_frame(frame)
    assert got == payload
    assert (meta.src_ip, meta.dst_ip, meta.sport, meta.dport, meta.vlan, meta.ttl) == (
        src_ip, dst_ip, sport, dport, vlan, ttl)
    assert meta.dst_mac == net.multicast_mac(dst_ip) and meta.src_mac == "02:11:22:33:44:55"
    assert meta.ip_offset == (14 if vlan is None else 18)
    assert frame[meta.payload_offset:meta.payload_offset + len(payload)] == payload
    view = Ether(frame)  # the checksums are the ones scapy computes from scratch
    carried = (view[IP].chksum, view[UDP].chksum)
    del view[IP].chksum, view[UDP].chksum
    fresh = Ether(bytes(view))
    assert carried == (fresh[IP].chksum, fresh[UDP].chksum if with_sum else 0)


def test_udp_frame_argument_errors():
    with pytest.raises(ValueError, match="dst_mac is required"):
        net.udp_frame(b"x", dst_ip="10.1.1.1")
    assert net.parse_udp_frame(net.udp_frame(b"x", dst_ip="10.1.1.1", dst_mac="02:00:00:00:00:02"))[1] == b"x"
    with pytest.raises(ValueError, match="sport"):
        net.udp_frame(b"x", sport=70000)
    with pytest.raises(ValueError, match="vlan"):
        net.udp_frame(b"x", vlan=5000)
    with pytest.raises(TypeError, match="payload"):
        net.udp_frame("text")
    with pytest.raises(ValueError, match="does not fit"):
        net.udp_frame(b"x" * 65510)


def _frame(**kw) -> bytearray:
    return bytearray(net.udp_frame(b"payload-bytes", pad=False, **kw))


def _fix_ip_checksum(frame: bytearray, ip_start: int = 14) -> bytearray:
    frame[ip_start + 10:ip_start + 12] = b"\0\0"
    frame[ip_start + 10:ip_start + 12] = struct.pack(">H", net.ipv4_checksum(bytes(frame[ip_start:ip_start + 20])))
    return frame


def test_parse_rejects_non_udp_as_not_udp():
    for frame in (bytes(Ether() / ARP()), bytes(Ether() / IPv6() / UDP()),
                  bytes(Ether() / IP(dst="1.2.3.4") / TCP()), bytes(Ether() / Dot1Q(vlan=3) / ARP())):
        with pytest.raises(NotUdpError):
            net.parse_udp_frame(frame)
    with pytest.raises(NotUdpError, match="protocol 6 is not UDP") as info:
        net.parse_udp_frame(bytes(Ether() / IP(dst="1.2.3.4") / TCP()))
    assert info.value.offset == 14 + 9


@pytest.mark.parametrize("mutate, words, offset", [
    (lambda f: f[:13], "truncated Ethernet header", 13),
    (lambda f: f[:30], "truncated IPv4 header", 30),
    (lambda f: f.__setitem__(24, f[24] ^ 1) or f, "bad IPv4 header checksum", 24),
    (lambda f: _fix_ip_checksum(f.__setitem__(14, 0x65) or f), "IP version 6", 14),
    (lambda f: _fix_ip_checksum(f.__setitem__(14, 0x44) or f), "header length 16", 14),
    (lambda f: f[:-1], "total length", 16),
    (lambda f: _fix_ip_checksum(f.__setitem__(20, 0x20) or f), "fragmented", 20),
    (lambda f: f.__setitem__(slice(38, 40), b"\0\x09") or f, "UDP length 9 disagrees", 38),
    (lambda f: f.__setitem__(-1, f[-1] ^ 0xFF) or f, "bad UDP checksum", 40),
])
def test_parse_errors_name_problem_and_offset(mutate, words, offset):
    frame = mutate(_frame())
    with pytest.raises(NetFormatError, match=words) as info:
        net.parse_udp_frame(bytes(frame))
    assert info.value.offset == offset and not isinstance(info.value, NotUdpError)


def test_checksum_options():
    frame = _frame()
    frame[24:26] = b"\0\0"
    with pytest.raises(NetFormatError, match="bad IPv4 header checksum 0x0000"):
        net.parse_udp_frame(bytes(frame))
    meta, _ = net.parse_udp_frame(bytes(frame), zero_checksum_ok=True)
    assert meta.ip_checksum == 0
    frame[24:26] = b"\x12\x34"
    with pytest.raises(NetFormatError):
        net.parse_udp_frame(bytes(frame), zero_checksum_ok=True)
    assert net.parse_udp_frame(bytes(frame), verify_checksum=False)[1] == b"payload-bytes"
    bad_udp = _frame()
    bad_udp[-1] ^= 0xFF
    assert net.parse_udp_frame(bytes(bad_udp), verify_udp_checksum=False)[1] != b"payload-bytes"


def test_parse_accepts_padding_and_double_tags():
    frame = bytes(Ether(dst="01:00:5e:01:02:03") / Dot1Q(vlan=10, type=0x8100) / Dot1Q(vlan=20) /
                  IP(src="10.0.0.1", dst="239.1.2.3") / UDP(sport=1, dport=2) / b"ab") + b"\0" * 20
    meta, payload = net.parse_udp_frame(frame)
    assert payload == b"ab" and meta.vlan == 20 and meta.ip_offset == 22


# --- capture files: recorded data ------------------------------------------------------------------------

@pytest.mark.parametrize("path", PCAP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_pcap_rewrites_byte_identical(path, tmp_path):
    header = pcap.read_header(path)
    out = tmp_path / "copy.pcap"
    n = pcap.write_frames(out, pcap.read_records(path), header=header)
    assert n == len(list(pcap.read_frames(path))) > 0
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("path", PCAP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_pcap_decodes_to_moldudp64(path):
    stats = pcap.CaptureStats()
    packets = list(pcap.mold_packets(path, stats=stats))
    assert packets and stats.packets == stats.frames == len(packets) and stats.not_udp == 0
    live = path.parent.name.endswith("-live")
    bx = path.parent.name.startswith("bx")
    for time_ns, meta, pkt in packets:
        assert 1_692_600_000 * 10**9 < time_ns < 1_692_800_000 * 10**9  # 2023-08-21..23
        assert pkt.messages and pkt.messages[0][:1].isalpha()  # an ITCH message type byte
        # Each ITCH message type has a fixed length: at least the 11-byte common header.
        assert all(len(m) >= 11 for m in pkt.messages)
        if live:
            assert pkt.session == ("000010059D" if bx else "000010059B") and pkt.sequence > 0
            assert (meta.dst_ip, meta.dport) == (("233.49.196.40", 25475) if bx else ("233.54.12.111", 26477))
            assert meta.dst_mac == net.multicast_mac(meta.dst_ip) and meta.ip_checksum != 0
        else:  # anonymised: headers and MoldUDP64 session/sequence zeroed
            assert pkt.session == "\0" * 10 and pkt.sequence == 0 and meta.ip_checksum == 0
    assert stats.zero_ip_checksum == (0 if live else len(packets))


def test_recorded_totals(shared_data):
    msgs = collections.Counter()
    total = 0
    for path in sorted((shared_data / "pcap").rglob("*.pcap")):
        for _, _, pkt in pcap.mold_packets(path):
            total += len(pkt.messages)
            msgs.update(chr(m[0]) for m in pkt.messages)
    assert total == 49 + 71 + 56  # SOURCES.md
    assert set("SAFECXDUPQYHINLJ") <= set(msgs)
    multi = [p for _, _, p in pcap.mold_packets(
        shared_data / "pcap" / "nasdaq-totalview-itch50-live" / "Multiple.Packets.pcap")]
    big = max(multi, key=lambda p: len(p.messages))
    assert len(big.messages) == 38 and collections.Counter(chr(m[0]) for m in big.messages) == {"A": 36, "F": 2}


def test_recorded_live_frames_have_valid_udp_checksums(shared_data):
    path = shared_data / "pcap" / "nasdaq-totalview-itch50-live" / "OrderDeleteMessage.pcap"
    (_, frame), = pcap.read_frames(path)
    net.parse_udp_frame(frame)  # verifies IPv4 and (non-zero) UDP checksums
    assert Ether(frame)[UDP].chksum != 0
    broken = bytearray(frame)
    broken[-1] ^= 1
    with pytest.raises(NetFormatError, match="bad UDP checksum"):
        net.parse_udp_frame(bytes(broken))


# --- capture files: synthetic ----------------------------------------------------------------------------

FRAMES = [(1_692_711_000_123_456_789, net.udp_frame(b"one")), (1_692_711_000_123_457_000, net.udp_frame(b"two")),
          (1_692_711_001_000_000_001, net.udp_frame(b"three" * 100))]


@pytest.mark.parametrize("pcapng", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_write_read_roundtrip(tmp_path, pcapng, nano):
    path = tmp_path / ("x.pcapng" if pcapng else "x.pcap")
    assert pcap.write_frames(path, FRAMES, nano=nano, pcapng=pcapng) == 3
    got = list(pcap.read_frames(path))
    want = [(t if nano else t // 1000 * 1000, d) for t, d in FRAMES]
    assert got == want
    head = path.read_bytes()[:4]
    if pcapng:
        assert head == b"\x0a\x0d\x0d\x0a" and pcap.read_header(path) is None
    else:
        assert head == (b"\x4d\x3c\xb2\xa1" if nano else b"\xd4\xc3\xb2\xa1")
        assert pcap.read_header(path) == pcap.PcapHeader(nano=nano)


def test_scapy_reads_our_pcapng_timestamps(tmp_path):
    from scapy.utils import PcapNgReader

    path = tmp_path / "x.pcapng"
    pcap.write_frames(path, FRAMES, pcapng=True, nano=True)
    with PcapNgReader(str(path)) as reader:
        pkts = list(reader)
    assert [int(p.time * 10**9) for p in pkts] == [t for t, _ in FRAMES]
    assert [bytes(p) for p in pkts] == [d for _, d in FRAMES]


def test_wirelen_and_unusual_headers_survive(tmp_path):
    header = pcap.PcapHeader(linktype=1, nano=False, snaplen=96, endian=">", version=(2, 3), thiszone=-3600,
                             sigfigs=7)
    src = tmp_path / "a.pcap"
    frame = net.udp_frame(b"z" * 200)
    pcap.write_frames(src, [(5_000_000_000, frame[:96], len(frame))], header=header)
    raw = src.read_bytes()
    assert raw[:24] == struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 3, -3600, 7, 96, 1)
    assert pcap.read_header(src) == header
    (rec,) = pcap.read_records(src)
    assert rec == pcap.Frame(5_000_000_000, frame[:96], len(frame), 1)
    dst = tmp_path / "b.pcap"
    pcap.write_frames(dst, pcap.read_records(src), header=pcap.read_header(src))
    assert dst.read_bytes() == raw


def test_capture_errors(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")
    with pytest.raises(pcap.PcapFormatError, match="not a pcap"):
        pcap.read_header(junk)
    with pytest.raises(pcap.PcapFormatError):
        list(pcap.read_frames(junk))
    good = tmp_path / "good.pcap"
    pcap.write_frames(good, FRAMES)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(pcap.PcapFormatError, match="record 2 holds"):
        list(pcap.read_frames(cut))
    with pytest.raises(ValueError, match="non-negative"):
        pcap.write_frames(tmp_path / "n.pcap", [(-1, b"x")])
    with pytest.raises(ValueError, match="wirelen"):
        pcap.write_frames(tmp_path / "n.pcap", [(0, b"xyz", 2)])
    with pytest.raises(TypeError, match="data must be bytes"):
        pcap.write_frames(tmp_path / "n.pcap", [(0, "text")])
    with pytest.raises(ValueError, match="u32 seconds"):
        pcap.write_frames(tmp_path / "n.pcap", [(2**32 * 10**9, b"x")])


def test_read_is_streaming(tmp_path):
    path = tmp_path / "x.pcap"
    pcap.write_frames(path, FRAMES)
    it = pcap.read_frames(path)
    assert iter(it) is it and next(it) == FRAMES[0]
    it.close()


def test_mold_packets_skips_and_counts(tmp_path):
    good = moldudp64.Packet("SESS", 5, [b"S" + b"\0" * 11]).encode()
    frames = [
        (1, bytes(Ether() / ARP())),
        (2, net.udp_frame(good)),
        (3, bytes(Ether() / IP(dst="1.2.3.4") / TCP())),
        (4, net.udp_frame(good, dport=9999)),
        (5, net.udp_frame(good[:-3])),  # MoldUDP64 block runs past the end
    ]
    path = tmp_path / "mixed.pcap"
    pcap.write_frames(path, frames)
    with pytest.raises(moldudp64.MoldFormatError, match="runs past the end"):
        list(pcap.mold_packets(path))
    stats = pcap.CaptureStats()
    got = list(pcap.mold_packets(path, strict=False, dport=26477, stats=stats))
    assert [(t, p.sequence) for t, _, p in got] == [(2, 5)]
    assert stats.as_dict() == {"frames": 5, "packets": 1, "not_udp": 3, "bad_frames": 0, "bad_packets": 1,
                               "zero_ip_checksum": 0}
    broken = bytearray(net.udp_frame(good))
    broken[24] ^= 1
    pcap.write_frames(path, [(1, bytes(broken))])
    with pytest.raises(NetFormatError, match="checksum"):
        list(pcap.mold_packets(path))
    stats = pcap.CaptureStats()
    assert list(pcap.mold_packets(path, strict=False, stats=stats)) == [] and stats.bad_frames == 1
