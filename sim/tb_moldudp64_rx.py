"""cocotb tests of :class:`tickgate.fpga.moldudp64_rx.MoldUDP64Receiver`, run by tests/test_moldudp64_rx.py.

:class:`MoldModel` is the reference: per packet, the counter it bumps, what it forwards and the status after
it. Every test runs with and without source idle cycles and sink backpressure.
"""

from __future__ import annotations

import random
import struct

import cocotb
from cocotbext.axi import AxiStreamFrame

from tickgate.fpga.moldudp64_rx import LATENCY, LATENCY_MAX, MIN_MESSAGE, MOLD_COUNTERS
from tickgate.sim.tb import MODES, StreamTB, back_to_back
from tickgate.sim.tb_itch_split import runt_flags

#: Lanes a packet's first byte may arrive in (UDPReceiver's output: untagged or two VLAN tags, one tag).
START_LANES = (2, 6)
#: Cycles from a packet's first input beat to its first output beat (the deciding beat: beat 2 from lane 2,
#: lanes 6..7; beat 3 from lane 6, lanes 2..7), no stalls, by start lane.
FIRST_BEAT_LATENCY = {2: 3, 6: 4}
MASK64 = (1 << 64) - 1


def blocks(messages) -> bytes:
    return b"".join(struct.pack(">H", len(msg)) + msg for msg in messages)


def packet(session: bytes, seq: int, messages=(), count=None) -> bytes:
    count = len(messages) if count is None else count
    return struct.pack(">10sQH", session, seq, count) + blocks(messages)


def heartbeat(session, seq):
    return packet(session, seq, count=0)


def end_session(session, seq):
    return packet(session, seq, count=0xFFFF)


def blocks_ok(area: bytes, count: int) -> bool:
    pos = n = 0
    while pos < len(area):
        if pos + 2 > len(area):
            return False
        length, = struct.unpack_from(">H", area, pos)
        if length < MIN_MESSAGE:
            return False
        pos += 2 + length
        n += 1
    return pos == len(area) and n == count


def skip_blocks(pkt: bytes, skip: int) -> int | None:
    """Packet offset of message block ``skip`` as the block walker finds it, or None when it cannot."""
    pos = 20
    for _ in range(skip):
        if pos + 2 > len(pkt):
            return None
        length, = struct.unpack_from(">H", pkt, pos)
        if length < MIN_MESSAGE:
            return None
        pos += 2 + length
    return pos


class MoldModel:
    """What MoldUDP64Receiver's docstring specifies, packet by packet."""

    def __init__(self):
        self.session = None
        self.expected = 0
        self.gap = False
        self.first_missing = 0
        self.counts = {name: 0 for name in MOLD_COUNTERS}
        self.out = []                       # (first sequence, message-block bytes)

    def _gap(self, seq):
        self.counts["gap"] += 1
        # a counter wraps at its width (the receiver's default, 32 bits, as the tests build it)
        self.counts["missed"] = (self.counts["missed"] + seq - self.expected) % (1 << 32)
        if not self.gap:
            self.first_missing = self.expected
        self.gap = True

    def feed(self, pkt: bytes):
        if len(pkt) < 20:
            self.counts["truncated"] += 1
            return
        session, seq, count = struct.unpack_from(">10sQH", pkt)
        control = count in (0, 0xFFFF)
        if seq == 0:                        # unsequenced: forwarded as is, sequencing untouched
            self.counts["unsequenced"] += 1
            if not control:
                self._forward(0, pkt, 20, count)
            return
        if count == 0:
            self.counts["heartbeat"] += 1
        elif count == 0xFFFF:
            self.counts["end_session"] += 1
        if session != self.session:
            self.counts["session"] += 1
            self.session = session
            self.expected = seq if control else seq + count
            if not control:
                self.counts["accepted"] += 1
                self._forward(seq, pkt, 20, count)
        elif control:
            if seq > self.expected:
                self._gap(seq)
                self.expected = seq
        elif seq >= self.expected:
            if seq > self.expected:
                self._gap(seq)
            self.counts["accepted"] += 1
            self._forward(seq, pkt, 20, count)
            self.expected = seq + count
        elif seq + count <= self.expected:
            self.counts["duplicate"] += 1
        else:
            self.counts["overlap"] += 1
            skip = self.expected - seq
            self._forward(self.expected, pkt, skip_blocks(pkt, skip), count)
            self.expected = seq + count

    def _forward(self, seq, pkt, start, count):
        if start is not None and start < len(pkt):
            self.out.append((seq, pkt[start:]))
        if not blocks_ok(pkt[20:], count):
            self.counts["count_error"] += 1

    def clear_gap(self):
        self.gap = False


