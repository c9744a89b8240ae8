"""ItchSplitter: parameter checks, the reference model, and the cocotb suite (sim/tb_itch_split.py) on
Verilator and Icarus (one build each, cached)."""

from __future__ import annotations

import struct

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from tickgate.fpga.itch_split import ItchSplitter
from tickgate.fpga.stream import AXIStreamTop
from tickgate.sim.tb_itch_split import split_reference

from .conftest import run_cocotb


def test_bad_parameters():
    with warnings.catch_warnings():
        # The half-built components are never elaborated; that is the point.
        warnings.simplefilter("ignore", UnusedElaboratable)
        for bad in (0, -1, 8.0, "32"):
            with pytest.raises(TypeError, match="counter_width"):
                ItchSplitter(counter_width=bad)
        gc.collect()


def test_reference_model():
    blk = lambda n: struct.pack(">H", n) + bytes(range(n % 256))[:n] + bytes(max(0, n - 256))
    msgs, ends, counts = split_reference([blk(12) + blk(0) + blk(3), blk(51) + blk(12)[:5], b"\x00"])
    assert msgs == [bytes(range(12)), bytes(range(3))]
    assert ends == [(0, 13), (0, 20)]
    assert counts == {"zero_length": 1, "oversize": 1, "truncated": 2}


@pytest.mark.rtl
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_rtl(simulator):
    """The whole cocotb suite in one simulator run (the recorded-feed tests skip when the data is absent)."""
    top = AXIStreamTop(ItchSplitter(), streams={"i_stream": "s_axis"})
    result = run_cocotb(top, toplevel="itch_split", test_module="tickgate.sim.tb_itch_split", simulator=simulator)
    assert len(result.tests) == 7 * 4
