"""The golden reference order book: ITCH 5.0 order flow -> per-symbol price levels, BBO and top-N.

This is the model the gateware book is held to, message by message. Semantics (ITCH 5.0 specification):

* ``A``/``F`` add an order (ref -> locate, side, price, shares) and its shares to the price level.
* ``E`` and ``C`` execute shares of a resting order: the order and *its own* price level shrink; the
  execution price of a ``C`` is a trade print and does not touch the book. An order reaching 0 shares
  leaves the book.
* ``X`` cancels shares of an order (leaves the book at 0); ``D`` deletes the order.
* ``U`` replaces: the original order leaves the book entirely and the new reference is added with the new
  price and shares, on the original's side and locate.
* ``H`` (trading state), ``Y`` (Reg SHO), ``S`` (system event) and ``R`` (directory: symbol names) are
  recorded; they never change the levels.

Robustness policy (each case is counted in :class:`BookStats`, none raises):

* E/C/X/D/U naming a reference that is not live (e.g. the order was added before the capture began) is
  ignored and counted per type in ``unknown_refs``. For ``U`` the new order is then not added either: its
  side is only known from the original.
* Executing or canceling more shares than remain clamps the order at 0 (it leaves the book) and counts
  ``overfills``.
* Adding a reference that is already live (also the add half of a ``U``) is ignored, first order wins, and
  counted in ``duplicate_adds``. Order references are unique for a whole ITCH day, so a duplicate is
  replayed or corrupt input; first-wins keeps a retransmitted add from resurrecting shares already
  executed, and is what an order table in hardware does (an insert into an occupied slot fails).
* An add (or the add half of a replace) with 0 shares or price 0 is not a valid resting order (a level of
  size 0, or a price the CSV contract uses for "empty side"); it is ignored and counted in
  ``invalid_adds``.

Hot path: :meth:`OrderBook.apply` takes one message's raw bytes and unpacks the book messages with
``struct`` formats derived from :data:`tickgate.wire.itch.LAYOUTS` (offsets are never written here).
Internally both sides are min-keyed: an ask level is keyed by its price, a bid level by ``-price``, so
"best" is the smallest key on either side. Each side holds {key: size} plus its keys in a sorted list
(``bisect``; touched only when a level appears or empties), so the best is ``keys[0]`` and top-N a slice.
Measured against "track the best, rescan the dict when the best level empties": the same messages/s within
noise on synthetic normal and deep feeds; kept for its bounded worst case (no O(levels) rescan when a deep
book's best level keeps emptying) and its top-N.
"""

from __future__ import annotations

from bisect import bisect_left, insort
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from ..wire import itch
from ..wire.itch import ItchFormatError, LAYOUTS

__all__ = ["OrderBook", "BookStats", "Bbo", "SymbolState", "Order", "fields_struct"]

# Key of an empty side's best: larger than any key (prices are u32, bid keys are negative).
_EMPTY = 1 << 40


def fields_struct(code: str, names: tuple[str, ...]) -> struct.Struct:
    """A big-endian ``struct.Struct`` that unpacks exactly ``names`` (in offset order) from a whole
    message of type ``code``, skipping the bytes in between. Offsets and sizes come from the layout."""
    layout = LAYOUTS[code]
    fmt, pos = ">", 0
    for name in names:
        f = layout[name]
        if f.offset < pos:
            raise ValueError(f"{code}.{name}: fields must be listed in offset order")
        if f.offset > pos:
            fmt += f"{f.offset - pos}x"
        if f.is_text:
            fmt += "c" if f.size == 1 else f"{f.size}s"
        else:
            fmt += {1: "B", 2: "H", 4: "I", 8: "Q"}[f.size]
        pos = f.offset + f.size
    return struct.Struct(fmt)


_ADD_FIELDS = ("stock_locate", "order_reference_number", "buy_sell_indicator", "shares", "price")
_S_A = fields_struct("A", _ADD_FIELDS)
_S_F = fields_struct("F", _ADD_FIELDS)
_S_E = fields_struct("E", ("order_reference_number", "executed_shares"))
_S_C = fields_struct("C", ("order_reference_number", "executed_shares"))
_S_X = fields_struct("X", ("order_reference_number", "canceled_shares"))
_S_D = fields_struct("D", ("order_reference_number",))
_S_U = fields_struct("U", ("original_order_reference_number", "new_order_reference_number", "shares", "price"))
_S_LOCATE = fields_struct("S", ("stock_locate",))   # the header is common to every type
_S_REF = _S_D                                      # E, C, X, D, U all carry the ref at the same offset
assert all(LAYOUTS[c]["order_reference_number"].offset == LAYOUTS["D"]["order_reference_number"].offset
           for c in "ECX") and LAYOUTS["U"]["original_order_reference_number"].offset == \
    LAYOUTS["D"]["order_reference_number"].offset

