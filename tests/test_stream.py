"""SkidBuffer (fpga/stream.py): order and completeness under random valid/ready, ready from a register,
latency 0 while empty; the length-prefix candidates and one-hot pick the parsers share. Amaranth's
simulator (the blocks are small)."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from tickgate.fpga.stream import SkidBuffer, length_prefixes, onehot_pick


@pytest.mark.parametrize("chunk", [64, 5])       # 5: the payload's bypass mux in four parts, four copies
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("p_valid,p_ready", [(1.0, 1.0), (0.7, 0.6), (1.0, 0.3), (0.3, 1.0)])
def test_skid_random(seed, p_valid, p_ready, chunk):
    rng = random.Random(seed)
    dut = SkidBuffer(16, chunk=chunk)
    items = [rng.randrange(1 << 16) for _ in range(300)]
    got, log = [], []

    async def bench(ctx):
        pending = list(items)
        for cycle in range(2000):
            offer = bool(pending) and rng.random() < p_valid
            take = rng.random() < p_ready
            ctx.set(dut.i_stream.valid, offer)
            if offer:
                ctx.set(dut.i_stream.payload, pending[0])
            ctx.set(dut.o_stream.ready, take)
            ready_before = ctx.get(dut.i_stream.ready)
            # ready must not depend on this cycle's o_stream.ready (it is a register)
            ctx.set(dut.o_stream.ready, not take)
            assert ctx.get(dut.i_stream.ready) == ready_before
            ctx.set(dut.o_stream.ready, take)
            if ctx.get(dut.o_stream.valid) and take:
                got.append(ctx.get(dut.o_stream.payload))
                log.append(cycle)
            if offer and ctx.get(dut.i_stream.ready):
                pending.pop(0)
            await ctx.tick()
            if not pending and len(got) == len(items):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == items


def test_skid_latency_zero_when_empty():
    dut = SkidBuffer(8)

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for v in range(10):
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, v)
            assert ctx.get(dut.i_stream.ready) == 1
            assert ctx.get(dut.o_stream.valid) == 1 and ctx.get(dut.o_stream.payload) == v
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_skid_bad_shape():
    with pytest.raises(TypeError):
        SkidBuffer("wide")


@pytest.mark.parametrize("chunk", [0, -1, 2.5, "8", True])
def test_skid_bad_chunk(chunk):
    with pytest.raises(TypeError, match="chunk"):
        SkidBuffer(8, chunk=chunk)


def test_length_prefixes_and_onehot_pick():
    data, keep, hi, sel = Signal(64), Signal(8), Signal(8), Signal(9)
    cands = length_prefixes(data, keep, hi)
    assert [body for _, body, _, _ in cands] == [2, 3, 4, 5, 6, 7, 8, 9, 1]
    m_sel = onehot_pick(sel, [ln for ln, _, _, _ in cands], 16)
    whole = onehot_pick(sel, [w for _, _, _, w in cands])

    async def bench(ctx):
        ctx.set(data, int.from_bytes(bytes(range(0x10, 0x18)), "little"))
        ctx.set(keep, 0b0111_1111)
        ctx.set(hi, 0xAB)
        for c, want in [(0, 0x1011), (3, 0x1314), (8, 0xAB10), (6, 0x1617)]:
            ctx.set(sel, 1 << c)
            assert ctx.get(m_sel) == want, c
        ctx.set(sel, 1 << 6)                 # lanes 6, 7: lane 7 not kept
        assert ctx.get(whole) == 0
        ctx.set(sel, 1 << 5)
        assert ctx.get(whole) == 1
        ctx.set(sel, 0)
        assert ctx.get(m_sel) == 0

    sim = Simulator(Module())
    sim.add_testbench(bench)
    sim.run()
