"""Feed info and conversion on the recorded feeds, and the ``tickgate feed`` command end to end."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.conftest import ITCH_FILES, PCAP_FILES
from tickgate.cli import main
from tickgate.feed.binaryfile import read_messages, write_messages
from tickgate.feed.convert import CaptureOptions, convert, output_format, write_capture
from tickgate.feed.info import feed_info, format_info, format_timestamp
from tickgate.feed.synth import synth_bytes
from tickgate.wire import moldudp64, net, pcap

SNIPPET_TYPES = {"A": 367, "U": 225, "F": 193, "D": 167, "E": 28, "X": 6, "I": 4, "P": 4, "Q": 4, "S": 1, "C": 1}


def _itch(shared_data, name):
    path = shared_data / "itch" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


# -- info ---------------------------------------------------------------------------------------------

def test_info_snippet_matches_sources(shared_data):
    info = feed_info(_itch(shared_data, "12302019_SNIPPET.NASDAQ_ITCH50"))
    assert info.format == "binaryfile" and info.file_bytes == 35_570
    assert info.messages == 1_000 and info.by_type == SNIPPET_TYPES
    assert info.locates == 322 and info.stock_locates == 321     # SOURCES.md counts the S message's locate 0
    assert info.symbols == {}
    assert format_timestamp(info.first_timestamp).startswith("09:30:00.")
    assert info.first_timestamp >= 34_200 * 10**9


def test_info_directory_sample(shared_data):
    info = feed_info(_itch(shared_data, "directory-sample.NASDAQ_ITCH50"))
    assert info.by_type == {"S": 1, "R": 993, "H": 3, "Y": 3}
    assert len(info.symbols) == 993 and info.symbols[1] == "A" and info.symbols[2] == "AA"
    assert "993 named by R" in format_info(info)


@pytest.mark.parametrize("path", ITCH_FILES + PCAP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_info_on_every_recorded_file(path):
    info = feed_info(path)
    assert info.messages > 0 and sum(info.by_type.values()) == info.messages
    assert info.first_timestamp is not None
    d = json.loads(json.dumps(info.as_dict()))
    assert d["messages"] == info.messages
    if info.format != "binaryfile":
        assert info.packets == info.frames > 0
        assert info.unsequenced_messages + sum(s.messages for s in info.sessions) == info.messages


def test_info_recorded_captures_match_sources(shared_data):
    base = shared_data / "pcap"
    if not base.is_dir():
        pytest.skip("no captures")
    totals: Counter = Counter()
    types: set = set()
    for path in sorted(base.rglob("*.pcap")):
        info = feed_info(path)
        group = path.parent.name
        types |= set(info.by_type)
        totals[group] += info.messages
        if group.endswith("-live"):
            assert info.unsequenced_packets == 0 and len(info.sessions) == 1
            s = info.sessions[0]
            want = ("000010059B", "233.54.12.111:26477") if group.startswith("nasdaq") \
                else ("000010059D", "233.49.196.40:25475")
            assert (s.session, s.dst) == want
            assert s.duplicate_messages == 0
        else:
            assert info.sessions == [] and info.unsequenced_messages == info.messages
    assert totals["nasdaq-totalview-itch50-live"] + totals["bx-totalview-itch50-live"] == 49
    assert totals["nasdaq-totalview-itch50-payloads"] == 71 and totals["bx-totalview-itch50-payloads"] == 56
    assert set("SAFECXDUPQYHINLJ") <= types
    multi = feed_info(base / "nasdaq-totalview-itch50-live" / "Multiple.Packets.pcap")
    assert multi.by_type == {"A": 36, "F": 2, "D": 1}
    s = multi.sessions[0]
    assert s.packets == 2 and s.gaps == 1 and s.gap_list == [(s.first_sequence + 1, s.missing_messages)]


def _capture_with_faults(path, msgs):
    """Line A sends packets 1..n, line B repeats them except two, then a hole of 3 messages."""
    packets = list(moldudp64.pack_messages(msgs, "FAULTY", 1, max_messages=4))
    late = moldudp64.Packet("FAULTY", packets[-1].next_sequence + 3, msgs[:2])
    frames, t = [], 1_000_000_000
    for i, p in enumerate(packets):
        for line in ("A", "B"):
            if line == "B" and i in (1, 2):
                continue
            t += 1000
            frames.append((t, net.udp_frame(p.encode(), sport=1 if line == "A" else 2)))
    frames.append((t + 1000, net.udp_frame(late.encode())))
    pcap.write_frames(path, frames)
    return packets


def test_info_and_convert_report_duplicates_and_gaps(tmp_path):
    msgs = list(synth_bytes(40, symbols=2, seed=1))
    cap = tmp_path / "faulty.pcap"
    packets = _capture_with_faults(cap, msgs)
    info = feed_info(cap)
    (s,) = info.sessions
    assert s.session == "FAULTY" and s.packets == 2 * len(packets) - 2 + 1
    assert s.duplicate_messages == 40 - 8 and s.duplicate_packets == len(packets) - 2
    assert (s.gaps, s.missing_messages, s.gap_list) == (1, 3, [(41, 3)])
    assert s.first_sequence == 1 and s.last_sequence == 45
    assert info.messages == 42 and "gap: 3 from 41" in format_info(info)
    out = tmp_path / "faulty.itch"
    rep = convert(cap, out)
    assert (rep.gaps, rep.missing_messages, rep.duplicate_messages) == (1, 3, 32)
    assert rep.gap_list == [("FAULTY    ", 41, 3)]
    assert list(read_messages(out)) == msgs + msgs[:2]


# -- convert ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["pcap", "pcapng"])
@pytest.mark.parametrize("path", ITCH_FILES, ids=lambda p: p.name)
def test_binaryfile_pcap_binaryfile_is_byte_identical(path, ext, tmp_path):
    cap = tmp_path / f"feed.{ext}"
    rep = convert(path, cap)
    assert rep.output_format == ext and rep.first_sequence == 1 and rep.last_sequence == rep.messages
    assert feed_info(cap).format == ext
    back = tmp_path / "back.NASDAQ_ITCH50"
    rep2 = convert(cap, back)
    assert rep2.input_format == ext and rep2.gaps == 0 and rep2.duplicate_messages == 0
    assert back.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("path", ITCH_FILES, ids=lambda p: p.name)
def test_packing_options_keep_the_round_trip(path, tmp_path):
    opts = CaptureOptions(session="ABC", first_sequence=1_000, max_messages=7, max_payload=200, vlan=42,
                          src_ip="10.0.0.1", dst_ip="239.1.2.3", sport=1234, dport=5678)
    cap = tmp_path / "p.pcap"
    rep = convert(path, cap, opts)
    n = rep.messages
    assert rep.packets >= -(-n // 7) and (rep.first_sequence, rep.last_sequence) == (1_000, 1_000 + n - 1)
    for time_ns, meta, packet in pcap.mold_packets(cap):
        assert packet.session == "ABC       " and len(packet.messages) <= 7 and packet.size <= 200
        assert (meta.vlan, meta.src_ip, meta.dst_ip, meta.sport, meta.dport) == (42, "10.0.0.1", "239.1.2.3", 1234, 5678)
        assert meta.dst_mac == net.multicast_mac("239.1.2.3")
    back = tmp_path / "b.itch.gz"
    convert(cap, back)
    assert list(read_messages(back)) == list(read_messages(path))


def test_capture_times_from_itch_or_rate(tmp_path):
    msgs = list(synth_bytes(300, symbols=3, seed=2))
    cap = tmp_path / "t.pcap"
    write_capture(msgs, cap, CaptureOptions(max_messages=10, date="2024-03-01", utc_offset_hours=-5))
    midnight_utc = 1_709_251_200 * 10**9 + 5 * 3600 * 10**9
    times = []
    for time_ns, _meta, packet in pcap.mold_packets(cap):
        assert time_ns == midnight_utc + int.from_bytes(packet.messages[-1][5:11], "big")
        times.append(time_ns)
    assert times == sorted(times) and len(times) == 30
    write_capture(msgs, cap, CaptureOptions(max_messages=10, timing="rate", rate=1_000.0))
    times = [t for t, _m, _p in pcap.mold_packets(cap)]
    assert {b - a for a, b in zip(times, times[1:])} == {1_000_000}


def test_batch_ns_splits_packets_on_time(tmp_path):
    msgs = list(synth_bytes(2_000, symbols=3, seed=3))
    cap = tmp_path / "b.pcap"
    write_capture(msgs, cap, CaptureOptions(batch_ns=5_000))
    for _t, _m, p in pcap.mold_packets(cap):
        ts = [int.from_bytes(m[5:11], "big") for m in p.messages]
        assert ts[-1] - ts[0] <= 5_000
    convert(cap, tmp_path / "b.itch")
    assert list(read_messages(tmp_path / "b.itch")) == msgs


def test_output_format_and_bad_options(tmp_path):
    assert output_format("a.pcap") == ("pcap", False)
    assert output_format("a.PCAPNG") == ("pcapng", False)
    assert output_format("a.NASDAQ_ITCH50.gz") == ("binaryfile", True)
    assert output_format("a.bin") == ("binaryfile", False)
    for bad in ("a.txt", "a.pcap.gz"):
        with pytest.raises(ValueError):
            output_format(bad)
    with pytest.raises(ValueError, match="session"):
        CaptureOptions(session="ELEVENCHARS")
    with pytest.raises(ValueError, match="max_payload"):
        CaptureOptions(max_payload=10)
    with pytest.raises(ValueError, match="date"):
        CaptureOptions(date="30/12/2019")
    src = tmp_path / "s.itch"
    write_messages(src, synth_bytes(10))
    with pytest.raises(ValueError, match="overwrite"):
        convert(src, src)
    # A failed conversion leaves no output behind.
    with pytest.raises(ValueError):
        convert(tmp_path / "s.itch", tmp_path / "out.pcap", CaptureOptions(max_payload=40))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.itch"]


# -- the command --------------------------------------------------------------------------------------

def test_cli_info_text_and_json(shared_data, capsys):
    snippet = _itch(shared_data, "12302019_SNIPPET.NASDAQ_ITCH50")
    assert main(["feed", "info", str(snippet)]) == 0
    out = capsys.readouterr().out
    assert "messages 1,000" in out and "A 367" in out and "locates 322" in out and "09:30:00." in out
    assert main(["feed", "info", "--json", str(snippet)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["by_type"] == dict(sorted(SNIPPET_TYPES.items())) and d["locates"] == 322


def test_cli_synth_convert_info_round_trip(tmp_path, capsys):
    itch_out, cap, back = tmp_path / "s.NASDAQ_ITCH50", tmp_path / "s.pcapng", tmp_path / "back.itch"
    assert main(["feed", "synth", str(itch_out), "--messages", "3000", "--symbols", "5", "--seed", "9",
                 "--mode", "far,unknown", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["messages"] == 3_000 and d["mode"] == ["far", "unknown"]
    assert itch_out.read_bytes() == b"".join(len(m).to_bytes(2, "big") + m
                                             for m in synth_bytes(3_000, 5, seed=9, mode="far,unknown"))
    assert main(["feed", "convert", str(itch_out), str(cap), "--session", "S1", "--messages-per-packet", "5"]) == 0
    assert "3,000 messages, 600 packets, sequence 1..3,000" in capsys.readouterr().out
    assert main(["feed", "info", "--json", str(cap)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "pcapng" and d["sessions"][0]["session"] == "S1" and d["sessions"][0]["packets"] == 600
    assert main(["feed", "convert", str(cap), str(back)]) == 0
    assert "gaps 0" in capsys.readouterr().out
    assert back.read_bytes() == itch_out.read_bytes()
    # synth straight to a capture
    assert main(["feed", "synth", str(tmp_path / "direct.pcap"), "--messages", "500", "--symbols", "2"]) == 0
    assert "500 messages" in capsys.readouterr().out
    assert feed_info(tmp_path / "direct.pcap").messages == 500


def test_cli_from_lobster(shared_data, tmp_path, capsys):
    d = shared_data / "lobster"
    msg = d / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
    book = d / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
    if not msg.exists():
        pytest.skip("LOBSTER sample not found")
    out = tmp_path / "amzn.itch.gz"
    assert main(["feed", "from-lobster", str(msg), str(out), "--orderbook", str(book)]) == 0
    text = capsys.readouterr().out
    assert "57,515 rows" in text and "0 contradicted" in text
    assert main(["feed", "from-lobster", str(msg), str(tmp_path / "amzn.pcap"), "--symbol", "XYZ", "--locate", "9",
                 "--unknown", "synthesize", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["rows"] == 57_515 and j["synthesized_adds"] == j["unknown_orders"] > 0 and j["packets"] > 0
    info = feed_info(tmp_path / "amzn.pcap")
    assert info.symbols == {9: "XYZ"} and info.messages == 57_515 + 3 + j["synthesized_adds"]


@pytest.mark.parametrize("argv, text", [
    (["feed", "convert", "{missing}", "{tmp}/o.pcap"], "No such file"),
    (["feed", "convert", "{itch}", "{tmp}/o.txt"], "cannot tell the output format"),
    (["feed", "synth", "{tmp}/o.itch", "--mode", "bogus"], "unknown synth mode 'bogus'"),
    (["feed", "synth", "{tmp}/o.itch", "--symbols", "0"], "symbols must be"),
    (["feed", "convert", "{itch}", "{tmp}/o.pcap", "--session", "WAYTOOLONGNAME"], "session"),
    (["feed", "info", "{garbage}"], "garbage"),
])
def test_cli_errors_exit_2_with_a_message(tmp_path, capsys, argv, text):
    itch = tmp_path / "in.itch"
    write_messages(itch, synth_bytes(20))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x05Zabcdnot itch")
    subs = {"missing": str(tmp_path / "nope.itch"), "tmp": str(tmp_path), "itch": str(itch), "garbage": str(garbage)}
    assert main([a.format(**subs) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tickgate: error: ") and text in err
