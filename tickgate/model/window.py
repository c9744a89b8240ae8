"""Reference model of the gateware book's depth window (:class:`tickgate.fpga.order_book.MarketBook`).

The chip keeps, per symbol and side, only the best ``depth`` (K) price levels exactly; the shares of the
orders it does not track are summed in an overflow, with a bound B: every untracked order's price is at or
worse than B, every tracked level strictly better. :class:`WindowedBook` applies the same rules in plain
Python so a test can predict every row the chip emits, the ``out_of_window`` flag included, rather than
only checking the rows it does not flag:

* a delete part (execute, cancel, delete, a replace's original) takes its shares off the tracked level of
  its price (removing it at 0) or, if none, off the overflow (B is reset when the overflow reaches 0);
* an add part (add, a replace's new order, after its delete part) adds to the tracked level of its price;
  else it is tracked when the side has no overflow or its price is strictly better than B, and there is
  room or it is strictly better than the K-th level (which is then pushed out: its shares to the
  overflow, its price to B); else its shares go to the overflow (and B to its price when the overflow was
  empty or the price is better than B);
* a side reads (0, 0) when it tracks no level; if its overflow is non-zero its best is unknown and the
  symbol's rows carry ``out_of_window``;
* a row is emitted for a message when its symbol's (bid, ask, out_of_window) as the chip shows them change.

Which orders are live, and so every level op, comes from the full-depth :class:`~.book.OrderBook` (same
semantics for unknown references, duplicates, invalid adds, overfills). Not modelled: the order table's
capacity (table full: rows flagged ``degraded``), symbol slots, locate mismatches; a test compares the
symbols the chip never flags ``degraded``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .book import OrderBook

__all__ = ["Window", "WindowedBook", "WindowRow"]

_REF = struct.Struct(">Q")          # the reference of E/C/X/D/U, at byte 11
_U_NEW = struct.Struct(">Q")        # U's new reference, at byte 19


@dataclass
class Window:
    """One side of one symbol as the chip holds it."""
    buy: bool
    depth: int
    levels: list = field(default_factory=list)     # [price, size], best first
    ovf: int = 0
    bound: int = 0

    def _better(self, a: int, b: int) -> bool:
        return a > b if self.buy else a < b

    def _find(self, price: int):
        for i, lv in enumerate(self.levels):
            if lv[0] == price:
                return i
        return None

    def delete(self, price: int, shares: int) -> None:
        i = self._find(price)
        if i is not None:
            self.levels[i][1] -= shares
            if self.levels[i][1] == 0:
                del self.levels[i]
        else:
            self.ovf -= shares
            if self.ovf == 0:
                self.bound = 0

    def add(self, price: int, shares: int) -> None:
        i = self._find(price)
        if i is not None:
            self.levels[i][1] += shares
            return
        lv = self.levels
        window_open = self.ovf == 0 or self._better(price, self.bound)
        room = len(lv) < self.depth or self._better(price, lv[-1][0])
        if window_open and room:
            pos = next((j for j, (p, _) in enumerate(lv) if self._better(price, p)), len(lv))
            lv.insert(pos, [price, shares])
            if len(lv) > self.depth:
                p, s = lv.pop()
                self.ovf += s
                self.bound = p
        else:
            if window_open:
                self.bound = price
            self.ovf += shares

    @property
    def shown(self) -> tuple[int, int]:
        return tuple(self.levels[0]) if self.levels else (0, 0)

    @property
    def unknown(self) -> bool:
        return not self.levels and self.ovf != 0


class WindowRow(tuple):
    """(seq, locate, bid_px, bid_sz, ask_px, ask_sz, out_of_window)."""


class WindowedBook:
    """Apply ITCH messages (raw bytes); :meth:`apply` returns the row the chip emits for the message, or
    None. ``seq`` is the message's 1-based index."""

    def __init__(self, depth: int):
        if not isinstance(depth, int) or depth < 1:
            raise TypeError(f"depth must be a positive integer, not {depth!r}")
        self.depth = depth
        self.book = OrderBook()
        self.sides: dict[tuple[int, bool], Window] = {}
        self.seq = 0

    def side(self, locate: int, buy: bool) -> Window:
        w = self.sides.get((locate, buy))
        if w is None:
            w = self.sides[(locate, buy)] = Window(buy, self.depth)
        return w

    def view(self, locate: int) -> tuple:
        b, a = self.side(locate, True), self.side(locate, False)
        return (*b.shown, *a.shown, int(b.unknown or a.unknown))

    def apply(self, raw: bytes):
        self.seq += 1
        code = raw[:1]
        book = self.book
        before = after = None
        new_ref = None
        if code in b"ECXDU":
            ref = _REF.unpack_from(raw, 11)[0]
            before = book.order(ref)
            if code == b"U":
                new_ref = _U_NEW.unpack_from(raw, 19)[0]
                had_new = book.order(new_ref) is not None
        elif code in b"AF":
            ref = _REF.unpack_from(raw, 11)[0]
            had = book.order(ref) is not None
        book.apply(raw)
        loc = None
        ops = []                                   # (buy, delete?, price, shares)
        if code in b"AF":
            o = book.order(ref)
            if o is not None and not had:
                loc = o.locate
                ops.append((o.side == "B", False, o.price, o.shares))
        elif before is not None:
            loc = before.locate
            after = book.order(ref) if code != b"U" else None
            taken = before.shares - (after.shares if after is not None else 0)
            ops.append((before.side == "B", True, before.price, taken))
            if code == b"U" and not had_new:
                o = book.order(new_ref)
                if o is not None:
                    ops.append((o.side == "B", False, o.price, o.shares))
        if loc is None:
            return None
        old = self.view(loc)
        for buy, is_del, price, shares in ops:
            w = self.side(loc, buy)
            if is_del:
                w.delete(price, shares)
            else:
                w.add(price, shares)
        new = self.view(loc)
        return WindowRow((self.seq, loc, *new)) if new != old else None
