"""Event counters with a registered increment, shared by the market-data blocks."""

from __future__ import annotations

from amaranth.hdl import Signal, Value

__all__ = ["count", "count_strobe"]


def count(m, counter, inc, *, name: str):
    """Add ``inc`` (a 1-bit event, or a wider amount) to ``counter`` one cycle after it is seen.

    The increment goes through a register (``<name>``, reset 0), so the counter's adder is fed by that
    register alone and the logic deciding ``inc`` drives one flip-flop instead of the counter's enable
    (a counter lags its event by one cycle). The counter wraps. Returns the increment register.
    """
    if inc is None:
        raise TypeError("count() needs the event; for a strobe set in later branches use count_strobe()")
    inc = Value.cast(inc)
    q = Signal(len(inc), name=name)
    m.d.sync += [q.eq(inc), counter.eq(counter + q)]
    return q


def count_strobe(m, counter, *, name: str):
    """Like :func:`count`, for an event decided in several branches: returns the 1-bit increment register,
    which is 0 every cycle unless the caller sets it (``m.d.sync += strobe.eq(1)``) in statements added
    after this call. The counter lags the strobe by one cycle."""
    q = Signal(name=name)
    m.d.sync += [q.eq(0), counter.eq(counter + q)]
    return q
