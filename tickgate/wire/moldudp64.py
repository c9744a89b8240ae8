"""MoldUDP64 (NASDAQ MoldUDP64 Protocol Specification 1.00): packets, packing, and an A/B receiver.

A downstream packet is a 20-byte :data:`HEADER` (session, sequence number of the first message, message
count) followed by ``count`` message blocks, each a big-endian u16 length then the message bytes.
``count == 0`` is a heartbeat and ``count == 0xFFFF`` marks the end of the session; both carry no blocks
and their sequence number is the next one the sender will use. A retransmission :data:`REQUEST` has the
same 20-byte shape (session, first sequence wanted, how many).

Sequence numbers count messages, not packets, and start at 1 in every session.

:class:`Receiver` is the reference model of the chip's sequencer: it merges any number of copies of one
feed (A/B lines), delivers each message exactly once and in order, and records every gap.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, fields
from typing import Iterable, Iterator, NamedTuple

from .layout import ALPHA, Layout

__all__ = [
    "HEADER", "MESSAGE_BLOCK", "REQUEST", "SESSION_LENGTH", "END_OF_SESSION_COUNT", "MAX_MESSAGES",
    "MoldFormatError", "Packet", "Request", "heartbeat", "end_of_session", "pack_messages",
    "Gap", "ReceiverStats", "Receiver",
]

HEADER = Layout("moldudp64_header", [("session", 10, ALPHA), ("sequence", 8), ("count", 2)])
MESSAGE_BLOCK = Layout("moldudp64_message_block", [("length", 2)])
REQUEST = Layout("moldudp64_request", [("session", 10, ALPHA), ("sequence", 8), ("count", 2)])

SESSION_LENGTH = HEADER["session"].size
END_OF_SESSION_COUNT = 0xFFFF
MAX_MESSAGES = 0xFFFE  # the largest count that is neither a heartbeat nor end of session
_MAX_SEQUENCE = (1 << 64) - 1
_MAX_MESSAGE_LENGTH = 0xFFFF


class MoldFormatError(ValueError):
    """Malformed MoldUDP64 bytes; ``offset`` is the byte offset in the packet where the problem is."""

    def __init__(self, problem: str, offset: int):
        self.problem = problem
        self.offset = offset
        super().__init__(f"{problem} (at byte offset {offset})")


def _session(session) -> str:
    """Validate a session name and pad it to 10 characters (ALPHA: left-justified, space-padded)."""
    if not isinstance(session, str):
        raise TypeError(f"session must be a str, not {type(session).__name__}")
    if len(session) > SESSION_LENGTH:
        raise ValueError(f"session {session!r} is longer than {SESSION_LENGTH} characters")
    try:
        session.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"session {session!r} is not 8-bit text") from None
    return session.ljust(SESSION_LENGTH)


def _sequence(sequence, what: str = "sequence") -> int:
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise TypeError(f"{what} must be an int, not {type(sequence).__name__}")
    if not 0 <= sequence <= _MAX_SEQUENCE:
        raise ValueError(f"{what} {sequence} does not fit 64 bits")
    return sequence


def _message(msg, index: int) -> bytes:
    if isinstance(msg, str) or not isinstance(msg, (bytes, bytearray, memoryview)):
        raise TypeError(f"message {index} must be bytes-like, not {type(msg).__name__}")
    msg = bytes(msg)
    if len(msg) > _MAX_MESSAGE_LENGTH:
        raise ValueError(f"message {index} is {len(msg)} bytes; a message block holds at most 65535")
    return msg


@dataclass
class Packet:
    """One downstream packet. ``session`` is padded to 10 characters; ``sequence`` is the sequence number
    of the first message (for a heartbeat or end of session: the next sequence number)."""

    session: str
    sequence: int
    messages: list[bytes] = field(default_factory=list)
    end_of_session: bool = False

    def __post_init__(self):
        self.session = _session(self.session)
        self.sequence = _sequence(self.sequence)
        if isinstance(self.messages, (bytes, bytearray, str)):
            raise TypeError("messages must be a list of bytes objects, not a single bytes/str")
        self.messages = [_message(m, i) for i, m in enumerate(self.messages)]
        if len(self.messages) > MAX_MESSAGES:
            raise ValueError(f"{len(self.messages)} messages in one packet; at most {MAX_MESSAGES}")
        if self.end_of_session and self.messages:
            raise ValueError("an end-of-session packet carries no messages")
        if self.sequence + len(self.messages) > _MAX_SEQUENCE + 1:
            raise ValueError("sequence numbers of the messages run past 2**64 - 1")

    @property
    def count(self) -> int:
        """The header's message count field."""
        return END_OF_SESSION_COUNT if self.end_of_session else len(self.messages)

    @property
    def is_heartbeat(self) -> bool:
        return not self.messages and not self.end_of_session

    @property
    def is_end_of_session(self) -> bool:
        return self.end_of_session

    @property
    def next_sequence(self) -> int:
        """Sequence number of the message after this packet's last one."""
        return self.sequence + len(self.messages)

    @property
    def size(self) -> int:
        """Encoded length in bytes."""
        return HEADER.size + sum(MESSAGE_BLOCK.size + len(m) for m in self.messages)

    def encode(self) -> bytes:
        parts = [HEADER.pack((self.session, self.sequence, self.count))]
        for m in self.messages:
            parts.append(MESSAGE_BLOCK.pack((len(m),)))
            parts.append(m)
        return b"".join(parts)

    @classmethod
    def decode(cls, buf) -> "Packet":
        """Decode one packet. Raises :class:`MoldFormatError` on a truncated header, a message block that
        runs past the end, fewer blocks than the count says, or bytes after the last block."""
        packet, errors = cls._decode(buf, strict=True)
        assert packet is not None and not errors
        return packet

    @classmethod
    def decode_lenient(cls, buf) -> tuple["Packet | None", list[MoldFormatError]]:
        """Decode what can be decoded: the packet holds every whole message block up to the first problem
        (trailing bytes are ignored), and ``errors`` lists the problems. The packet is None only when the
        header itself is truncated."""
        return cls._decode(buf, strict=False)

    @classmethod
    def _decode(cls, buf, *, strict: bool) -> tuple["Packet | None", list[MoldFormatError]]:
        if isinstance(buf, str) or not isinstance(buf, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes-like, not {type(buf).__name__}")
        buf = bytes(buf)
        errors: list[MoldFormatError] = []

        def problem(text: str, offset: int) -> None:
            err = MoldFormatError(text, offset)
            if strict:
                raise err
            errors.append(err)

        if len(buf) < HEADER.size:
            problem(f"truncated header: {len(buf)} bytes, a MoldUDP64 header is {HEADER.size}", len(buf))
            return None, errors
        session, sequence, count = HEADER.unpack(buf)
        end = count == END_OF_SESSION_COUNT
        want = 0 if end else count
        messages: list[bytes] = []
        pos = HEADER.size
        while len(messages) < want:
            if pos + MESSAGE_BLOCK.size > len(buf):
                if pos == len(buf):
                    problem(f"count mismatch: header says {count} messages, packet holds {len(messages)}", pos)
                else:
                    problem(f"message block {len(messages) + 1}: truncated length field", pos)
                break
            (length,) = MESSAGE_BLOCK.unpack(buf, pos)
            start = pos + MESSAGE_BLOCK.size
            if start + length > len(buf):
                problem(f"message block {len(messages) + 1} ({length} bytes) runs past the end of the "
                        f"{len(buf)}-byte packet", pos)
                break
            messages.append(buf[start:start + length])
            pos = start + length
        else:
            if pos != len(buf):
                what = "end of session" if end else f"{count} messages"
                problem(f"{len(buf) - pos} trailing bytes after {what}", pos)
        if sequence + len(messages) > _MAX_SEQUENCE + 1:
            problem("sequence numbers of the messages run past 2**64 - 1", HEADER["sequence"].offset)
            messages = messages[:_MAX_SEQUENCE + 1 - sequence]
        return cls(session, sequence, messages, end_of_session=end), errors


@dataclass(frozen=True)
class Request:
    """A retransmission request: ``count`` messages of ``session`` from ``sequence`` on."""

    session: str
    sequence: int
    count: int

    def __post_init__(self):
        object.__setattr__(self, "session", _session(self.session))
        _sequence(self.sequence)
        if not isinstance(self.count, int) or not 0 <= self.count <= 0xFFFF:
            raise ValueError(f"request count must be an int in 0..65535, not {self.count!r}")

    def encode(self) -> bytes:
        return REQUEST.pack((self.session, self.sequence, self.count))

    @classmethod
    def decode(cls, buf) -> "Request":
        if isinstance(buf, str) or not isinstance(buf, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes-like, not {type(buf).__name__}")
        if len(buf) != REQUEST.size:
            raise MoldFormatError(f"request packet is {len(buf)} bytes, expected {REQUEST.size}",
                                  min(len(buf), REQUEST.size))
        return cls(*REQUEST.unpack(buf))


def heartbeat(session: str, next_sequence: int) -> Packet:
    """A heartbeat: no messages, ``next_sequence`` is the sequence number of the next message."""
    return Packet(session, next_sequence)


def end_of_session(session: str, next_sequence: int) -> Packet:
    """The end-of-session marker (count 0xFFFF)."""
    return Packet(session, next_sequence, end_of_session=True)


def pack_messages(messages: Iterable[bytes], session: str, first_sequence: int, *,
                  max_messages: int = MAX_MESSAGES, max_payload: int = 1400) -> Iterator[Packet]:
    """Pack messages, in order, into as few packets as fit: each packet holds at most ``max_messages``
    messages and encodes to at most ``max_payload`` bytes (the UDP payload). Lazy: holds one packet's
    messages at a time. Arguments are checked at the call; a message too large for ``max_payload`` raises
    ``ValueError`` when it is reached."""
    session = _session(session)
    _sequence(first_sequence, "first_sequence")
    if not isinstance(max_messages, int) or not 1 <= max_messages <= MAX_MESSAGES:
        raise ValueError(f"max_messages must be in 1..{MAX_MESSAGES}, not {max_messages!r}")
    if not isinstance(max_payload, int) or max_payload < HEADER.size + MESSAGE_BLOCK.size:
        raise ValueError(f"max_payload must be at least {HEADER.size + MESSAGE_BLOCK.size}, not {max_payload!r}")
    return _pack(iter(messages), session, first_sequence, max_messages, max_payload)


def _pack(messages: Iterator, session: str, sequence: int, max_messages: int, max_payload: int):
    batch: list[bytes] = []
    size = HEADER.size
    for index, msg in enumerate(messages):
        msg = _message(msg, index)
        block = MESSAGE_BLOCK.size + len(msg)
        if HEADER.size + block > max_payload:
            raise ValueError(f"message {index} ({len(msg)} bytes) does not fit a {max_payload}-byte packet")
        if batch and (size + block > max_payload or len(batch) == max_messages):
            yield Packet(session, sequence, batch)
            sequence += len(batch)
            batch, size = [], HEADER.size
        batch.append(msg)
        size += block
    if batch:
        yield Packet(session, sequence, batch)


class Gap(NamedTuple):
    """Messages ``first``..``first + count - 1`` of ``session`` were never delivered."""

    session: str
    first: int
    count: int


@dataclass
class ReceiverStats:
    packets: int = 0                # packets fed
    messages: int = 0               # messages delivered
    heartbeats: int = 0
    end_of_session: int = 0         # end-of-session packets seen (every copy)
    duplicate_packets: int = 0      # packets with messages, none of them new
    duplicate_messages: int = 0     # messages dropped as already delivered (whole or partial overlap)
    partial_packets: int = 0        # packets that overlapped what was delivered and added a new tail
    held_packets: int = 0           # packets that arrived ahead of a hole and waited
    gaps: int = 0                   # gap events (== len(Receiver.gaps))
    missing_messages: int = 0       # sum of the gap counts
    session_changes: int = 0        # switches from one session to a new one
    stale_session_packets: int = 0  # packets of a session that was already left behind
    discarded_messages: int = 0     # held messages thrown away at a session change

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Receiver:
    """Sequencer and A/B arbiter for one MoldUDP64 feed.

    Feed it every packet from every line, in arrival order; :meth:`feed` returns the ``(sequence,
    message)`` pairs that became deliverable, in sequence order, each exactly once.

    * Old and duplicate data is dropped and counted; a packet that overlaps what was delivered delivers
      only its new tail.
    * A packet that starts beyond the next expected sequence leaves a hole. The receiver first waits for
      another line to fill it, holding up to ``max_pending`` such packets. When one more would be held (or
      on :meth:`flush`, which callers run on a timer and at end of stream) it gives up on the lowest hole:
      the hole is appended to :attr:`gaps` as ``(session, first_missing, count)`` and delivery resumes from
      the new point. Consumers mark their book stale on a gap. ``max_pending=0`` declares gaps at once
      (no reordering tolerance); ``None`` never gives up before :meth:`flush`.
    * Heartbeats and end-of-session packets carry the next sequence number, so they expose losses at
      the tail of a burst just like data packets do.
    * Sessions: the first packet of a new session starts a new sequence space at ``start_sequence``
      (1 per the specification; ``None`` joins at whatever sequence the session's first packet carries,
      for a receiver that starts mid-day). Packets still held for the old session are discarded and their
      span recorded as a gap; later packets of any earlier session are dropped as stale. So everything
      one :meth:`feed` returns belongs to :attr:`session`.
    """

    def __init__(self, *, start_sequence: int | None = 1, max_pending: int | None = 64):
        if start_sequence is not None:
            _sequence(start_sequence, "start_sequence")
        if max_pending is not None and (not isinstance(max_pending, int) or max_pending < 0):
            raise ValueError(f"max_pending must be None or a non-negative int, not {max_pending!r}")
        self.start_sequence = start_sequence
        self.max_pending = max_pending
        self.session: str | None = None
        self.expected: int | None = None  # next sequence number to deliver in the current session
        self.ended = False                # end of session reached in order
        self.finished: dict[str, int] = {}  # earlier sessions -> the next sequence they expected
        self.gaps: list[Gap] = []
        self.stats = ReceiverStats()
        self._held: list[tuple[int, int, Packet]] = []  # heap of (sequence, arrival, packet)
        self._arrivals = 0

    @property
    def pending(self) -> int:
        """Packets held ahead of a hole."""
        return len(self._held)

    def feed(self, packet: Packet) -> list[tuple[int, bytes]]:
        if not isinstance(packet, Packet):
            raise TypeError(f"feed() takes a moldudp64.Packet, not {type(packet).__name__}")
        st = self.stats
        st.packets += 1
        if packet.is_heartbeat:
            st.heartbeats += 1
        elif packet.end_of_session:
            st.end_of_session += 1
        if packet.session != self.session:
            if packet.session in self.finished:
                st.stale_session_packets += 1
                return []
            self._switch(packet)
        out: list[tuple[int, bytes]] = []
        if packet.sequence > self.expected:
            self._arrivals += 1
            heapq.heappush(self._held, (packet.sequence, self._arrivals, packet))
            st.held_packets += 1
            if self.max_pending is not None:
                while len(self._held) > self.max_pending:
                    self._apply(heapq.heappop(self._held)[2], out)
                    self._drain(out)
        else:
            self._apply(packet, out)
            self._drain(out)
        return out

    def flush(self) -> list[tuple[int, bytes]]:
        """Give up on every hole: record them as gaps and deliver everything held."""
        out: list[tuple[int, bytes]] = []
        while self._held:
            self._apply(heapq.heappop(self._held)[2], out)
            self._drain(out)
        return out

    def _drain(self, out: list) -> None:
        while self._held and self._held[0][0] <= self.expected:
            self._apply(heapq.heappop(self._held)[2], out)

    def _gap(self, first: int, count: int) -> None:
        self.gaps.append(Gap(self.session, first, count))
        self.stats.gaps += 1
        self.stats.missing_messages += count

    def _apply(self, packet: Packet, out: list) -> None:
        st = self.stats
        start, msgs = packet.sequence, packet.messages
        if start > self.expected:
            self._gap(self.expected, start - self.expected)
            self.expected = start
        skip = self.expected - start
        if msgs:
            if skip >= len(msgs):
                st.duplicate_packets += 1
                st.duplicate_messages += len(msgs)
            else:
                if skip:
                    st.partial_packets += 1
                    st.duplicate_messages += skip
                out.extend(zip(range(start + skip, start + len(msgs)), msgs[skip:]))
                st.messages += len(msgs) - skip
                self.expected = start + len(msgs)
        if packet.end_of_session:
            self.ended = True

    def _switch(self, packet: Packet) -> None:
        if self.session is not None:
            if self._held:
                held = {s for seq, _, p in self._held for s in range(seq, p.next_sequence)}
                top = max(max(held, default=self.expected), max(seq for seq, _, _ in self._held) - 1)
                self.stats.discarded_messages += len(held)
                self._gap(self.expected, top + 1 - self.expected)
                self._held = []
            self.finished[self.session] = self.expected
            self.stats.session_changes += 1
        self.session = packet.session
        self.expected = self.start_sequence if self.start_sequence is not None else packet.sequence
        self.ended = False
