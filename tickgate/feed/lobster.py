"""LOBSTER message files to ITCH 5.0, and the orderbook file as a partial oracle.

A LOBSTER message file is a CSV of ``time, type, order id, size, price, direction``: time in seconds after
midnight (up to nanosecond decimals), price in 1/10000 dollar (ITCH's own unit), direction +1 buy / -1
sell. The event types map to ITCH as follows:

=====  =============================  ==========================================================
type   LOBSTER                        ITCH
=====  =============================  ==========================================================
1      new limit order                ``A`` add order
2      partial cancel                 ``X`` order cancel (``canceled_shares`` = size)
3      delete                         ``D`` order delete
4      execution, visible order       ``E`` order executed (``executed_shares`` = size)
5      execution, hidden order        ``P`` trade (non-displayed; side = the hidden order's side)
6      cross                          ``Q`` cross trade (``cross_type`` 'O' before 12:00, else 'C')
7      trading halt indicator         ``H`` trading action: price -1 halt ``'H'``, 0 quotation only
                                      ``'Q'``, 1 resume ``'T'``
=====  =============================  ==========================================================

Times convert exactly (the decimal string, not a float) to nanoseconds since midnight. ``E``, ``P`` and
``Q`` get match numbers 1, 2, 3, ... in file order. A preamble ``S 'O'``, ``R`` (the symbol at its
locate) and ``H 'T'`` comes first, stamped just before the first event.

Unknown references. A level-N file only records events that touched the top N levels, so later events
name orders whose add is not in the file. ``unknown="keep"`` (the default) emits those ``E/X/D`` unchanged,
so a book sees, and counts, the unknown references, as it would joining a live feed late.
``unknown="synthesize"`` inserts an ``A`` just before an order's first event when the order was never added,
with the event's side and price and as many shares as the file later takes from it (the sum of its
cancels and executions plus the final delete); that needs a first pass over the file (memory: one entry
per such order), so the source must be a path.

The orderbook file (``ask price, ask size, bid price, bid size`` per level, one row per message) cannot be
reproduced from the message file alone for the same reason. :func:`explained_rows` tells which rows the
messages do explain: by default each row's change from the row before (on the AMZN sample 43,561 of 57,515
rows follow from their message alone and none contradicts it; the rest need level 2), or strictly, the rows
a book of only the orders added in the file reproduces (51 on the sample).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from ..wire import itch

__all__ = [
    "LobsterFormatError", "LobsterRow", "LobsterStats", "read_lobster", "lobster_to_itch", "convert_lobster",
    "OracleResult", "explained_rows", "ITCH_TYPE", "EMPTY_ASK", "EMPTY_BID",
]

# LOBSTER event type -> the ITCH message type it becomes.
ITCH_TYPE = {1: "A", 2: "X", 3: "D", 4: "E", 5: "P", 6: "Q", 7: "H"}
# LOBSTER's dummy prices for an empty level in the orderbook file.
EMPTY_ASK = 9_999_999_999
EMPTY_BID = -9_999_999_999
_HALT_STATE = {-1: "H", 0: "Q", 1: "T"}
_NOON_NS = 12 * 3600 * 10**9


class LobsterFormatError(ValueError):
    def __init__(self, problem: str, line: int, path: str | None = None):
        self.problem, self.line, self.path = problem, line, path
        where = f"{path}:{line}" if path else f"line {line}"
        super().__init__(f"{where}: {problem}")


class LobsterRow(NamedTuple):
    time_ns: int      # nanoseconds after midnight
    type: int         # 1..7
    order_id: int
    size: int
    price: int        # 1/10000 dollar; -1/0/1 for type 7
    direction: int    # +1 buy, -1 sell


def _time_ns(text: str) -> int:
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"bad time {text!r} (expected seconds after midnight, at most 9 decimals)")
    return int(whole) * 10**9 + int(frac.ljust(9, "0") or 0)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        # LOBSTER writes integers, but tolerate "100.0" from tools that round-trip through floats.
        f = float(text)
        if f != int(f):
            raise ValueError(f"{what} {text!r} is not an integer") from None
        return int(f)


def read_lobster(source) -> Iterator[LobsterRow]:
    """Rows of a LOBSTER message file (a path or an iterable of lines), checked as they are read."""
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    f = open(path, newline="") if path is not None else source
    try:
        for line, rec in enumerate(csv.reader(f), 1):
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) < 6:
                raise LobsterFormatError(f"expected 6 columns, got {len(rec)}", line, path)
            try:
                row = LobsterRow(_time_ns(rec[0]), _int(rec[1], "type"), _int(rec[2], "order id"),
                                 _int(rec[3], "size"), _int(rec[4], "price"), _int(rec[5], "direction"))
            except ValueError as e:
                raise LobsterFormatError(str(e), line, path) from None
            if row.type not in ITCH_TYPE:
                raise LobsterFormatError(f"unknown event type {row.type}", line, path)
            if row.type != 7:
                if row.direction not in (1, -1):
                    raise LobsterFormatError(f"direction must be 1 or -1, not {row.direction}", line, path)
                if row.size < 0 or row.price < 0 or row.order_id < 0:
                    raise LobsterFormatError("negative size, price or order id", line, path)
            elif row.price not in _HALT_STATE:
                raise LobsterFormatError(f"halt price must be -1, 0 or 1, not {row.price}", line, path)
            yield row
    finally:
        if path is not None:
            f.close()


@dataclass
class LobsterStats:
    rows: int = 0
    rows_by_type: dict[int, int] = field(default_factory=dict)
    messages_by_type: dict[str, int] = field(default_factory=dict)   # ITCH messages written, preamble included
    unknown_refs: int = 0          # X/D/E rows naming an order not added earlier in the file
    unknown_orders: int = 0        # distinct such orders
    synthesized_adds: int = 0      # A messages made up for them (unknown="synthesize")

    def as_dict(self) -> dict:
        return {"rows": self.rows, "rows_by_type": dict(sorted(self.rows_by_type.items())),
                "messages_by_type": dict(sorted(self.messages_by_type.items())),
                "unknown_refs": self.unknown_refs, "unknown_orders": self.unknown_orders,
                "synthesized_adds": self.synthesized_adds}


def _needed_shares(source) -> dict[int, int]:
    """First pass for unknown="synthesize": shares taken from each order that is used before it is added."""
    added: set[int] = set()
    need: dict[int, int] = {}
    for row in read_lobster(source):
        if row.type == 1:
            added.add(row.order_id)
        elif row.type in (2, 3, 4) and row.order_id not in added:
            need[row.order_id] = need.get(row.order_id, 0) + row.size
    return need


def lobster_to_itch(source, symbol: str = "AMZN", locate: int = 1, *, unknown: str = "keep",
                    preamble: bool = True, stats: LobsterStats | None = None) -> Iterator:
    """ITCH message objects for a LOBSTER message file (path, or lines when ``unknown="keep"``).

    ``stats``, when given, is filled in as messages are produced."""
    if unknown not in ("keep", "synthesize"):
        raise ValueError(f"unknown must be 'keep' or 'synthesize', not {unknown!r}")
    stock = symbol.upper()
    if not 1 <= len(stock) <= 8 or not stock.isascii():
        raise ValueError(f"symbol must be 1..8 ASCII characters, not {symbol!r}")
    stock = stock.ljust(8)
    if not 0 <= locate <= 0xFFFF:
        raise ValueError(f"locate must be 0..65535, not {locate}")
    if unknown == "synthesize" and not isinstance(source, (str, os.PathLike)):
        raise ValueError("unknown='synthesize' reads the file twice: pass a path")
    need = _needed_shares(source) if unknown == "synthesize" else {}
    return _convert(source, stock, locate, need, unknown == "synthesize", preamble,
                    stats if stats is not None else LobsterStats())


def _convert(source, stock, locate, need, synthesize, preamble, st: LobsterStats) -> Iterator:
    added: set[int] = set()
    unknown_seen: set[int] = set()
    match = 0
    by_type = st.messages_by_type

    def out(msg):
        by_type[msg.TYPE] = by_type.get(msg.TYPE, 0) + 1
        return msg

    first = True
    for row in read_lobster(source):
        if first and preamble:
            t0 = max(3, row.time_ns) - 3
            yield out(itch.SystemEvent(0, 0, t0, "O"))
            yield out(itch.StockDirectory(locate, 0, t0 + 1, stock, "Q", " ", 100, "N", "C", "Z ", "P", "N", " ",
                                          "1", "N", 0, "N"))
            yield out(itch.StockTradingAction(locate, 0, t0 + 2, stock, "T", " ", "    "))
        first = False
        st.rows += 1
        st.rows_by_type[row.type] = st.rows_by_type.get(row.type, 0) + 1
        t, ref, side = row.time_ns, row.order_id, "B" if row.direction == 1 else "S"
        if row.type in (2, 3, 4) and ref not in added:
            st.unknown_refs += 1
            if ref not in unknown_seen:
                unknown_seen.add(ref)
                st.unknown_orders += 1
                if synthesize:
                    st.synthesized_adds += 1
                    added.add(ref)
                    yield out(itch.AddOrder(locate, 0, t, ref, side, need[ref], stock, row.price))
        if row.type == 1:
            added.add(ref)
            yield out(itch.AddOrder(locate, 0, t, ref, side, row.size, stock, row.price))
        elif row.type == 2:
            yield out(itch.OrderCancel(locate, 0, t, ref, row.size))
        elif row.type == 3:
            added.discard(ref)
            yield out(itch.OrderDelete(locate, 0, t, ref))
        elif row.type == 4:
            match += 1
            yield out(itch.OrderExecuted(locate, 0, t, ref, row.size, match))
        elif row.type == 5:
            match += 1
            yield out(itch.Trade(locate, 0, t, ref, side, row.size, stock, row.price, match))
        elif row.type == 6:
            match += 1
            yield out(itch.CrossTrade(locate, 0, t, row.size, stock, row.price, match, "O" if t < _NOON_NS else "C"))
        else:
            yield out(itch.StockTradingAction(locate, 0, t, stock, _HALT_STATE[row.price], " ", "    "))


def convert_lobster(message_csv, target, symbol: str = "AMZN", locate: int = 1, *, unknown: str = "keep",
                    preamble: bool = True) -> LobsterStats:
    """Convert a LOBSTER message file to an ITCH BinaryFILE (``.gz`` compresses); returns the counts."""
    from .binaryfile import BinaryFileWriter

    st = LobsterStats()
    msgs = lobster_to_itch(message_csv, symbol, locate, unknown=unknown, preamble=preamble, stats=st)
    with BinaryFileWriter(target) as w:
        for m in msgs:
            w.write(m)
    return st


# -- the orderbook file as a partial oracle ---------------------------------------------------------------

@dataclass
class OracleResult:
    """How many orderbook rows the message file explains. ``flags[i]`` (when kept) is True for an
    explained row. Transition mode also counts rows it cannot decide (the level emptied, so level 2
    would be needed) and rows that contradict the message (none in a consistent file)."""
    mode: str = "transition"
    rows: int = 0
    explained: int = 0
    undetermined: int = 0
    contradicted: int = 0
    first_contradiction: int | None = None     # 0-based row index
    flags: list[bool] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.explained / self.rows if self.rows else 0.0

    def as_dict(self) -> dict:
        return {"mode": self.mode, "rows": self.rows, "explained": self.explained,
                "undetermined": self.undetermined, "contradicted": self.contradicted,
                "first_contradiction": self.first_contradiction}


def _read_orderbook(path) -> Iterator[tuple[int, int, int, int]]:
    with open(path, newline="") as f:
        for line, rec in enumerate(csv.reader(f), 1):
            if not rec:
                continue
            if len(rec) < 4 or len(rec) % 4:
                raise LobsterFormatError(f"expected 4 columns a level, got {len(rec)}", line, os.fspath(path))
            try:
                yield int(rec[0]), int(rec[1]), int(rec[2]), int(rec[3])
            except ValueError as e:
                raise LobsterFormatError(str(e), line, os.fspath(path)) from None


def _predict(prev: tuple[int, int, int, int], row: LobsterRow) -> tuple[int, int, int, int] | None:
    """Level 1 after ``row`` from level 1 before it, or None when that needs deeper levels."""
    ap, asz, bp, bsz = prev
    if row.type in (5, 7):          # hidden executions and halts leave the visible top alone
        return prev
    if row.type == 6:
        return None
    buy = row.direction == 1
    best, size = (bp, bsz) if buy else (ap, asz)
    better = row.price > best if buy else row.price < best
    if row.type == 1:
        if (buy and row.price >= ap) or (not buy and row.price <= bp):
            return None             # would cross: not a resting add
        if better:
            best, size = row.price, row.size
        elif row.price == best:
            size += row.size
    else:                           # 2 cancel, 3 delete, 4 execution: shares leave the order's level
        if better:
            return None             # an order better than the best: the previous row was wrong
        if row.price == best:
            size -= row.size
            if size <= 0:
                return None         # the level emptied: the new best is on level 2
    return (ap, asz, best, size) if buy else (best, size, bp, bsz)


def explained_rows(message_csv, orderbook_csv, *, mode: str = "transition", keep_flags: bool = True) -> OracleResult:
    """Which orderbook rows the message file explains.

    ``mode="transition"``: row i is explained when applying message i to row i-1's level 1 gives row i
    (row 0 has no predecessor and counts as undetermined). It checks the converter's reading of every
    event against LOBSTER's own book wherever level 2 is not needed.

    ``mode="absolute"``: row i is explained when a book of only the orders added in the file (events on
    other orders skipped) has the same level 1. Strict, and rare on a level-1 file: orders that leave the
    book below level 1 are never deleted from it (their events are not in the file)."""
    if mode not in ("transition", "absolute"):
        raise ValueError(f"mode must be 'transition' or 'absolute', not {mode!r}")
    res = OracleResult(mode=mode)
    book_rows = _read_orderbook(orderbook_csv)
    orders: dict[int, list] = {}               # absolute mode: id -> [is_buy, price, shares]
    levels: tuple[dict, dict] = ({}, {})       # (asks, bids): price -> shares
    prev = None

    def take(ref: int, n: int | None):
        o = orders.get(ref)
        if o is None:
            return
        n = o[2] if n is None else min(n, o[2])
        lv = levels[o[0]]
        lv[o[1]] -= n
        if lv[o[1]] <= 0:
            del lv[o[1]]
        o[2] -= n
        if o[2] <= 0:
            del orders[ref]

    for i, row in enumerate(read_lobster(message_csv)):
        try:
            actual = next(book_rows)
        except StopIteration:
            raise LobsterFormatError("orderbook file has fewer rows than the message file", i + 1,
                                     os.fspath(orderbook_csv)) from None
        if mode == "transition":
            want = _predict(prev, row) if prev is not None else None
            prev = actual
            if want is None:
                res.undetermined += 1
                ok = False
            else:
                ok = want == actual
                if not ok:
                    res.contradicted += 1
                    if res.first_contradiction is None:
                        res.first_contradiction = i
        else:
            if row.type == 1:
                buy = row.direction == 1
                take(row.order_id, None)       # a re-used id replaces the old order
                orders[row.order_id] = [buy, row.price, row.size]
                lv = levels[buy]
                lv[row.price] = lv.get(row.price, 0) + row.size
            elif row.type in (2, 4):
                take(row.order_id, row.size)
            elif row.type == 3:
                take(row.order_id, None)
            asks, bids = levels
            a = min(asks) if asks else EMPTY_ASK
            b = max(bids) if bids else EMPTY_BID
            ok = (a, asks.get(a, 0), b, bids.get(b, 0)) == actual
        res.rows += 1
        res.explained += ok
        if keep_flags:
            res.flags.append(ok)
    return res
