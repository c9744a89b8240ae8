"""MarketBook: parameter checks, and the cocotb suite (sim/tb_book.py) on Verilator: one build of the
default sizing and one of a tiny edge-case configuration (each cached)."""

from __future__ import annotations

import pytest

from tickgate.fpga.order_book import BOOK_DEFAULTS, MarketBook


@pytest.mark.parametrize("bad", [
    dict(capacity=1000), dict(capacity=0), dict(ways=3), dict(symbols=6), dict(depth=1), dict(depth=33),
    dict(depth=4.0), dict(locates=100), dict(locates=1 << 17), dict(lookup_depth=0),
    dict(depth=4, lookup_depth=5), dict(capacity=4, ways=8), dict(fifo_depth=4), dict(symbols="64"),
    dict(depth=True),
])
def test_bad_parameters(bad):
    with pytest.raises(TypeError):
        MarketBook(**bad)


def test_defaults_and_hash():
    book = MarketBook()
    book._MustUse__silence = True     # not elaborated
    assert {k: getattr(book, k) for k in BOOK_DEFAULTS} == BOOK_DEFAULTS
    assert book.symbols >= 512 and book.locates == 1 << 14
    assert book.buckets == book.capacity // book.ways
    assert all(0 <= book.bucket_of(r) < book.buckets for r in (0, 1, (1 << 64) - 1, 0x1234_5678_9ABC_DEF0))
    # consecutive references (as ITCH assigns them) land in distinct buckets
    assert len({book.bucket_of((7 << 40) + i) for i in range(book.buckets)}) == book.buckets


def test_default_elaborates():
    """The default sizing converts; the ports include applied/applied_seq and the top-N lookup."""
    from amaranth.back import rtlil
    text = rtlil.convert(MarketBook(), name="market_book")
    assert "market_book" in text and "applied_seq" in text


def test_no_untriggered_comb():
    """Every combinational ``always @*`` block of the book's Verilog carries Yosys' time-0 trigger.

    A signal driven partly by a process and partly by plain connections comes out of write_verilog with
    per-slice ``always @*`` blocks without it; Icarus runs such a block only when its source changes, so a
    source that keeps its initial value all run (the ``stale`` input, a ``degraded`` bit) leaves the slice X
    for ever (Verilator evaluates everything at time 0). This once made every TopOfBook record's ``stale``
    flag X on Icarus."""
    from amaranth.back import verilog

    from tickgate.sim.tb_book import CONFIGS
    lines = verilog.convert(MarketBook(**CONFIGS["small"]), name="market_book").splitlines()
    bad = [lines[i + 1].strip() for i, line in enumerate(lines[:-1])
           if line.strip() == "always @*" and "dump_module" not in lines[i + 1]]
    assert not bad, f"always @* without the time-0 trigger: {bad[:5]}"


@pytest.mark.rtl
@pytest.mark.parametrize("config", ["main", "small"])
def test_rtl(config):
    """The whole cocotb suite of one configuration in one simulator run."""
    from tickgate.sim.tb_book import CONFIGS

    from .conftest import run_cocotb

    result = run_cocotb(MarketBook(**CONFIGS[config]), toplevel="market_book",
                        test_module="tickgate.sim.tb_book", extra_env={"TICKGATE_BOOK_CONFIG": config})
    assert len(result.tests) >= 4
