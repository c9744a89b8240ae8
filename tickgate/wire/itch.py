"""NASDAQ TotalView-ITCH 5.0: every message type, declared once as a :class:`Layout`.

Each message type has a layout (byte offsets, from the specification) and a named-tuple class built from
it. ``decode(buf)`` turns one message's bytes into an instance, ``encode(msg)`` gives the bytes back
exactly. Text fields are kept unstripped (``'AAPL    '``) so a decode/encode round trip is byte-identical.
Prices are integers in the specification's units: 4 implied decimals (``PRICE4``, 1/10000 dollar) for
order prices, 8 for the MWCB levels (``PRICE8``).
"""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

from .layout import ALPHA, CHAR, PRICE4, PRICE8, Layout

__all__ = [
    "ItchFormatError", "MessageType", "MESSAGE_TYPES", "BY_CODE", "LAYOUTS",
    "decode", "encode", "message_length", "HEADER",
]


class ItchFormatError(ValueError):
    """Bad ITCH input. ``offset`` is the byte offset in the stream, ``message_number`` the 1-based index
    of the message (both None where unknown)."""

    def __init__(self, problem: str, *, offset: int | None = None, message_number: int | None = None):
        self.problem = problem
        self.offset = offset
        self.message_number = message_number
        where = []
        if message_number is not None:
            where.append(f"message {message_number}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        super().__init__(f"{problem}" + (f" (at {', '.join(where)})" if where else ""))


# The 11-byte header every message starts with.
_HEADER = [("message_type", 1, CHAR), ("stock_locate", 2), ("tracking_number", 2), ("timestamp", 6)]
HEADER = Layout("itch_header", _HEADER)

# (code, class name, fields after the header), in the specification's order.
_SPEC: list[tuple[str, str, list[tuple]]] = [
    ("S", "SystemEvent", [("event_code", 1, CHAR)]),
    ("R", "StockDirectory", [
        ("stock", 8, ALPHA), ("market_category", 1, CHAR), ("financial_status_indicator", 1, CHAR),
        ("round_lot_size", 4), ("round_lots_only", 1, CHAR), ("issue_classification", 1, CHAR),
        ("issue_sub_type", 2, ALPHA), ("authenticity", 1, CHAR), ("short_sale_threshold_indicator", 1, CHAR),
        ("ipo_flag", 1, CHAR), ("luld_reference_price_tier", 1, CHAR), ("etp_flag", 1, CHAR),
        ("etp_leverage_factor", 4), ("inverse_indicator", 1, CHAR)]),
    ("H", "StockTradingAction", [
        ("stock", 8, ALPHA), ("trading_state", 1, CHAR), ("reserved", 1, CHAR), ("reason", 4, ALPHA)]),
    ("Y", "RegShoRestriction", [("stock", 8, ALPHA), ("reg_sho_action", 1, CHAR)]),
    ("L", "MarketParticipantPosition", [
        ("mpid", 4, ALPHA), ("stock", 8, ALPHA), ("primary_market_maker", 1, CHAR),
        ("market_maker_mode", 1, CHAR), ("market_participant_state", 1, CHAR)]),
    ("V", "MwcbDeclineLevel", [("level_1", 8, PRICE8), ("level_2", 8, PRICE8), ("level_3", 8, PRICE8)]),
    ("W", "MwcbStatus", [("breached_level", 1, CHAR)]),
    ("K", "IpoQuotingPeriodUpdate", [
        ("stock", 8, ALPHA), ("ipo_quotation_release_time", 4), ("ipo_quotation_release_qualifier", 1, CHAR),
        ("ipo_price", 4, PRICE4)]),
    ("J", "LuldAuctionCollar", [
        ("stock", 8, ALPHA), ("auction_collar_reference_price", 4, PRICE4),
        ("upper_auction_collar_price", 4, PRICE4), ("lower_auction_collar_price", 4, PRICE4),
        ("auction_collar_extension", 4)]),
    ("h", "OperationalHalt", [("stock", 8, ALPHA), ("market_code", 1, CHAR), ("operational_halt_action", 1, CHAR)]),
    ("A", "AddOrder", [
        ("order_reference_number", 8), ("buy_sell_indicator", 1, CHAR), ("shares", 4), ("stock", 8, ALPHA),
        ("price", 4, PRICE4)]),
    ("F", "AddOrderMpid", [
        ("order_reference_number", 8), ("buy_sell_indicator", 1, CHAR), ("shares", 4), ("stock", 8, ALPHA),
        ("price", 4, PRICE4), ("attribution", 4, ALPHA)]),
    ("E", "OrderExecuted", [("order_reference_number", 8), ("executed_shares", 4), ("match_number", 8)]),
    ("C", "OrderExecutedWithPrice", [
        ("order_reference_number", 8), ("executed_shares", 4), ("match_number", 8), ("printable", 1, CHAR),
        ("execution_price", 4, PRICE4)]),
    ("X", "OrderCancel", [("order_reference_number", 8), ("canceled_shares", 4)]),
    ("D", "OrderDelete", [("order_reference_number", 8)]),
    ("U", "OrderReplace", [
        ("original_order_reference_number", 8), ("new_order_reference_number", 8), ("shares", 4),
        ("price", 4, PRICE4)]),
    ("P", "Trade", [
        ("order_reference_number", 8), ("buy_sell_indicator", 1, CHAR), ("shares", 4), ("stock", 8, ALPHA),
        ("price", 4, PRICE4), ("match_number", 8)]),
    ("Q", "CrossTrade", [
        ("shares", 8), ("stock", 8, ALPHA), ("cross_price", 4, PRICE4), ("match_number", 8),
        ("cross_type", 1, CHAR)]),
    ("B", "BrokenTrade", [("match_number", 8)]),
    ("I", "Noii", [
        ("paired_shares", 8), ("imbalance_shares", 8), ("imbalance_direction", 1, CHAR), ("stock", 8, ALPHA),
        ("far_price", 4, PRICE4), ("near_price", 4, PRICE4), ("current_reference_price", 4, PRICE4),
        ("cross_type", 1, CHAR), ("price_variation_indicator", 1, CHAR)]),
    ("N", "RetailPriceImprovementIndicator", [("stock", 8, ALPHA), ("interest_flag", 1, CHAR)]),
    ("O", "DirectListingCapitalRaise", [
        ("stock", 8, ALPHA), ("open_eligibility_status", 1, CHAR), ("minimum_allowable_price", 4, PRICE4),
        ("maximum_allowable_price", 4, PRICE4), ("near_execution_price", 4, PRICE4),
        ("near_execution_time", 8), ("lower_price_range_collar", 4, PRICE4),
        ("upper_price_range_collar", 4, PRICE4)]),
]

# Lengths from the specification: checked at import so a typo in the table cannot go unnoticed.
_SPEC_LENGTHS = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21, "A": 36,
    "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19, "I": 50, "N": 20,
    "O": 48,
}


