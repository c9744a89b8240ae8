"""MoldUDP64Receiver: cocotb suite on Verilator (one build, every test x idle x backpressure), smoke on Icarus."""

import pytest

from tickgate.fpga.moldudp64_rx import MoldUDP64Receiver
from tickgate.fpga.stream import AXIStreamTop
from tickgate.sim import runner

# Tops built only to inspect their ports (or rejected) are never elaborated.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def top():
    return AXIStreamTop(MoldUDP64Receiver())


def test_arguments():
    with pytest.raises(TypeError, match="counter_width"):
        MoldUDP64Receiver(counter_width=-1)


def test_axi_ports():
    names = set(top().signature.members)
    assert {"s_axis_tdata", "m_axis_tuser", "gap_clear", "status__gap", "status__first_missing",
            "counters__duplicate", "counters__count_error", "counters__unsequenced", "counters__overlap"} <= names


@pytest.mark.rtl
def test_moldudp64_rx_verilator():
    result = runner.run(top(), toplevel="moldudp64_rx", test_module="tickgate.sim.tb_moldudp64_rx")
    assert len(result.tests) == 10 * 4 + 1


@pytest.mark.rtl
def test_moldudp64_rx_icarus_smoke():
    reason = runner.simulator_available("icarus")
    if reason:
        pytest.skip(f"Icarus smoke test: {reason}")
    runner.run(top(), toplevel="moldudp64_rx", test_module="tickgate.sim.tb_moldudp64_rx", simulator="icarus",
               testcase="test_smoke")
