"""Shared by the test suite and, since tests/benchmarks lies below it, loaded by every benchmark run in a
checkout (``perfsuite run``, plain ``pytest tests/benchmarks``): what a run measures must not change here, so
what makes the suite hermetic (:func:`pytest_configure`) acts only when the session is the suite's."""

pytest_plugins = ["pytester"]

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import synthetic as syn
import torch

from perfsuite.cells.grid import get_profile, select
from perfsuite.measure.machine import machine_env

ROOT = Path(__file__).parents[1]


SUITE_ROUNDS = 5  # rounds of each benchmark cell when the suite runs them as tests (a benchmark run: the profile's)


def pytest_configure(config):
    """The suite's own session (any path outside tests/benchmarks): the grid of the built-in adapters, whatever
    adapter packages are installed (docs/adapters.md's custom-adapter steps install one), so the cell counts and ids the
    tests expect hold; inherited by the suite's subprocesses. The smoke cells of tests/benchmarks run with
    SUITE_ROUNDS rounds unless --perfsuite-rounds says otherwise: they are exercised end to end, not measured; the
    hypothesis profile is chosen; what in-process sessions need is imported. A benchmark run (only tests/benchmarks) keeps its installed adapters and its
    rounds, and needs nothing beyond the core install. Runs before the grid is read and the options are taken:
    conftest hooks come before the perfsuite plugin's."""
    from perfsuite import extensions

    benchmarks = ROOT / "tests" / "benchmarks"
    paths = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    if any(p != benchmarks and benchmarks not in p.parents for p in paths):
        os.environ[extensions.DISABLE_ENV] = "1"
        extensions._entry_points_read, extensions._contributed = False, {}
        # the smoke cells below tests/benchmarks run end to end as tests here, not as measurements: few rounds
        if config.getoption("perfsuite_rounds", None) is None:
            config.option.perfsuite_rounds, config.option.perfsuite_warmup = SUITE_ROUNDS, 1
        # property tests explore fresh examples on every local run (they found an overflow no fixed example had);
        # CI (.ci/run sets HYPOTHESIS_PROFILE=ci) draws the same ones every time, so a red CI run means changed
        # code. Imported here, not above: hypothesis is a test extra, and a core install's benchmark run in the
        # checkout loads this file too. Before collection, so every @settings inherits the profile.
        from hypothesis import settings

        settings.register_profile("ci", derandomize=True, database=None)
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
        # pytester's in-process sessions (runpytest_inprocess) drop every module first imported while they ran.
        # torch's compiler stack registers torch libraries when imported and cannot be imported a second time, and
        # importing the measuring stack again would cost about a second a session: both once, here.
        import torch._dynamo  # noqa: F401

        import perfsuite.benchmarks.test_latency  # noqa: F401
        import perfsuite.benchmarks.test_recompute  # noqa: F401
        import perfsuite.benchmarks.test_subspace  # noqa: F401
        import perfsuite.plugin.gate  # noqa: F401


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped with the reason where none is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is visible to torch here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: on a shared 2-core machine OpenMP spinning costs 50×, and numerics
    then match everywhere (the decoding tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


RUN_CELLS = "workload == 'latency' and phase == 'prefill' and adapter in ('none', 'lora', 'houlsby', 'pfeiffer')"


@dataclass(frozen=True)
class FinishedRun:
    proc: subprocess.CompletedProcess
    out: Path  # its --out folder: read it, or copy it before writing into it
    args: tuple[str, ...]  # the run's cells and rounds, for runs that must match it


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    """One ``perfsuite run`` of eight latency cells (3 rounds), compared with a planted run of this machine and
    reported, shared by the tests that only read or copy a finished run (tests/plugin/test_run.py, the torn
    journal in tests/unit/test_faults_files.py)."""
    tmp = tmp_path_factory.mktemp("finished_run")
    args = ("--rounds", "3", "--warmup", "1", "--cells", RUN_CELLS)
    env = machine_env("cpu") | {"threads": 1}  # the planted baseline: this machine's, planted not measured
    cells = select(get_profile("smoke").cells(device="cpu"), RUN_CELLS)
    records = [syn.record(c, seed=k, ratio=1.0 if c.adapter == "none" else 1.2, e=env) for k, c in enumerate(cells)]
    assert len(records) == 8
    baseline = syn.write(tmp / "reference.json", records)
    proc = syn.cli("run", *args, "--out", str(tmp / "run"), "--baseline", str(baseline), "--remeasure", "0")
    return FinishedRun(proc, tmp / "run", args)
