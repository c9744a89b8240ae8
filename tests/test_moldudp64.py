"""MoldUDP64: packet codec, packing, and the A/B receiver (sequencing, duplicates, gaps, sessions)."""

from __future__ import annotations

import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickgate.wire import moldudp64 as mold
from tickgate.wire.moldudp64 import MoldFormatError, Packet, Receiver

SESSION = "000010059B"
sessions = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=10, max_size=10)
messages = st.lists(st.binary(max_size=80), max_size=20)


def raw_packet(session: bytes, sequence: int, count: int, blocks: list[bytes]) -> bytes:
    """Independent encoder (struct, not the Layout) for cross-checking."""
    return struct.pack(">10sQH", session, sequence, count) + b"".join(
        struct.pack(">H", len(b)) + b for b in blocks)


def test_layouts():
    assert mold.HEADER.size == 20
    assert [(f.name, f.offset, f.size) for f in mold.HEADER] == [
        ("session", 0, 10), ("sequence", 10, 8), ("count", 18, 2)]
    assert mold.REQUEST.size == 20 and mold.MESSAGE_BLOCK.size == 2


@given(sessions, st.integers(0, 2**63), messages)
def test_roundtrip_matches_independent_encoder(session, sequence, msgs):
    pkt = Packet(session, sequence, msgs)
    buf = pkt.encode()
    assert buf == raw_packet(session.encode(), sequence, len(msgs), msgs)
    assert len(buf) == pkt.size
    back = Packet.decode(buf)
    assert back == pkt and back.messages == msgs and back.next_sequence == sequence + len(msgs)
    assert not back.is_heartbeat or not msgs


def test_heartbeat_and_end_of_session():
    hb = mold.heartbeat("SESS", 42)
    assert hb.session == "SESS      " and hb.is_heartbeat and not hb.is_end_of_session
    assert hb.encode() == raw_packet(b"SESS      ", 42, 0, [])
    eos = mold.end_of_session("SESS", 43)
    assert eos.is_end_of_session and not eos.is_heartbeat and eos.count == 0xFFFF
    assert eos.encode() == raw_packet(b"SESS      ", 43, 0xFFFF, [])
    back = Packet.decode(eos.encode())
    assert back.is_end_of_session and back.messages == [] and back.sequence == 43
    assert Packet.decode(hb.encode()).is_heartbeat


def test_zeroed_session_decodes():
    buf = raw_packet(b"\0" * 10, 0, 1, [b"S\0\0"])
    pkt = Packet.decode(buf)
    assert pkt.session == "\0" * 10 and pkt.sequence == 0 and pkt.messages == [b"S\0\0"]
    assert pkt.encode() == buf


@pytest.mark.parametrize("buf, offset, words", [
    (raw_packet(b"S" * 10, 1, 0, [])[:19], 19, "truncated header"),
    (raw_packet(b"S" * 10, 1, 2, [b"abc"]), 25, "count mismatch"),
    (raw_packet(b"S" * 10, 1, 2, [b"abc"]) + b"\x00", 25, "truncated length field"),
    (raw_packet(b"S" * 10, 1, 1, [b"abcdef"])[:-2], 20, "runs past the end"),
    (raw_packet(b"S" * 10, 1, 1, [b"abc", b"de"]), 25, "trailing bytes"),
    (raw_packet(b"S" * 10, 1, 0xFFFF, [b"x"]), 20, "trailing bytes after end of session"),
])
def test_decode_errors_name_problem_and_offset(buf, offset, words):
    with pytest.raises(MoldFormatError, match=words) as info:
        Packet.decode(buf)
    assert info.value.offset == offset
    assert f"offset {offset}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_lenient_decode_returns_what_it_could():
    buf = raw_packet(b"S" * 10, 7, 3, [b"one", b"two", b"three"])[:-2]
    pkt, errors = Packet.decode_lenient(buf)
    assert pkt.messages == [b"one", b"two"] and pkt.sequence == 7
    assert len(errors) == 1 and "block 3" in str(errors[0]) and errors[0].offset == 20 + 5 + 5
    pkt, errors = Packet.decode_lenient(raw_packet(b"S" * 10, 7, 1, [b"a", b"b"]))
    assert pkt.messages == [b"a"] and "trailing" in str(errors[0])
    pkt, errors = Packet.decode_lenient(b"short")
    assert pkt is None and "truncated header" in str(errors[0])
    pkt, errors = Packet.decode_lenient(raw_packet(b"S" * 10, 7, 2, [b"a", b"b"]))
    assert errors == [] and pkt.messages == [b"a", b"b"]


