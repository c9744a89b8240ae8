"""NASDAQ OUCH 5.0 order entry: the core order lifecycle, each message's fixed part declared once as a
:class:`Layout`, plus the optional appendage.

Inbound (firm -> NASDAQ): Enter Order ``O``, Replace Order ``U``, Cancel Order ``X``.
Outbound (NASDAQ -> firm): System Event ``S``, Order Accepted ``A``, Order Replaced ``U``, Order Canceled
``C``, Order Executed ``E``, Order Rejected ``J``. The type byte ``U`` means Replace inbound and Replaced
outbound, so decoding needs the direction: :func:`decode_inbound` / :func:`decode_outbound`.

Wire rules (OUCH 5.0): big-endian binary; UserRefNum u32 (day-unique, increasing per port); quantities
u32; Price 8 bytes with 4 implied decimals; outbound Timestamp u64 nanoseconds since midnight; alpha
fields left-justified and space-padded. Every message here except System Event ends its fixed part with a
u16 Appendage Length followed by that many bytes of TagValue options, each ``[length u8][tag u8][value]``
where ``length`` counts the tag byte and the value.

Prices: OUCH 5.0's Price is a signed 8-byte integer. :class:`Layout` has only unsigned integers, so the
layouts declare price as an unsigned u64 (kind ``PRICE4``) and this module converts two's complement at
the edge: message objects hold the signed value in 1/10000 dollars.

Text fields are kept unstripped and padded on construction (``symbol='AAPL'`` becomes ``'AAPL    '``), so
a constructed message equals its decoded bytes and encode/decode round trips are byte-identical.

Transport: on the wire each message rides in a SoupBinTCP packet (u16 length, packet type ``'U'``
unsequenced data inbound, ``'S'`` sequenced data outbound, plus login/heartbeat packets). SoupBinTCP is
out of scope here; these codecs take and give one OUCH message's bytes.
"""

from __future__ import annotations

from dataclasses import field, make_dataclass
from decimal import Decimal

from .layout import ALPHA, CHAR, PRICE4, UINT, Layout

__all__ = [
    "OuchFormatError", "PRICE_SCALE", "MARKET_PRICE", "LAYOUTS", "INBOUND", "OUTBOUND",
    "EnterOrder", "ReplaceOrder", "CancelOrder",
    "SystemEvent", "OrderAccepted", "OrderReplaced", "OrderCanceled", "OrderExecuted", "OrderRejected",
    "OPTION_TAGS", "REJECT_REASONS", "CANCEL_REASONS",
    "price_to_wire", "price_from_wire", "parse_appendage", "encode_appendage",
    "decode_inbound", "decode_outbound",
]

PRICE_SCALE = 10_000          # 4 implied decimals
MARKET_PRICE = 0x7FFFFFFF     # the price that marks a market order in a cross ($214,748.3647)
_U64 = 1 << 64


class OuchFormatError(ValueError):
    """Malformed OUCH bytes; ``offset`` is the byte offset in the message."""

    def __init__(self, problem: str, offset: int):
        self.problem = problem
        self.offset = offset
        super().__init__(f"{problem} (at byte offset {offset})")


def price_to_wire(price: int) -> int:
    """Signed price (1/10000 dollars) -> the u64 the Layout packs (two's complement)."""
    if not isinstance(price, int) or isinstance(price, bool):
        raise TypeError(f"price must be an int in 1/{PRICE_SCALE} dollars, not {type(price).__name__}")
    if not -(1 << 63) <= price < 1 << 63:
        raise ValueError(f"price {price} does not fit a signed 8-byte integer")
    return price % _U64


def price_from_wire(raw: int) -> int:
    """The u64 from the Layout -> signed price in 1/10000 dollars."""
    return raw - _U64 if raw >= 1 << 63 else raw


