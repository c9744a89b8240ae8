"""ItchDecoder: the layout-derived table, parameter checks, and the cocotb suite (sim/tb_itch_decode.py) on
Verilator and Icarus (one build each, cached)."""

from __future__ import annotations

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from tickgate.fpga.book_records import BookOpKind
from tickgate.fpga.itch_decode import OPS, TYPE_CODES, ItchDecoder
from tickgate.wire import itch


def test_bad_parameters():
    with warnings.catch_warnings():
        # The half-built components are never elaborated; that is the point.
        warnings.simplefilter("ignore", UnusedElaboratable)
        for bad in (0, -3, 1.5, None):
            with pytest.raises(TypeError, match="counter_width"):
                ItchDecoder(counter_width=bad)
        for bad in (0, 1, "yes", None):
            with pytest.raises(TypeError, match="registered"):
                ItchDecoder(registered=bad)
        gc.collect()


def test_table_names_layout_fields():
    # Every ITCH field the table names exists in that type's layout (a KeyError here is a typo).
    for code, (kind, fields) in OPS.items():
        assert isinstance(kind, BookOpKind)
        for itch_field in fields.values():
            itch.LAYOUTS[code][itch_field]
    assert TYPE_CODES == tuple(t.code for t in itch.MESSAGE_TYPES) and len(set(TYPE_CODES)) == 23


def test_expected_op_examples():
    from tickgate.sim.tb_itch_decode import expected_op

    add = itch.AddOrder(7, 2, 3, 42, "B", 100, "AAPL    ", 1234500).encode()
    op, counter = expected_op(add, 9)
    assert counter == "A"
    assert op == dict(kind=BookOpKind.ADD.value, seq=9, locate=7, ref=42, new_ref=int.from_bytes(add[19:27], "big"),
                      buy=1, shares=100, price=1234500, code=0)
    assert expected_op(add[:-1], 1)[1] == "malformed"
    assert expected_op(b"z" + add[1:], 1) == (dict(op, kind=0, seq=1, buy=0, shares=0, price=0), "unknown")


@pytest.mark.rtl
@pytest.mark.parametrize("simulator,registered", [("verilator", True), ("icarus", True), ("verilator", False)])
def test_rtl(simulator, registered):
    """The whole cocotb suite in one simulator run (the recorded-feed tests skip when the data is absent),
    on the registered decoder and on the combinational one (latency 0) the pipeline uses."""
    from .conftest import run_cocotb

    result = run_cocotb(ItchDecoder(registered=registered), toplevel="itch_decode",
                        test_module="tickgate.sim.tb_itch_decode", simulator=simulator,
                        extra_env={"TICKGATE_DECODE_REGISTERED": "1" if registered else "0"})
    assert len(result.tests) == 4 + 4 + 1