def test_construction_errors():
    with pytest.raises(ValueError, match="longer than 10"):
        Packet("ELEVENCHARS", 1)
    with pytest.raises(TypeError, match="session must be a str"):
        Packet(b"SESSION", 1)
    with pytest.raises(TypeError, match="message 1 must be bytes-like"):
        Packet(SESSION, 1, [b"ok", "text"])
    with pytest.raises(TypeError, match="list of bytes"):
        Packet(SESSION, 1, b"abc")
    with pytest.raises(ValueError, match="carries no messages"):
        Packet(SESSION, 1, [b"x"], end_of_session=True)
    with pytest.raises(ValueError, match="at most 65534"):
        Packet(SESSION, 1, [b""] * 0xFFFF)
    with pytest.raises(ValueError, match="64 bits"):
        Packet(SESSION, -1)
    with pytest.raises(ValueError, match="past 2\\*\\*64"):
        Packet(SESSION, 2**64 - 1, [b"a", b"b"])
    with pytest.raises(TypeError):
        Packet.decode("not bytes")


def test_request_roundtrip_and_errors():
    req = mold.Request("ABC", 1000, 25)
    buf = req.encode()
    assert buf == struct.pack(">10sQH", b"ABC       ", 1000, 25)
    assert mold.Request.decode(buf) == req
    with pytest.raises(MoldFormatError, match="request packet is 19 bytes"):
        mold.Request.decode(buf[:-1])
    with pytest.raises(ValueError, match="0..65535"):
        mold.Request("ABC", 1, 70000)


@given(st.lists(st.binary(max_size=300), max_size=60), st.integers(1, 10), st.integers(60, 1500),
       st.integers(1, 10**12))
def test_pack_messages_is_greedy_and_lossless(msgs, max_messages, max_payload, first):
    msgs = [m for m in msgs if 22 + len(m) <= max_payload]
    packets = list(mold.pack_messages(msgs, "S", first, max_messages=max_messages, max_payload=max_payload))
    assert [m for p in packets for m in p.messages] == msgs
    seq = first
    for i, p in enumerate(packets):
        assert p.sequence == seq and p.session == "S         " and p.messages
        assert len(p.encode()) <= max_payload and len(p.messages) <= max_messages
        if i + 1 < len(packets):  # greedy: the next message would not have fitted
            nxt = packets[i + 1].messages[0]
            assert len(p.messages) == max_messages or p.size + 2 + len(nxt) > max_payload
        seq = p.next_sequence


def test_pack_messages_is_lazy_and_checks_arguments_eagerly():
    endless = (b"%08d" % i for i in itertools.count())
    gen = mold.pack_messages(endless, SESSION, 1, max_payload=20 + 3 * 10)
    first_three = list(itertools.islice(gen, 3))
    assert [p.sequence for p in first_three] == [1, 4, 7]
    assert first_three[2].messages == [b"00000006", b"00000007", b"00000008"]
    with pytest.raises(ValueError, match="max_payload"):
        mold.pack_messages([], SESSION, 1, max_payload=10)
    with pytest.raises(ValueError, match="max_messages"):
        mold.pack_messages([], SESSION, 1, max_messages=0)
    with pytest.raises(ValueError, match="does not fit a 100-byte packet"):
        list(mold.pack_messages([b"x" * 100], SESSION, 1, max_payload=100))


# --- Receiver ---------------------------------------------------------------------------------------

def msgs_for(first: int, n: int) -> list[bytes]:
    return [b"m%d" % s for s in range(first, first + n)]


def pk(first: int, n: int, session: str = SESSION) -> Packet:
    return Packet(session, first, msgs_for(first, n))


def test_receiver_in_order_duplicates_and_partial_overlap():
    rx = Receiver()
    assert rx.feed(pk(1, 3)) == list(zip([1, 2, 3], msgs_for(1, 3)))
    assert rx.feed(pk(1, 3)) == []  # duplicate
    assert rx.feed(pk(2, 4)) == [(4, b"m4"), (5, b"m5")]  # overlap: only the new tail
    assert rx.feed(mold.heartbeat(SESSION, 6)) == []
    s = rx.stats
    assert (s.messages, s.duplicate_packets, s.duplicate_messages, s.partial_packets, s.heartbeats) == (5, 1, 5, 1, 1)
    assert rx.expected == 6 and rx.gaps == [] and s.gaps == 0