_TS = ("timestamp", 8)
_APPENDAGE = ("appendage_length", 2)
_INBOUND_SPEC = [
    ("O", "EnterOrder", 47, [
        ("user_ref_num", 4), ("side", 1, CHAR), ("quantity", 4), ("symbol", 8, ALPHA), ("price", 8, PRICE4),
        ("time_in_force", 1, CHAR), ("display", 1, CHAR), ("capacity", 1, CHAR),
        ("intermarket_sweep_eligibility", 1, CHAR), ("cross_type", 1, CHAR), ("cl_ord_id", 14, ALPHA),
        _APPENDAGE]),
    ("U", "ReplaceOrder", 40, [
        ("orig_user_ref_num", 4), ("user_ref_num", 4), ("quantity", 4), ("price", 8, PRICE4),
        ("time_in_force", 1, CHAR), ("display", 1, CHAR), ("intermarket_sweep_eligibility", 1, CHAR),
        ("cl_ord_id", 14, ALPHA), _APPENDAGE]),
    # quantity: the order's intended remaining size; 0 cancels it entirely.
    ("X", "CancelOrder", 11, [("user_ref_num", 4), ("quantity", 4), _APPENDAGE]),
]
_ACCEPTED_BODY = [
    ("side", 1, CHAR), ("quantity", 4), ("symbol", 8, ALPHA), ("price", 8, PRICE4), ("time_in_force", 1, CHAR),
    ("display", 1, CHAR), ("order_reference_number", 8), ("capacity", 1, CHAR),
    ("intermarket_sweep_eligibility", 1, CHAR), ("cross_type", 1, CHAR), ("order_state", 1, CHAR),
    ("cl_ord_id", 14, ALPHA), _APPENDAGE]
_OUTBOUND_SPEC = [
    ("S", "SystemEvent", 10, [_TS, ("event_code", 1, CHAR)]),
    ("A", "OrderAccepted", 64, [_TS, ("user_ref_num", 4), *_ACCEPTED_BODY]),
    ("U", "OrderReplaced", 68, [_TS, ("orig_user_ref_num", 4), ("user_ref_num", 4), *_ACCEPTED_BODY]),
    # quantity: shares taken off the order by this cancel (a decrement, not what remains).
    ("C", "OrderCanceled", 20, [_TS, ("user_ref_num", 4), ("quantity", 4), ("reason", 1, CHAR), _APPENDAGE]),
    ("E", "OrderExecuted", 36, [
        _TS, ("user_ref_num", 4), ("quantity", 4), ("price", 8, PRICE4), ("liquidity_flag", 1, CHAR),
        ("match_number", 8), _APPENDAGE]),
    ("J", "OrderRejected", 31, [_TS, ("user_ref_num", 4), ("reason", 2), ("cl_ord_id", 14, ALPHA), _APPENDAGE]),
]

# Appendix A option tags (values are kept as raw bytes).
OPTION_TAGS = {
    1: "secondary_ord_ref_num", 2: "firm", 3: "min_qty", 4: "customer_type", 5: "max_floor", 6: "price_type",
    7: "peg_offset", 9: "discretion_price", 10: "discretion_price_type", 11: "discretion_peg_offset",
    12: "post_only", 13: "random_reserves", 14: "route", 15: "expire_time", 16: "trade_now",
    17: "handle_inst", 18: "bbo_weight_indicator", 22: "display_quantity", 23: "display_price",
    24: "group_id", 25: "shares_located", 26: "locate_broker", 27: "side", 28: "user_ref_idx",
}

# Appendix C: Order Rejected reason codes (u16).
REJECT_REASONS = {
    0x01: "quote_unavailable", 0x02: "destination_closed", 0x03: "invalid_display", 0x04: "invalid_max_floor",
    0x05: "invalid_peg_type", 0x06: "fat_finger", 0x07: "halted", 0x08: "iso_not_allowed",
    0x09: "invalid_side", 0x0A: "processing_error", 0x0B: "cancel_pending", 0x0C: "firm_not_authorized",
    0x0D: "invalid_min_quantity", 0x0E: "no_closing_reference_price", 0x0F: "other",
    0x10: "cancel_not_allowed", 0x11: "pegging_not_allowed", 0x12: "crossed_market",
    0x13: "invalid_quantity", 0x14: "invalid_cross_order", 0x15: "replace_not_allowed",
    0x16: "routing_not_allowed", 0x17: "invalid_symbol", 0x18: "test", 0x19: "late_loc_too_aggressive",
    0x1A: "retail_not_allowed", 0x1B: "invalid_midpoint_post_only_price", 0x1C: "invalid_destination",
    0x1D: "invalid_price", 0x1E: "shares_exceed_threshold", 0x1F: "exceeds_maximum_notional_value",
    0x20: "risk_aggregate_exposure_exceeded", 0x21: "risk_market_impact", 0x22: "risk_restricted_stock",
    0x23: "risk_short_sell_restricted", 0x24: "risk_iso_not_allowed", 0x25: "risk_exceeds_adv_limit",
    0x26: "risk_fat_finger", 0x27: "risk_locate_required", 0x28: "risk_symbol_message_rate",
    0x29: "risk_port_message_rate", 0x2A: "risk_duplicate_message_rate", 0x2B: "risk_short_sell_not_allowed",
    0x2C: "risk_market_order_not_allowed", 0x2D: "risk_pre_market_not_allowed",
    0x2E: "risk_post_market_not_allowed", 0x2F: "risk_short_sell_exempt_not_allowed",
    0x30: "risk_single_order_notional_exceeded", 0x31: "risk_max_quantity_exceeded",
    0x32: "reg_sho_state_not_available", 0x33: "risk_ipo_market_buy_not_allowed",
}

