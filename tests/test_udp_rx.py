"""UDPReceiver: cocotb suite on Verilator (one build, every test x idle x backpressure), smoke on Icarus."""

import pytest

from tickgate.fpga.stream import AXIStreamTop
from tickgate.fpga.udp_rx import UDPReceiver
from tickgate.sim import runner

# Tops built only to inspect their ports (or rejected) are never elaborated.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def top():
    return AXIStreamTop(UDPReceiver())


def test_arguments():
    with pytest.raises(TypeError, match="dst_ip"):
        UDPReceiver(dst_ip=1 << 32)
    with pytest.raises(TypeError, match="dst_port"):
        UDPReceiver(dst_port="26477")
    with pytest.raises(TypeError, match="counter_width"):
        UDPReceiver(counter_width=0)
    with pytest.raises(TypeError, match="wiring.Component"):
        AXIStreamTop(object())


def test_axi_ports():
    names = set(AXIStreamTop(UDPReceiver()).signature.members)
    assert {"s_axis_tdata", "s_axis_tkeep", "s_axis_tlast", "s_axis_tvalid", "s_axis_tready",
            "m_axis_tdata", "m_axis_tready", "dst_ip", "counters__ok", "counters__truncated", "vlan_id",
            "match_vlan", "match_ip", "match_port", "zero_checksum_ok"} <= names


def _env():
    from .conftest import shared_data_dir
    data = shared_data_dir()
    return {"TICKGATE_DATA": str(data)} if data else {}


@pytest.mark.rtl
def test_udp_rx_verilator():
    """Every cocotb test x idle x backpressure; the recorded-capture test passes vacuously without the data."""
    result = runner.run(top(), toplevel="udp_rx", test_module="tickgate.sim.tb_udp_rx", extra_env=_env())
    assert len(result.tests) == 9 * 4 + 1


@pytest.mark.rtl
def test_udp_rx_icarus_smoke():
    reason = runner.simulator_available("icarus")
    if reason:
        pytest.skip(f"Icarus smoke test: {reason}")
    runner.run(top(), toplevel="udp_rx", test_module="tickgate.sim.tb_udp_rx", simulator="icarus",
               testcase="test_smoke")
