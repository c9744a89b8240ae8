"""RTL bulk replay vs the reference model, same feeds, same run.

    source .venv/bin/activate
    python benchmarks/bench_replay.py                 # real feeds (../shared/data) + a 1M synthetic feed
    python benchmarks/bench_replay.py --messages 200000
    python benchmarks/bench_replay.py --book capacity=65536,ways=8   # a book the 1M feed fits (no table_full)

Prints, per feed: messages, rows (equal?), model messages/s, simulated messages/s and cycles/s of the RTL
replay (the harness loop only; the wall time with framing and parsing in brackets), and the end-to-end
latency per message type (cycles from the input beat carrying a message's last byte to its TopOfBook).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000, help="synthetic feed size (default 1M)")
    ap.add_argument("--symbols", type=int, default=64)
    ap.add_argument("--book", metavar="NAME=N,...", help="book sizing, as tickgate replay --engine rtl --book")
    args = ap.parse_args()

    from tests.conftest import ITCH_FILES, PCAP_FILES
    from tickgate.feed.source import FeedSource
    from tickgate.feed.synth import synth_bytes
    from tickgate.model.replay import ModelReplay
    from tickgate.sim import rtl_replay as rr

    book = rr.parse_book(args.book)
    rr.build(book)
    print(f"book sizing: {book or 'chip defaults'}")
    feeds = []
    for p in ITCH_FILES + [p for p in PCAP_FILES if p.name == "Multiple.Packets.pcap"]:
        msgs = list(FeedSource(p))
        feeds.append((p.name, msgs, rr.frames_for_feed(p, messages=msgs)))
    t = time.perf_counter()
    msgs = list(synth_bytes(messages=args.messages, symbols=args.symbols, seed=2024))
    gen = time.perf_counter() - t
    t = time.perf_counter()
    ff = rr.frames_from_messages(msgs)
    print(f"synthetic feed: {len(msgs):,} messages generated in {gen:.1f} s, framed ({len(ff.frames):,} frames) "
          f"in {time.perf_counter() - t:.1f} s")
    feeds.append((f"synth {len(msgs):,}", msgs, ff))

    print(f"{'feed':34} {'msgs':>9} {'rows':>8} {'eq':>3} {'model msg/s':>12} {'rtl msg/s':>11} {'rtl cyc/s':>11} "
          f"{'rtl wall s':>10}")
    for name, msgs, ff in feeds:
        t = time.perf_counter()
        model = list(ModelReplay().run(msgs))
        mt = time.perf_counter() - t
        res = rr.RtlReplay(rr.RtlParams(book=book)).run(ff)
        rtl = list(rr.csv_lines(res.rows))
        print(f"{name[:34]:34} {len(msgs):9,} {len(model):8,} {'yes' if rtl == model else 'NO':>3} "
              f"{len(msgs) / mt if mt else 0:12,.0f} {res.messages_per_second:11,.0f} {res.cycles_per_second:11,.0f} "
              f"{res.wall_seconds:10.1f}")
        if res.latency:
            lat = ", ".join(f"{k} {lo}" + (f"..{hi}" if hi != lo else "") for k, (lo, hi, _n) in sorted(res.latency.items()))
            print(f"    latency (cycles) per type: {lat}; by lane of the last byte: "
                  + ", ".join(f"{k}:{lo}" + (f"..{hi}" if hi != lo else "") for k, (lo, hi) in sorted(res.latency_lanes.items())))
        if res.flags():
            print(f"    chip flags: {res.flags()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
