"""cocotb tests of :class:`tickgate.fpga.itch_split.ItchSplitter` (top: ``AXIStreamTop`` with ``s_axis_*`` in,
the ItchMessage stream ``o_stream__*`` out, taken by :class:`tickgate.sim.streams.StreamSink`).

Every test runs with and without idle cycles on the source and with and without backpressure on the sink,
and compares the output message by message with :func:`split_reference` (and the counters with its counts).
Run by ``tests/test_itch_split.py``.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import cocotb
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSource

from tickgate.fpga.book_records import MAX_ITCH_LEN, ItchMessage, classify
from tickgate.fpga.itch_split import LATENCY, SPLIT_COUNTERS
from tickgate.fpga.moldudp64_rx import MIN_MESSAGE
from tickgate.sim.streams import StreamSink, unpack_fields
from tickgate.sim.tb import MODES, ClockedTB
from tickgate.wire import itch

__all__ = ["split_reference", "runt_flags", "message_blocks", "itch_files"]

BEAT = 8


# --- reference model and stimulus ---------------------------------------------------------------------

def split_reference(blocks: list[bytes]):
    """Split message-block streams (one per packet) as the splitter does.

    Returns ``(messages, ends, counts)``: each message's bytes, ``(packet index, offset of its last byte)``
    per message, and ``{"zero_length", "oversize", "truncated"}``.
    """
    messages, ends = [], []
    counts = {"zero_length": 0, "oversize": 0, "truncated": 0}
    for index, pkt in enumerate(blocks):
        pos = 0
        while pos < len(pkt):
            if pos + 2 > len(pkt):
                counts["truncated"] += 1
                break
            (length,) = struct.unpack_from(">H", pkt, pos)
            pos += 2
            if length == 0:
                counts["zero_length"] += 1
                continue
            if length > MAX_ITCH_LEN:
                counts["oversize"] += 1
            if pos + length > len(pkt):
                counts["truncated"] += 1
                break
            if length <= MAX_ITCH_LEN:
                messages.append(bytes(pkt[pos:pos + length]))
                ends.append((index, pos + length - 1))
            pos += length
    return messages, ends, counts


def runt_flags(blocks: bytes, lane: int = 0) -> list[int]:
    """The ``runt`` flag of each byte's beat for one packet's message blocks starting at ``lane`` of their
    first beat: 1 from the beat completing the first length under MIN_MESSAGE (zero included) to the end,
    as the MoldUDP64 receiver's block walker sets it."""
    pos, flag_from = 0, len(blocks)
    while pos + 2 <= len(blocks):
        (length,) = struct.unpack_from(">H", blocks, pos)
        if length < MIN_MESSAGE:
            beat = (lane + pos + 1) // BEAT              # the beat holding the length's second byte
            flag_from = beat * BEAT - lane
            break
        pos += 2 + length
    return [int(k >= flag_from) for k in range(len(blocks))]


def message_blocks(messages, max_payload: int = 1400) -> list[bytes]:
    """MoldUDP64 packets' message-block bytes (after the 20-byte header) carrying ``messages`` in order."""
    try:
        from tickgate.wire import moldudp64
    except ImportError:
        moldudp64 = None
    if moldudp64 is not None and hasattr(moldudp64, "pack_messages"):
        header = moldudp64.HEADER.size
        return [p.encode()[header:] for p in moldudp64.pack_messages(messages, "TICKGATE", 1,
                                                                      max_payload=max_payload)]
    out, cur = [], b""
    for msg in messages:
        block = struct.pack(">H", len(msg)) + bytes(msg)
        if cur and 20 + len(cur) + len(block) > max_payload:
            out.append(cur)
            cur = b""
        cur += block
    return out + ([cur] if cur else [])


def itch_files() -> list[Path]:
    base = os.environ.get("TICKGATE_DATA")
    if not base:
        base = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    base = Path(base) / "itch"
    return sorted(base.rglob("*.NASDAQ_ITCH50")) if base.is_dir() else []


