"""MarketDataPipeline: structure, and the end-to-end cocotb suite (sim/tb_pipeline.py) on Verilator and Icarus.

The suite sends scapy-built frames (untagged, one and two VLAN tags in turn) through the whole pipeline (with
and without idle cycles and backpressure), asserts the exact end-to-end latency of every message (one figure,
``market_data.LATENCY``, at every frame lane and tag count), and sends bad input (truncated frames,
a bad IPv4 checksum, a MoldUDP64 count mismatch, an unknown type, a zero-length message, a gap, a duplicate)
followed by a good sequence whose rows must equal the model's.
"""

from __future__ import annotations

import pytest

from tickgate.fpga.market_data import MarketDataPipeline, MarketDataTop

#: A small book (fast to build and to sweep after reset); the synth feeds of the TB use locates 1..4.
TB_BOOK = dict(capacity=2048, ways=4, symbols=8, locates=64)


def _book(**kw):
    import inspect

    from tickgate.fpga.order_book import MarketBook
    accepted = inspect.signature(MarketBook.__init__).parameters
    return {k: v for k, v in kw.items() if k in accepted}


def _silence(pipeline):
    """Mark a pipeline and its blocks as deliberately not elaborated (no UnusedElaboratable warnings)."""
    for c in (pipeline, pipeline.udp, pipeline.mold, pipeline.split, pipeline.decode, pipeline.book):
        c._MustUse__silence = True


def test_ports():
    top = MarketDataTop(book=_book(**TB_BOOK))
    top._MustUse__silence = top.axi._MustUse__silence = True
    _silence(top.pipeline)
    members = top.signature.members
    for name in ("s_axis_tdata", "s_axis_tkeep", "s_axis_tlast", "s_axis_tvalid", "s_axis_tready", "m_axis_tdata",
                 "m_axis_tvalid", "m_axis_tready", "dst_ip", "dst_port", "gap_clear", "lookup__locate",
                 "lookup__result", "status__gap", "counters__udp__ok", "counters__mold__gap",
                 "counters__split__truncated", "counters__decode__unknown", "counters__book__table_full"):
        assert name in members, name
    p = top.pipeline
    p._MustUse__silence = True
    assert isinstance(p, MarketDataPipeline)


def test_latency_is_uniform():
    """The stated end-to-end latency is one figure, the blocks' sum: each front-end block forwards every byte
    one cycle after its input beat (no realignment, no flush beat), the decoder is combinational inside the
    pipeline (the book's input stage is its register), so the front end adds 3 to the book."""
    from tickgate.fpga import itch_split, market_data, moldudp64_rx, udp_rx
    from tickgate.fpga.order_book import MarketBook

    for mod in (udp_rx, moldudp64_rx):
        assert mod.LATENCY_MAX == mod.LATENCY == 1, mod.__name__
    pipeline = market_data.MarketDataPipeline()
    _silence(pipeline)
    assert not pipeline.decode.registered and pipeline.decode.latency == 0
    front = udp_rx.LATENCY + moldudp64_rx.LATENCY + itch_split.LATENCY + pipeline.decode.latency
    assert front == 3
    assert market_data.LATENCY == front + MarketBook.LATENCY
    assert market_data.LATENCY_BY_LANE == (market_data.LATENCY,) * 8


@pytest.mark.rtl
def test_end_to_end():
    _end_to_end("verilator")


@pytest.mark.rtl
def test_end_to_end_icarus():
    """Same suite on Icarus (about 15 s with the build). Icarus does not start ``always @*`` blocks at time 0:
    it once showed the book's ``stale`` flag X in every record (see test_book_rtl.test_no_untriggered_comb)."""
    _end_to_end("icarus")


def _end_to_end(simulator):
    from .conftest import run_cocotb

    top = MarketDataTop(book=_book(**TB_BOOK))
    sweep = top.book.clear_cycles
    # Register inputs at their reset values (an undriven input is X on Icarus, 0 on Verilator).
    regs = ",".join(f"{n}={m.init or 0}" for n, m in top.signature.members.items()
                    if m.is_port and m.flow.name == "In" and not n.startswith(("s_axis_", "m_axis_", "lookup__")))
    result = run_cocotb(top, toplevel="market_data_tb", test_module="tickgate.sim.tb_pipeline", simulator=simulator,
                        extra_env={"TB_SWEEP": str(sweep), "TB_REGS": regs})
    assert len(result.tests) == 5