_LENGTH = {ord(t.code): t.length for t in itch.MESSAGE_TYPES}
_BOOK_CODES = frozenset(b"AFECXDU")


class Bbo(NamedTuple):
    bid_px: int
    bid_sz: int
    ask_px: int
    ask_sz: int


EMPTY_BBO = Bbo(0, 0, 0, 0)
_new_bbo = tuple.__new__      # builds a Bbo without the NamedTuple constructor's overhead (hot in replay)


class Order(NamedTuple):
    locate: int
    side: str          # "B" or "S"
    price: int
    shares: int


@dataclass
class SymbolState:
    """What the non-book messages say about one stock locate."""
    symbol: str = ""                 # from R, stripped ("" until an R is seen)
    trading_state: str = ""          # H: "H" halted, "P" paused, "Q" quotation only, "T" trading
    trading_reason: str = ""         # H: reason code, stripped
    reg_sho: str = ""                # Y: "0" no restriction, "1" activated, "2" continued
    round_lot_size: int = 0          # R
    market_category: str = ""        # R


@dataclass
class BookStats:
    messages: int = 0
    by_type: dict[str, int] = field(default_factory=dict)        # messages per type code
    unknown_refs: dict[str, int] = field(default_factory=dict)   # E/C/X/D/U on refs not live, per type
    overfills: int = 0               # E/C/X for more shares than remain (clamped to 0)
    duplicate_adds: int = 0          # A/F/U adding a ref that is already live (ignored)
    invalid_adds: int = 0            # A/F/U adding 0 shares or at price 0 (ignored)
    unknown_types: int = 0           # messages with a type byte ITCH 5.0 does not define (ignored)
    bbo_changes: int = 0             # messages that changed a symbol's BBO

    @property
    def anomalies(self) -> int:
        return self.overfills + self.duplicate_adds + self.invalid_adds + self.unknown_types

    @property
    def unknown_ref_total(self) -> int:
        return sum(self.unknown_refs.values())


class _Side:
    """One side of one symbol. ``levels`` maps key -> aggregate shares (key = price for asks, -price for
    bids); ``best`` is the smallest key, or ``_EMPTY``."""
    __slots__ = ("levels", "keys", "best", "buy", "locate")

    def __init__(self, locate: int, buy: bool):
        self.levels: dict[int, int] = {}
        self.keys: list[int] = []          # the level keys, sorted: keys[0] is the best
        self.best = _EMPTY
        self.buy = buy
        self.locate = locate


class _Book:
    __slots__ = ("bid", "ask")

    def __init__(self, locate: int):
        self.bid = _Side(locate, True)
        self.ask = _Side(locate, False)


