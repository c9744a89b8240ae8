"""Capture files: pcap and pcapng through scapy's streaming readers and writers.

Timestamps are integer nanoseconds since the Unix epoch (a float cannot hold nanoseconds of a current
date). Reading streams one record at a time. A pcap read with :func:`read_records` and written back with
:func:`write_frames` using the source's :func:`read_header` is byte-identical: scapy writes the records,
and the global header fields scapy does not carry (version, thiszone, sigfigs, byte order, snaplen) are
taken from the source.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, fields
from decimal import Decimal
from os import PathLike
from typing import Iterable, Iterator, NamedTuple

from . import moldudp64, net

__all__ = [
    "LINKTYPE_ETHERNET", "DEFAULT_SNAPLEN", "PcapFormatError", "PcapHeader", "Frame", "CaptureStats",
    "read_header", "read_records", "read_frames", "write_frames", "mold_packets",
]

LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 262144  # tcpdump's default
_NS = 1_000_000_000
_MAGIC = {  # first four file bytes -> (byte order, nanosecond timestamps)
    b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

PathArg = str | PathLike


class PcapFormatError(ValueError):
    """A file that is not a readable pcap/pcapng capture, or a damaged record."""


@dataclass(frozen=True)
class PcapHeader:
    """The pcap global header. ``endian`` is ``'<'`` or ``'>'``; ``nano`` selects nanosecond timestamps."""

    linktype: int = LINKTYPE_ETHERNET
    nano: bool = True
    snaplen: int = DEFAULT_SNAPLEN
    endian: str = "<"
    version: tuple[int, int] = (2, 4)
    thiszone: int = 0
    sigfigs: int = 0

    def __post_init__(self):
        if self.endian not in ("<", ">"):
            raise ValueError(f"endian must be '<' or '>', not {self.endian!r}")
        for name in ("linktype", "snaplen"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < 1 << 32:
                raise ValueError(f"{name} must be a u32, not {value!r}")


class Frame(NamedTuple):
    time_ns: int   # capture time, ns since the epoch (0 for pcapng simple packet blocks, which have none)
    data: bytes    # the captured bytes
    wirelen: int   # length on the wire (more than len(data) when the capture truncated the frame)
    linktype: int


@dataclass
class CaptureStats:
    frames: int = 0        # records read
    packets: int = 0       # MoldUDP64 packets yielded
    not_udp: int = 0       # frames skipped: not Ethernet/IPv4/UDP, or another UDP port
    bad_frames: int = 0    # malformed Ethernet/IPv4/UDP (only counted when strict=False)
    bad_packets: int = 0   # UDP payloads that are not valid MoldUDP64 (only counted when strict=False)
    zero_ip_checksum: int = 0  # IPv4 headers with a zero checksum, accepted as "not filled in"

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _open(path: PathArg):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_header(path: PathArg) -> PcapHeader | None:
    """The global header of a pcap file; None for a pcapng file (whose header is per section)."""
    with _open(path) as f:
        head = f.read(24)
    if head[:4] == _PCAPNG_MAGIC:
        return None
    if head[:4] not in _MAGIC:
        raise PcapFormatError(f"{path}: not a pcap or pcapng file (magic {head[:4].hex()})")
    if len(head) < 24:
        raise PcapFormatError(f"{path}: truncated pcap global header ({len(head)} bytes)")
    endian, nano = _MAGIC[head[:4]]
    vmaj, vmin, thiszone, sigfigs, snaplen, linktype = struct.unpack(endian + "HHiIII", head[4:])
    return PcapHeader(linktype=linktype, nano=nano, snaplen=snaplen, endian=endian, version=(vmaj, vmin),
                      thiszone=thiszone, sigfigs=sigfigs)


def read_records(path: PathArg) -> Iterator[Frame]:
    """Every record of a pcap or pcapng file (gzip-compressed too), streamed."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    try:
        reader = RawPcapReader(str(path))  # scapy falls back to its pcapng reader
    except Scapy_Exception as e:
        raise PcapFormatError(f"{path}: {e}") from None
    return _records(reader, path)


def _records(reader, path) -> Iterator[Frame]:
    with reader:
        for index, (data, meta) in enumerate(reader):
            if hasattr(meta, "tsresol"):  # pcapng
                if meta.tshigh is None:
                    time_ns = 0
                else:
                    time_ns = ((meta.tshigh << 32) | meta.tslow) * _NS // meta.tsresol
                yield Frame(time_ns, data, meta.wirelen, meta.linktype)
            else:
                if len(data) != meta.caplen:
                    raise PcapFormatError(f"{path}: record {index} holds {len(data)} of its {meta.caplen} "
                                          f"captured bytes (truncated file, or a record over 65535 bytes)")
                time_ns = meta.sec * _NS + (meta.usec if reader.nano else meta.usec * 1000)
                yield Frame(time_ns, data, meta.wirelen, reader.linktype)


def read_frames(path: PathArg) -> Iterator[tuple[int, bytes]]:
    """``(time_ns, frame bytes)`` for every record, streamed."""
    for rec in read_records(path):
        yield rec.time_ns, rec.data


def _pcap_writer(path: PathArg, header: PcapHeader):
    from scapy.utils import RawPcapWriter

    class Writer(RawPcapWriter):
        def _write_header(self, pkt):
            if header.version == (2, 4) and header.thiszone == 0 and header.sigfigs == 0:
                return super()._write_header(pkt)
            # scapy always writes version 2.4 and zero thiszone/sigfigs: write the source's values.
            self.header_present = True
            magic = 0xA1B23C4D if header.nano else 0xA1B2C3D4
            self.f.write(struct.pack(header.endian + "IHHiIII", magic, *header.version, header.thiszone,
                                     header.sigfigs, header.snaplen, header.linktype))

    return Writer(str(path), linktype=header.linktype, endianness=header.endian, nano=header.nano,
                  snaplen=header.snaplen)


