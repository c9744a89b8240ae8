"""Reference-model throughput: messages/s of ``OrderBook.apply`` and of the full replay (rows formatted),
on the recorded ITCH files and captures (when ../shared/data or $TICKGATE_DATA is present) and on
synthetic feeds (tickgate.feed.synth). Prints numbers; asserts nothing about time.

    python benchmarks/bench_model.py [--messages 1000000] [--repeat 3]

Messages are read into memory first, so only the book (and the CSV formatting) is timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tickgate.feed.source import iter_messages  # noqa: E402
from tickgate.feed.synth import synth_bytes  # noqa: E402
from tickgate.model.book import OrderBook  # noqa: E402
from tickgate.model.replay import ModelReplay  # noqa: E402


def _data_dir() -> Path | None:
    env = os.environ.get("TICKGATE_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench(label: str, messages: list[bytes], repeat: int) -> None:
    n = len(messages)

    def book_only():
        apply = OrderBook().apply
        for raw in messages:
            apply(raw)

    def replay():
        for _ in ModelReplay().run(messages):
            pass

    rows = sum(1 for _ in ModelReplay().run(messages))
    # Tiny files repeat so the timer sees something.
    loops = max(1, 200_000 // max(n, 1))
    t_book = best_of(repeat, lambda: [book_only() for _ in range(loops)]) / loops
    t_replay = best_of(repeat, lambda: [replay() for _ in range(loops)]) / loops
    print(f"{label:58s} {n:>9,} msgs {rows:>8,} rows   apply {n / t_book:>12,.0f} msg/s   "
          f"replay {n / t_replay:>12,.0f} msg/s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000, help="size of the large synthetic feed")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}; best of {args.repeat}")

    data = _data_dir()
    if data is None:
        print("recorded feeds not found (set TICKGATE_DATA): skipping them")
    else:
        for path in sorted((data / "itch").glob("*.NASDAQ_ITCH50")):
            bench(f"itch/{path.name}", list(iter_messages(path)), args.repeat)
        caps = sorted((data / "pcap").rglob("*.pcap"))
        msgs = [m for p in caps for m in iter_messages(p)]
        bench(f"pcap/* ({len(caps)} captures, concatenated)", msgs, args.repeat)

    for mode, n, symbols in (("normal", args.messages, 16), ("deep", 200_000, 16),
                             ("deep,far,chain,unknown", 200_000, 16)):
        t = time.perf_counter()
        msgs = list(synth_bytes(n, symbols=symbols, seed=1, mode=mode))
        gen = time.perf_counter() - t
        print(f"  (generated {n:,} synthetic messages, mode {mode}, in {gen:.1f} s)", flush=True)
        bench(f"synth {mode} ({symbols} symbols)", msgs, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