class OrderBook:
    """Full-depth book for every stock locate of a feed.

    ``apply(raw)`` / ``apply_message(obj)`` return True when the message changed the best bid or best ask
    (price or size) of its symbol; ``changed_locate`` then names that symbol.
    """

    def __init__(self) -> None:
        # ref -> [side, key, shares]; a list so executions update it in place.
        self._orders: dict[int, list] = {}
        self._books: dict[int, _Book] = {}
        self.symbols: dict[int, SymbolState] = {}
        self.system_events: list[str] = []
        self.stats = BookStats()
        self.changed_locate: int = -1
        self._by_type = self.stats.by_type
        self._unknown = self.stats.unknown_refs

    # ------------------------------------------------------------------ hot path

    def apply(self, raw) -> bool:
        """Apply one whole ITCH message given as bytes. Framing is the reader's job; a message shorter
        than its type's layout raises :class:`ItchFormatError`."""
        try:
            c = raw[0]
        except IndexError:
            raise ItchFormatError("zero-length message") from None
        self.stats.messages += 1
        bt = self._by_type
        ch = chr(c)
        bt[ch] = bt.get(ch, 0) + 1
        try:
            if c == 65:    # A
                loc, ref, side, shares, price = _S_A.unpack_from(raw)
                return self._add(loc, ref, side == b"B", shares, price)
            if c == 68:    # D
                return self._reduce(_S_D.unpack_from(raw)[0], -1, "D")
            if c == 85:    # U
                return self._replace(*_S_U.unpack_from(raw))
            if c == 69:    # E
                ref, n = _S_E.unpack_from(raw)
                return self._reduce(ref, n, "E")
            if c == 88:    # X
                ref, n = _S_X.unpack_from(raw)
                return self._reduce(ref, n, "X")
            if c == 70:    # F
                loc, ref, side, shares, price = _S_F.unpack_from(raw)
                return self._add(loc, ref, side == b"B", shares, price)
            if c == 67:    # C
                ref, n = _S_C.unpack_from(raw)
                return self._reduce(ref, n, "C")
        except struct.error:
            raise ItchFormatError(f"'{ch}' message is {len(raw)} bytes, expected {_LENGTH[c]}") from None
        if c not in _LENGTH:
            self.stats.unknown_types += 1
            return False
        if c in b"SRHY":
            self._state(itch.decode(raw))
        return False

    def _add(self, loc: int, ref: int, buy: bool, shares: int, price: int) -> bool:
        orders = self._orders
        if ref in orders:
            self.stats.duplicate_adds += 1
            return False
        if not shares or not price:
            self.stats.invalid_adds += 1
            return False
        book = self._books.get(loc)
        if book is None:
            book = self._books[loc] = _Book(loc)
        if buy:
            side = book.bid
            key = -price
        else:
            side = book.ask
            key = price
        lv = side.levels
        have = lv.get(key)
        if have is None:
            lv[key] = shares
            insort(side.keys, key)
        else:
            lv[key] = have + shares
        orders[ref] = [side, key, shares]
        if key <= side.best:
            side.best = key
            self.changed_locate = loc
            self.stats.bbo_changes += 1
            return True
        return False

    def _reduce(self, ref: int, n: int, code: str) -> bool:
        """Take ``n`` shares off order ``ref`` (``n < 0``: all of them, a delete)."""
        o = self._orders.get(ref)
        if o is None:
            u = self._unknown
            u[code] = u.get(code, 0) + 1
            return False
        side, key, rem = o
        if n < 0 or n >= rem:
            if n > rem:
                self.stats.overfills += 1
            n = rem
            del self._orders[ref]
        else:
            if not n:
                return False
            o[2] = rem - n
        lv = side.levels
        left = lv[key] - n
        if left:
            lv[key] = left
            if key != side.best:
                return False
        else:
            del lv[key]
            keys = side.keys
            if key != side.best:
                del keys[bisect_left(keys, key)]
                return False
            del keys[0]
            side.best = keys[0] if keys else _EMPTY
        self.changed_locate = side.locate
        self.stats.bbo_changes += 1
        return True

    def _replace(self, old: int, new: int, shares: int, price: int) -> bool:
        orders = self._orders
        o = orders.pop(old, None)
        if o is None:
            u = self._unknown
            u["U"] = u.get("U", 0) + 1
            return False
        side, key, rem = o
        lv = side.levels
        best = side.best
        before = lv[best]                 # the removed order is live, so its side has a best level
        keys = side.keys
        left = lv[key] - rem
        if left:
            lv[key] = left
        else:
            del lv[key]
            del keys[bisect_left(keys, key)]
            if key == best:
                side.best = keys[0] if keys else _EMPTY
        if new in orders:
            self.stats.duplicate_adds += 1
        elif not shares or not price:
            self.stats.invalid_adds += 1
        else:
            nkey = -price if side.buy else price
            have = lv.get(nkey)
            if have is None:
                lv[nkey] = shares
                insort(keys, nkey)
            else:
                lv[nkey] = have + shares
            orders[new] = [side, nkey, shares]
            if nkey < side.best:
                side.best = nkey
        nb = side.best
        if nb == best and lv.get(nb) == before:
            return False
        self.changed_locate = side.locate
        self.stats.bbo_changes += 1
        return True

    # ------------------------------------------------------------------ decoded messages

    def apply_message(self, msg) -> bool:
        """Apply one decoded message object (from :func:`tickgate.wire.itch.decode`)."""
        code = msg.TYPE
        st = self.stats
        st.messages += 1
        st.by_type[code] = st.by_type.get(code, 0) + 1
        if code in ("A", "F"):
            return self._add(msg.stock_locate, msg.order_reference_number, msg.buy_sell_indicator == "B",
                             msg.shares, msg.price)
        if code in ("E", "C"):
            return self._reduce(msg.order_reference_number, msg.executed_shares, code)
        if code == "X":
            return self._reduce(msg.order_reference_number, msg.canceled_shares, code)
        if code == "D":
            return self._reduce(msg.order_reference_number, -1, code)
        if code == "U":
            return self._replace(msg.original_order_reference_number, msg.new_order_reference_number,
                                 msg.shares, msg.price)
        self._state(msg)
        return False

    def _state(self, msg) -> None:
        code = msg.TYPE
        if code == "S":
            self.system_events.append(msg.event_code)
            return
        if code not in ("R", "H", "Y"):
            return
        s = self.symbols.get(msg.stock_locate)
        if s is None:
            s = self.symbols[msg.stock_locate] = SymbolState()
        if code == "R":
            s.symbol = msg.stock.rstrip()
            s.round_lot_size = msg.round_lot_size
            s.market_category = msg.market_category
        elif code == "H":
            s.symbol = s.symbol or msg.stock.rstrip()
            s.trading_state = msg.trading_state
            s.trading_reason = msg.reason.rstrip()
        else:
            s.symbol = s.symbol or msg.stock.rstrip()
            s.reg_sho = msg.reg_sho_action

    # ------------------------------------------------------------------ queries

    def bbo(self, locate: int) -> Bbo:
        """(bid_px, bid_sz, ask_px, ask_sz); 0, 0 for an empty side."""
        book = self._books.get(locate)
        if book is None:
            return EMPTY_BBO
        b, a = book.bid, book.ask
        bp, bs = (-b.best, b.levels[b.best]) if b.best != _EMPTY else (0, 0)
        ap, as_ = (a.best, a.levels[a.best]) if a.best != _EMPTY else (0, 0)
        return _new_bbo(Bbo, (bp, bs, ap, as_))

    def top(self, locate: int, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``depth`` levels of each side as (price, size): bids high to low, asks low to high."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        book = self._books.get(locate)
        if book is None:
            return [], []
        bl, al = book.bid.levels, book.ask.levels
        return [(-k, bl[k]) for k in book.bid.keys[:depth]], [(k, al[k]) for k in book.ask.keys[:depth]]

    def levels(self, locate: int, side: str) -> dict[int, int]:
        """Every level of one side as {price: size} (a copy). ``side`` is "B" or "S"."""
        book = self._books.get(locate)
        if book is None:
            return {}
        if side == "B":
            return {-k: v for k, v in book.bid.levels.items()}
        if side == "S":
            return dict(book.ask.levels)
        raise ValueError(f"side must be 'B' or 'S', not {side!r}")

    def order(self, ref: int) -> Order | None:
        """The live order ``ref`` (shares remaining), or None."""
        o = self._orders.get(ref)
        if o is None:
            return None
        side, key, shares = o
        return Order(side.locate, "B" if side.buy else "S", -key if side.buy else key, shares)

    def orders(self):
        """Every live order as (ref, :class:`Order`)."""
        for ref in self._orders:
            yield ref, self.order(ref)

    def __len__(self) -> int:
        """Number of live orders."""
        return len(self._orders)

    def locates(self) -> list[int]:
        """Locates that have had orders, sorted."""
        return sorted(self._books)

    def locate_of(self, raw) -> int | None:
        """The locate whose book ``raw`` would touch, judged before applying it: the header's for A/F,
        the live order's for E/C/X/D/U (None when the ref is unknown or the message is not book flow)."""
        c = raw[0]
        if c == 65 or c == 70:
            return _S_LOCATE.unpack_from(raw)[0]
        if c in _BOOK_CODES:
            o = self._orders.get(_S_REF.unpack_from(raw)[0])
            return None if o is None else o[0].locate
        return None

    def symbol(self, locate: int) -> str:
        s = self.symbols.get(locate)
        return s.symbol if s else ""

    def locate_by_symbol(self, symbol: str) -> int | None:
        want = symbol.strip().upper()
        for loc, s in self.symbols.items():
            if s.symbol == want:
                return loc
        return None
