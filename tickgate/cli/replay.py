"""``tickgate replay [FEED]``: replay a feed through the reference book (or, later, the simulated chip)
and write every top-of-book change as CSV. The row format is the contract in
:mod:`tickgate.model.replay`; every engine goes through its ``format_row``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Iterable, TextIO

__all__ = ["register", "run", "default_feed", "DEFAULT_FEED"]

# Feeds smaller than this replay in well under a second: no progress bar.
_PROGRESS_MIN_BYTES = 4 << 20

_EPILOG = """\
output: CSV with header seq,locate,bid_px,bid_sz,ask_px,ask_sz; one row per message that changes the best
bid or best ask (price or size) of its symbol; seq is the 1-based message index in the feed; prices in
ITCH 1/10000 units; 0,0 for an empty side.

--depth N (N>1) appends bid_px_2,bid_sz_2,ask_px_2,ask_sz_2 ... up to level N and emits a row whenever
any of the symbol's top N levels changes; --depth 1 (the default) is exactly the format above.
With no FEED, a built-in deterministic synthetic feed is replayed (no file needed).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "replay", help="replay a feed and print top-of-book changes as CSV",
        description="Replay an ITCH feed (BinaryFILE, plain or gzip, or a MoldUDP64 pcap/pcapng) through "
                    "an order book and write every top-of-book change as CSV.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("feed", nargs="?", metavar="FEED", help="feed file; omitted: the built-in synthetic feed")
    p.add_argument("--engine", choices=("model", "rtl"), default="model",
                   help="model: the Python reference book (default); rtl: the simulated gateware")
    p.add_argument("--symbols", action="append", metavar="SYM[,SYM...]",
                   help="only these symbols: names from the feed's R directory, or stock locates; "
                        "comma-separated, repeatable")
    p.add_argument("--depth", type=_positive, default=1, metavar="N",
                   help="levels per side in each row (default 1: the BBO contract)")
    p.add_argument("--out", metavar="FILE", help="write the CSV here instead of stdout")
    p.add_argument("--lenient", action="store_true", help="skip and count malformed messages instead of failing")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def run(args: argparse.Namespace) -> int:
    from ..model.replay import ModelReplay, SymbolFilter, csv_header

    if args.engine == "rtl":
        raise NotImplementedError("tickgate replay --engine rtl is not wired yet: the simulated-chip engine "
                                  "will produce the same CSV via tickgate.model.replay.format_row; "
                                  "use --engine model")
    select = SymbolFilter(args.symbols)
    source, label, size = _open_source(args)

    bar = _progress_bar(args, size)
    replay = ModelReplay(depth=args.depth, select=select, progress=bar.update if bar is not None else None)

    start = time.perf_counter()
    if args.out:
        _write_atomically(args.out, csv_header(args.depth), replay.run(source))
    else:
        out = sys.stdout
        out.write(csv_header(args.depth))
        out.writelines(replay.run(source))
        out.flush()
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.update(replay.messages % replay.PROGRESS_EVERY)
        bar.close()
    _summary(sys.stderr, label, replay, source, select, seconds)
    return 0


# The feed replayed when no FEED is given: deterministic, generated in-process.
DEFAULT_FEED = {"messages": 20_000, "symbols": 8, "seed": 20191230}


def default_feed() -> list[bytes]:
    """The default feed's messages (generated up front, so the summary's messages/s measures the book)."""
    from ..feed.synth import synth_bytes

    return list(synth_bytes(**DEFAULT_FEED))


def _open_source(args) -> tuple[Iterable[bytes], str, int]:
    """(messages, a label for the summary, size in bytes for the progress decision)."""
    if args.feed is None:
        return default_feed(), f"built-in synthetic feed (tickgate.feed.synth {DEFAULT_FEED})", 0
    from ..feed.source import FeedSource

    path = args.feed
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a feed file")
    return FeedSource(path, lenient=args.lenient), path, os.path.getsize(path)


def _progress_bar(args, size: int):
    if args.no_progress or size < _PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" msg", unit_scale=True, file=sys.stderr, desc="replay", leave=False)


def _write_atomically(path: str, header: str, lines: Iterable[str]) -> None:
    """Write to ``path`` via a temporary file so a failed replay never leaves a partial CSV behind."""
    tmp = f"{path}.partial"
    try:
        with open(tmp, "w", newline="\n") as f:
            f.write(header)
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _summary(err: TextIO, label: str, replay, source, select, seconds: float) -> None:
    st = replay.book.stats
    rate = replay.messages / seconds if seconds > 0 else 0.0
    lines = [f"tickgate replay: {label}: {replay.messages:,} messages, {replay.rows:,} rows, "
             f"{seconds:.3f} s ({rate:,.0f} messages/s)"]
    unknown = ", ".join(f"{k} {v:,}" for k, v in sorted(st.unknown_refs.items())) or "none"
    lines.append(f"  unknown order references: {st.unknown_ref_total:,} ({unknown})")
    lines.append(f"  anomalies: {st.anomalies:,} (overfills {st.overfills:,}, duplicate adds {st.duplicate_adds:,}, "
                 f"invalid adds {st.invalid_adds:,}, unknown types {st.unknown_types:,})")
    fs = getattr(source, "stats", None)
    if fs is not None:
        if fs.format == "pcap":
            lines.append(f"  MoldUDP64: {fs.packets:,} packets, {fs.gaps:,} gaps ({fs.missing:,} messages missing), "
                         f"{fs.duplicates:,} duplicates dropped, {fs.unsequenced:,} unsequenced packets "
                         f"({fs.unsequenced_messages:,} messages, delivered in capture order)")
        if fs.skipped:
            lines.append(f"  skipped {fs.skipped:,} malformed messages (--lenient); first: {fs.problems[0]}")
    missing = select.missing_names(replay.book)
    if missing:
        lines.append(f"  warning: --symbols {','.join(missing)} not in the feed's stock directory (R messages); "
                     "select by stock locate instead")
    err.write("\n".join(lines) + "\n")