def random_messages(rng, n, lo=MIN_MESSAGE, hi=60):
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(lo, hi + 1))) for _ in range(n)]


def session_packets(rng, session: bytes, first: int, n: int, max_count=6):
    """n consecutive data packets of one session, starting at sequence ``first``."""
    out, seq = [], first
    for _ in range(n):
        msgs = random_messages(rng, rng.randrange(1, max_count + 1))
        out.append(packet(session, seq, msgs))
        seq += len(msgs)
    return out, seq


class MoldRxTB(StreamTB):
    """MoldUDP64Receiver's gap_clear input, counters and status; packets sent at a start lane."""

    INPUTS = dict(gap_clear=0)

    def __init__(self, dut):
        super().__init__(dut)
        self.sent_lanes: list[int] = []     # start lane of every packet sent (a reset keeps them)

    def counters(self) -> dict:
        return {name: int(getattr(self.dut, f"counters__{name}").value) for name in MOLD_COUNTERS}

    def status(self) -> dict:
        dut = self.dut
        return {
            "has_session": int(dut.status__has_session.value),
            "session": int(dut.status__session.value).to_bytes(10, "little"),
            "expected": int(dut.status__expected.value),
            "gap": bool(dut.status__gap.value),
            "first_missing": int(dut.status__first_missing.value),
        }

    async def send(self, pkt: bytes, lane: int | None = None):
        """Send one packet starting at ``lane`` of its first beat (the lanes below it not kept); by default the
        START_LANES in turn."""
        if lane is None:
            lane = START_LANES[len(self.sent_lanes) % len(START_LANES)]
        self.sent_lanes.append(lane)
        await self.source.send(AxiStreamFrame(bytes(lane) + pkt, tkeep=[0] * lane + [1] * len(pkt)))