# Appendix B: Order Canceled reasons.
CANCEL_REASONS = {
    "D": "regulatory_restriction", "E": "closed", "F": "post_only_nms", "G": "post_only_contra",
    "H": "halted", "I": "immediate_or_cancel", "K": "market_collars", "Q": "self_match_prevention",
    "S": "supervisory", "T": "timeout", "U": "user_requested", "X": "open_protection", "Z": "system_cancel",
}


def parse_appendage(buf, offset: int = 0) -> dict[int, bytes]:
    """TagValue options -> ``{tag: value bytes}`` in wire order. Raises :class:`OuchFormatError` on a
    zero-length element, an element running past the end, or a repeated tag (which a dict could not give
    back exactly). ``offset`` only shifts the offsets reported in errors."""
    buf = bytes(buf)
    options: dict[int, bytes] = {}
    pos = 0
    while pos < len(buf):
        length = buf[pos]
        if length == 0:
            raise OuchFormatError("appendage option with length 0 (no tag byte)", offset + pos)
        if pos + 1 + length > len(buf):
            raise OuchFormatError(f"appendage option of length {length} runs past the {len(buf)}-byte "
                                  f"appendage", offset + pos)
        tag = buf[pos + 1]
        if tag in options:
            raise OuchFormatError(f"appendage option tag {tag} repeated", offset + pos + 1)
        options[tag] = buf[pos + 2:pos + 1 + length]
        pos += 1 + length
    return options


def encode_appendage(options: dict[int, bytes]) -> bytes:
    """``{tag: value bytes}`` -> TagValue bytes, in the dict's order."""
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict of tag -> bytes, not {type(options).__name__}")
    parts = []
    for tag, value in options.items():
        if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag <= 255:
            raise ValueError(f"option tag must be an int in 0..255, not {tag!r}")
        if isinstance(value, str) or not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"option {tag} value must be bytes, not {type(value).__name__}")
        value = bytes(value)
        if len(value) > 254:
            raise ValueError(f"option {tag} value is {len(value)} bytes; at most 254 fit a TagValue")
        parts.append(bytes((len(value) + 1, tag)) + value)
    out = b"".join(parts)
    if len(out) > 0xFFFF:
        raise ValueError(f"appendage is {len(out)} bytes; its length field holds at most 65535")
    return out


