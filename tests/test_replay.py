"""``tickgate replay`` end to end: every recorded file, the built-in feed, --out, --symbols, --depth,
errors on corrupt input (clear message, exit code 2), and the feed source behind it."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tickgate.cli import main
from tickgate.feed.binaryfile import write_messages
from tickgate.feed.source import BINARYFILE, PCAP, FeedSource, detect_format, iter_messages
from tickgate.model.replay import csv_header, format_row

from .conftest import ITCH_FILES, PCAP_FILES

HEADER = "seq,locate,bid_px,bid_sz,ask_px,ask_sz"

# Rows per recorded file (all others: 0). Cross-checked against itch-book in test_book_crosscheck.py.
EXPECTED_ROWS = {
    "itch/12302019_SNIPPET.NASDAQ_ITCH50": 384,
    "bx-totalview-itch50-live/AddOrderNoMpidAttributionMessage.pcap": 1,
    "bx-totalview-itch50-payloads/AddOrderMpidAttributionMessage.pcap": 5,
    "bx-totalview-itch50-payloads/AddOrderNoMpidAttributionMessage.pcap": 5,
    "nasdaq-totalview-itch50-live/AddOrderNoMpidAttributionMessage.pcap": 1,
    "nasdaq-totalview-itch50-live/Multiple.Packets.pcap": 2,
    "nasdaq-totalview-itch50-payloads/AddOrderNoMPID.pcap": 5,
    "nasdaq-totalview-itch50-payloads/AddOrderWithMPID.pcap": 5,
}


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def replay(capsys, *argv) -> tuple[int, list[str], str]:
    rc = main(["replay", "--no-progress", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err


# ---------------------------------------------------------------- recorded feeds

@pytest.mark.parametrize("path", ITCH_FILES + PCAP_FILES, ids=_key)
def test_every_recorded_file(path, shared_data, capsys):
    rc, lines, err = replay(capsys, path)
    assert rc == 0
    assert lines[0] == HEADER
    assert len(lines) - 1 == EXPECTED_ROWS.get(_key(path), 0)
    assert all(re.fullmatch(r"\d+(,\d+){5}", line) for line in lines[1:])
    seqs = [int(line.split(",")[0]) for line in lines[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert "messages" in err and "rows" in err and "messages/s" in err
    if path.suffix == ".pcap":
        assert "MoldUDP64:" in err


def test_recorded_capture_message_counts(shared_data):
    """SOURCES.md: 49 messages in the live captures, 71 and 56 in the payload ones (zeroed MoldUDP64
    header: unsequenced, delivered in capture order)."""
    pytest.importorskip("tickgate.wire.pcap")
    base = shared_data / "pcap"
    live = sum(len(list(iter_messages(p))) for d in ("nasdaq-totalview-itch50-live", "bx-totalview-itch50-live")
               for p in sorted((base / d).glob("*.pcap")))
    assert live == 49
    for d, n in (("nasdaq-totalview-itch50-payloads", 71), ("bx-totalview-itch50-payloads", 56)):
        total = 0
        for p in sorted((base / d).glob("*.pcap")):
            src = FeedSource(p)
            msgs = list(src)
            total += len(msgs)
            assert src.stats.unsequenced == src.stats.packets > 0
            assert src.stats.unsequenced_messages == len(msgs)
        assert total == n


def test_symbols_by_locate_on_the_snippet(shared_data, capsys):
    path = shared_data / "itch" / "12302019_SNIPPET.NASDAQ_ITCH50"
    _, all_lines, _ = replay(capsys, path)
    rc, lines, err = replay(capsys, path, "--symbols", "8511,7258", "--symbols", "6148")
    assert rc == 0
    want = [line for line in all_lines[1:] if line.split(",")[1] in ("8511", "7258", "6148")]
    assert lines[1:] == want and len(want) == 12
    rc, lines, err = replay(capsys, path, "--symbols", "AAPL")        # no R messages in the snippet
    assert rc == 0 and lines == [HEADER]
    assert "AAPL not in the feed's stock directory" in err


def test_gzip_is_detected_by_content(shared_data, tmp_path, capsys):
    src = shared_data / "itch" / "12302019_SNIPPET.NASDAQ_ITCH50"
    gz = tmp_path / "snippet.bin"                # no .gz in the name
    gz.write_bytes(gzip.compress(src.read_bytes()))
    assert detect_format(gz) == (BINARYFILE, True)
    _, plain, _ = replay(capsys, src)
    rc, lines, _ = replay(capsys, gz)
    assert rc == 0 and lines == plain


def test_pcap_detected_by_content(shared_data, tmp_path):
    pcap = next(p for p in PCAP_FILES if p.name == "Multiple.Packets.pcap")
    renamed = tmp_path / "capture.itch"
    renamed.write_bytes(pcap.read_bytes())
    assert detect_format(renamed) == (PCAP, False)


# ---------------------------------------------------------------- the built-in feed

def test_default_feed_no_argument(capsys):
    rc, lines, err = replay(capsys)
    assert rc == 0 and lines[0] == HEADER
    assert len(lines) - 1 == 6158
    assert "built-in synthetic feed" in err and "20,000 messages" in err
    rc, again, _ = replay(capsys)
    assert again == lines                       # deterministic


def test_out_file_and_symbols_by_name(tmp_path, capsys):
    out = tmp_path / "bbo.csv"
    rc, lines, err = replay(capsys, "--out", out, "--symbols", "saab,SAAH")
    assert rc == 0 and lines == []
    text = out.read_text()
    rows = text.splitlines()
    assert rows[0] == HEADER and len(rows) > 100
    assert {r.split(",")[1] for r in rows[1:]} == {"2", "8"}
    assert not (tmp_path / "bbo.csv.partial").exists()
    rc, by_locate, _ = replay(capsys, "--symbols", "2,8")
    assert by_locate == rows


def test_depth_extends_the_contract(capsys):
    _, bbo, _ = replay(capsys, "--symbols", "3")
    rc, lines, _ = replay(capsys, "--depth", "3", "--symbols", "3")
    assert rc == 0
    assert lines[0] == csv_header(3).strip() == HEADER + (
        ",bid_px_2,bid_sz_2,ask_px_2,ask_sz_2,bid_px_3,bid_sz_3,ask_px_3,ask_sz_3")
    assert len(lines[0].split(",")) == 6 + 8
    # every BBO row's prefix is among the depth rows (depth rows add level-2/3 changes)
    prefixes = [",".join(line.split(",")[:6]) for line in lines[1:]]
    assert set(bbo[1:]) <= set(prefixes) and len(lines) > len(bbo)
    _, depth1, _ = replay(capsys, "--depth", "1", "--symbols", "3")
    assert depth1 == bbo


def test_format_row_is_the_contract():
    assert format_row(7, 13, (1000, 5, 0, 0)) == "7,13,1000,5,0,0\n"
    assert csv_header() == HEADER + "\n"


# ---------------------------------------------------------------- errors

def _snippet_bytes(shared_data) -> bytes:
    return (shared_data / "itch" / "12302019_SNIPPET.NASDAQ_ITCH50").read_bytes()


@pytest.mark.parametrize("case", ["truncated", "unknown_type", "bad_length", "garbage", "bad_gzip"])
def test_corrupt_input_exit_code_2(case, tmp_path, capsys, shared_data):
    good = _snippet_bytes(shared_data)
    data = {
        "truncated": good[:1000],
        "unknown_type": good[:500] + b"\x00\x05Z1234" + good[500:],
        "bad_length": b"\x00\x05A1234",
        "garbage": b"\xff" * 300,
        "bad_gzip": b"\x1f\x8b" + b"\x00" * 40,
    }[case]
    path = tmp_path / "bad.itch"
    path.write_bytes(data)
    out = tmp_path / "out.csv"
    rc, _, err = replay(capsys, path, "--out", out)
    assert rc == 2
    assert err.startswith("tickgate: error: ") and str(path) in err
    assert not out.exists() and not (tmp_path / "out.csv.partial").exists()


def test_corrupt_pcap_exit_code_2(tmp_path, capsys, shared_data):
    pytest.importorskip("tickgate.wire.pcap")
    pcap = next(p for p in PCAP_FILES if p.name == "Multiple.Packets.pcap")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(pcap.read_bytes()[:-20])
    rc, _, err = replay(capsys, bad)
    # (scapy also logs a warning of its own on stderr)
    assert rc == 2 and f"tickgate: error: {bad}: record 1 holds" in err


def test_lenient_skips_and_counts(tmp_path, capsys, shared_data):
    path = tmp_path / "trunc.itch"
    path.write_bytes(_snippet_bytes(shared_data)[:1000])
    rc, lines, err = replay(capsys, path, "--lenient")
    assert rc == 0 and lines[0] == HEADER and len(lines) > 1
    assert "skipped 1 malformed messages" in err


def test_missing_file_and_bad_arguments(tmp_path, capsys):
    rc, _, err = replay(capsys, tmp_path / "nope.itch")
    assert rc == 2 and "no such file" in err
    with pytest.raises(SystemExit) as e:
        main(["replay", "--depth", "0"])
    assert e.value.code == 2
    rc, _, err = replay(capsys, "--symbols", "TOOLONGNAME")
    assert rc == 2 and "longer than an ITCH symbol" in err


def test_empty_feed(tmp_path, capsys):
    path = tmp_path / "empty.itch"
    write_messages(path, [])
    rc, lines, err = replay(capsys, path)
    assert rc == 0 and lines == [HEADER] and "0 messages" in err


def test_console_script_exit_code(tmp_path):
    bad = tmp_path / "bad.itch"
    bad.write_bytes(b"\x00\x05A1234")
    proc = subprocess.run([sys.executable, "-m", "tickgate.cli", "replay", str(bad)], capture_output=True, text=True)
    if "No module named tickgate.cli.__main__" in proc.stderr:
        proc = subprocess.run([sys.executable, "-c", "import sys; from tickgate.cli import main; sys.exit(main())",
                               "replay", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "tickgate: error:" in proc.stderr and proc.stdout.strip() == HEADER
