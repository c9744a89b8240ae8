"""Records passed between the market-data blocks, declared once.

``ItchMessage``: one whole ITCH message as the splitter delivers it (wire byte i at bits 8i..8i+7), with
its type already classified (:func:`classify` is the Python reference).
``BookOp``: what the decoder tells the order table / price levels to do.
``TopOfBook``: what the book emits when a message changes a symbol's best bid or best ask; the same
fields, in the same order, as a row of ``tickgate replay``'s CSV (``seq,locate,bid_px,bid_sz,ask_px,ask_sz``).
"""

# No `from __future__ import annotations`: Amaranth reads these annotations as shapes.
from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from ..wire import itch

__all__ = ["MAX_ITCH_LEN", "TYPE_CODES", "ItchMessage", "classify", "BookOpKind", "BookOp", "BookFlags",
           "TopOfBook"]

# Longest ITCH 5.0 message (NOII 'I', 50 bytes). Longer length fields are malformed input.
MAX_ITCH_LEN = 50

#: ITCH 5.0 message type codes in the specification's order: bit n of ``ItchMessage.type_ok`` is
#: ``TYPE_CODES[n]`` (and so is the decoder's ``counts[n]``).
TYPE_CODES = tuple(t.code for t in itch.MESSAGE_TYPES)


class ItchMessage(data.Struct):
    bytes: data.ArrayLayout(8, MAX_ITCH_LEN)
    length: unsigned(6)
    seq: unsigned(32)          # 1-based index of the message in the feed (after MoldUDP64 dedupe)
    # The type, classified by the splitter as it registers the message (so a decoder reads flip-flops,
    # not a type-byte compare): bit n set when byte 0 is TYPE_CODES[n] and `length` is that type's
    # specification length; `type_known` when byte 0 is any of TYPE_CODES (whatever the length).
    type_ok: unsigned(len(TYPE_CODES))
    type_known: unsigned(1)


def classify(message: bytes) -> tuple[int, int]:
    """``(type_ok, type_known)`` of ``message`` (its bytes, ``length`` = ``len(message)``), as the splitter
    sets them: the Python reference for :class:`ItchMessage`'s two classification fields."""
    if not message:
        return 0, 0
    code = chr(message[0])
    if code not in TYPE_CODES:
        return 0, 0
    n = TYPE_CODES.index(code)
    return (1 << n if len(message) == itch.LAYOUTS[code].size else 0), 1


class BookOpKind(enum.Enum, shape=4):
    OTHER = 0            # decoded and counted, does not touch the book (P, Q, I, L, ...)
    ADD = 1              # A, F
    EXECUTE = 2          # E, C: reduce the resting order by `shares`
    CANCEL = 3           # X: reduce by `shares`
    DELETE = 4           # D
    REPLACE = 5          # U: delete `ref`, add `new_ref` (same locate and side) at price/shares
    TRADING_STATE = 6    # H: `code` = trading state
    REG_SHO = 7          # Y: `code` = Reg SHO action
    SYSTEM_EVENT = 8     # S: `code` = event code
    DIRECTORY = 9        # R


class BookOp(data.Struct):
    kind: BookOpKind
    seq: unsigned(32)
    locate: unsigned(16)
    ref: unsigned(64)           # bytes 11..18 of every message: the order reference where there is one
    new_ref: unsigned(64)       # bytes 19..26 of every message: U's new order reference
    buy: unsigned(1)
    shares: unsigned(32)
    price: unsigned(32)
    code: unsigned(8)


class BookFlags(data.Struct):
    stale: unsigned(1)          # a MoldUDP64 gap was seen: the book may be missing messages
    degraded: unsigned(1)       # an order of this symbol was dropped (table full), the symbol got no book
                                # slot, or an op named an order of another locate: rows may be wrong
    out_of_window: unsigned(1)  # depth overflow: a side's tracked levels are empty while untracked
                                # orders remain, so its best price is unknown (the row shows 0, 0)


class TopOfBook(data.Struct):
    seq: unsigned(32)
    locate: unsigned(16)
    bid_px: unsigned(32)
    bid_sz: unsigned(32)
    ask_px: unsigned(32)
    ask_sz: unsigned(32)
    flags: BookFlags