class MessageType(NamedTuple):
    code: str          # the one-character type code, e.g. "A"
    name: str          # class name, e.g. "AddOrder"
    layout: Layout     # the whole message, message_type byte included
    cls: type          # named tuple of the fields after message_type

    @property
    def length(self) -> int:
        return self.layout.size


def _build():
    types = []
    for code, name, fields in _SPEC:
        layout = Layout(name, _HEADER + fields)
        if layout.size != _SPEC_LENGTHS[code]:
            raise AssertionError(f"ITCH {code} layout is {layout.size} bytes, spec says {_SPEC_LENGTHS[code]}")
        base = namedtuple(name, layout.names[1:])
        cls = type(name, (base,), {
            "__slots__": (), "TYPE": code, "LAYOUT": layout,
            "__doc__": f"ITCH 5.0 '{code}' message ({layout.size} bytes).",
            "encode": lambda self: encode(self),
        })
        types.append(MessageType(code, name, layout, cls))
    return types


MESSAGE_TYPES: tuple[MessageType, ...] = tuple(_build())
BY_CODE: dict[str, MessageType] = {t.code: t for t in MESSAGE_TYPES}
_BY_BYTE: dict[int, MessageType] = {ord(t.code): t for t in MESSAGE_TYPES}
LAYOUTS: dict[str, Layout] = {t.code: t.layout for t in MESSAGE_TYPES}
globals().update({t.name: t.cls for t in MESSAGE_TYPES})
__all__ += [t.name for t in MESSAGE_TYPES]


def message_length(code: str | int) -> int:
    """The fixed length in bytes of a message type (type byte included)."""
    t = _BY_BYTE.get(code) if isinstance(code, int) else BY_CODE.get(code)
    if t is None:
        raise ItchFormatError(f"unknown ITCH message type {code!r}")
    return t.length


def decode(buf, *, offset: int | None = None, message_number: int | None = None):
    """Decode one whole message (exactly its bytes). ``offset``/``message_number`` only label errors."""
    if len(buf) == 0:
        raise ItchFormatError("zero-length message", offset=offset, message_number=message_number)
    t = _BY_BYTE.get(buf[0])
    if t is None:
        raise ItchFormatError(f"unknown message type {bytes(buf[:1])!r}", offset=offset,
                              message_number=message_number)
    if len(buf) != t.layout.size:
        raise ItchFormatError(f"'{t.code}' message is {len(buf)} bytes, expected {t.layout.size}",
                              offset=offset, message_number=message_number)
    return t.cls._make(t.layout.unpack(buf)[1:])


def encode(msg) -> bytes:
    """The wire bytes of a message object made by :func:`decode` (or by its class)."""
    layout = getattr(type(msg), "LAYOUT", None)
    if layout is None:
        raise TypeError(f"expected an ITCH message object, not {type(msg).__name__}")
    return layout.pack((msg.TYPE, *msg))
