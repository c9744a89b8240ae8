"""fpga/counters.py: registered-increment event counters."""

import gc

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from tickgate.fpga.counters import count, count_strobe


def _run(m, ev, counters, events):
    sim = Simulator(m)
    sim.add_clock(1e-8)
    seen = []

    async def bench(ctx):
        for e in events:
            ctx.set(ev, e)
            await ctx.tick()
        ctx.set(ev, 0)
        await ctx.tick().repeat(2)
        seen.extend(ctx.get(c) for c in counters)

    sim.add_testbench(bench)
    sim.run()
    return seen


def test_count_and_strobe():
    m = Module()
    ev = Signal()
    a, b = Signal(8), Signal(8)
    count(m, a, ev, name="inc_a")
    strobe = count_strobe(m, b, name="inc_b")
    with m.If(ev):
        m.d.sync += strobe.eq(1)
    assert _run(m, ev, (a, b), [1, 0, 1, 1, 0, 1]) == [4, 4]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_count_needs_the_event():
    with pytest.raises(TypeError, match="count_strobe"):
        count(Module(), Signal(8), None, name="inc")
    gc.collect()            # the refused module's warning fires here, under this test's filter