def random_message(rng: random.Random, length: int | None = None) -> bytes:
    if length is None:
        code = rng.choice(list(itch.LAYOUTS))
        length = itch.LAYOUTS[code].size
        return code.encode() + rng.randbytes(length - 1)
    return rng.randbytes(length)


# --- testbench ------------------------------------------------------------------------------------------

class SplitTB(ClockedTB):
    """AXI-Stream source on ``s_axis``, ItchMessage sink on ``o_stream``, input-beat log, counters."""

    COUNTERS = SPLIT_COUNTERS

    def __init__(self, dut):
        super().__init__(dut)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), self.clk, self.rst)
        self.source.log.setLevel("WARNING")
        self.sink = StreamSink(dut, "o_stream", self.clk)
        self.beats: list[int] = []          # accept cycle of every input beat
        self.first_offer: int | None = None  # the first cycle an input beat was valid
        self._in = (dut.s_axis_tvalid, dut.s_axis_tready)

    def _sample(self):
        valid, ready = self._in
        if valid.value == 1 and self.first_offer is None:
            self.first_offer = self.cycle
        if valid.value == 1 and ready.value == 1:
            self.beats.append(self.cycle)

    def clear_log(self):
        self.beats.clear()
        self.first_offer = None
        self.sink.clear()

    def counters(self) -> dict:
        return {name: getattr(self.dut, name).value.to_unsigned() for name in self.COUNTERS}

    async def send(self, pkt: bytes, lo: int = 0, flags: list[int] | None = None):
        """One packet starting at lane ``lo``, its beats flagged ``runt`` by :func:`runt_flags` (or ``flags``)."""
        flags = runt_flags(pkt, lo) if flags is None else flags
        await self.source.send(AxiStreamFrame(bytes(lo) + pkt, tkeep=[0] * lo + [1] * len(pkt),
                                              tuser=[0] * lo + flags))

    async def run(self, blocks: list[bytes], *, check_latency: bool = True, timeout: int = 200_000,
                  starts: list[int] | None = None):
        """Send ``blocks`` (one packet each), wait for every expected message, check everything. ``starts``:
        the lane of each packet's first byte (its first beat's ``keep`` clear below it; default 0)."""
        expected, ends, counts = split_reference(blocks)
        counts["unflagged_runt"] = 0
        starts = starts or [0] * len(blocks)
        for pkt, lo in zip(blocks, starts):
            await self.send(pkt, lo)
        nbeats = sum((lo + len(p) + BEAT - 1) // BEAT for p, lo in zip(blocks, starts))
        await self.wait_for(lambda: len(self.beats) == nbeats and len(self.sink.items) >= len(expected), timeout)
        await self.cycles(10)
        assert len(self.beats) == nbeats, f"{len(self.beats)} of {nbeats} beats taken: hung"
        got = [unpack_fields(ItchMessage, value) for _, _, value in self.sink.items]
        assert len(got) == len(expected), f"{len(got)} messages, expected {len(expected)}"
        for n, (g, e) in enumerate(zip(got, expected)):
            want = e + bytes(MAX_ITCH_LEN - len(e))
            assert (g["bytes"], g["length"], g["seq"], (g["type_ok"], g["type_known"])) == \
                (want, len(e), n + 1, classify(e)), \
                f"message {n + 1}: got {g}, expected {e.hex()} ({len(e)} bytes)"
        assert self.counters() == counts, f"counters {self.counters()}, expected {counts}"
        if check_latency:
            first_beat = [0]
            for pkt, lo in zip(blocks, starts):
                first_beat.append(first_beat[-1] + (lo + len(pkt) + BEAT - 1) // BEAT)
            for n, ((first_valid, _, _), (pkt, offset)) in enumerate(zip(self.sink.items, ends)):
                accepted = self.beats[first_beat[pkt] + (starts[pkt] + offset) // BEAT]
                assert first_valid - accepted == LATENCY, \
                    f"message {n + 1}: valid at cycle {first_valid}, last byte's beat taken at {accepted}"
        return expected


@cocotb.test(skip=not itch_files())
@cocotb.parametrize(**MODES)
async def test_itch_files(dut, idle, backpressure):
    """Every recorded ITCH file, packed into MoldUDP64 message blocks, split exactly with latency 1.
    Skipped when the recorded feeds are absent."""
    files = itch_files()
    tb = SplitTB(dut)
    tb.configure(idle, backpressure)
    from tickgate.feed.binaryfile import read_messages
    for path in files:
        await tb.reset()
        msgs = list(read_messages(path))
        got = await tb.run(message_blocks(msgs))
        assert got == msgs
        dut._log.info("%s: %d messages", path.name, len(msgs))


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_back_to_back_rate(dut, idle, backpressure):
    """Shortest messages (12 and 13 bytes: every lane alignment) back to back: latency 1 and, without
    idle cycles or backpressure, one beat per cycle with no gap across a whole packet."""
    tb = await SplitTB.start(dut, idle, backpressure)
    rng = random.Random(5)
    blocks = []
    for size in (12, 13, 12, 13):
        msgs = [random_message(rng, size) for _ in range(1400 // (size + 2))]
        blocks += message_blocks(msgs)
    await tb.run(blocks)
    if not idle and not backpressure:
        # AxiStreamSource sends frames back to back: every beat of the run on consecutive cycles.
        assert tb.beats == list(range(tb.beats[0], tb.beats[0] + len(tb.beats))), "input was stalled"


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_random_alignment(dut, idle, backpressure):
    """Random well-formed ITCH-sized messages in random-sized packets: exact output, latency 1."""
    tb = await SplitTB.start(dut, idle, backpressure, seed=7)
    rng = random.Random(11)
    blocks = []
    for _ in range(60):
        msgs = [random_message(rng) for _ in range(rng.randint(1, 30))]
        blocks += message_blocks(msgs, max_payload=rng.randint(20 + 52, 1400))
    await tb.run(blocks)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_short_messages(dut, idle, backpressure):
    """Messages of 1..50 bytes (several may end in one beat): exact output, no loss, no hang."""
    tb = await SplitTB.start(dut, idle, backpressure, seed=3)
    rng = random.Random(13)
    blocks = []
    for _ in range(60):
        msgs = [random_message(rng, rng.choice([1, 2, 3, 5, 6, 7, rng.randint(1, 50)]))
                for _ in range(rng.randint(1, 40))]
        blocks += message_blocks(msgs)
    await tb.run(blocks, check_latency=False)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_unaligned_start(dut, idle, backpressure):
    """Packets whose first byte is at any lane 0..7 (first beat's keep clear below it, as the MoldUDP64
    receiver delivers its message area): exact output, latency 1, full rate; malformed ones too."""
    tb = await SplitTB.start(dut, idle, backpressure, seed=5)
    rng = random.Random(19)
    blocks, starts = [], []
    for k in range(64):
        msgs = [random_message(rng) for _ in range(rng.randint(1, 6))]
        blocks += message_blocks(msgs)[:1]
        starts.append(k % 8)
    await tb.run(blocks, starts=starts)
    if not idle and not backpressure:
        assert tb.beats == list(range(tb.beats[0], tb.beats[0] + len(tb.beats))), "input was stalled"
    await tb.reset()
    cases, starts = [], []
    for _ in range(80):
        cases.append(_mixed_packet(rng, 8, 120))
        starts.append(rng.randrange(8))
    await tb.run(cases, check_latency=False, starts=starts)


def _block(length: int, body: bytes | None = None, rng=None) -> bytes:
    if body is None:
        body = (rng or random.Random(length)).randbytes(length)
    return struct.pack(">H", length) + body


def _mixed_packet(rng: random.Random, max_blocks: int, max_oversize: int) -> bytes:
    """1..``max_blocks`` message blocks, each zero-length, over-long (51..``max_oversize`` bytes) or
    well-formed (1..50), and 4 times in 10 cut short at a random byte."""
    parts = []
    for _ in range(rng.randint(1, max_blocks)):
        r = rng.random()
        parts.append(_block(0) if r < 0.15 else _block(rng.randint(51, max_oversize), rng=rng) if r < 0.25
                     else _block(rng.randint(1, 50), rng=rng))
    pkt = b"".join(parts)
    if rng.random() < 0.4:
        pkt = pkt[:rng.randint(1, len(pkt))]
    return pkt


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_malformed(dut, idle, backpressure):
    """Zero lengths, over-long messages and packets ending inside a prefix or a message: counted, dropped,
    and the next packet is split exactly."""
    tb = await SplitTB.start(dut, idle, backpressure, seed=9)
    rng = random.Random(17)
    good = lambda: _block(rng.choice([12, 19, 36, 50]), rng=rng)
    cases = [
        _block(0) + good() + _block(0) + _block(0) + _block(0) + good() + _block(0),
        _block(0) * 9,                                   # nothing but zero lengths, across beats
        good() + _block(51) + good() + _block(1000) + good(),
        good() + _block(60000, rng.randbytes(300)),      # over-long and cut by the packet end
        good() + b"\x00",                                # ends inside a length prefix (1 byte)
        good() + b"\x00\x24",                            # ends right after a prefix
        good() + _block(36)[:20],                        # ends inside the message
        b"\x00",                                         # a one-byte packet
        _block(50)[:51],                                 # one byte short
        good() + good(),                                 # and the next packet is fine
    ]
    # Random mixtures.
    for _ in range(80):
        cases.append(_mixed_packet(rng, 12, 300))
    await tb.run(cases, check_latency=False)
    counts = tb.counters()
    assert counts.pop("unflagged_runt") == 0 and all(counts.values()), counts


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_runt_flag(dut, idle, backpressure):
    """A flagged beat takes one cycle per length prefix parsed in it, plus one; an unflagged beat that needs
    a second parse is counted in ``unflagged_runt``, the rest of its packet dropped, the next packet exact."""
    tb = await SplitTB.start(dut, idle, backpressure, seed=21)
    rng = random.Random(23)
    # Four zero lengths in one beat (lanes 0..7), then a 12-byte message: beat 0 is parsed four times.
    pkt = _block(0) * 4 + _block(12, rng=rng)
    await tb.run([pkt], check_latency=False)
    if not idle and not backpressure:
        # beat 0: four parses and its pop; beats 1 and 2 (flagged to the packet's end): one parse and a pop
        assert [tb.beats[0] - tb.first_offer] + [b - a for a, b in zip(tb.beats, tb.beats[1:])] == [4, 2, 2]
    await tb.reset()
    m11, m12, m20 = _block(11, rng=rng), _block(12, rng=rng), _block(20, rng=rng)
    cases = [
        # the first parse of beat 0 needs a second one (a 3-byte message ends in it): nothing of it is emitted
        (_block(3, rng=rng) + m12, []),
        # an 11-byte message ends at beat 1 lane 4 and a zero length at lanes 5..6 has a byte after it
        (m11 + _block(0) + m20, [m11[2:]]),
    ]
    good = m20 + m12
    for pkt, _ in cases:
        await tb.send(pkt, flags=[0] * len(pkt))
        await tb.send(good)
    want = []
    for _, msgs in cases:
        want += msgs + [good[2:22], good[24:]]
    await tb.wait_for(lambda: len(tb.sink.items) >= len(want), 20_000)
    await tb.cycles(20)
    got = [unpack_fields(ItchMessage, v) for _, _, v in tb.sink.items]
    assert [g["bytes"][:g["length"]] for g in got] == want
    assert tb.counters()["unflagged_runt"] == len(cases)
    assert tb.counters()["truncated"] == 0
