"""ITCH 5.0 codec and BinaryFILE framing: every type round-trips, real files byte-identical, bad input named."""

from __future__ import annotations

import gzip
import io
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickgate.feed.binaryfile import BinaryFileReader, BinaryFileWriter, read_messages, write_messages
from tickgate.wire import itch
from tickgate.wire.itch import ItchFormatError
from tickgate.wire.layout import ALPHA, CHAR

from .conftest import ITCH_FILES

ALL_CODES = "S R H Y L V W K J h A F E C X D U P Q B I N O".split()


def test_every_type_of_the_spec_is_declared():
    assert sorted(itch.BY_CODE) == sorted(ALL_CODES)
    for t in itch.MESSAGE_TYPES:
        assert t.layout.fields[0].name == "message_type"
        assert t.layout["timestamp"].offset == 5 and t.layout["timestamp"].size == 6


def test_known_offsets_from_the_spec():
    a = itch.LAYOUTS["A"]
    assert (a["order_reference_number"].offset, a["buy_sell_indicator"].offset, a["shares"].offset,
            a["stock"].offset, a["price"].offset) == (11, 19, 20, 24, 32)
    u = itch.LAYOUTS["U"]
    assert (u["new_order_reference_number"].offset, u["shares"].offset, u["price"].offset) == (19, 27, 31)


def _value(field):
    if field.kind == CHAR:
        return st.characters(min_codepoint=32, max_codepoint=126).map(lambda c: c)
    if field.kind == ALPHA:
        return st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=field.size).map(
            lambda s: s.ljust(field.size))
    return st.integers(0, (1 << (8 * field.size)) - 1)


@pytest.mark.parametrize("code", ALL_CODES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_roundtrip_every_type(code, data):
    t = itch.BY_CODE[code]
    values = [data.draw(_value(f)) for f in t.layout.fields[1:]]
    msg = t.cls(*values)
    raw = itch.encode(msg)
    assert len(raw) == t.length and raw[:1] == code.encode()
    back = itch.decode(raw)
    assert back == msg and type(back) is t.cls
    assert itch.encode(back) == raw


def test_add_order_fields():
    msg = itch.AddOrder(stock_locate=7, tracking_number=0, timestamp=34_200_000_000_123,
                        order_reference_number=42, buy_sell_indicator="B", shares=100,
                        stock="AAPL", price=1_234_500)
    raw = msg.encode()
    assert raw[:3] == b"A\x00\x07" and raw[24:32] == b"AAPL    "
    assert itch.decode(raw).price == 1_234_500


def test_decode_errors_name_type_and_length():
    with pytest.raises(ItchFormatError, match="unknown message type"):
        itch.decode(b"z" + bytes(10))
    with pytest.raises(ItchFormatError, match="'D' message is 18 bytes, expected 19"):
        itch.decode(b"D" + bytes(17))
    with pytest.raises(ItchFormatError, match="zero-length"):
        itch.decode(b"")
    with pytest.raises(ValueError, match="does not fit"):
        itch.encode(itch.OrderDelete(0, 0, 1 << 48, 1))
    with pytest.raises(TypeError):
        itch.encode(("not", "a", "message"))


# --- BinaryFILE ------------------------------------------------------------------------------------

def _frame(*msgs: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in msgs)


D1 = itch.OrderDelete(1, 0, 5, 11).encode()
S1 = itch.SystemEvent(0, 0, 1, "O").encode()


def test_reader_raw_and_decoded():
    data = _frame(S1, D1, D1)
    assert list(read_messages(data)) == [S1, D1, D1]
    objs = list(read_messages(data, decode=True))
    assert [o.TYPE for o in objs] == ["S", "D", "D"]


@pytest.mark.parametrize("bad, where, what", [
    (_frame(S1, D1) + b"\x00", "message 3, byte offset 35", "file ends inside a record"),
    (_frame(S1) + b"\x00\x13" + D1[:10], "message 2, byte offset 14", "file ends inside a record"),
    (_frame(S1, b"z" * 5, D1), "message 2, byte offset 14", "unknown message type"),
    (_frame(S1, D1[:-1]), "message 2, byte offset 14", "'D' message is 18 bytes"),
    (_frame(S1) + b"\x00\x00" + _frame(D1), "message 2, byte offset 14", "zero-length"),
])
def test_reader_errors_name_offset_and_number(bad, where, what):
    with pytest.raises(ItchFormatError) as e:
        list(read_messages(bad))
    assert what in str(e.value) and where in str(e.value)


def test_lenient_counts_and_skips():
    data = _frame(S1, b"z" * 5, D1, D1[:-1], D1) + b"\x00\x13\x44"
    r = BinaryFileReader(data, lenient=True)
    assert list(r) == [S1, D1, D1]
    assert r.stats.messages == 3 and r.stats.skipped == 3 and r.stats.truncated_tail == 3
    assert len(r.stats.problems) == 3


def test_reader_crosses_chunk_boundaries(monkeypatch):
    import tickgate.feed.binaryfile as bf
    monkeypatch.setattr(bf, "_CHUNK", 7)
    msgs = [itch.OrderDelete(1, 0, i, i).encode() for i in range(200)] + [S1]
    assert list(read_messages(_frame(*msgs))) == msgs


def test_writer_gzip_roundtrip(tmp_path):
    msgs = [S1, D1, itch.AddOrder(1, 0, 9, 3, "S", 10, "X", 100).encode()]
    path = tmp_path / "f.NASDAQ_ITCH50.gz"
    assert write_messages(path, msgs) == 3
    assert gzip.open(path).read() == _frame(*msgs)
    assert list(read_messages(path)) == msgs
    objs = list(read_messages(path, decode=True))
    with BinaryFileWriter(tmp_path / "o.bin") as w:
        w.write_all(objs)
    assert (tmp_path / "o.bin").read_bytes() == _frame(*msgs)


@pytest.mark.parametrize("path", ITCH_FILES, ids=lambda p: p.name)
def test_real_files_roundtrip_byte_identical(path):
    raw = path.read_bytes()
    objs = list(read_messages(path, decode=True))
    out = io.BytesIO()
    write_messages(out, objs)
    assert out.getvalue() == raw
    counts = Counter(o.TYPE for o in objs)
    if path.name.startswith("12302019"):
        assert counts == Counter(A=367, U=225, F=193, D=167, E=28, X=6, I=4, P=4, Q=4, S=1, C=1)
        assert len({o.stock_locate for o in objs}) == 322
    else:
        assert counts == Counter(R=993, H=3, Y=3, S=1)
