"""Ethernet II / 802.1Q / IPv4 / UDP framing for the market-data receive path.

Header layouts are declared once as :class:`Layout` tables (the gateware receive filter slices the same
offsets: Ethernet 14 bytes, an optional 4-byte 802.1Q tag, IPv4 20 bytes without options, UDP 8).
Frames are built with scapy (:func:`udp_frame`); :func:`parse_udp_frame` is the strict reference parser
the gateware filter is checked against. Frames here exclude the FCS, as capture files store them.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .layout import Layout

__all__ = [
    "ETH_HEADER", "VLAN_TAG", "IPV4_HEADER", "UDP_HEADER",
    "ETHERTYPE_IPV4", "ETHERTYPE_VLAN", "ETHERTYPE_QINQ", "IPPROTO_UDP", "MIN_FRAME",
    "DEFAULT_GROUP", "DEFAULT_PORT", "DEFAULT_SRC_IP", "DEFAULT_SRC_MAC",
    "NetFormatError", "NotUdpError", "UdpMeta",
    "ipv4_checksum", "udp_checksum", "multicast_mac", "udp_frame", "parse_udp_frame",
]

ETH_HEADER = Layout("eth_header", [("dst", 6), ("src", 6), ("ethertype", 2)])
# An 802.1Q tag sits between the source MAC and the EtherType: the outer EtherType (0x8100) is its TPID.
VLAN_TAG = Layout("vlan_tag", [("tci", 2), ("ethertype", 2)])
IPV4_HEADER = Layout("ipv4_header", [
    ("version_ihl", 1), ("dscp_ecn", 1), ("total_length", 2), ("identification", 2), ("flags_fragment", 2),
    ("ttl", 1), ("protocol", 1), ("checksum", 2), ("src", 4), ("dst", 4)])
UDP_HEADER = Layout("udp_header", [("sport", 2), ("dport", 2), ("length", 2), ("checksum", 2)])

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
IPPROTO_UDP = 17
MIN_FRAME = 60  # shortest Ethernet frame without FCS; shorter ones are zero-padded

DEFAULT_GROUP = "233.54.12.111"  # NASDAQ TotalView-ITCH multicast group
DEFAULT_PORT = 26477
DEFAULT_SRC_IP = "192.0.2.1"  # TEST-NET-1 (RFC 5737)
DEFAULT_SRC_MAC = "02:00:00:00:00:01"  # locally administered


class NetFormatError(ValueError):
    """A frame that cannot be parsed as Ethernet/IPv4/UDP; ``offset`` is the byte offset in the frame."""

    def __init__(self, problem: str, offset: int):
        self.problem = problem
        self.offset = offset
        super().__init__(f"{problem} (at byte offset {offset})")


class NotUdpError(NetFormatError):
    """A well-formed frame that is simply not IPv4/UDP (ARP, IPv6, TCP, ...): receivers skip these."""


@dataclass(frozen=True)
class UdpMeta:
    dst_mac: str
    src_mac: str
    vlan: int | None  # 802.1Q VLAN ID of the innermost tag, None when untagged
    src_ip: str
    dst_ip: str
    sport: int
    dport: int
    ttl: int
    ip_checksum: int     # as carried (0 when accepted under zero_checksum_ok)
    ip_offset: int       # where the IPv4 header starts in the frame (14, 18 or 22)
    payload_offset: int  # where the UDP payload starts in the frame


def _ones_sum(data: bytes) -> int:
    """16-bit ones'-complement sum (RFC 1071), odd lengths padded with a zero byte."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_checksum(header: bytes) -> int:
    """The header checksum an IPv4 header should carry: computed over ``header`` with its checksum field
    (bytes 10-11) taken as zero. ``header`` is the whole header, options included."""
    if isinstance(header, str) or not isinstance(header, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes-like, not {type(header).__name__}")
    header = bytes(header)
    if len(header) < IPV4_HEADER.size or len(header) % 4:
        raise ValueError(f"an IPv4 header is 20..60 bytes in 4-byte words, not {len(header)}")
    off = IPV4_HEADER["checksum"].offset
    return ~_ones_sum(header[:off] + b"\0\0" + header[off + 2:]) & 0xFFFF


def udp_checksum(src_ip: int, dst_ip: int, segment: bytes) -> int:
    """The checksum a UDP ``segment`` (header and payload) should carry, over the IPv4 pseudo-header, with
    its checksum field taken as zero. A computed 0 is sent as 0xFFFF (0 means "no checksum")."""
    segment = bytes(segment)
    off = UDP_HEADER["checksum"].offset
    pseudo = struct.pack(">IIBBH", src_ip, dst_ip, 0, IPPROTO_UDP, len(segment))
    value = ~_ones_sum(pseudo + segment[:off] + b"\0\0" + segment[off + 2:]) & 0xFFFF
    return value or 0xFFFF


def _mac_str(value: int) -> str:
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def _ip(value, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise ValueError(f"{what} {value!r} is not an IPv4 address") from None


def multicast_mac(group: str) -> str:
    """The Ethernet address of an IPv4 multicast group: 01:00:5e plus the group's low 23 bits."""
    ip = _ip(group, "group")
    if not ip.is_multicast:
        raise ValueError(f"{group} is not a multicast address")
    return _mac_str(0x01005E000000 | (int(ip) & 0x7FFFFF))


def _port(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} must be an int in 0..65535, not {value!r}")
    return value


def udp_frame(payload: bytes, *, dst_ip: str = DEFAULT_GROUP, dport: int = DEFAULT_PORT,
              src_ip: str = DEFAULT_SRC_IP, sport: int = DEFAULT_PORT,
              src_mac: str = DEFAULT_SRC_MAC, dst_mac: str | None = None,
              vlan: int | None = None, ttl: int = 64, ip_id: int = 0, dont_fragment: bool = True,
              with_udp_checksum: bool = True, pad: bool = True) -> bytes:
    """An Ethernet/IPv4/UDP frame (no FCS) carrying ``payload``, built by scapy, which fills in lengths and
    checksums. ``dst_mac`` defaults to the multicast MAC of ``dst_ip`` (required for a unicast
    ``dst_ip``). ``vlan`` adds an 802.1Q tag; ``with_udp_checksum=False`` sends UDP checksum 0; ``pad``
    zero-pads to the 60-byte Ethernet minimum as a MAC would."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw

    if isinstance(payload, str) or not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes-like, not {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > 0xFFFF - IPV4_HEADER.size - UDP_HEADER.size:
        raise ValueError(f"a {len(payload)}-byte payload does not fit one IPv4 datagram")
    dst = _ip(dst_ip, "dst_ip")
    src = _ip(src_ip, "src_ip")
    sport, dport = _port(sport, "sport"), _port(dport, "dport")
    if dst_mac is None:
        if not dst.is_multicast:
            raise ValueError(f"dst_mac is required for unicast destination {dst}")
        dst_mac = multicast_mac(str(dst))
    if not isinstance(ttl, int) or not 0 <= ttl <= 255:
        raise ValueError(f"ttl must be in 0..255, not {ttl!r}")
    if not isinstance(ip_id, int) or not 0 <= ip_id <= 0xFFFF:
        raise ValueError(f"ip_id must be in 0..65535, not {ip_id!r}")
    pkt = Ether(src=src_mac, dst=dst_mac)
    if vlan is not None:
        if not isinstance(vlan, int) or not 0 <= vlan <= 4095:
            raise ValueError(f"vlan must be a VLAN ID in 0..4095, not {vlan!r}")
        pkt = pkt / Dot1Q(vlan=vlan)
    udp = UDP(sport=sport, dport=dport) if with_udp_checksum else UDP(sport=sport, dport=dport, chksum=0)
    pkt = pkt / IP(src=str(src), dst=str(dst), ttl=ttl, id=ip_id, flags="DF" if dont_fragment else 0) / udp
    try:
        frame = bytes(pkt / Raw(payload)) if payload else bytes(pkt)
    except Exception as e:  # scapy raises assorted errors for bad MAC strings
        raise ValueError(f"cannot build frame: {e}") from None
    return frame.ljust(MIN_FRAME, b"\0") if pad else frame


def parse_udp_frame(frame, *, verify_checksum: bool = True, zero_checksum_ok: bool = False,
                    verify_udp_checksum: bool = True) -> tuple[UdpMeta, bytes]:
    """Split an Ethernet frame into its UDP addressing and payload.

    Accepts up to two VLAN tags (802.1Q, 802.1ad), IPv4 options, and Ethernet padding after the datagram.
    Raises :class:`NotUdpError` for frames that are not IPv4/UDP, and :class:`NetFormatError` for a
    truncated frame, a bad IPv4 version/header length/total length, a fragment, a UDP length that
    disagrees with the IPv4 length, or a wrong checksum. ``verify_checksum`` checks the IPv4 header
    checksum; ``zero_checksum_ok`` accepts a zero one as "not filled in" (anonymised captures, captures
    taken on a sender with checksum offload). ``verify_udp_checksum`` checks a non-zero UDP checksum
    (zero means the sender computed none)."""
    if isinstance(frame, str) or not isinstance(frame, (bytes, bytearray, memoryview)):
        raise TypeError(f"frame must be bytes-like, not {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) < ETH_HEADER.size:
        raise NetFormatError(f"truncated Ethernet header: {len(frame)} bytes", len(frame))
    dst_mac, src_mac, ethertype = ETH_HEADER.unpack(frame)
    pos = ETH_HEADER.size
    vlan = None
    for _ in range(2):
        if ethertype not in (ETHERTYPE_VLAN, ETHERTYPE_QINQ):
            break
        if len(frame) < pos + VLAN_TAG.size:
            raise NetFormatError("truncated 802.1Q tag", len(frame))
        tci, ethertype = VLAN_TAG.unpack(frame, pos)
        vlan = tci & 0xFFF
        pos += VLAN_TAG.size
    if ethertype != ETHERTYPE_IPV4:
        raise NotUdpError(f"EtherType 0x{ethertype:04x} is not IPv4", pos - 2)
    ip_start = pos
    if len(frame) < ip_start + IPV4_HEADER.size:
        raise NetFormatError(f"truncated IPv4 header: {len(frame) - ip_start} bytes", len(frame))
    (version_ihl, _, total_length, _, flags_fragment, ttl, protocol, checksum, src_ip,
     dst_ip) = IPV4_HEADER.unpack(frame, ip_start)
    version, ihl = version_ihl >> 4, (version_ihl & 0xF) * 4
    if version != 4:
        raise NetFormatError(f"IP version {version} in an IPv4 EtherType frame", ip_start)
    if ihl < IPV4_HEADER.size:
        raise NetFormatError(f"IPv4 header length {ihl} is below 20", ip_start)
    if total_length < ihl or ip_start + total_length > len(frame):
        raise NetFormatError(f"IPv4 total length {total_length} does not fit header length {ihl} and the "
                             f"{len(frame) - ip_start} bytes after the Ethernet header",
                             ip_start + IPV4_HEADER["total_length"].offset)
    header = frame[ip_start:ip_start + ihl]
    if verify_checksum and not (zero_checksum_ok and checksum == 0):
        want = ipv4_checksum(header)
        if checksum != want:
            raise NetFormatError(f"bad IPv4 header checksum 0x{checksum:04x}, expected 0x{want:04x}",
                                 ip_start + IPV4_HEADER["checksum"].offset)
    if protocol != IPPROTO_UDP:
        raise NotUdpError(f"IP protocol {protocol} is not UDP", ip_start + IPV4_HEADER["protocol"].offset)
    if flags_fragment & 0x3FFF:  # MF flag or a fragment offset
        raise NetFormatError("fragmented IPv4 datagram", ip_start + IPV4_HEADER["flags_fragment"].offset)
    udp_start = ip_start + ihl
    ip_end = ip_start + total_length
    if ip_end - udp_start < UDP_HEADER.size:
        raise NetFormatError(f"truncated UDP header: {ip_end - udp_start} bytes", udp_start)
    sport, dport, udp_length, udp_sum = UDP_HEADER.unpack(frame, udp_start)
    if udp_length != ip_end - udp_start:
        raise NetFormatError(f"UDP length {udp_length} disagrees with the IPv4 payload length "
                             f"{ip_end - udp_start}", udp_start + UDP_HEADER["length"].offset)
    if verify_udp_checksum and udp_sum:
        want = udp_checksum(src_ip, dst_ip, frame[udp_start:ip_end])
        if udp_sum != want:
            raise NetFormatError(f"bad UDP checksum 0x{udp_sum:04x}, expected 0x{want:04x}",
                                 udp_start + UDP_HEADER["checksum"].offset)
    payload_offset = udp_start + UDP_HEADER.size
    meta = UdpMeta(dst_mac=_mac_str(dst_mac), src_mac=_mac_str(src_mac), vlan=vlan,
                   src_ip=str(ipaddress.IPv4Address(src_ip)), dst_ip=str(ipaddress.IPv4Address(dst_ip)),
                   sport=sport, dport=dport, ttl=ttl, ip_checksum=checksum, ip_offset=ip_start,
                   payload_offset=payload_offset)
    return meta, frame[payload_offset:ip_end]
