"""Feed conversion: ITCH BinaryFILE <-> pcap/pcapng of Ethernet/IPv4/UDP/MoldUDP64.

The input format is detected from the content (:mod:`tickgate.feed.source`): a capture is sequenced by a
MoldUDP64 :class:`~tickgate.wire.moldudp64.Receiver` (sequence order, duplicates dropped, gaps counted and
reported), a BinaryFILE is read as is. The output format comes from the file name (:func:`output_format`):
``.pcap``/``.pcapng`` write a capture, ``.NASDAQ_ITCH50``/``.itch``/``.bin`` a BinaryFILE, ``.gz`` after a
BinaryFILE extension compresses it.

Writing a capture packs the messages in order into MoldUDP64 packets (:func:`~tickgate.wire.moldudp64.pack_messages`:
at most ``max_messages`` a packet and ``max_payload`` UDP payload bytes; with ``batch_ns``, a packet also
only holds messages within ``batch_ns`` of its first one, as a real sender flushes on time), numbered from
``first_sequence`` in ``session``; frames are built by scapy (:func:`~tickgate.wire.net.udp_frame`) and
written by :func:`~tickgate.wire.pcap.write_frames`. Capture times:

* ``timing="itch"`` (default): midnight of ``date`` (UTC) plus the ITCH timestamp of the packet's last
  message, minus ``utc_offset_hours`` (ITCH times are exchange local time: -5 for EST, -4 for EDT); never
  earlier than the previous packet.
* ``timing="rate"``: ``rate`` packets a second, the first at the first message's time as above.

A BinaryFILE written to a capture and read back is byte-identical. Output goes to a temporary file that
replaces the target only when the conversion succeeded.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..wire import moldudp64, net
from .binaryfile import BinaryFileWriter
from .source import FeedSource

__all__ = [
    "PCAP", "PCAPNG", "BINARYFILE", "output_format", "CaptureOptions", "ConvertReport", "write_capture",
    "write_binaryfile", "convert",
]

PCAP = "pcap"
PCAPNG = "pcapng"
BINARYFILE = "binaryfile"
_BINARY_EXTS = (".nasdaq_itch50", ".itch", ".itch50", ".bin")
_NS = 10**9


def output_format(path) -> tuple[str, bool]:
    """(``"pcap"``, ``"pcapng"`` or ``"binaryfile"``, gzip) from the file name."""
    name = os.fspath(path).lower()
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    if base.endswith(".pcap") or base.endswith(".pcapng"):
        if gz:
            raise ValueError(f"{os.fspath(path)}: gzip-compressed captures cannot be written; drop the .gz")
        return (PCAPNG if base.endswith(".pcapng") else PCAP), False
    if base.endswith(_BINARY_EXTS):
        return BINARYFILE, gz
    raise ValueError(f"cannot tell the output format of {os.fspath(path)!r}: use .pcap, .pcapng, "
                     f".NASDAQ_ITCH50, .itch or .bin (a BinaryFILE may add .gz)")


@dataclass(frozen=True)
class CaptureOptions:
    session: str = "TICKGATE01"
    first_sequence: int = 1
    max_messages: int = moldudp64.MAX_MESSAGES
    max_payload: int = 1400                 # UDP payload bytes a packet
    batch_ns: int | None = None             # also split packets on ITCH time (None: fill by size only)
    src_mac: str = net.DEFAULT_SRC_MAC
    dst_mac: str | None = None              # None: the multicast MAC of dst_ip
    src_ip: str = net.DEFAULT_SRC_IP
    dst_ip: str = net.DEFAULT_GROUP
    sport: int = net.DEFAULT_PORT
    dport: int = net.DEFAULT_PORT
    vlan: int | None = None
    timing: str = "itch"                    # "itch" or "rate"
    rate: float = 100_000.0                 # packets a second, for timing="rate"
    date: str = "1970-01-01"                # the trading day, for capture times
    utc_offset_hours: float = 0.0           # exchange local time minus UTC

    def __post_init__(self):
        if self.timing not in ("itch", "rate"):
            raise ValueError(f"timing must be 'itch' or 'rate', not {self.timing!r}")
        if not self.rate > 0:
            raise ValueError(f"rate must be positive, not {self.rate}")
        if self.batch_ns is not None and self.batch_ns < 0:
            raise ValueError(f"batch_ns must be >= 0, not {self.batch_ns}")
        try:
            _dt.date.fromisoformat(self.date)
        except (TypeError, ValueError):
            raise ValueError(f"date must be YYYY-MM-DD, not {self.date!r}") from None
        # Check the addressing and packing options now, not after the first packet.
        net.udp_frame(b"", dst_ip=self.dst_ip, dport=self.dport, src_ip=self.src_ip, sport=self.sport,
                      src_mac=self.src_mac, dst_mac=self.dst_mac, vlan=self.vlan)
        moldudp64.pack_messages([], self.session, self.first_sequence, max_messages=self.max_messages,
                                max_payload=self.max_payload)

    @property
    def midnight_ns(self) -> int:
        d = _dt.date.fromisoformat(self.date)
        epoch = _dt.datetime(d.year, d.month, d.day, tzinfo=_dt.timezone.utc).timestamp()
        return int(epoch) * _NS - round(self.utc_offset_hours * 3600 * _NS)


@dataclass
class ConvertReport:
    source: str
    target: str
    input_format: str
    output_format: str
    messages: int = 0
    packets: int = 0                 # MoldUDP64 packets read (capture input) or written (capture output)
    first_sequence: int | None = None   # written sequence range (capture output)
    last_sequence: int | None = None
    gaps: int = 0                    # capture input: sequence gaps, messages lost, duplicates dropped
    missing_messages: int = 0
    duplicate_messages: int = 0
    unsequenced_packets: int = 0     # capture input: packets with sequence 0, kept in capture order
    skipped: int = 0                 # malformed input skipped (lenient)
    gap_list: list[tuple[str, int, int]] = field(default_factory=list)   # (session, first, count), first 100

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["gap_list"] = [list(g) for g in self.gap_list]
        return d


def _timestamp(raw: bytes) -> int:
    return int.from_bytes(raw[5:11], "big") if len(raw) >= 11 else 0


def _batches(messages: Iterator[bytes], batch_ns: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    start = 0
    for m in messages:
        ts = _timestamp(m)
        if batch and ts - start > batch_ns:
            yield batch
            batch = []
        if not batch:
            start = ts
        batch.append(m)
    if batch:
        yield batch


def _packets(messages: Iterable[bytes], opt: CaptureOptions) -> Iterator[moldudp64.Packet]:
    kw = dict(max_messages=opt.max_messages, max_payload=opt.max_payload)
    if opt.batch_ns is None:
        yield from moldudp64.pack_messages(messages, opt.session, opt.first_sequence, **kw)
        return
    seq = opt.first_sequence
    for batch in _batches(iter(messages), opt.batch_ns):
        yield from moldudp64.pack_messages(batch, opt.session, seq, **kw)
        seq += len(batch)


def write_capture(messages: Iterable[bytes], target, options: CaptureOptions | None = None, *,
                  pcapng: bool | None = None, report: ConvertReport | None = None) -> ConvertReport:
    """Pack raw ITCH messages into MoldUDP64 over Ethernet/IPv4/UDP and write a capture. ``pcapng`` defaults
    to the file name's extension."""
    from ..wire.pcap import write_frames

    opt = options or CaptureOptions()
    target = os.fspath(target)
    if pcapng is None:
        pcapng = output_format(target)[0] == PCAPNG
    rep = report or ConvertReport(source="", target=target, input_format="", output_format=PCAPNG if pcapng else PCAP)
    midnight = opt.midnight_ns
    step = _NS / opt.rate

    def frames():
        last = 0
        first_time = None
        for i, packet in enumerate(_packets(messages, opt)):
            if not packet.messages:
                continue
            if first_time is None:
                first_time = midnight + _timestamp(packet.messages[0])
                rep.first_sequence = packet.sequence
            if opt.timing == "itch":
                t = max(last, midnight + _timestamp(packet.messages[-1]))
            else:
                t = first_time + round(i * step)
            if t < 0:
                raise ValueError(f"capture time before 1970 (date {opt.date}, UTC offset {opt.utc_offset_hours} h)")
            last = t
            rep.packets += 1
            rep.messages += len(packet.messages)
            rep.last_sequence = packet.next_sequence - 1
            yield t, net.udp_frame(packet.encode(), dst_ip=opt.dst_ip, dport=opt.dport, src_ip=opt.src_ip,
                                   sport=opt.sport, src_mac=opt.src_mac, dst_mac=opt.dst_mac, vlan=opt.vlan,
                                   ip_id=i & 0xFFFF)

    _atomic(target, lambda tmp: write_frames(tmp, frames(), pcapng=pcapng))
    return rep


