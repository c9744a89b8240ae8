"""One way in for every recorded feed: raw ITCH messages, in feed order, from any supported file.

Supported (detected by content, never by file name):

* ITCH BinaryFILE (u16 length + message), plain or gzip;
* pcap / pcapng of Ethernet/IPv4/UDP/MoldUDP64, through :func:`tickgate.wire.pcap.mold_packets` and a
  :class:`tickgate.wire.moldudp64.Receiver` (sequencing, gap detection, duplicate drop).

MoldUDP64 policy for captures whose session and sequence fields are zeroed (anonymised payload captures):
sequence numbers start at 1, so a packet with sequence 0 carries no sequencing information. Such packets
are *unsequenced*: their messages are delivered in capture order, bypassing the receiver (which would
otherwise drop them as duplicates), and counted in :class:`FeedStats`.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from typing import Iterator

from ..wire import itch
from ..wire.itch import ItchFormatError
from .binaryfile import BinaryFileReader, ReadStats

__all__ = ["FeedStats", "FeedSource", "iter_messages", "detect_format", "BINARYFILE", "PCAP"]

BINARYFILE = "binaryfile"
PCAP = "pcap"

_PCAP_MAGICS = (
    b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",   # pcap, microseconds (little / big endian)
    b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",   # pcap, nanoseconds
    b"\x0a\x0d\x0d\x0a",                        # pcapng section header block
)
_LENGTHS = {ord(t.code): t.length for t in itch.MESSAGE_TYPES}


def detect_format(path) -> tuple[str, bool]:
    """(BINARYFILE or PCAP, gzipped). Anything that is not a capture is read as a BinaryFILE, whose
    reader then reports malformed framing precisely."""
    with open(path, "rb") as f:
        head = f.read(4)
        gz = head[:2] == b"\x1f\x8b"
        if gz:
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f) as g:
                    head = g.read(4)
            except (OSError, EOFError) as e:
                raise ItchFormatError(f"{os.fspath(path)}: corrupt gzip stream ({e})") from None
    return (PCAP if head in _PCAP_MAGICS else BINARYFILE), gz


@dataclass
class FeedStats:
    format: str = ""
    messages: int = 0            # ITCH messages delivered
    packets: int = 0             # MoldUDP64 packets read (pcap only)
    gaps: int = 0                # sequence gaps the receiver saw
    missing: int = 0             # messages lost in those gaps
    duplicates: int = 0          # messages dropped as already delivered
    unsequenced: int = 0         # packets with sequence 0, delivered in capture order
    unsequenced_messages: int = 0
    skipped: int = 0             # malformed messages skipped (lenient mode)
    problems: list[str] = field(default_factory=list)   # the first few problems, for reports

    def note(self, err: Exception) -> None:
        self.skipped += 1
        if len(self.problems) < 20:
            self.problems.append(str(err))


class FeedSource:
    """Iterable of raw ITCH message bytes from ``path``; ``stats`` is complete once iteration ends.

    Strict mode raises :class:`ItchFormatError` on malformed input; ``lenient=True`` counts and skips."""

    def __init__(self, path, *, lenient: bool = False):
        self.path = os.fspath(path)
        self.lenient = lenient
        self.format, self.gzipped = detect_format(self.path)
        self.stats = FeedStats(format=self.format)
        self.read_stats: ReadStats | None = None     # BinaryFILE only
        self.capture_stats = None                     # pcap only: tickgate.wire.pcap.CaptureStats
        self.receiver = None                          # pcap only: the moldudp64.Receiver

    def __iter__(self) -> Iterator[bytes]:
        return self._binaryfile() if self.format == BINARYFILE else self._pcap()

    def _binaryfile(self) -> Iterator[bytes]:
        reader = BinaryFileReader(self.path, lenient=self.lenient)
        self.read_stats = reader.stats
        st = self.stats
        try:
            for raw in reader:
                st.messages += 1
                yield raw
        except ItchFormatError as e:       # name the file; the reader names offset and message number
            raise ItchFormatError(f"{self.path}: {e.problem}", offset=e.offset,
                                  message_number=e.message_number) from None
        finally:
            reader.close()
            st.skipped = reader.stats.skipped
            st.problems = list(reader.stats.problems)

    def _pcap(self) -> Iterator[bytes]:
        from ..wire.moldudp64 import MoldFormatError, Receiver
        from ..wire.net import NetFormatError
        from ..wire.pcap import CaptureStats, mold_packets

        st = self.stats
        cap = self.capture_stats = CaptureStats()
        # A capture starts mid-session: join at the first packet's sequence rather than count 1..n as lost.
        # Same policy as the chip (MoldUDP64Receiver): no reorder hold, a gap is declared at once.
        rx = self.receiver = Receiver(start_sequence=None, max_pending=0)
        number = 0
        try:
            for _ts, _meta, packet in mold_packets(self.path, strict=not self.lenient, stats=cap):
                st.packets += 1
                if packet.sequence == 0:      # zeroed header: no sequencing, keep capture order
                    st.unsequenced += 1
                    st.unsequenced_messages += len(packet.messages)
                    delivered = packet.messages
                else:
                    delivered = [m for _seq, m in rx.feed(packet)]
                for raw in delivered:
                    number += 1
                    if self._check(raw, number):
                        st.messages += 1
                        yield raw
            for _seq, raw in rx.flush():
                number += 1
                if self._check(raw, number):
                    st.messages += 1
                    yield raw
        except (MoldFormatError, NetFormatError) as e:
            raise ItchFormatError(f"{self.path}: {e}") from None
        rs = rx.stats
        st.gaps, st.missing, st.duplicates = rs.gaps, rs.missing_messages, rs.duplicate_messages
        st.skipped += cap.bad_frames + cap.bad_packets

    def _check(self, raw: bytes, number: int) -> bool:
        """True for a well-formed ITCH message; else raise (strict) or count it (lenient)."""
        want = _LENGTHS.get(raw[0]) if raw else None
        if want == len(raw):
            return True
        what = ("zero-length message" if not raw else
                f"unknown message type {raw[:1]!r}" if want is None else
                f"'{chr(raw[0])}' message is {len(raw)} bytes, expected {want}")
        err = ItchFormatError(f"{self.path}: {what}", message_number=number)
        if not self.lenient:
            raise err
        self.stats.note(err)
        return False


def iter_messages(path, *, lenient: bool = False) -> Iterator[bytes]:
    """Raw ITCH message bytes of a BinaryFILE (plain/gzip) or a MoldUDP64 pcap/pcapng, in feed order."""
    return iter(FeedSource(path, lenient=lenient))
