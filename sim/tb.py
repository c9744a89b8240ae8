"""Reusable cocotb testbench bases and pause patterns.

:class:`ClockedTB` is the base of every block's testbench: it owns the clock, the reset (asserted for a
configurable number of cycles), a cycle counter, the plain input ports (registers, idle strobes) and the
idle/backpressure configuration of the testbench's ``source`` and ``sink``.

:class:`StreamTB` adds, for blocks with AXI4-Stream named ports (as exposed by
:class:`tickgate.fpga.stream.AXIStreamTop`), an ``AxiStreamSource`` on ``s_axis_*``, an ``AxiStreamSink`` on
``m_axis_*`` and a handshake log on both streams for latency checks. Blocks with Amaranth ``lib.stream``
ports use the drivers of :mod:`tickgate.sim.streams` on a :class:`ClockedTB`.
"""

from __future__ import annotations

import itertools
import logging
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

__all__ = ["ClockedTB", "StreamTB", "MODES", "back_to_back", "idle_pattern", "random_pattern"]

#: ``@cocotb.parametrize(**MODES)``: a test with and without source idle cycles and sink backpressure.
MODES = dict(idle=[False, True], backpressure=[False, True])


def back_to_back(cycles) -> bool:
    """Whether ``cycles`` (e.g. the accept cycles of a run's input beats) is non-empty and consecutive, one
    beat every cycle."""
    return bool(cycles) and list(cycles) == list(range(cycles[0], cycles[0] + len(cycles)))


def idle_pattern():
    """A fixed, repeating pause pattern (1 = pause this cycle) with runs of several lengths."""
    return itertools.cycle([1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0])


def random_pattern(seed: int, p: float = 0.3):
    """Random pauses with probability ``p``, reproducible from ``seed``."""
    rng = random.Random(seed)
    while True:
        yield int(rng.random() < p)


class ClockedTB:
    """Clock, reset, cycle counter and input ports of a block's testbench.

    ``cycle`` counts rising edges since the clock started; a subclass that logs something every cycle
    does it in :meth:`_sample`, which sees ``cycle`` already advanced. ``INPUTS``: input ports and the value
    they hold from the start. :meth:`configure` expects the subclass to have made ``self.source`` and
    ``self.sink`` (anything with ``set_pause_generator``).
    """

    #: Cycles the reset is held by default.
    RESET_CYCLES = 3
    #: Probability of an idle cycle on the source in :meth:`configure`.
    IDLE_PROBABILITY = 0.3
    INPUTS: dict = {}

    def __init__(self, dut, *, period_ns: float = 4):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.clk = dut.clk
        self.rst = dut.rst
        self.idle = self.backpressure = False
        cocotb.start_soon(Clock(self.clk, period_ns, unit="ns").start())
        self.set_inputs(**self.INPUTS)
        self.cycle = 0
        cocotb.start_soon(self._count())

    @classmethod
    async def start(cls, dut, idle: bool = False, backpressure: bool = False, seed: int = 1, **inputs):
        """A testbench on ``dut`` with ``inputs`` set, idle/backpressure configured, after reset."""
        tb = cls(dut)
        tb.set_inputs(**inputs)
        tb.configure(idle, backpressure, seed)
        await tb.reset()
        return tb

    async def _count(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1
            self._sample()

    def _sample(self):
        """Called at every rising edge, after ``cycle`` has advanced."""

    def set_inputs(self, **values):
        """Drive plain input ports (e.g. the registers a CSR bank will drive later)."""
        for name, value in values.items():
            getattr(self.dut, name).value = value

    def configure(self, idle: bool, backpressure: bool, seed: int = 1):
        """Random idle cycles on the source (from ``seed``), :func:`idle_pattern` backpressure on the sink."""
        self.idle, self.backpressure = idle, backpressure
        self.source.set_pause_generator(random_pattern(seed, self.IDLE_PROBABILITY) if idle else None)
        self.sink.set_pause_generator(idle_pattern() if backpressure else None)

    async def cycles(self, n: int):
        await ClockCycles(self.clk, n)

    async def wait_for(self, condition, cycles: int) -> bool:
        """Wait until ``condition()`` holds, testing it before each of at most ``cycles`` rising edges.
        Returns whether it held (False: timed out)."""
        for _ in range(cycles):
            if condition():
                return True
            await RisingEdge(self.clk)
        return False

    async def reset(self, cycles: int | None = None):
        """Hold reset for ``cycles`` (default ``RESET_CYCLES``), release it, wait for :meth:`_after_reset`,
        then empty the logs (:meth:`clear_log`)."""
        self.rst.value = 1
        await ClockCycles(self.clk, cycles or self.RESET_CYCLES)
        self.rst.value = 0
        await self._after_reset()
        self.clear_log()

    async def _after_reset(self):
        await ClockCycles(self.clk, 2)

    def clear_log(self):
        """Forget what the testbench logged so far (called at the end of :meth:`reset`)."""


class StreamTB(ClockedTB):
    """A :class:`ClockedTB` with an AXI4-Stream source and sink and a cycle-accurate handshake log.

    ``beats_in`` / ``beats_out`` record ``(cycle, tlast)`` for every accepted beat, where ``cycle`` counts
    rising edges since the clock started; ``frames_in`` / ``frames_out`` hold the cycle of each packet's
    first beat. Differences of these are exact latencies in cycles.
    """

    RESET_CYCLES = 4

    def __init__(self, dut, *, period_ns: float = 4, s_prefix: str = "s_axis", m_prefix: str = "m_axis"):
        super().__init__(dut, period_ns=period_ns)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, s_prefix), self.clk, self.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, m_prefix), self.clk, self.rst)
        self.source.log.setLevel(logging.WARNING)
        self.sink.log.setLevel(logging.WARNING)
        self._s = (getattr(dut, f"{s_prefix}_tvalid"), getattr(dut, f"{s_prefix}_tready"),
                   getattr(dut, f"{s_prefix}_tlast"))
        self._m = (getattr(dut, f"{m_prefix}_tvalid"), getattr(dut, f"{m_prefix}_tready"),
                   getattr(dut, f"{m_prefix}_tlast"))
        self.clear_log()

    def clear_log(self):
        self.beats_in: list[tuple[int, bool]] = []
        self.beats_out: list[tuple[int, bool]] = []
        self.frames_in: list[int] = []
        self.frames_out: list[int] = []
        self._in_first = self._out_first = True

    def _sample(self):
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

    def set_idle_generator(self, generator=None):
        """Pause the source on cycles where ``generator`` yields 1 (None: never)."""
        self.source.set_pause_generator(generator)

    def set_backpressure_generator(self, generator=None):
        """Deassert the sink's tready on cycles where ``generator`` yields 1 (None: never)."""
        self.sink.set_pause_generator(generator)

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
