"""The ``tickgate`` command. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import sys

from . import feed, replay

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickgate", description="FPGA offload toolkit for trading: feeds, order book, replay."
    )
    parser.add_argument("--version", action="version", version=f"tickgate {__import__('tickgate').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    replay.register(sub)
    feed.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except BrokenPipeError:
        return 0
    except (OSError, ValueError) as e:
        print(f"tickgate: error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"tickgate: not implemented: {e}", file=sys.stderr)
        return 3
