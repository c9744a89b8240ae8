"""Event counters with a registered increment, shared by the market-data blocks."""

from __future__ import annotations

from amaranth.hdl import Signal, Value

__all__ = ["count"]


def count(m, counter, inc=None, *, name: str):
    """Add ``inc`` (a 1-bit event, or a wider amount) to ``counter`` one cycle after it is seen.

    The increment goes through a register (``<name>``, reset 0), so the counter's adder is fed by that
    register alone and the logic deciding ``inc`` drives one flip-flop instead of the counter's enable
    (a counter lags its event by one cycle). The counter wraps. Returns the increment register.

    With ``inc`` None the (1-bit) register is 0 every cycle unless the caller sets it with ``m.d.sync``
    statements added after this call (in the branches that decide the event).
    """
    if inc is None:
        q = Signal(name=name)
        m.d.sync += [q.eq(0), counter.eq(counter + q)]
        return q
    inc = Value.cast(inc)
    q = Signal(len(inc), name=name)
    m.d.sync += [q.eq(inc), counter.eq(counter + q)]
    return q
