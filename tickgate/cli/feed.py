"""``tickgate feed ...``: info, convert, synth, from-lobster.

Output formats follow the file name: ``.pcap``/``.pcapng`` write Ethernet/IPv4/UDP/MoldUDP64 captures,
``.NASDAQ_ITCH50``/``.itch``/``.bin`` an ITCH BinaryFILE (``.gz`` after those compresses). Summaries go to
stdout; ``--json`` prints them as one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _add_capture_options(p: argparse.ArgumentParser) -> None:
    from ..feed.convert import CaptureOptions

    d = CaptureOptions.__dataclass_fields__
    g = p.add_argument_group("capture output (.pcap/.pcapng)")
    g.add_argument("--session", default=d["session"].default, help="MoldUDP64 session, up to 10 characters")
    g.add_argument("--first-sequence", type=int, default=d["first_sequence"].default)
    g.add_argument("--messages-per-packet", type=int, default=d["max_messages"].default, metavar="N")
    g.add_argument("--max-payload", type=int, default=d["max_payload"].default, metavar="BYTES",
                   help="largest UDP payload (MoldUDP64 packet) in bytes")
    g.add_argument("--batch-ns", type=int, default=None, metavar="NS",
                   help="also start a new packet when ITCH time moves on by more than NS")
    g.add_argument("--src-mac", default=d["src_mac"].default)
    g.add_argument("--dst-mac", default=None, help="default: the multicast MAC of --dst-ip")
    g.add_argument("--src-ip", default=d["src_ip"].default)
    g.add_argument("--dst-ip", default=d["dst_ip"].default)
    g.add_argument("--sport", type=int, default=d["sport"].default)
    g.add_argument("--dport", type=int, default=d["dport"].default)
    g.add_argument("--vlan", type=int, default=None)
    g.add_argument("--timing", choices=("itch", "rate"), default="itch",
                   help="capture times from ITCH timestamps (default) or a fixed packet rate")
    g.add_argument("--rate", type=float, default=d["rate"].default, help="packets a second for --timing rate")
    g.add_argument("--date", default=d["date"].default, help="trading day for capture times, YYYY-MM-DD")
    g.add_argument("--utc-offset", type=float, default=0.0, metavar="HOURS",
                   help="exchange local time minus UTC (-5 EST, -4 EDT)")


def _capture_options(args):
    from ..feed.convert import CaptureOptions

    return CaptureOptions(
        session=args.session, first_sequence=args.first_sequence, max_messages=args.messages_per_packet,
        max_payload=args.max_payload, batch_ns=args.batch_ns, src_mac=args.src_mac, dst_mac=args.dst_mac,
        src_ip=args.src_ip, dst_ip=args.dst_ip, sport=args.sport, dport=args.dport, vlan=args.vlan,
        timing=args.timing, rate=args.rate, date=args.date, utc_offset_hours=args.utc_offset)


def _write_itch(args, write_binary, what: str) -> dict:
    """Write a BinaryFILE straight to OUT, or to a temporary one converted into the capture OUT."""
    from ..feed.convert import BINARYFILE, convert, output_format

    fmt, _gz = output_format(args.out)
    if fmt == BINARYFILE:
        return write_binary(args.out)
    opts = _capture_options(args)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{what}.NASDAQ_ITCH50")
        result = write_binary(path)
        rep = convert(path, args.out, opts)
    result["packets"] = rep.packets
    return result


# -- info -----------------------------------------------------------------------------------------------

def _cmd_info(args) -> int:
    from ..feed.info import feed_info, format_info

    infos = [feed_info(path, lenient=args.lenient) for path in args.files]
    if args.json:
        _print_json(infos[0].as_dict() if len(infos) == 1 else [i.as_dict() for i in infos])
    else:
        print("\n".join(format_info(i) for i in infos))
    return 0


# -- convert --------------------------------------------------------------------------------------------

def _cmd_convert(args) -> int:
    from ..feed.convert import convert

    rep = convert(args.input, args.out, _capture_options(args), lenient=args.lenient)
    if args.json:
        _print_json(rep.as_dict())
        return 0
    line = f"{rep.source} ({rep.input_format}) -> {rep.target} ({rep.output_format}): {rep.messages:,} messages"
    if rep.packets:
        line += f", {rep.packets:,} packets"
    if rep.first_sequence is not None:
        line += f", sequence {rep.first_sequence:,}..{rep.last_sequence:,}"
    print(line)
    if rep.input_format != "binaryfile":
        print(f"  gaps {rep.gaps:,} ({rep.missing_messages:,} messages missing), duplicates dropped "
              f"{rep.duplicate_messages:,}" + (f", unsequenced packets {rep.unsequenced_packets:,}"
                                               if rep.unsequenced_packets else ""))
        for session, first, count in rep.gap_list[:10]:
            print(f"  gap: session {session.rstrip()} {count:,} messages from {first:,}")
    if rep.skipped:
        print(f"  skipped {rep.skipped:,} malformed inputs")
    return 0


# -- synth ----------------------------------------------------------------------------------------------

def _cmd_synth(args) -> int:
    from ..feed.synth import SynthConfig, write_synth

    options = dict(messages=args.messages, symbols=args.symbols, seed=args.seed, mode=args.mode)
    for name in ("collide_bits", "collide_hash", "chain_length", "far_ticks", "far_fraction", "unknown_fraction",
                 "orders_per_symbol", "deep_orders", "deep_levels", "mean_gap_ns"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    cfg = SynthConfig(**options)
    t0 = time.perf_counter()

    def write(path):
        st = write_synth(path, cfg)
        return {"messages": st.messages, "by_type": dict(sorted(st.by_type.items())),
                "orders_added": st.orders_added, "bursts": st.bursts, "halts": st.halts, "sweeps": st.sweeps,
                "far_adds": st.far_adds, "unknown_refs": st.unknown_refs, "longest_chain": st.longest_chain}

    result = _write_itch(args, write, "synth")
    seconds = time.perf_counter() - t0
    result = {"out": args.out, "mode": list(cfg.mode), "seed": cfg.seed, "symbols": cfg.symbols, **result}
    if args.json:
        _print_json(result)
        return 0
    print(f"{args.out}: {result['messages']:,} messages, {cfg.symbols:,} symbols, seed {cfg.seed}, "
          f"mode {','.join(cfg.mode)} ({seconds:.2f} s)")
    print("  by type: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result["by_type"].items(),
                                                                     key=lambda kv: (-kv[1], kv[0]))))
    extras = [f"{k.replace('_', ' ')} {result[k]:,}" for k in
              ("bursts", "halts", "far_adds", "unknown_refs", "longest_chain", "packets") if result.get(k)]
    if extras:
        print("  " + ", ".join(extras))
    return 0


# -- from-lobster ---------------------------------------------------------------------------------------

def _cmd_from_lobster(args) -> int:
    from ..feed.lobster import convert_lobster, explained_rows

    def write(path):
        st = convert_lobster(args.message_csv, path, args.symbol, args.locate, unknown=args.unknown,
                             preamble=not args.no_preamble)
        return st.as_dict()

    result = {"out": args.out, "symbol": args.symbol.upper(), "locate": args.locate, **_write_itch(args, write, "lobster")}
    if args.orderbook:
        result["oracle"] = explained_rows(args.message_csv, args.orderbook, keep_flags=False).as_dict()
    if args.json:
        result["rows_by_type"] = {str(k): v for k, v in result["rows_by_type"].items()}
        _print_json(result)
        return 0
    rows = ", ".join(f"{k}: {v:,}" for k, v in result["rows_by_type"].items())
    msgs = ", ".join(f"{k} {v:,}" for k, v in sorted(result["messages_by_type"].items(), key=lambda kv: (-kv[1], kv[0])))
    print(f"{args.message_csv} -> {args.out}: {result['rows']:,} rows (by LOBSTER type {rows})")
    print(f"  ITCH messages: {msgs}" + (f"; {result['packets']:,} packets" if result.get("packets") else ""))
    print(f"  references to orders not added in the file: {result['unknown_refs']:,} "
          f"({result['unknown_orders']:,} orders)"
          + (f", {result['synthesized_adds']:,} adds synthesized" if result["synthesized_adds"] else ", kept as is"))
    if args.orderbook:
        o = result["oracle"]
        print(f"  orderbook rows explained by their message: {o['explained']:,} of {o['rows']:,} "
              f"({o['undetermined']:,} need level 2, {o['contradicted']:,} contradicted)")
    return 0


def register(sub):
    p = sub.add_parser("feed", help="inspect, convert and generate feeds",
                       description="Inspect, convert and generate ITCH feeds (BinaryFILE, pcap/pcapng MoldUDP64).")
    fs = p.add_subparsers(dest="feed_command", required=True, metavar="FEED_COMMAND")

    q = fs.add_parser("info", help="summarise feed files (BinaryFILE, .gz, pcap, pcapng)")
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.add_argument("--lenient", action="store_true", help="skip and count malformed input instead of failing")
    q.set_defaults(func=_cmd_info)

    q = fs.add_parser("convert", help="convert between BinaryFILE and pcap/pcapng (format by extension)")
    q.add_argument("input", metavar="IN")
    q.add_argument("out", metavar="OUT")
    q.add_argument("--json", action="store_true")
    q.add_argument("--lenient", action="store_true", help="skip and count malformed input instead of failing")
    _add_capture_options(q)
    q.set_defaults(func=_cmd_convert)

    from ..feed.synth import MODES

    q = fs.add_parser("synth", help="generate a deterministic synthetic ITCH 5.0 feed")
    q.add_argument("out", metavar="OUT")
    q.add_argument("--messages", type=int, default=100_000)
    q.add_argument("--symbols", type=int, default=16)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--mode", default="normal",
                   help=f"stress modes, comma-separated: {', '.join(MODES)} (see tickgate.feed.synth)")
    q.add_argument("--collide-bits", dest="collide_bits", type=int)
    q.add_argument("--collide-hash", dest="collide_hash", choices=("low", "crc32", "xorfold"))
    q.add_argument("--chain-length", dest="chain_length", type=int)
    q.add_argument("--far-ticks", dest="far_ticks", type=int)
    q.add_argument("--far-fraction", dest="far_fraction", type=float)
    q.add_argument("--unknown-fraction", dest="unknown_fraction", type=float)
    q.add_argument("--orders-per-symbol", dest="orders_per_symbol", type=int)
    q.add_argument("--deep-orders", dest="deep_orders", type=int)
    q.add_argument("--deep-levels", dest="deep_levels", type=int)
    q.add_argument("--mean-gap-ns", dest="mean_gap_ns", type=float)
    q.add_argument("--json", action="store_true")
    _add_capture_options(q)
    q.set_defaults(func=_cmd_synth)

    q = fs.add_parser("from-lobster", help="convert a LOBSTER message file to ITCH")
    q.add_argument("message_csv", metavar="MESSAGE_CSV")
    q.add_argument("out", metavar="OUT")
    q.add_argument("--symbol", default="AMZN")
    q.add_argument("--locate", type=int, default=1)
    q.add_argument("--unknown", choices=("keep", "synthesize"), default="keep",
                   help="orders the file never adds: keep their events as they are (default) or "
                        "synthesize an add before the first one")
    q.add_argument("--no-preamble", action="store_true", help="omit the S/R/H preamble")
    q.add_argument("--orderbook", metavar="ORDERBOOK_CSV",
                   help="also report which orderbook rows the messages explain")
    q.add_argument("--json", action="store_true")
    _add_capture_options(q)
    q.set_defaults(func=_cmd_from_lobster)