async def check(tb, model: MoldModel, pkts, lanes=None):
    """Send ``pkts`` (at ``lanes``, default START_LANES in turn), compare the output, counters and status
    with ``model`` fed the same packets."""
    before = len(model.out)
    sources = []                            # (packet, lane) of every forwarded packet
    for k, p in enumerate(pkts):
        n = len(model.out)
        model.feed(p)
        await tb.send(p, None if lanes is None else lanes[k])
        if len(model.out) > n:
            sources.append((p, tb.sent_lanes[-1]))
    want = model.out[before:]
    got = await tb.recv_all(len(want))
    await tb.drain()
    assert tb.sink.empty(), "extra output packets"
    for k, (frame, (seq, area), (pkt, lane)) in enumerate(zip(got, want, sources)):
        assert frame.tdata == area, f"packet {k}: got {frame.tdata.hex()} want {area.hex()}"
        users = frame.tuser if isinstance(frame.tuser, list) else [frame.tuser] * len(area)  # compacted if constant
        assert {u & MASK64 for u in users} == {seq}, f"packet {k}: user.seq {users} want {seq}"
        # user.runt: the walker's flag, from the packet's whole message area (a partial overlap's forwarded
        # blocks are its tail)
        runt = runt_flags(pkt[20:], (lane + 20) % 8)[len(pkt) - 20 - len(area):]
        assert [u >> 64 for u in users] == runt, f"packet {k}: user.runt {[u >> 64 for u in users]} want {runt}"
    got_counts = tb.counters()
    assert got_counts == model.counts, {k: (got_counts.get(k), v) for k, v in model.counts.items()
                                        if got_counts.get(k) != v}
    st = tb.status()
    want_status = {"has_session": int(model.session is not None),
                   "session": model.session or bytes(10), "expected": model.expected & MASK64,
                   "gap": model.gap, "first_missing": model.first_missing}
    assert st == want_status, (st, want_status)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_in_order(dut, idle, backpressure):
    """One session in order: every packet forwarded once, sequence in user, no gap."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(1)
    pkts, nxt = session_packets(rng, b"0000012345", 1, 40)
    # one-message packets of 7..15 bytes: every block-area length mod 8
    pkts += [packet(b"0000012345", nxt + k, [bytes(range(7 + k))]) for k in range(9)]
    model = MoldModel()
    await check(tb, model, pkts)
    assert model.counts["accepted"] == len(pkts) and model.counts["gap"] == 0
    if not idle and not backpressure:
        assert back_to_back([c for c, _ in tb.beats_in]), "input stalled"


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_ab_dedupe(dut, idle, backpressure):
    """Feeds A and B merged with skew and losses on each side: each packet comes out once, no gap."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(2)
    a, _ = session_packets(rng, b"SESSION-AB", 1, 60)
    merged, ia, ib = [], 0, 0
    lost_a = set(rng.sample(range(60), 6))
    lost_b = set(rng.sample(sorted(set(range(60)) - lost_a), 6))
    while ia < 60 or ib < 60:
        take_a = ib >= 60 or (ia < 60 and (ia <= ib + rng.randrange(-2, 3)))
        if take_a:
            if ia not in lost_a:
                merged.append(a[ia])
            ia += 1
        else:
            if ib not in lost_b:
                merged.append(a[ib])
            ib += 1
    model = MoldModel()
    await check(tb, model, merged)
    assert [seq for seq, _ in model.out] == [struct.unpack_from(">Q", p, 10)[0] for p in a]
    assert model.counts["duplicate"] > 0


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_gaps_and_control(dut, idle, backpressure):
    """Gaps from data, heartbeats and end of session; overlap; duplicates; a new session; gap_clear."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(3)
    s1, s2 = b"AAAAAAAAAA", b"BBBBBBBBBB"
    m = lambda n: random_messages(rng, n)
    pkts = [
        packet(s1, 10, m(3)),          # adopt session at 10 -> expect 13
        heartbeat(s1, 13),             # in step
        packet(s1, 13, m(2)),          # -> 15
        packet(s1, 18, m(2)),          # gap: 15..17 missing -> 20
        packet(s1, 16, m(2)),          # duplicate (old)
        packet(s1, 19, m(3)),          # overlap 19..21 vs expected 20: dropped
        heartbeat(s1, 25),             # gap from a heartbeat: 20..24 -> 25
        heartbeat(s1, 7),              # stale heartbeat: ignored
        packet(s1, 25, m(1)),          # -> 26
        end_session(s1, 26),           # in step
        end_session(s1, 28),           # gap 26..27
        packet(s2, 1, m(4)),           # new session -> 5
        heartbeat(s2, 5),
        packet(s2, 5, []),             # count 0 with... a heartbeat by definition
    ]
    model = MoldModel()
    await check(tb, model, pkts)
    assert model.counts["gap"] == 3 and model.counts["session"] == 2 and model.first_missing == 15
    tb.set_inputs(gap_clear=1)
    await tb.cycles(1)
    tb.set_inputs(gap_clear=0)
    model.clear_gap()
    await check(tb, model, [packet(s2, 9, m(2)), packet(s2, 11, m(1))])
    assert model.first_missing == 5 and model.gap


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_sequence_high_half(dut, idle, backpressure):
    """Sequence numbers whose low 32 bits carry into the high half (seq + count across 2**32), high halves
    one and two apart, and a data packet, gap, duplicate and overlap straddling a 2**32 boundary: `expected`
    (kept in halves by the receiver) checked after every packet."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(9)
    s = b"HIGHHALF01"
    m = lambda n: random_messages(rng, n, hi=20)
    g = 1 << 32
    steps = [
        packet(s, g - 2, m(3)),            # -> 2**32 + 1: the carry
        packet(s, g + 1, m(2)),            # in step -> 2**32 + 3
        packet(s, g - 1, m(2)),            # duplicate from below the boundary (ends at 2**32 + 1)
        packet(s, g + 2, m(3)),            # overlap: 2**32 + 2 .. 2**32 + 4 against 2**32 + 3
        heartbeat(s, 3 * g - 1),           # gap from a heartbeat, high half two ahead -> 3 * 2**32 - 1
        packet(s, 3 * g - 1, m(1)),        # -> 3 * 2**32: the carry again
        packet(s, 2 * g + 5, m(1)),        # old, high half one below
        packet(s, 5 * g - 3, m(4)),        # gap, high half two ahead, seq + count carries -> 5 * 2**32 + 1
        end_session(s, 5 * g + 1),
    ]
    model = MoldModel()
    for pkt in steps:
        await check(tb, model, [pkt])
    assert model.expected == 5 * g + 1 and model.counts["gap"] == 2


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_malformed(dut, idle, backpressure):
    """Truncated headers dropped; count mismatches forwarded and counted; the block never hangs."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(4)
    s = b"MALFORMED1"
    m = lambda n: random_messages(rng, n)
    good = packet(s, 1, m(2))
    pkts = [
        good,
        good[:1], good[:8], good[:16], good[:19],                  # truncated
        packet(s, 3, m(2), count=3),                                # blocks missing
        packet(s, 6, m(3), count=2),                                # extra blocks
        packet(s, 8, m(2))[:-3],                                    # last block runs past the end
        packet(s, 10, m(2)) + b"\x00",                              # a stray byte after the blocks
        packet(s, 12, [b"x" * 3, b"y" * 20]),                       # a message shorter than MIN_MESSAGE
        packet(s, 14, m(1))[:21],                                   # length straddles the end
        packet(s, 15, [], count=1),                                 # count 1, no bytes at all
        packet(s, 16, m(2)),
    ]
    # Runts (zero to MIN_MESSAGE - 1 bytes) after 0..9 bytes of other blocks, so the beat flagged `runt`
    # first moves across lanes and beats (checked per byte by `check`).
    seq = 18
    for k in range(10):
        msgs = ([bytes(rng.randrange(256) for _ in range(MIN_MESSAGE + k))] if k % 2 else []) + \
            [bytes(k % MIN_MESSAGE), bytes(range(1, 31))]
        pkts.append(packet(s, seq, msgs))
        seq += len(msgs)
    model = MoldModel()
    await check(tb, model, pkts)
    assert model.counts["truncated"] == 4 and model.counts["count_error"] == 7 + 10


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_latency(dut, idle, backpressure):
    """Without stalls, output beat k of a packet (its deciding beat + k, not realigned) is accepted exactly
    FIRST_BEAT_LATENCY[start lane] + k cycles after its first input beat, at both start lanes and every
    area length mod 8."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(5)
    s = b"LATENCY001"
    pkts, seq = [], 1
    for length in (7, 8, 9, 10, 11, 12, 13, 14, 30, 200):
        for _ in START_LANES:
            pkts.append(packet(s, seq, [bytes(rng.randrange(256) for _ in range(length))]))
            seq += 1
    model = MoldModel()
    await check(tb, model, pkts)
    if idle or backpressure:
        return
    outs = iter(tb.beats_out)
    for pkt, start, lane in zip(pkts, tb.frames_in, tb.sent_lanes):
        d = (lane + 20) // 8                              # the deciding beat
        n = (lane + len(pkt) + 7) // 8 - d
        for k in range(n):
            cycle, last = next(outs)
            assert cycle - start == FIRST_BEAT_LATENCY[lane] + k, (lane, len(pkt), k, cycle - start)
            assert last == (k == n - 1)
    assert set(tb.sent_lanes) == set(START_LANES)
    assert_last_byte_latency(tb, pkts)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_random(dut, idle, backpressure):
    """A random A/B feed with losses, reordering within a window, heartbeats and a session change."""
    tb = await MoldRxTB.start(dut, idle, backpressure, seed=9)
    rng = random.Random(6)
    s = b"RANDOM0001"
    a, nxt = session_packets(rng, s, 1, 50)
    stream = []
    for p in a:
        for _ in range(rng.choice([0, 1, 1, 2])):
            stream.append(p)
        if rng.random() < 0.1:
            stream.append(heartbeat(s, struct.unpack_from(">Q", p, 10)[0]))
    for k in range(0, len(stream) - 1, 7):
        if rng.random() < 0.5:
            stream[k], stream[k + 1] = stream[k + 1], stream[k]
    b, _ = session_packets(rng, b"RANDOM0002", 1, 5)
    await check(tb, MoldModel(), stream + b)