class _Message:
    """Shared codec; subclasses are generated from a Layout by :func:`_message_class`."""

    TYPE: str
    LAYOUT: Layout
    HAS_APPENDAGE: bool
    _FIELDS: tuple  # the layout's fields minus message_type and appendage_length

    def _normalise(self) -> None:
        for f in self._FIELDS:
            value = getattr(self, f.name)
            if f.is_text:
                if not isinstance(value, str):
                    raise TypeError(f"{type(self).__name__}.{f.name} must be a str, not {type(value).__name__}")
                if f.kind == CHAR and len(value) != 1:
                    raise ValueError(f"{type(self).__name__}.{f.name} must be one character, not {value!r}")
                if len(value) > f.size:
                    raise ValueError(f"{type(self).__name__}.{f.name} {value!r} is longer than {f.size}")
                try:
                    value.encode("latin-1")
                except UnicodeEncodeError:
                    raise ValueError(f"{type(self).__name__}.{f.name} {value!r} is not 8-bit text") from None
                object.__setattr__(self, f.name, value.ljust(f.size))
            elif f.kind == PRICE4:
                price_to_wire(value)
            else:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise TypeError(f"{type(self).__name__}.{f.name} must be an int, not {type(value).__name__}")
                if not 0 <= value < 1 << (8 * f.size):
                    raise ValueError(f"{type(self).__name__}.{f.name} {value} does not fit {f.size} bytes")
        if self.HAS_APPENDAGE:
            encode_appendage(self.options)  # validates
            object.__setattr__(self, "options", dict(self.options))

    def encode(self) -> bytes:
        values = [self.TYPE]
        for f in self._FIELDS:
            value = getattr(self, f.name)
            values.append(price_to_wire(value) if f.kind == PRICE4 else value)
        if not self.HAS_APPENDAGE:
            return self.LAYOUT.pack(values)
        appendage = encode_appendage(self.options)
        return self.LAYOUT.pack(values + [len(appendage)]) + appendage

    @classmethod
    def decode(cls, buf):
        if isinstance(buf, str) or not isinstance(buf, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes-like, not {type(buf).__name__}")
        buf = bytes(buf)
        name, size = cls.__name__, cls.LAYOUT.size
        if not buf:
            raise OuchFormatError(f"empty {name} message", 0)
        if buf[:1] != cls.TYPE.encode():
            raise OuchFormatError(f"{name} starts with type {buf[:1]!r}, expected {cls.TYPE!r}", 0)
        if len(buf) < size:
            raise OuchFormatError(f"truncated {name}: {len(buf)} bytes, the fixed part is {size}", len(buf))
        values = cls.LAYOUT.unpack(buf)
        kwargs = {}
        for f, value in zip(cls._FIELDS, values[1:]):
            kwargs[f.name] = price_from_wire(value) if f.kind == PRICE4 else value
        if cls.HAS_APPENDAGE:
            length = values[-1]
            if size + length > len(buf):
                raise OuchFormatError(f"{name} appendage length {length} runs past the {len(buf)}-byte message",
                                      cls.LAYOUT["appendage_length"].offset)
            kwargs["options"] = parse_appendage(buf[size:size + length], size)
            size += length
        if len(buf) != size:
            raise OuchFormatError(f"{len(buf) - size} trailing bytes after {name}", size)
        return cls(**kwargs)



def _price_dollars(self) -> Decimal:
    """The price as a Decimal number of dollars."""
    return Decimal(self.price) / PRICE_SCALE


_PY_TYPE = {UINT: int, PRICE4: int, ALPHA: str, CHAR: str}


def _message_class(code: str, name: str, spec_size: int, body: list[tuple], direction: str):
    layout = Layout(f"ouch_{direction}_{name}", [("message_type", 1, CHAR), *body])
    if layout.size != spec_size:
        raise AssertionError(f"OUCH {name} fixed part is {layout.size} bytes, the spec says {spec_size}")
    has_appendage = layout.fields[-1].name == "appendage_length"
    own = tuple(f for f in layout.fields[1:] if f.name != "appendage_length")
    cls_fields = [(f.name, _PY_TYPE[f.kind]) for f in own]
    if has_appendage:
        cls_fields.append(("options", dict, field(default_factory=dict)))
    namespace = {"TYPE": code, "LAYOUT": layout, "HAS_APPENDAGE": has_appendage, "_FIELDS": own,
                 "__post_init__": _Message._normalise, "__module__": __name__}
    if "price" in layout.names:
        namespace["price_dollars"] = property(_price_dollars)
    cls = make_dataclass(name, cls_fields, bases=(_Message,), frozen=True, namespace=namespace)
    cls.__doc__ = (f"OUCH 5.0 {direction} '{code}' ({layout.size}-byte fixed part"
                   + (" + appendage). ``options`` maps appendage tags to raw value bytes." if has_appendage
                      else ").") + f" Fields: {', '.join(f.name for f in own)}.")
    return cls


INBOUND: dict[str, type] = {}
OUTBOUND: dict[str, type] = {}
LAYOUTS: dict[str, Layout] = {}
for _code, _name, _size, _body in _INBOUND_SPEC:
    INBOUND[_code] = globals()[_name] = _message_class(_code, _name, _size, _body, "inbound")
    LAYOUTS[_name] = INBOUND[_code].LAYOUT
for _code, _name, _size, _body in _OUTBOUND_SPEC:
    OUTBOUND[_code] = globals()[_name] = _message_class(_code, _name, _size, _body, "outbound")
    LAYOUTS[_name] = OUTBOUND[_code].LAYOUT
del _code, _name, _size, _body


def _dispatch(table: dict[str, type], buf, direction: str):
    if isinstance(buf, str) or not isinstance(buf, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes-like, not {type(buf).__name__}")
    if not len(buf):
        raise OuchFormatError(f"empty {direction} message", 0)
    code = chr(buf[0])
    cls = table.get(code)
    if cls is None:
        raise OuchFormatError(f"unknown {direction} message type {code!r} (known: {''.join(table)})", 0)
    return cls.decode(buf)


def decode_inbound(buf):
    """Decode one inbound message (Enter ``O``, Replace ``U``, Cancel ``X``)."""
    return _dispatch(INBOUND, buf, "inbound")


def decode_outbound(buf):
    """Decode one outbound message (``S``, ``A``, ``U``, ``C``, ``E``, ``J``)."""
    return _dispatch(OUTBOUND, buf, "outbound")