def _pcapng_writer(path: PathArg, header: PcapHeader):
    from scapy.utils import RawPcapNgWriter

    class Writer(RawPcapNgWriter):
        def _write_block_idb(self, linktype, ifname=None):
            # scapy's IDB has no if_tsresol option (so readers assume microseconds) and a fixed snaplen.
            body = struct.pack(self.endian + "HHI", linktype, 0, header.snaplen)
            opts = b""
            if ifname is not None:
                opts += struct.pack(self.endian + "HH", 2, len(ifname)) + self._add_padding(ifname)
            if header.nano:
                opts += struct.pack(self.endian + "HH", 9, 1) + self._add_padding(b"\x09")
            if opts:
                opts += struct.pack(self.endian + "HH", 0, 0)
            self.f.write(self.build_block(struct.pack(self.endian + "I", 1), body, options=opts or None))

    w = Writer(str(path))
    w.linktype = header.linktype
    w.tsresol = _NS if header.nano else 1_000_000
    return w


def write_frames(path: PathArg, frames: Iterable, *, linktype: int = LINKTYPE_ETHERNET, nano: bool = True,
                 snaplen: int = DEFAULT_SNAPLEN, pcapng: bool = False, header: PcapHeader | None = None) -> int:
    """Write ``frames`` and return how many were written. Each item is ``(time_ns, data)`` or ``(time_ns,
    data, wirelen[, ...])`` (so :class:`Frame` records from :func:`read_records` pass through unchanged).
    ``nano=False`` stores microseconds (sub-microsecond digits are truncated). ``header`` overrides
    ``linktype``/``nano``/``snaplen`` and also sets byte order, version, thiszone and sigfigs (pcap only);
    pass :func:`read_header`'s result to rewrite a file byte for byte. ``pcapng`` writes one section with
    one interface, timestamp resolution 1 ns or 1 us."""
    if header is None:
        header = PcapHeader(linktype=linktype, nano=nano, snaplen=snaplen)
    elif not isinstance(header, PcapHeader):
        raise TypeError(f"header must be a PcapHeader, not {type(header).__name__}")
    writer = _pcapng_writer(path, header) if pcapng else _pcap_writer(path, header)
    count = 0
    with writer:
        writer.write_header(None)
        for item in frames:
            if not isinstance(item, tuple) or len(item) < 2:
                raise TypeError(f"frame {count}: expected (time_ns, data[, wirelen]), not {type(item).__name__}")
            time_ns, data = item[0], item[1]
            if isinstance(data, str) or not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"frame {count}: data must be bytes-like, not {type(data).__name__}")
            data = bytes(data)
            wirelen = item[2] if len(item) > 2 else len(data)
            if not isinstance(time_ns, int) or time_ns < 0:
                raise ValueError(f"frame {count}: time_ns must be a non-negative int (ns since the epoch), "
                                 f"not {time_ns!r}")
            if not isinstance(wirelen, int) or not len(data) <= wirelen < 1 << 32:
                raise ValueError(f"frame {count}: wirelen {wirelen!r} is below the {len(data)} captured bytes")
            sec, ns = divmod(time_ns, _NS)
            if pcapng:
                writer.write_packet(data, sec=Decimal(time_ns) / _NS, caplen=len(data), wirelen=wirelen)
            else:
                if sec >= 1 << 32:
                    raise ValueError(f"frame {count}: time {time_ns} ns is past what pcap's u32 seconds hold")
                writer.write_packet(data, sec=sec, usec=ns if header.nano else ns // 1000, caplen=len(data),
                                    wirelen=wirelen)
            count += 1
    return count


def mold_packets(path: PathArg, *, dport: int | None = None, strict: bool = True, zero_checksum_ok: bool = True,
                 stats: CaptureStats | None = None
                 ) -> Iterator[tuple[int, net.UdpMeta, moldudp64.Packet]]:
    """``(time_ns, meta, packet)`` for every MoldUDP64 packet in a capture, streamed.

    Frames that are not Ethernet/IPv4/UDP (or, with ``dport``, go to another port) are skipped and
    counted. Malformed frames and payloads raise :class:`net.NetFormatError` /
    :class:`moldudp64.MoldFormatError` when ``strict``, else they are skipped and counted. IPv4 headers
    with a zero checksum are accepted by default (anonymised captures zero it, see the shared data's
    SOURCES.md) and counted. Pass a :class:`CaptureStats` to read the counts."""
    st = stats if stats is not None else CaptureStats()
    if not isinstance(st, CaptureStats):
        raise TypeError(f"stats must be a CaptureStats, not {type(st).__name__}")
    for rec in read_records(path):
        st.frames += 1
        if rec.linktype != LINKTYPE_ETHERNET:
            st.not_udp += 1
            continue
        try:
            meta, payload = net.parse_udp_frame(rec.data, zero_checksum_ok=zero_checksum_ok)
        except net.NotUdpError:
            st.not_udp += 1
            continue
        except net.NetFormatError:
            if strict:
                raise
            st.bad_frames += 1
            continue
        if dport is not None and meta.dport != dport:
            st.not_udp += 1
            continue
        if meta.ip_checksum == 0:
            st.zero_ip_checksum += 1
        try:
            packet = moldudp64.Packet.decode(payload)
        except moldudp64.MoldFormatError:
            if strict:
                raise
            st.bad_packets += 1
            continue
        st.packets += 1
        yield rec.time_ns, meta, packet
