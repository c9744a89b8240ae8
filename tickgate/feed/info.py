"""A summary of a feed file: ITCH BinaryFILE (plain or gzip) or a pcap/pcapng of Ethernet/IPv4/UDP/MoldUDP64.

Reports message counts by type, stock locates (with names where ``R`` directory messages are present), the
ITCH time span, and for captures the MoldUDP64 sessions with their sequence ranges, gaps and duplicates.
Streams the file once; memory is bounded by the number of locates (at most 65,536) and sessions.

Captures are sequenced per session, each by its own :class:`~tickgate.wire.moldudp64.Receiver` joining at
the session's first sequence number, so counts are of unique messages and duplicates (A/B copies,
retransmissions) are reported separately. Packets whose sequence number is 0 (anonymised captures zero the
MoldUDP64 header) carry no sequencing; their messages are counted in capture order as *unsequenced*.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Iterable

from ..wire import itch
from .binaryfile import BinaryFileReader
from .source import BINARYFILE, detect_format

__all__ = ["SessionInfo", "FeedInfo", "feed_info", "format_info", "format_timestamp"]

_MAX_GAPS = 100          # gaps listed per session (all are counted)
_NAMES = {ord(t.code): t.code for t in itch.MESSAGE_TYPES}


def format_timestamp(ns: int | None) -> str:
    """ITCH nanoseconds since midnight as ``HH:MM:SS.nnnnnnnnn`` (hours may pass 23)."""
    if ns is None:
        return "-"
    s, frac = divmod(ns, 10**9)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{frac:09d}"


def _capture_time(ns: int | None) -> str | None:
    if ns is None:
        return None
    t = _dt.datetime.fromtimestamp(ns // 10**9, _dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


def _session_text(session: str) -> str:
    return session.rstrip(" ") if session.isprintable() else session.encode("latin-1").hex()


@dataclass
class SessionInfo:
    session: str                  # as printed: stripped text, or hex when not printable
    dst: str = ""                 # first destination seen, "ip:port"
    packets: int = 0
    heartbeats: int = 0
    end_of_session: int = 0
    messages: int = 0             # unique messages delivered
    first_sequence: int | None = None
    last_sequence: int | None = None   # sequence number of the last message seen
    gaps: int = 0
    missing_messages: int = 0
    duplicate_messages: int = 0
    duplicate_packets: int = 0
    gap_list: list[tuple[int, int]] = field(default_factory=list)   # (first missing, count), the first 100

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["gap_list"] = [list(g) for g in self.gap_list]
        return d


@dataclass
class FeedInfo:
    path: str
    format: str                   # "binaryfile", "pcap" or "pcapng"
    gzipped: bool = False
    file_bytes: int = 0
    messages: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    locates: int = 0              # distinct stock locate values, 0 (system-wide messages) included
    stock_locates: int = 0        # ... excluding 0
    symbols: dict[int, str] = field(default_factory=dict)   # locate -> name, from R messages
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    min_timestamp: int | None = None
    max_timestamp: int | None = None
    timestamp_decreases: int = 0  # messages stamped earlier than the one before
    # captures only
    frames: int = 0
    packets: int = 0
    skipped_frames: int = 0       # not IPv4/UDP
    zero_ip_checksums: int = 0
    first_capture_ns: int | None = None
    last_capture_ns: int | None = None
    unsequenced_packets: int = 0
    unsequenced_messages: int = 0
    sessions: list[SessionInfo] = field(default_factory=list)

    @property
    def gaps(self) -> int:
        return sum(s.gaps for s in self.sessions)

    @property
    def missing_messages(self) -> int:
        return sum(s.missing_messages for s in self.sessions)

    @property
    def duplicate_messages(self) -> int:
        return sum(s.duplicate_messages for s in self.sessions)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "sessions"}
        d["by_type"] = dict(sorted(self.by_type.items()))
        d["symbols"] = {str(k): v for k, v in sorted(self.symbols.items())}
        d["first_time"] = format_timestamp(self.first_timestamp)
        d["last_time"] = format_timestamp(self.last_timestamp)
        if self.format != BINARYFILE:
            d["first_capture_time"] = _capture_time(self.first_capture_ns)
            d["last_capture_time"] = _capture_time(self.last_capture_ns)
            d["gaps"], d["missing_messages"] = self.gaps, self.missing_messages
            d["duplicate_messages"] = self.duplicate_messages
            d["sessions"] = [s.as_dict() for s in self.sessions]
        else:
            for k in ("frames", "packets", "skipped_frames", "zero_ip_checksums", "first_capture_ns",
                      "last_capture_ns", "unsequenced_packets", "unsequenced_messages"):
                del d[k]
        return d


class _Tally:
    """Per-message counting shared by both formats."""

    def __init__(self, info: FeedInfo):
        self.info = info
        self.by_byte: dict[int, int] = {}
        self.locates: set[int] = set()
        self.prev: int | None = None

    def add(self, raw: bytes) -> None:
        info = self.info
        info.messages += 1
        t = raw[0]
        self.by_byte[t] = self.by_byte.get(t, 0) + 1
        if len(raw) < 11:
            return
        loc = (raw[1] << 8) | raw[2]
        self.locates.add(loc)
        if t == 0x52 and len(raw) >= 19:                        # 'R': stock directory
            info.symbols[loc] = raw[11:19].decode("latin-1").rstrip()
        ts = int.from_bytes(raw[5:11], "big")
        if info.first_timestamp is None:
            info.first_timestamp = info.min_timestamp = info.max_timestamp = ts
        else:
            if ts < self.prev:
                info.timestamp_decreases += 1
            info.min_timestamp = min(info.min_timestamp, ts)
            info.max_timestamp = max(info.max_timestamp, ts)
        info.last_timestamp = self.prev = ts

    def add_all(self, msgs: Iterable[bytes]) -> None:
        for m in msgs:
            self.add(m)

    def finish(self) -> None:
        self.info.by_type = {_NAMES.get(b, chr(b)): n for b, n in sorted(self.by_byte.items())}
        self.info.locates = len(self.locates)
        self.info.stock_locates = len(self.locates - {0})


def feed_info(path, *, lenient: bool = False) -> FeedInfo:
    """Summarise ``path``; the format is detected from the content. Raises ``ValueError`` (ITCH,
    MoldUDP64 or network format errors, naming the place) or ``OSError``."""
    path = os.fspath(path)
    fmt, gz = detect_format(path)
    info = FeedInfo(path=path, format=fmt, gzipped=gz, file_bytes=os.path.getsize(path))
    tally = _Tally(info)
    if fmt == BINARYFILE:
        with BinaryFileReader(path, lenient=lenient) as reader:
            try:
                tally.add_all(reader)
            except itch.ItchFormatError as e:
                raise itch.ItchFormatError(f"{path}: {e.problem}", offset=e.offset,
                                           message_number=e.message_number) from None
    else:
        _pcap_info(path, info, tally, lenient)
    tally.finish()
    return info


def _pcap_info(path: str, info: FeedInfo, tally: _Tally, lenient: bool) -> None:
    from ..wire.moldudp64 import Receiver
    from ..wire.pcap import CaptureStats, mold_packets, read_header

    info.format = "pcap" if read_header(path) is not None else "pcapng"
    cap = CaptureStats()
    sessions: dict[str, tuple[SessionInfo, Receiver]] = {}
    for time_ns, meta, packet in mold_packets(path, strict=not lenient, stats=cap):
        if info.first_capture_ns is None:
            info.first_capture_ns = time_ns
        info.last_capture_ns = time_ns
        if packet.sequence == 0:
            info.unsequenced_packets += 1
            info.unsequenced_messages += len(packet.messages)
            tally.add_all(packet.messages)
            continue
        entry = sessions.get(packet.session)
        if entry is None:
            entry = sessions[packet.session] = (SessionInfo(_session_text(packet.session),
                                                            dst=f"{meta.dst_ip}:{meta.dport}"),
                                                Receiver(start_sequence=None))
        s, rx = entry
        s.packets += 1
        if packet.messages:
            last = packet.next_sequence - 1
            s.first_sequence = packet.sequence if s.first_sequence is None else min(s.first_sequence, packet.sequence)
            s.last_sequence = last if s.last_sequence is None else max(s.last_sequence, last)
        tally.add_all(m for _seq, m in rx.feed(packet))
    for s, rx in sessions.values():
        tally.add_all(m for _seq, m in rx.flush())
        rs = rx.stats
        s.heartbeats, s.end_of_session, s.messages = rs.heartbeats, rs.end_of_session, rs.messages
        s.gaps, s.missing_messages = rs.gaps, rs.missing_messages
        s.duplicate_messages, s.duplicate_packets = rs.duplicate_messages, rs.duplicate_packets
        s.gap_list = [(g.first, g.count) for g in rx.gaps[:_MAX_GAPS]]
        info.sessions.append(s)
    info.frames, info.packets = cap.frames, cap.packets
    info.skipped_frames = cap.not_udp + cap.bad_frames + cap.bad_packets
    info.zero_ip_checksums = cap.zero_ip_checksum


def format_info(info: FeedInfo) -> str:
    """The human-readable report."""
    kind = info.format + (" (gzip)" if info.gzipped else "")
    lines = [f"{info.path}: {kind}, {info.file_bytes:,} bytes"]
    if info.format != BINARYFILE:
        lines.append(f"  frames {info.frames:,}, MoldUDP64 packets {info.packets:,}"
                     + (f", skipped frames {info.skipped_frames:,}" if info.skipped_frames else ""))
        if info.first_capture_ns is not None:
            lines.append(f"  captured {_capture_time(info.first_capture_ns)} .. {_capture_time(info.last_capture_ns)}")
    lines.append(f"  messages {info.messages:,}")
    if info.by_type:
        ranked = sorted(info.by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("  by type: " + ", ".join(f"{k} {v:,}" for k, v in ranked))
    lines.append(f"  locates {info.locates:,} ({info.stock_locates:,} not 0)"
                 + (f", {len(info.symbols):,} named by R" if info.symbols else ""))
    if info.symbols:
        shown = sorted(info.symbols.items())[:10]
        more = len(info.symbols) - len(shown)
        lines.append("  symbols: " + ", ".join(f"{loc} {name}" for loc, name in shown) + (f", ... {more:,} more" if more else ""))
    if info.first_timestamp is not None:
        lines.append(f"  time {format_timestamp(info.first_timestamp)} .. {format_timestamp(info.last_timestamp)}"
                     + (f" ({info.timestamp_decreases:,} steps back)" if info.timestamp_decreases else ""))
    if info.format != BINARYFILE:
        if info.unsequenced_packets:
            lines.append(f"  unsequenced (sequence 0) packets {info.unsequenced_packets:,}, "
                         f"messages {info.unsequenced_messages:,}")
        for s in info.sessions:
            seq = (f"sequence {s.first_sequence:,}..{s.last_sequence:,}" if s.first_sequence is not None
                   else "no messages")
            lines.append(f"  session {s.session} -> {s.dst}: {s.packets:,} packets, {s.messages:,} messages, {seq}, "
                         f"gaps {s.gaps:,} ({s.missing_messages:,} missing), duplicates {s.duplicate_messages:,}"
                         + (f", heartbeats {s.heartbeats:,}" if s.heartbeats else "")
                         + (", end of session" if s.end_of_session else ""))
            for first, count in s.gap_list[:5]:
                lines.append(f"    gap: {count:,} from {first:,}")
    return "\n".join(lines)
