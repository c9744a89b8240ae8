"""LOBSTER message files to ITCH: the real AMZN sample, the type mapping, unknown orders, the oracle."""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest

from tickgate.feed.binaryfile import BinaryFileReader
from tickgate.feed.lobster import (
    ITCH_TYPE, LobsterFormatError, LobsterStats, convert_lobster, explained_rows, lobster_to_itch, read_lobster,
)

SAMPLE = "AMZN_2012-06-21_34200000_57600000_{}_1.csv"


@pytest.fixture(scope="module")
def lobster(shared_data):
    d = shared_data / "lobster"
    msg, book = d / SAMPLE.format("message"), d / SAMPLE.format("orderbook")
    if not msg.exists():
        pytest.skip(f"{msg} not found")
    return msg, book


def _csv_types(path) -> Counter:
    with open(path, newline="") as f:
        return Counter(int(r[1]) for r in csv.reader(f))


def _book_check(msgs):
    """(unknown references, over-executions) seen by a minimal book."""
    live, unknown, over = {}, 0, 0
    for m in msgs:
        if m.TYPE == "A":
            live[m.order_reference_number] = m.shares
        elif m.TYPE in "EX":
            n = m.executed_shares if m.TYPE == "E" else m.canceled_shares
            ref = m.order_reference_number
            if ref not in live:
                unknown += 1
                continue
            if n > live[ref]:
                over += 1
            live[ref] -= n
            if live[ref] <= 0:
                del live[ref]
        elif m.TYPE == "D":
            if live.pop(m.order_reference_number, None) is None:
                unknown += 1
    return unknown, over


def test_real_sample_counts_and_times(lobster):
    msg_csv, _ = lobster
    rows = list(read_lobster(msg_csv))
    assert len(rows) == 57_515
    assert rows[0].time_ns == 34_200_017_459_617 and rows[0].type == 5
    types = _csv_types(msg_csv)
    st = LobsterStats()
    msgs = list(lobster_to_itch(msg_csv, stats=st))
    got = Counter(m.TYPE for m in msgs)
    # S O, R, H T preamble, then one ITCH message a row, by the documented mapping.
    want = Counter({ITCH_TYPE[t]: n for t, n in types.items()})
    want.update({"S": 1, "R": 1, "H": 1})
    assert got == want
    assert st.rows == 57_515 and st.messages_by_type == dict(got)
    assert [m.TYPE for m in msgs[:3]] == ["S", "R", "H"] and msgs[1].stock == "AMZN    "
    assert all(m.stock_locate == 1 for m in msgs[1:])
    ts = [m.timestamp for m in msgs]
    assert ts == sorted(ts)
    assert ts[3:] == [r.time_ns for r in rows]
    assert 34_200 * 10**9 <= ts[3] and ts[-1] < 57_600 * 10**9
    # The caution: level-1 files name orders never added. Kept, a book sees every one of them.
    assert st.unknown_refs > 0
    assert _book_check(msgs) == (st.unknown_refs, 0)


def test_synthesized_adds_explain_every_reference(lobster):
    msg_csv, _ = lobster
    st = LobsterStats()
    msgs = list(lobster_to_itch(msg_csv, symbol="amzn", locate=7, unknown="synthesize", stats=st))
    assert st.synthesized_adds == st.unknown_orders > 0
    counts = Counter(m.TYPE for m in msgs)
    assert counts["A"] == _csv_types(msg_csv)[1] + st.synthesized_adds
    assert _book_check(msgs) == (0, 0)
    assert {m.stock_locate for m in msgs[1:]} == {7}


@pytest.mark.parametrize("name", ["amzn.NASDAQ_ITCH50", "amzn.itch.gz"])
def test_round_trip_binaryfile(lobster, tmp_path, name):
    msg_csv, _ = lobster
    out = tmp_path / name
    st = convert_lobster(msg_csv, out)
    back = list(BinaryFileReader(out, decode=True))
    assert back == list(lobster_to_itch(msg_csv))
    assert len(back) == st.rows + 3


def test_orderbook_partial_oracle(lobster):
    msg_csv, book_csv = lobster
    r = explained_rows(msg_csv, book_csv)
    assert r.rows == 57_515 and len(r.flags) == r.rows
    assert r.contradicted == 0, f"row {r.first_contradiction} contradicts its message"
    assert r.explained + r.undetermined == r.rows
    assert r.explained == 43_561
    strict = explained_rows(msg_csv, book_csv, mode="absolute", keep_flags=False)
    assert 0 < strict.explained < 1_000 and strict.flags == []


def _lines(text: str):
    return io.StringIO(text.strip() + "\n")


def test_mapping_of_every_type():
    text = """
36000.5,1,10,100,1000000,1
36000.5,2,10,30,1000000,1
36000.6,4,10,20,1000000,1
36000.7,5,0,50,1000100,-1
36000.8,3,10,50,1000000,1
36001,7,0,0,-1,-1
36301,7,0,0,0,-1
36601,7,0,0,1,-1
50000.000000001,6,0,5000,1000200,1
"""
    msgs = list(lobster_to_itch(_lines(text), "TEST", 3))
    assert [m.TYPE for m in msgs] == ["S", "R", "H", "A", "X", "E", "P", "D", "H", "H", "H", "Q"]
    a, x, e, p, d = msgs[3:8]
    assert (a.order_reference_number, a.buy_sell_indicator, a.shares, a.price) == (10, "B", 100, 1_000_000)
    assert a.timestamp == 36_000_500_000_000 and a.stock == "TEST    "
    assert x.canceled_shares == 30 and e.executed_shares == 20 and e.match_number == 1
    assert (p.buy_sell_indicator, p.shares, p.price, p.match_number) == ("S", 50, 1_000_100, 2)
    assert d.order_reference_number == 10
    assert [m.trading_state for m in msgs[8:11]] == ["H", "Q", "T"]
    q = msgs[11]
    assert (q.shares, q.cross_price, q.match_number, q.cross_type, q.timestamp) == \
        (5000, 1_000_200, 3, "C", 50_000_000_000_001)
    assert msgs[0].timestamp < msgs[1].timestamp < msgs[2].timestamp <= a.timestamp
    assert [m.TYPE for m in lobster_to_itch(_lines(text), preamble=False)][:2] == ["A", "X"]


@pytest.mark.parametrize("line, problem", [
    ("36000.5,9,1,1,1,1", "unknown event type 9"),
    ("36000.5,1,1,1,1", "expected 6 columns"),
    ("36000.5,1,1,1,1,0", "direction must be 1 or -1"),
    ("abc,1,1,1,1,1", "bad time"),
    ("36000.5,7,0,0,5,-1", "halt price"),
    ("36000.1234567891,1,1,1,1,1", "at most 9 decimals"),
])
def test_bad_rows_name_the_line(line, problem):
    with pytest.raises(LobsterFormatError, match=f"line 2: .*{problem}"):
        list(read_lobster(_lines("36000,1,1,1,100,1\n" + line)))


def test_bad_options():
    with pytest.raises(ValueError, match="symbol"):
        lobster_to_itch(_lines("1,1,1,1,1,1"), symbol="TOOLONGNAME")
    with pytest.raises(ValueError, match="pass a path"):
        lobster_to_itch(_lines("1,1,1,1,1,1"), unknown="synthesize")
    with pytest.raises(ValueError, match="unknown must be"):
        lobster_to_itch(_lines("1,1,1,1,1,1"), unknown="drop")
