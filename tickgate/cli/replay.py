"""``tickgate replay [FEED]``: replay a feed through the reference book or the simulated chip (``--engine
rtl``) and write every top-of-book change as CSV. The row format is the contract in
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
With --engine rtl, N is at most the chip's lookup depth (4): the harness looks up the symbol's top levels
through the book's lookup port as each book message is applied.
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
                   help="levels per side in each row (default 1: the BBO contract; rtl: at most the chip's "
                        "lookup depth, 4)")
    p.add_argument("--out", metavar="FILE", help="write the CSV here instead of stdout")
    p.add_argument("--lenient", action="store_true", help="skip and count malformed messages instead of failing")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument("--strict", action="store_true",
                   help="rtl: exit 1 when the chip flagged anything that can make its rows differ from the "
                        "model's (table full, out of window, locate out of range, messages dropped)")
    p.add_argument("--rtl-idle", type=float, default=0.0, metavar="P",
                   help="rtl: probability of an idle cycle before each input beat (default 0)")
    p.add_argument("--rtl-backpressure", type=float, default=0.0, metavar="P",
                   help="rtl: probability per cycle that the output is not ready (default 0)")
    p.add_argument("--rtl-seed", type=int, default=1, metavar="N", help="rtl: seed of the idle/backpressure draws")
    p.add_argument("--book", metavar="NAME=N[,NAME=N...]",
                   help="rtl: book sizing for the simulated chip instead of its defaults, e.g. "
                        "capacity=65536,ways=8 (names: capacity, ways, symbols, depth, locates, lookup_depth; "
                        "capacity/ways/symbols/locates powers of two; a new sizing compiles a new model)")
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
        return _run_rtl(args)
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


def _run_rtl(args: argparse.Namespace) -> int:
    """``--engine rtl``: the same CSV (through format_row) from the verilated MarketDataTop."""
    from ..model.replay import SymbolFilter, csv_header
    from ..sim import rtl_replay

    for name in ("rtl_idle", "rtl_backpressure"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1)")
    book = rtl_replay.parse_book(args.book)
    if args.depth > 1:
        from ..fpga.order_book import BOOK_DEFAULTS

        rtl_replay.check_depth(args.depth, book.get("lookup_depth", BOOK_DEFAULTS["lookup_depth"]))
    select = SymbolFilter(args.symbols)
    if args.feed is None:
        messages = default_feed()
        label = f"built-in synthetic feed (tickgate.feed.synth {DEFAULT_FEED})"
        feed = rtl_replay.frames_from_messages(messages)
    else:
        _src, label, _size = _open_source(args)          # the same checks and errors as the model engine
        messages = list(_src)
        feed = rtl_replay.frames_for_feed(args.feed, lenient=args.lenient, messages=messages)
    params = rtl_replay.RtlParams(book=book, idle=args.rtl_idle, backpressure=args.rtl_backpressure,
                                  seed=args.rtl_seed, lookup=args.depth > 1)
    res = rtl_replay.RtlReplay(params).run(feed)
    directory = rtl_replay.Directory(messages)
    if args.depth > 1:
        lines = rtl_replay.depth_lines(res, args.depth, select, directory)
    else:
        lines = rtl_replay.csv_lines(res.rows, select, directory)
    written = [0]

    def counted(lines):
        for line in lines:
            written[0] += 1
            yield line

    lines = counted(lines)
    if args.out:
        _write_atomically(args.out, csv_header(args.depth), lines)
    else:
        out = sys.stdout
        out.write(csv_header(args.depth))
        out.writelines(lines)
        out.flush()
    return _rtl_summary(sys.stderr, label, res, len(messages), select, directory, args.strict, args.depth,
                        written[0])


def _rtl_summary(err: TextIO, label: str, res, model_messages: int, select, directory, strict: bool,
                 depth: int = 1, csv_rows: int | None = None) -> int:
    from ..sim import rtl_replay

    c = res.counters
    g = lambda k: c.get(k, 0)   # noqa: E731
    rows = len(res.rows)
    shown = f"{csv_rows:,} CSV rows ({rows:,} TopOfBook records)" if csv_rows is not None else f"{rows:,} rows"
    lines = [f"tickgate replay --engine rtl: {label}: {res.messages:,} messages, {shown}; "
             f"{res.cycles:,} cycles simulated in {res.seconds:.3f} s ({res.messages_per_second:,.0f} simulated "
             f"messages/s, {res.cycles_per_second:,.0f} cycles/s; {res.wall_seconds:.1f} s in all)"]
    lines.append(f"  book sizing: {res.sizing}")
    udp_drop = sum(v for k, v in c.items() if k.startswith("udp.") and k != "udp.ok")
    lines.append(f"  frames: {res.frames:,} in, {g('udp.ok'):,} UDP ok, {udp_drop:,} dropped "
                 f"(truncated {g('udp.truncated')}, not UDP {g('udp.not_udp')}, unsupported {g('udp.unsupported')}, "
                 f"bad checksum {g('udp.bad_checksum')}, bad length {g('udp.bad_length')}, not ours {g('udp.not_ours')})")
    lines.append(f"  MoldUDP64: {g('mold.accepted'):,} packets forwarded ({g('mold.unsequenced'):,} unsequenced), "
                 f"{g('mold.gap'):,} gaps "
                 f"({g('mold.missed'):,} messages missing), {g('mold.duplicate'):,} duplicate and "
                 f"{g('mold.overlap'):,} overlapping packets (new tail kept), {g('mold.count_error'):,} count errors, "
                 f"{g('mold.session'):,} sessions")
    lines.append(f"  ITCH: split zero-length {g('split.zero_length')}, oversize {g('split.oversize')}, "
                 f"truncated {g('split.truncated')}, unflagged runts {g('split.unflagged_runt')}; "
                 f"decode unknown types {g('decode.unknown')}, "
                 f"malformed {g('decode.malformed')}")
    unknown = {k[13:]: v for k, v in c.items() if k.startswith("book.unknown_")}
    lines.append(f"  unknown order references: {sum(unknown.values()):,} "
                 f"({', '.join(f'{k} {v:,}' for k, v in sorted(unknown.items()) if v) or 'none'})")
    lines.append(f"  anomalies: overfills {g('book.overfills'):,}, duplicate adds {g('book.duplicate_adds'):,}, "
                 f"invalid adds {g('book.invalid_adds'):,}")
    if res.latency:
        lat = ", ".join(f"{t} {lo}" + (f"..{hi}" if hi != lo else "") for t, (lo, hi, _n) in sorted(res.latency.items()))
        lines.append(f"  latency, cycles from the input beat with a message's last byte to its TopOfBook: {lat}")
    bad = False
    flags = res.flags()
    if depth > 1:
        lines.append(f"  --depth {depth}: {len(res.lookups):,} lookups (one per book message applied)")
        dflags = rtl_replay.depth_flag_counts(res, depth)
        if dflags:
            bad = True
            lines.append(f"  WARNING: the chip's lookups say its --depth {depth} rows may differ from --engine "
                         "model: " + ", ".join(f"{k} {v:,}" for k, v in dflags.items()))
    if flags and rtl_replay.rows_may_differ(res):
        bad = True
        lines.append("  WARNING: the chip flagged state it cannot track, so its rows may differ from "
                     "--engine model: " + ", ".join(f"{k} {v:,}" for k, v in flags.items()))
    elif flags:
        lines.append("  note: the chip flagged (no row affected: no row carries a flag): "
                     + ", ".join(f"{k} {v:,}" for k, v in flags.items()))
    if res.messages != model_messages:
        bad = True
        lines.append(f"  WARNING: the chip delivered {res.messages:,} messages to its book, the model "
                     f"{model_messages:,}: the rows' seq numbering and content may differ from --engine model")
    if res.timed_out:
        bad = True
        lines.append("  WARNING: the simulation hit its cycle limit")
    missing = sorted(select.names - directory.names())
    if missing:
        lines.append(f"  warning: --symbols {','.join(missing)} not in the feed's stock directory (R messages); "
                     "select by stock locate instead")
    err.write("\n".join(lines) + "\n")
    return 1 if bad and strict else 0