def test_receiver_waits_for_the_other_line_before_declaring_a_gap():
    rx = Receiver(max_pending=4)
    rx.feed(pk(1, 2))
    assert rx.feed(pk(5, 2)) == []  # line A lost 3..4: held
    assert rx.pending == 1
    assert rx.feed(pk(3, 2)) == [(s, b"m%d" % s) for s in (3, 4, 5, 6)]  # line B fills the hole
    assert rx.gaps == [] and rx.pending == 0 and rx.stats.held_packets == 1


def test_receiver_gives_up_when_the_hold_is_full():
    rx = Receiver(max_pending=2)
    rx.feed(pk(1, 1))
    assert rx.feed(pk(3, 1)) == [] and rx.feed(pk(4, 1)) == []
    out = rx.feed(pk(5, 1))  # third held packet: gap 2 is declared, 3..5 delivered
    assert out == [(3, b"m3"), (4, b"m4"), (5, b"m5")]
    assert rx.gaps == [mold.Gap(SESSION, 2, 1)] and rx.stats.missing_messages == 1
    assert rx.feed(pk(2, 1)) == [] and rx.stats.duplicate_packets == 1  # too late


def test_receiver_immediate_gap_and_heartbeat_exposes_tail_loss():
    rx = Receiver(max_pending=0)
    rx.feed(pk(1, 2))
    assert rx.feed(pk(6, 1)) == [(6, b"m6")]
    assert rx.gaps == [(SESSION, 3, 3)]
    assert rx.feed(mold.heartbeat(SESSION, 10)) == []
    assert rx.gaps[-1] == (SESSION, 7, 3) and rx.expected == 10 and rx.stats.gaps == 2


def test_receiver_flush_and_end_of_session():
    rx = Receiver(max_pending=None)
    rx.feed(pk(1, 1))
    rx.feed(mold.end_of_session(SESSION, 5))
    rx.feed(pk(3, 1))
    assert not rx.ended and rx.pending == 2
    assert rx.flush() == [(3, b"m3")]
    assert rx.gaps == [(SESSION, 2, 1), (SESSION, 4, 1)] and rx.ended and rx.pending == 0


def test_receiver_session_change():
    rx = Receiver(max_pending=8)
    rx.feed(pk(1, 2, "DAY1"))
    rx.feed(pk(5, 2, "DAY1"))  # held, will be discarded
    out = rx.feed(pk(1, 2, "DAY2"))
    assert out == [(1, b"m1"), (2, b"m2")] and rx.session == "DAY2      "
    assert rx.gaps == [("DAY1      ", 3, 4)]
    assert rx.stats.session_changes == 1 and rx.stats.discarded_messages == 2
    assert rx.feed(pk(3, 1, "DAY1")) == [] and rx.stats.stale_session_packets == 1
    assert rx.finished == {"DAY1      ": 3}
    assert rx.feed(pk(3, 1, "DAY2")) == [(3, b"m3")]


def test_receiver_joins_mid_session_and_rejects_bad_input():
    rx = Receiver(start_sequence=None)
    assert rx.feed(pk(1000, 2)) == [(1000, b"m1000"), (1001, b"m1001")] and rx.gaps == []
    rx2 = Receiver()  # default start 1: sequence 1000 waits for 1..999
    assert rx2.feed(pk(1000, 1)) == [] and rx2.pending == 1
    rx1 = Receiver(max_pending=0)
    rx1.feed(pk(1000, 1))
    assert rx1.gaps == [(SESSION, 1, 999)]
    with pytest.raises(TypeError, match="moldudp64.Packet"):
        rx.feed(pk(1, 1).encode())
    with pytest.raises(ValueError, match="max_pending"):
        Receiver(max_pending=-1)


