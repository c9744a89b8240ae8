"""Verilog hygiene of every fpga block: every combinational ``always @*`` block carries Yosys' time-0 trigger.

A signal driven partly by a process and partly by plain connections comes out of Yosys' write_verilog (which
``amaranth.back.verilog`` runs) as per-slice ``always @*`` blocks without the ``dump_module`` trigger that
makes a simulator run them at time 0. Icarus then runs such a block only when one of its sources changes,
so a slice whose sources keep their initial value all run stays X (Verilator evaluates everything at time
0, so its runs do not show it). It once made the book's ``stale`` flag X in every TopOfBook record, and
left two slices of the decoder's BookOp without the trigger. (The trigger itself only works when Icarus reads
the Verilog as Verilog-2005: tickgate.sim.runner.ICARUS_ARGS.)
"""

from __future__ import annotations

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: A small book (quick to convert), as tests/test_pipeline.py builds the pipeline.
SMALL_BOOK = dict(capacity=2048, ways=4, symbols=8, locates=64)


def untriggered(component, name: str) -> list[str]:
    """The ``always @*`` blocks of ``component``'s Verilog without the time-0 trigger (their first lines)."""
    lines = verilog.convert(component, name=name).splitlines()
    bad = []
    for i, line in enumerate(lines):
        if line.strip().startswith("always @*"):
            head = " ".join(lines[i:i + 2])
            if "dump_module" not in head:
                bad.append(head.strip())
    return bad


def _book_kwargs(**kw):
    import inspect

    from tickgate.fpga.order_book import MarketBook
    accepted = inspect.signature(MarketBook.__init__).parameters
    return {k: v for k, v in kw.items() if k in accepted}


def _udp():
    from tickgate.fpga.udp_rx import UDPReceiver
    return UDPReceiver()


def _mold():
    from tickgate.fpga.moldudp64_rx import MoldUDP64Receiver
    return MoldUDP64Receiver()


def _split():
    from tickgate.fpga.itch_split import ItchSplitter
    return ItchSplitter()


def _decode():
    from tickgate.fpga.itch_decode import ItchDecoder
    return ItchDecoder()


def _book():
    from tickgate.fpga.order_book import MarketBook
    return MarketBook(**_book_kwargs(**SMALL_BOOK))


def _pipeline():
    from tickgate.fpga.market_data import MarketDataPipeline
    return MarketDataPipeline(book=_book_kwargs(**SMALL_BOOK))


BLOCKS = {"udp_rx": _udp, "moldudp64_rx": _mold, "itch_split": _split, "itch_decode": _decode,
          "market_book": _book, "market_data": _pipeline}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_no_untriggered_comb(name):
    bad = untriggered(BLOCKS[name](), name)
    assert not bad, f"{name}: {len(bad)} always @* without the time-0 trigger: {bad[:5]}"


class _Mixed(wiring.Component):
    """``o`` driven by a plain connection (low half) and by a process (high half): the pattern to avoid."""

    def __init__(self):
        super().__init__({"a": In(4), "en": In(1), "o": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.o[:4].eq(self.a)
        with m.If(self.en):
            m.d.comb += self.o[4:].eq(self.a)
        return m


def test_scan_finds_the_pattern():
    """The scan is not vacuous: it flags a signal driven partly by a process and partly by a connection."""
    assert untriggered(_Mixed(), "mixed"), "the scan missed an untriggered always @*"
