"""MarketBook: parameter checks, and the cocotb suite (sim/tb_book.py) on Verilator (one build, cached)."""

from __future__ import annotations

import pytest

from tickgate.fpga.order_book import BOOK_DEFAULTS, MarketBook


@pytest.mark.parametrize("bad", [
    dict(capacity=1000), dict(capacity=0), dict(ways=3), dict(symbols=6), dict(window=48), dict(window=1),
    dict(tick=0), dict(tick=1.5), dict(capacity=4, ways=8), dict(fifo_depth=4), dict(symbols="64"),
])
def test_bad_parameters(bad):
    with pytest.raises(TypeError):
        MarketBook(**bad)


def test_defaults_and_hash():
    book = MarketBook()
    book._MustUse__silence = True     # not elaborated
    assert (book.capacity, book.ways, book.symbols, book.window, book.tick) == tuple(
        BOOK_DEFAULTS[k] for k in ("capacity", "ways", "symbols", "window", "tick"))
    assert book.buckets == book.capacity // book.ways
    assert all(0 <= book.bucket_of(r) < book.buckets for r in (0, 1, (1 << 64) - 1, 0x1234_5678_9ABC_DEF0))
    # consecutive references (as ITCH assigns them) land in distinct buckets
    assert len({book.bucket_of((7 << 40) + i) for i in range(book.buckets)}) == book.buckets


def test_default_elaborates():
    """The default sizing converts (the suite simulates the small TEST_CONFIG)."""
    from amaranth.back import rtlil
    assert "market_book" in rtlil.convert(MarketBook(), name="market_book")


@pytest.mark.rtl
def test_rtl():
    """The whole cocotb suite in one simulator run."""
    from tickgate.sim import runner
    from tickgate.sim.tb_book import TEST_CONFIG

    reason = runner.simulator_available("verilator")
    if reason:
        pytest.skip(reason)
    result = runner.run(MarketBook(**TEST_CONFIG), toplevel="market_book", test_module="tickgate.sim.tb_book")
    assert len(result.tests) >= 6 * 4 + 1
