"""The top-of-book CSV contract of ``tickgate replay``, and the reference model's replay driver.

Contract (every engine, model or RTL, must produce it byte for byte)::

    seq,locate,bid_px,bid_sz,ask_px,ask_sz

one row for every message that changes the best bid or best ask (price or size) of its symbol, in feed
order; ``seq`` is the 1-based index of the message in the feed (every message counts, book or not); prices
are ITCH 1/10000 units; an empty side is ``0,0``. The row is the symbol's BBO *after* the message.

Depth N > 1 (an extension; N = 1 is exactly the contract): the row carries the best N levels of each side,
the first four value columns unchanged, then ``bid_px_2,bid_sz_2,ask_px_2,ask_sz_2`` ... up to level N
(missing levels ``0,0``), and a row is emitted whenever any of those N levels of the symbol changes.

Engines produce (seq, locate, values) and call :func:`format_row`; nothing else formats a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from .book import OrderBook

__all__ = ["CSV_COLUMNS", "csv_header", "format_row", "SymbolFilter", "ModelReplay"]

CSV_COLUMNS = ("seq", "locate", "bid_px", "bid_sz", "ask_px", "ask_sz")


def csv_header(depth: int = 1) -> str:
    """The header line (with its newline) for ``depth`` levels."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    cols = list(CSV_COLUMNS)
    for i in range(2, depth + 1):
        cols += [f"bid_px_{i}", f"bid_sz_{i}", f"ask_px_{i}", f"ask_sz_{i}"]
    return ",".join(cols) + "\n"


_ROW_FORMATS: dict[int, str] = {}


def format_row(seq: int, locate: int, values: Sequence[int]) -> str:
    """One CSV line (with its newline). ``values`` = (bid_px, bid_sz, ask_px, ask_sz[, deeper levels...]),
    integers."""
    fmt = _ROW_FORMATS.get(len(values))
    if fmt is None:
        fmt = _ROW_FORMATS[len(values)] = ",".join(["%d"] * (2 + len(values))) + "\n"
    return fmt % (seq, locate, *values)


class SymbolFilter:
    """``--symbols``: tokens are symbol names (matched against the feed's R directory, case-insensitive)
    or stock locates (decimal). ``None``/empty selects everything."""

    def __init__(self, tokens: Iterable[str] | None):
        self.locates: set[int] = set()
        self.names: set[str] = set()
        for tok in tokens or ():
            for t in tok.split(","):
                t = t.strip()
                if not t:
                    continue
                if t.isdigit():
                    loc = int(t)
                    if not 0 <= loc <= 0xFFFF:
                        raise ValueError(f"--symbols: locate {loc} out of range 0..65535")
                    self.locates.add(loc)
                elif len(t) > 8:
                    raise ValueError(f"--symbols: {t!r} is longer than an ITCH symbol (8 characters)")
                else:
                    self.names.add(t.upper())
        self.all = not (self.locates or self.names)

    def __call__(self, book: OrderBook, locate: int) -> bool:
        return self.all or locate in self.locates or (bool(self.names) and book.symbol(locate) in self.names)

    def missing_names(self, book: OrderBook) -> list[str]:
        """Requested names that the feed's directory never named."""
        seen = {s.symbol for s in book.symbols.values()}
        return sorted(self.names - seen)


@dataclass
class ModelReplay:
    """Runs messages through an :class:`OrderBook` and yields CSV lines (header not included)."""
    depth: int = 1
    select: SymbolFilter | None = None
    progress: Callable[[int], None] | None = None   # called with a message count every PROGRESS_EVERY
    messages: int = 0
    rows: int = 0

    PROGRESS_EVERY = 1 << 16

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1, not {self.depth}")
        self.book = OrderBook()

    def run(self, messages: Iterable[bytes]) -> Iterator[str]:
        return self._run_bbo(messages) if self.depth == 1 else self._run_depth(messages)

    def _run_bbo(self, messages: Iterable[bytes]) -> Iterator[str]:
        book = self.book
        apply, bbo = book.apply, book.bbo
        select = self.select if self.select and not self.select.all else None
        progress, every = self.progress, self.PROGRESS_EVERY
        seq = 0
        try:
            for seq, raw in enumerate(messages, 1):
                if apply(raw):
                    loc = book.changed_locate
                    if select is None or select(book, loc):
                        self.rows += 1
                        yield format_row(seq, loc, bbo(loc))
                if progress is not None and not seq % every:
                    progress(every)
        finally:
            self.messages = seq

    def _run_depth(self, messages: Iterable[bytes]) -> Iterator[str]:
        book, n = self.book, self.depth
        select = self.select if self.select and not self.select.all else None
        progress, every = self.progress, self.PROGRESS_EVERY
        last: dict[int, tuple[int, ...]] = {}
        empty = (0, 0, 0, 0) * n
        seq = 0
        try:
            for seq, raw in enumerate(messages, 1):
                loc = book.locate_of(raw)
                book.apply(raw)
                if loc is not None and (select is None or select(book, loc)):
                    snap = self.snapshot(loc)
                    if snap != last.get(loc, empty):
                        last[loc] = snap
                        self.rows += 1
                        yield format_row(seq, loc, snap)
                if progress is not None and not seq % every:
                    progress(every)
        finally:
            self.messages = seq

    def snapshot(self, locate: int) -> tuple[int, ...]:
        """The symbol's best ``depth`` levels, flat in CSV column order."""
        bids, asks = self.book.top(locate, self.depth)
        out: list[int] = []
        for i in range(self.depth):
            out += bids[i] if i < len(bids) else (0, 0)
            out += asks[i] if i < len(asks) else (0, 0)
        return tuple(out)