def write_binaryfile(messages: Iterable[bytes], target) -> int:
    """Write raw messages as a BinaryFILE (``.gz`` compresses); returns how many."""
    target = os.fspath(target)
    count = 0

    def write(tmp):
        nonlocal count
        # The temporary name hides the .gz suffix from the writer: open the gzip stream here.
        import gzip

        f = gzip.open(tmp, "wb") if target.lower().endswith(".gz") else open(tmp, "wb")
        with f, BinaryFileWriter(f) as w:
            for m in messages:
                w.write(m)
        count = w.messages

    _atomic(target, write)
    return count


def _atomic(target: str, write) -> None:
    """Run ``write(tmp)`` and move the result onto ``target``; leave nothing behind on failure."""
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output directory {directory} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.getpid()}.partial")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert(source, target, options: CaptureOptions | None = None, *, lenient: bool = False) -> ConvertReport:
    """Convert ``source`` (any supported feed file) to ``target`` (format from its name)."""
    source, target = os.fspath(source), os.fspath(target)
    out_fmt, _gz = output_format(target)
    if os.path.exists(target) and os.path.samefile(source, target):
        raise ValueError(f"{target}: output would overwrite the input")
    src = FeedSource(source, lenient=lenient)
    in_fmt = src.format
    if in_fmt != BINARYFILE:
        from ..wire.pcap import read_header

        in_fmt = PCAP if read_header(source) is not None else PCAPNG
    rep = ConvertReport(source=source, target=target, input_format=in_fmt, output_format=out_fmt)
    if out_fmt == BINARYFILE:
        rep.messages = write_binaryfile(src, target)
    else:
        write_capture(src, target, options, pcapng=out_fmt == PCAPNG, report=rep)
    st = src.stats
    if in_fmt != BINARYFILE:
        rep.packets = st.packets if out_fmt == BINARYFILE else rep.packets
        rep.gaps, rep.missing_messages, rep.duplicate_messages = st.gaps, st.missing, st.duplicates
        rep.unsequenced_packets = st.unsequenced
        if src.receiver is not None:
            rep.gap_list = [tuple(g) for g in src.receiver.gaps[:100]]
    rep.skipped = st.skipped
    return rep
