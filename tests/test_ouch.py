"""OUCH 5.0: fixed layouts against the specification, byte-exact round trips, appendages, errors."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickgate.wire import ouch
from tickgate.wire.layout import ALPHA, CHAR, PRICE4
from tickgate.wire.ouch import OuchFormatError

ALL = [*ouch.INBOUND.values(), *ouch.OUTBOUND.values()]
SPEC_SIZES = {"EnterOrder": 47, "ReplaceOrder": 40, "CancelOrder": 11, "SystemEvent": 10, "OrderAccepted": 64,
              "OrderReplaced": 68, "OrderCanceled": 20, "OrderExecuted": 36, "OrderRejected": 31}


def enter(**kw) -> ouch.EnterOrder:
    args = dict(user_ref_num=7, side="B", quantity=100, symbol="AAPL", price=1_502_500, time_in_force="0",
                display="Y", capacity="A", intermarket_sweep_eligibility="N", cross_type="N", cl_ord_id="ORD1")
    return ouch.EnterOrder(**{**args, **kw})


def test_fixed_sizes_and_offsets_match_the_spec():
    assert {name: layout.size for name, layout in ouch.LAYOUTS.items()} == SPEC_SIZES
    eo = ouch.LAYOUTS["EnterOrder"]
    assert [(f.name, f.offset) for f in eo][:7] == [
        ("message_type", 0), ("user_ref_num", 1), ("side", 5), ("quantity", 6), ("symbol", 10), ("price", 18),
        ("time_in_force", 26)]
    assert (eo["cl_ord_id"].offset, eo["appendage_length"].offset) == (31, 45)
    acc = ouch.LAYOUTS["OrderAccepted"]
    assert (acc["timestamp"].offset, acc["order_reference_number"].offset, acc["order_state"].offset) == (1, 36, 47)
    assert ouch.LAYOUTS["OrderReplaced"]["orig_user_ref_num"].offset == 9
    assert ouch.LAYOUTS["OrderExecuted"]["match_number"].offset == 26
    assert ouch.LAYOUTS["OrderRejected"]["reason"].size == 2
    assert all(layout["price"].size == 8 for layout in ouch.LAYOUTS.values() if "price" in layout.names)
    assert "appendage_length" not in ouch.LAYOUTS["SystemEvent"].names
    assert ouch.INBOUND["U"] is ouch.ReplaceOrder and ouch.OUTBOUND["U"] is ouch.OrderReplaced


def test_enter_order_bytes_match_independent_encoding():
    msg = enter(price=-25, options={2: b"FIRM", 12: b"Y"})
    want = (b"O" + struct.pack(">IcI8sq", 7, b"B", 100, b"AAPL    ", -25) + b"0YANN" + b"ORD1".ljust(14)
            + struct.pack(">H", 9) + b"\x05\x02FIRM" + b"\x02\x0cY")
    assert msg.encode() == want
    assert ouch.decode_inbound(want) == msg
    assert msg.symbol == "AAPL    " and msg.price_dollars == Decimal("-0.0025")


def test_outbound_bytes_match_independent_encoding():
    exe = ouch.OrderExecuted(timestamp=34_200_000_000_123, user_ref_num=9, quantity=300, price=1_000_000,
                             liquidity_flag="A", match_number=2**63 + 5)
    assert exe.encode() == b"E" + struct.pack(">QIIqcQH", 34_200_000_000_123, 9, 300, 1_000_000, b"A", 2**63 + 5, 0)
    rej = ouch.OrderRejected(timestamp=1, user_ref_num=2, reason=0x1D, cl_ord_id="X")
    assert rej.encode()[13:15] == b"\x00\x1d" and ouch.REJECT_REASONS[rej.reason] == "invalid_price"
    ev = ouch.SystemEvent(timestamp=3, event_code="S")
    assert ev.encode() == b"S" + struct.pack(">Q", 3) + b"S" and not hasattr(ev, "options")
    can = ouch.OrderCanceled(timestamp=4, user_ref_num=5, quantity=6, reason="U")
    assert ouch.CANCEL_REASONS[can.reason] == "user_requested" and len(can.encode()) == 20


text = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
options = st.dictionaries(st.integers(0, 255), st.binary(max_size=20), max_size=5)


def field_strategy(f):
    if f.kind == CHAR:
        return st.text(text, min_size=1, max_size=1)
    if f.kind == ALPHA:
        return st.text(text, max_size=f.size)
    if f.kind == PRICE4:
        return st.integers(-(2**63), 2**63 - 1)
    return st.integers(0, 2 ** (8 * f.size) - 1)


def message_strategy(cls):
    kw = {f.name: field_strategy(f) for f in cls._FIELDS}
    if cls.HAS_APPENDAGE:
        kw["options"] = options
    return st.builds(cls, **kw)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=100)
@given(data=st.data())
def test_roundtrip_objects(cls, data):
    msg = data.draw(message_strategy(cls))
    buf = msg.encode()
    assert len(buf) == cls.LAYOUT.size + (len(ouch.encode_appendage(msg.options)) if cls.HAS_APPENDAGE else 0)
    back = (ouch.decode_inbound if cls in ouch.INBOUND.values() else ouch.decode_outbound)(buf)
    assert type(back) is cls and back == msg and back.encode() == buf


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=100)
@given(data=st.data())
def test_roundtrip_arbitrary_wire_bytes(cls, data):
    """Any fixed part (any byte in text fields, any price bit pattern) plus a valid appendage re-encodes
    byte for byte."""
    fixed = bytearray(data.draw(st.binary(min_size=cls.LAYOUT.size, max_size=cls.LAYOUT.size)))
    fixed[0] = ord(cls.TYPE)
    tail = b""
    if cls.HAS_APPENDAGE:
        tail = ouch.encode_appendage(data.draw(options))
        fixed[-2:] = struct.pack(">H", len(tail))
    buf = bytes(fixed) + tail
    assert cls.decode(buf).encode() == buf


def test_price_is_signed_on_the_wire():
    assert ouch.price_to_wire(-1) == 2**64 - 1 and ouch.price_from_wire(2**64 - 1) == -1
    assert ouch.price_from_wire(ouch.MARKET_PRICE) == 0x7FFFFFFF
    buf = enter(price=-1).encode()
    assert buf[18:26] == b"\xff" * 8 and ouch.EnterOrder.decode(buf).price == -1
    with pytest.raises(ValueError, match="signed 8-byte"):
        enter(price=2**63)
    with pytest.raises(TypeError, match="price must be an int"):
        enter(price=1.5)


def test_appendage_parse_and_encode_exact():
    raw = b"\x05\x02FIRM" + b"\x02\x04\x01" + b"\x01\x10"  # firm, customer type, empty trade-now
    opts = ouch.parse_appendage(raw)
    assert opts == {2: b"FIRM", 4: b"\x01", 16: b""} and list(opts) == [2, 4, 16]
    assert ouch.encode_appendage(opts) == raw
    assert ouch.OPTION_TAGS[2] == "firm"


@pytest.mark.parametrize("raw, words, offset", [
    (b"\x05\x02FIRM\x00", "length 0", 6),
    (b"\x05\x02FIR", "runs past", 0),
    (b"\x02\x04\x01\x02\x04\x02", "tag 4 repeated", 4),
])
def test_appendage_errors(raw, words, offset):
    with pytest.raises(OuchFormatError, match=words) as info:
        ouch.parse_appendage(raw)
    assert info.value.offset == offset


def test_decode_errors_name_problem_and_offset():
    good = enter(options={2: b"FIRM"}).encode()
    cases = [
        (b"", "empty inbound message", 0),
        (b"Z" + good[1:], "unknown inbound message type 'Z'", 0),
        (good[:30], "truncated EnterOrder: 30 bytes, the fixed part is 47", 30),
        (good[:-1], "appendage length 6 runs past", 45),
        (good + b"\0", "1 trailing bytes after EnterOrder", 53),
        (good[:45] + b"\x00\x02\x00\x02", "appendage option with length 0", 47),
    ]
    for buf, words, offset in cases:
        with pytest.raises(OuchFormatError, match=words) as info:
            ouch.decode_inbound(buf)
        assert info.value.offset == offset and f"offset {offset}" in str(info.value)
    with pytest.raises(OuchFormatError, match="unknown outbound message type 'O'"):
        ouch.decode_outbound(good)
    with pytest.raises(OuchFormatError, match="expected 'A'"):
        ouch.OrderAccepted.decode(good)
    with pytest.raises(TypeError):
        ouch.decode_outbound("A")
    # System Event has no appendage: anything after its 10 bytes is trailing.
    with pytest.raises(OuchFormatError, match="trailing"):
        ouch.decode_outbound(ouch.SystemEvent(timestamp=1, event_code="E").encode() + b"\0\0")


def test_construction_errors():
    with pytest.raises(ValueError, match="symbol 'TOOLONGSYM' is longer than 8"):
        enter(symbol="TOOLONGSYM")
    with pytest.raises(ValueError, match="side must be one character"):
        enter(side="BS")
    with pytest.raises(ValueError, match="quantity -1 does not fit 4 bytes"):
        enter(quantity=-1)
    with pytest.raises(TypeError, match="user_ref_num must be an int"):
        enter(user_ref_num="7")
    with pytest.raises(TypeError, match="cl_ord_id must be a str"):
        enter(cl_ord_id=b"abc")
    with pytest.raises(ValueError, match="option tag"):
        enter(options={256: b""})
    with pytest.raises(ValueError, match="at most 254"):
        enter(options={1: b"x" * 255})
    with pytest.raises(TypeError, match="option 1 value must be bytes"):
        enter(options={1: "x"})
    with pytest.raises(TypeError, match="dict"):
        enter(options=[(1, b"x")])
    with pytest.raises(TypeError):
        ouch.CancelOrder(user_ref_num=1)  # missing quantity
