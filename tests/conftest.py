"""Shared fixtures: where the recorded feeds live, and the opt-in flags for long suites."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """``$TICKGATE_DATA`` or ``../shared/data`` beside the repository; None when absent."""
    env = os.environ.get("TICKGATE_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run suites marked slow (full-feed, 1M messages)")
    parser.addoption("--run-synth", action="store_true", help="run place-and-route suites (marked synth)")


def pytest_collection_modifyitems(config, items):
    for marker, flag in (("slow", "--run-slow"), ("synth", "--run-synth")):
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=f"{marker} suite: run with {flag}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("recorded feeds not found: set TICKGATE_DATA or place shared/data beside the repository")
    return path


def _files(sub: str, pattern: str) -> list[Path]:
    base = shared_data_dir()
    return sorted((base / sub).rglob(pattern)) if base else []


# For parametrising over every recorded file (empty lists skip cleanly when the data is absent).
ITCH_FILES = _files("itch", "*.NASDAQ_ITCH50")
PCAP_FILES = _files("pcap", "*.pcap")


def run_cocotb(top, *, toplevel: str, test_module: str, simulator: str = "verilator",
               extra_env: dict | None = None):
    """Run a cocotb module against ``top`` through tickgate.sim.runner; skip (with the runner's reason)
    when the simulator is missing. The recorded-feed location is passed on as TICKGATE_DATA."""
    from tickgate.sim import runner

    reason = runner.simulator_available(simulator)
    if reason:
        pytest.skip(reason)
    env = dict(extra_env or {})
    data = shared_data_dir()
    if data:
        env.setdefault("TICKGATE_DATA", str(data))
    return runner.run(top, toplevel=toplevel, test_module=test_module, simulator=simulator, extra_env=env)