def assert_last_byte_latency(tb, pkts):
    """Every output beat is its input beat (not realigned), accepted LATENCY = 1 cycle after it, so the beat
    holding each forwarded packet's last byte too; whole packets' beat k at FIRST_BEAT_LATENCY + k. For a run
    without stalls."""
    assert LATENCY_MAX == LATENCY
    model = MoldModel()
    outs, ins = iter(tb.beats_out), iter(tb.beats_in)
    for pkt, start, lane in zip(pkts, tb.frames_in, tb.sent_lanes):
        beats = [next(ins)[0] for _ in range((lane + len(pkt) + 7) // 8)]
        before = len(model.out)
        model.feed(pkt)
        if len(model.out) == before:
            continue
        area = model.out[-1][1]
        first = (lane + len(pkt) - len(area)) // 8      # input beat holding the area's first byte
        cycles = [next(outs)[0] for _ in range(len(beats) - first)]
        if len(area) == len(pkt) - 20:
            assert cycles == [start + FIRST_BEAT_LATENCY[lane] + k for k in range(len(cycles))], (cycles, start)
        assert [c - b for c, b in zip(cycles, beats[first:])] == [LATENCY] * len(cycles), (len(pkt), len(area))
    assert next(outs, None) is None, "more output beats than forwarded beats"


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_unsequenced(dut, idle, backpressure):
    """Sequence 0 (zeroed session and sequence, as in the anonymised captures): forwarded in order, counted,
    sequencing untouched, before and after a session is adopted."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(8)
    z = bytes(10)
    s = b"SEQUENCED1"
    pkts = [packet(z, 0, random_messages(rng, 1)) for _ in range(5)]
    pkts += [packet(s, 100, random_messages(rng, 2)), packet(z, 0, random_messages(rng, 3)), heartbeat(z, 0),
             packet(s, 102, random_messages(rng, 1)), packet(z, 0, random_messages(rng, 1)),
             packet(s, 103, random_messages(rng, 1))]
    model = MoldModel()
    await check(tb, model, pkts)
    assert model.counts["unsequenced"] == 8 and model.counts["gap"] == 0 and model.expected == 104
    assert model.counts["session"] == 1 and model.counts["heartbeat"] == 0


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_partial_overlap(dut, idle, backpressure):
    """A packet starting below and ending above the expected sequence: its new tail alone is forwarded,
    starting at every lane; user = the first new sequence; no gap follows."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(9)
    s = b"OVERLAP001"
    pkts, seq = [], 1
    for k in range(40):
        msgs = [bytes(rng.randrange(256) for _ in range(7 + (k + j) % 9)) for j in range(rng.randrange(2, 6))]
        cut = rng.randrange(1, len(msgs))
        pkts.append(packet(s, seq, msgs[:cut]))           # the first part arrives alone...
        pkts.append(packet(s, seq, msgs))                 # ...then the whole, overlapping it
        seq += len(msgs)
    pkts.append(packet(s, seq, random_messages(rng, 2)))
    model = MoldModel()
    # each packet pair at one start lane, the pairs alternating between them
    await check(tb, model, pkts, lanes=[START_LANES[(k // 2) % 2] for k in range(len(pkts))])
    assert model.counts["overlap"] == 40 and model.counts["gap"] == 0 and model.counts["count_error"] == 0
    lanes = {(lane + len(p) - len(a)) % 8
             for (_, a), p, lane in zip(model.out[1::2], pkts[1::2], tb.sent_lanes[1::2])}
    assert lanes == set(range(8)), lanes
    if not idle and not backpressure:
        assert_last_byte_latency(tb, pkts)


@cocotb.test()
@cocotb.parametrize(**MODES)
async def test_ab_repacked(dut, idle, backpressure):
    """Lines A and B carry the same messages packed differently, with losses: the merge is lossless (every
    message once, in order) wherever one line covers what the other lost."""
    tb = await MoldRxTB.start(dut, idle, backpressure)
    rng = random.Random(10)
    s = b"REPACKED01"
    msgs = random_messages(rng, 300, hi=40)

    def line(seed):
        r = random.Random(seed)
        out, seq = [], 1
        while seq <= len(msgs):
            n = min(r.randrange(1, 8), len(msgs) - seq + 1)
            out.append((seq, packet(s, seq, msgs[seq - 1:seq - 1 + n])))
            seq += n
        return out

    a, b = line(1), line(2)
    lost_a = set(rng.sample(range(len(a)), len(a) // 8))
    merged = []
    ia = ib = 0
    while ia < len(a) or ib < len(b):
        if ib >= len(b) or (ia < len(a) and a[ia][0] <= b[ib][0]):
            if ia not in lost_a:
                merged.append(a[ia][1])
            ia += 1
        else:
            merged.append(b[ib][1])
            ib += 1
    model = MoldModel()
    await check(tb, model, merged)
    delivered = b"".join(area for _, area in model.out)
    assert delivered == blocks(msgs)
    assert model.counts["gap"] == 0 and model.counts["overlap"] > 0


@cocotb.test()
async def test_smoke(dut):
    """A few packets, for the second simulator."""
    tb = await MoldRxTB.start(dut)
    rng = random.Random(7)
    pkts, _ = session_packets(rng, b"SMOKE00001", 1, 3)
    await check(tb, MoldModel(), pkts + pkts[:1])
