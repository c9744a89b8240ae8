"""cocotb drivers for Amaranth ``lib.stream`` ports, and the payload packing they need.

A component's stream port flattens to ``<prefix>__valid``, ``<prefix>__ready`` and ``<prefix>__payload``.
:class:`StreamSource` drives such a sink port from a queue of integer payloads, :class:`StreamSink` takes
from such a source port and logs every transfer; both pause on the cycles a pause generator (see
:mod:`tickgate.sim.tb`) yields 1. :func:`pack_fields` / :func:`unpack_fields` convert between a
``data.StructLayout``'s field values and the integer on the ``payload`` pins.

(AXI4-Stream named ports, ``s_axis_*`` / ``m_axis_*``, are driven with cocotbext-axi instead.)
"""

from __future__ import annotations

from collections import deque

import cocotb
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.triggers import RisingEdge

__all__ = ["StreamSource", "StreamSink", "pack_fields", "unpack_fields", "paused"]


def unpack_fields(layout, value: int) -> dict:
    """A dict of a ``data.StructLayout``'s fields (ints; ArrayLayout fields as ``bytes`` if 8-bit)."""
    out = {}
    for name, field in data.Layout.cast(layout):
        raw = (value >> field.offset) & ((1 << field.width) - 1)
        shape = field.shape
        if isinstance(shape, data.ArrayLayout) and Shape.cast(shape.elem_shape).width == 8:
            out[name] = raw.to_bytes(shape.length, "little")
        else:
            out[name] = raw
    return out


def pack_fields(layout, **values) -> int:
    """The integer payload of a ``data.StructLayout`` from field values (ints, or ``bytes`` for byte arrays)."""
    result = 0
    fields = dict(data.Layout.cast(layout))
    for name, value in values.items():
        field = fields[name]
        if isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(value, "little")
        value = int(value)
        if not 0 <= value < 1 << field.width:
            raise ValueError(f"{name}={value} does not fit {field.width} bits")
        result |= value << field.offset
    return result


def paused(gen) -> bool:
    """Whether a pause generator (None: never pauses) asks for a pause this cycle; advances it."""
    return bool(gen is not None and next(gen))


class StreamSource:
    """Drives an Amaranth stream sink port ``<prefix>__valid/ready/payload`` from a queue.

    ``send`` queues ints, or ``(payload, cycle)`` pairs: such an item is presented so that it is taken at
    ``cycle`` at the earliest, with no pause before it (for stimulus at a fixed rate). ``cycle`` counts
    rising edges since start; ``accepted`` lists the cycle at which each item was taken. Idle cycles
    (``set_pause_generator``) are only inserted between items: valid never falls before a transfer.
    """

    def __init__(self, dut, prefix: str, clk):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = clk
        self.queue: deque = deque()
        self.accepted: list[int] = []
        self.cycle = 0
        self._busy = False
        self._pause = None
        self.valid.value = 0
        self.payload.value = 0
        cocotb.start_soon(self._run())

    def set_pause_generator(self, gen=None):
        self._pause = gen

    def send(self, items):
        self.queue.extend(items)

    def idle(self) -> bool:
        return not self.queue and not self._busy

    def _next(self):
        """The payload to present now, taken off the queue, or None to wait (the queue is not empty)."""
        item = self.queue[0]
        if isinstance(item, tuple):
            payload, cycle = item
            if self.cycle + 1 < cycle:          # presented now, it is taken at the next edge at the earliest
                return None
        elif paused(self._pause):
            return None
        else:
            payload = item
        self.queue.popleft()
        return payload

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1
            if self._busy and self.ready.value == 1:
                self.accepted.append(self.cycle)
                self._busy = False
            if not self._busy and self.queue:
                payload = self._next()
                if payload is not None:
                    self.payload.value = payload
                    self._busy = True
            self.valid.value = int(self._busy)


class StreamSink:
    """Takes items from an Amaranth stream source port ``<prefix>__valid/ready/payload``.

    ``items`` holds ``(first_valid_cycle, accept_cycle, payload)`` per transfer, cycles counted in rising
    edges since start; ``set_pause_generator`` drops ``ready`` on cycles where it yields 1.
    """

    def __init__(self, dut, prefix: str, clk):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk = clk
        self.items: list[tuple[int, int, int]] = []
        self._pause = None
        self.ready.value = 1
        cocotb.start_soon(self._run())

    def set_pause_generator(self, gen=None):
        self._pause = gen

    def clear(self):
        self.items = []

    async def _run(self):
        cycle = 0
        first = None
        while True:
            await RisingEdge(self.clk)
            cycle += 1
            if self.valid.value == 1:
                if first is None:
                    first = cycle
                if self.ready.value == 1:
                    self.items.append((first, cycle, self.payload.value.to_unsigned()))
                    first = None
            self.ready.value = 0 if paused(self._pause) else 1
