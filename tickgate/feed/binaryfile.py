"""ITCH BinaryFILE: each message preceded by its length as a big-endian u16. Plain or gzip (.gz).

Reading streams in constant memory (fixed-size chunks), so multi-GB day files are fine. Strict mode
raises :class:`~tickgate.wire.itch.ItchFormatError` naming the byte offset and the 1-based message
number; lenient mode counts the problem in :class:`ReadStats` and goes on where it can.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from ..wire import itch
from ..wire.itch import ItchFormatError

__all__ = ["ReadStats", "BinaryFileReader", "BinaryFileWriter", "read_messages", "write_messages", "open_binary"]

_CHUNK = 1 << 20


def open_binary(path) -> BinaryIO:
    """Open a file for reading, transparently un-gzipping it (detected by its magic bytes)."""
    f = open(path, "rb")
    if f.peek(2)[:2] == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")  # owns its file, so closing it closes everything
    return f


@dataclass
class ReadStats:
    messages: int = 0            # messages delivered
    bytes: int = 0               # bytes consumed
    skipped: int = 0             # messages skipped in lenient mode
    truncated_tail: int = 0      # bytes of an incomplete last record (lenient mode)
    problems: list[str] = field(default_factory=list)  # the first few problems, for reports

    def note(self, err: ItchFormatError):
        self.skipped += 1
        if len(self.problems) < 20:
            self.problems.append(str(err))


class BinaryFileReader:
    """Iterate the messages of a BinaryFILE.

    ``decode=False`` yields each message's raw bytes (fastest); ``decode=True`` yields message objects.
    Iterating yields messages only; ``stats`` counts what was read and skipped.
    """

    def __init__(self, source, *, decode: bool = False, lenient: bool = False, check_types: bool = True):
        if isinstance(source, (str, os.PathLike)):
            self._file = open_binary(source)
            self._owns = True
        elif hasattr(source, "read"):
            self._file = source
            self._owns = False
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self._file = io.BytesIO(source)
            self._owns = True
        else:
            raise TypeError(f"source must be a path, a binary file or bytes, not {type(source).__name__}")
        self.decode = decode
        self.lenient = lenient
        self.check_types = check_types or decode
        self.stats = ReadStats()

    def close(self):
        if self._owns:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self) -> Iterator:
        buf = b""
        pos = 0           # position in buf
        base = 0          # stream offset of buf[0]
        number = 0        # 1-based message number of the record being read
        stats = self.stats
        lengths = {ord(t.code): t.length for t in itch.MESSAGE_TYPES}
        read = self._file.read
        while True:
            if len(buf) - pos < 2 + 64:
                more = read(_CHUNK)
                buf = buf[pos:] + more
                base += pos
                pos = 0
                if not more and len(buf) == 0:
                    break
                if not more and len(buf) < 2:
                    self._truncated(number + 1, base, len(buf), "length prefix")
                    break
            n = (buf[pos] << 8) | buf[pos + 1]
            number += 1
            start = pos + 2
            end = start + n
            if end > len(buf):
                buf = buf[pos:]
                base += pos
                pos, start, end = 0, 2, 2 + n
                while len(buf) < end:
                    more = read(max(_CHUNK, end - len(buf)))
                    if not more:
                        break
                    buf += more
                if end > len(buf):
                    self._truncated(number, base, len(buf), f"{n}-byte message")
                    break
            if self.check_types:
                err = None
                if n == 0:
                    err = "zero-length message"
                else:
                    want = lengths.get(buf[start])
                    if want is None:
                        err = f"unknown message type {buf[start:start + 1]!r}"
                    elif want != n:
                        err = f"'{chr(buf[start])}' message is {n} bytes, expected {want}"
                if err is not None:
                    e = ItchFormatError(err, offset=base + pos, message_number=number)
                    if not self.lenient:
                        raise e
                    stats.note(e)
                    stats.bytes += n + 2
                    pos = end
                    continue
            msg = buf[start:end]
            stats.messages += 1
            stats.bytes += n + 2
            pos = end
            yield itch.decode(msg) if self.decode else msg
        self.close()

    def _truncated(self, number: int, offset: int, have: int, what: str):
        e = ItchFormatError(f"file ends inside a record: {have} bytes left, {what} expected",
                            offset=offset, message_number=number)
        if not self.lenient:
            raise e
        self.stats.truncated_tail = have
        self.stats.note(e)


def read_messages(source, *, decode: bool = False, lenient: bool = False) -> Iterator:
    """Shorthand for iterating a :class:`BinaryFileReader`."""
    return iter(BinaryFileReader(source, decode=decode, lenient=lenient))


class BinaryFileWriter:
    """Write messages (bytes or message objects) with u16 length framing; gzip if the path ends in .gz."""

    def __init__(self, target, *, compresslevel: int = 6):
        if isinstance(target, (str, os.PathLike)):
            path = os.fspath(target)
            self._file = gzip.open(path, "wb", compresslevel=compresslevel) if path.endswith(".gz") \
                else open(path, "wb")
            self._owns = True
        elif hasattr(target, "write"):
            self._file, self._owns = target, False
        else:
            raise TypeError(f"target must be a path or a binary file, not {type(target).__name__}")
        self.messages = 0

    def write(self, msg) -> None:
        raw = msg if isinstance(msg, (bytes, bytearray, memoryview)) else itch.encode(msg)
        if not 0 < len(raw) <= 0xFFFF:
            raise ValueError(f"message of {len(raw)} bytes cannot be framed in a BinaryFILE")
        self._file.write(len(raw).to_bytes(2, "big"))
        self._file.write(raw)
        self.messages += 1

    def write_all(self, msgs) -> int:
        for m in msgs:
            self.write(m)
        return self.messages

    def close(self):
        if self._owns:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_messages(target, msgs) -> int:
    """Write all messages to ``target``; returns how many."""
    with BinaryFileWriter(target) as w:
        return w.write_all(msgs)