@st.composite
def ab_feed(draw):
    """A feed of n messages, two lines that each packetize it (differently), lose, duplicate and locally
    reorder packets, and an arbitrary interleaving of the two lines."""
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rnd = random.Random(seed)
    loss_a, loss_b = draw(st.floats(0, 0.6)), draw(st.floats(0, 0.6))
    msgs = msgs_for(1, n)
    lines = []
    for loss in (loss_a, loss_b):
        packets = list(mold.pack_messages(msgs, SESSION, 1, max_messages=rnd.randint(1, 5)))
        packets.append(mold.heartbeat(SESSION, n + 1))
        line = []
        for p in packets:
            if rnd.random() < loss:
                continue
            line.append(p)
            if rnd.random() < 0.2:
                line.append(p)
        for i in range(len(line) - 1):  # local reordering
            if rnd.random() < 0.2:
                line[i], line[i + 1] = line[i + 1], line[i]
        lines.append(line)
    merged, ia, ib = [], 0, 0
    while ia < len(lines[0]) or ib < len(lines[1]):
        if ib >= len(lines[1]) or (ia < len(lines[0]) and rnd.random() < 0.5):
            merged.append(lines[0][ia]); ia += 1
        else:
            merged.append(lines[1][ib]); ib += 1
    return n, merged


def expected_gaps(n: int, packets: list[Packet]) -> tuple[set[int], list[tuple[int, int]]]:
    covered = {s for p in packets for s in range(p.sequence, p.next_sequence)}
    top = max((p.next_sequence for p in packets), default=1)  # a heartbeat / data exposes loss below it
    runs, s = [], 1
    while s < top:
        if s in covered:
            s += 1
            continue
        start = s
        while s < top and s not in covered:
            s += 1
        runs.append((start, s - start))
    return covered, runs


@settings(max_examples=300, deadline=None)
@given(ab_feed())
def test_ab_arbitration_exactly_once_in_order_gaps_where_both_lost(feed):
    n, packets = feed
    rx = Receiver(max_pending=None)
    out, seen = [], set()
    for p in packets:
        out += rx.feed(p)
        seen.update(range(p.sequence, p.next_sequence))
        first_hole = next(s for s in itertools.count(1) if s not in seen)
        # Delivered as soon as possible: everything up to the first hole, nothing beyond it.
        assert [s for s, _ in out] == list(range(1, first_hole))
    out += rx.flush()
    covered, runs = expected_gaps(n, packets)
    assert out == [(s, b"m%d" % s) for s in sorted(covered)]  # exactly once, in order, right content
    assert [(g.first, g.count) for g in rx.gaps] == runs
    assert rx.stats.messages == len(covered) and rx.stats.missing_messages == sum(c for _, c in runs)


@settings(max_examples=300, deadline=None)
@given(ab_feed(), st.integers(0, 6))
def test_ab_with_bounded_hold_never_duplicates_or_reorders(feed, max_pending):
    n, packets = feed
    rx = Receiver(max_pending=max_pending)
    out = [d for p in packets for d in rx.feed(p)] + rx.flush()
    seqs = [s for s, _ in out]
    assert seqs == sorted(set(seqs))  # strictly increasing: no duplicates, no reordering
    assert all(m == b"m%d" % s for s, m in out)
    gap_seqs = [s for g in rx.gaps for s in range(g.first, g.first + g.count)]
    # Delivered and gap sequence numbers partition 1..expected-1.
    assert sorted(seqs + gap_seqs) == list(range(1, rx.expected or 1))
    covered, _ = expected_gaps(n, packets)
    assert set(gap_seqs).isdisjoint(seqs) and set(seqs) <= covered
    if len(packets) <= max_pending:  # the hold never filled: gaps only where both lines lost data
        assert set(gap_seqs).isdisjoint(covered)


def test_receiver_on_real_capture_ab_copies(shared_data):
    from tickgate.wire import pcap

    path = shared_data / "pcap" / "nasdaq-totalview-itch50-live" / "Multiple.Packets.pcap"
    packets = [p for _, _, p in pcap.mold_packets(path)]
    rx = Receiver(start_sequence=None, max_pending=0)
    out = []
    for a, b in zip(packets, packets):  # line B a copy of line A
        out += rx.feed(a) + rx.feed(b)
    first = packets[0].sequence
    seqs = [s for s, _ in out]
    assert seqs == sorted(set(seqs)) and seqs[0] == first
    assert [m for _, m in out] == [m for p in packets for m in p.messages]
    assert rx.stats.duplicate_packets == len(packets)
