"""Reusable cocotb testbench base for stream blocks with AXI4-Stream named ports.

:class:`StreamTB` owns the clock, the reset, an ``AxiStreamSource`` on ``s_axis_*`` and an ``AxiStreamSink``
on ``m_axis_*`` (as exposed by :class:`tickgate.fpga.stream.AXIStreamTop`), pause generators for idle
cycles and backpressure, and a cycle counter with a handshake log on both streams for latency checks.
"""

from __future__ import annotations

import itertools
import logging
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

__all__ = ["StreamTB", "idle_pattern", "random_pattern"]


def idle_pattern():
    """A fixed, repeating pause pattern (1 = pause this cycle) with runs of several lengths."""
    return itertools.cycle([1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0])


def random_pattern(seed: int, p: float = 0.3):
    """Random pauses with probability ``p``, reproducible from ``seed``."""
    rng = random.Random(seed)
    while True:
        yield int(rng.random() < p)


class StreamTB:
    """Clock, reset, AXI4-Stream source and sink, and a cycle-accurate handshake log.

    ``beats_in`` / ``beats_out`` record ``(cycle, tlast)`` for every accepted beat, where ``cycle`` counts
    rising edges since the clock started; ``frames_in`` / ``frames_out`` hold the cycle of each packet's
    first beat. Differences of these are exact latencies in cycles.
    """

    def __init__(self, dut, *, period_ns: float = 4, s_prefix: str = "s_axis", m_prefix: str = "m_axis"):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.clk = dut.clk
        self.rst = dut.rst
        cocotb.start_soon(Clock(self.clk, period_ns, unit="ns").start())
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, s_prefix), self.clk, self.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, m_prefix), self.clk, self.rst)
        self.source.log.setLevel(logging.WARNING)
        self.sink.log.setLevel(logging.WARNING)
        self._s = (getattr(dut, f"{s_prefix}_tvalid"), getattr(dut, f"{s_prefix}_tready"),
                   getattr(dut, f"{s_prefix}_tlast"))
        self._m = (getattr(dut, f"{m_prefix}_tvalid"), getattr(dut, f"{m_prefix}_tready"),
                   getattr(dut, f"{m_prefix}_tlast"))
        self.cycle = 0
        self.clear_log()
        cocotb.start_soon(self._monitor())

    def clear_log(self):
        self.beats_in: list[tuple[int, bool]] = []
        self.beats_out: list[tuple[int, bool]] = []
        self.frames_in: list[int] = []
        self.frames_out: list[int] = []
        self._in_first = self._out_first = True

    async def _monitor(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1
            for (valid, ready, last), beats, frames, attr in (
                (self._s, self.beats_in, self.frames_in, "_in_first"),
                (self._m, self.beats_out, self.frames_out, "_out_first"),
            ):
                if valid.value == 1 and ready.value == 1:
                    is_last = bool(last.value)
                    beats.append((self.cycle, is_last))
                    if getattr(self, attr):
                        frames.append(self.cycle)
                    setattr(self, attr, is_last)

    def set_inputs(self, **values):
        """Drive plain input ports (e.g. the registers a CSR bank will drive later)."""
        for name, value in values.items():
            getattr(self.dut, name).value = value

    def set_idle_generator(self, generator=None):
        """Pause the source on cycles where ``generator`` yields 1 (None: never)."""
        self.source.set_pause_generator(generator)

    def set_backpressure_generator(self, generator=None):
        """Deassert the sink's tready on cycles where ``generator`` yields 1 (None: never)."""
        self.sink.set_pause_generator(generator)

    def configure(self, idle: bool, backpressure: bool, seed: int = 1):
        self.set_idle_generator(random_pattern(seed) if idle else None)
        self.set_backpressure_generator(idle_pattern() if backpressure else None)

    async def cycles(self, n: int):
        await ClockCycles(self.clk, n)

    async def reset(self, cycles: int = 4):
        self.rst.value = 1
        await ClockCycles(self.clk, cycles)
        self.rst.value = 0
        await ClockCycles(self.clk, 2)
        self.clear_log()

    async def send_all(self, frames):
        for frame in frames:
            await self.source.send(frame)

    async def recv_all(self, n: int, timeout_cycles: int = 100_000) -> list:
        """The next ``n`` packets from the sink; fails (no hang) after ``timeout_cycles`` without them."""
        out = []
        start = self.cycle
        while len(out) < n:
            if not self.sink.empty():
                out.append(self.sink.recv_nowait())
                continue
            if self.cycle - start > timeout_cycles:
                raise AssertionError(f"timeout: {len(out)} of {n} packets after {timeout_cycles} cycles")
            await RisingEdge(self.clk)
        return out

    async def drain(self, quiet_cycles: int = 50, timeout_cycles: int = 100_000):
        """Wait until the source is idle and no output beat appeared for ``quiet_cycles``."""
        start = self.cycle
        while True:
            await RisingEdge(self.clk)
            last_out = self.beats_out[-1][0] if self.beats_out else 0
            if self.source.idle() and self.cycle - max(last_out, start) >= quiet_cycles:
                return
            if self.cycle - start > timeout_cycles:
                raise AssertionError("timeout waiting for the block to drain")
