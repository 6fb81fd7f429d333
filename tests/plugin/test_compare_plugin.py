"""``--perfsuite-compare``: the comparison at the end of a real benchmark session (pytester's in-process run; a
suspect's re-measure is a fresh process, as it always is).

The baselines are planted: five runs of this very machine (its live identity) whose numbers no real run can
come near (a LoRA forward at 0.5× or 3× the plain model's, times of a second), so the verdicts are logic,
not timing, on any machine.
"""

import pytest
import synthetic as syn

from perfsuite.compare.baselines import add_runs
from perfsuite.measure.machine import machine_env

pytest_plugins = ["pytester"]

BENCH = """
import pytest
from perfsuite.workloads.latency import run_latency_cell


@pytest.mark.perfsuite(workload="latency")
def test_latency(benchmark, perfsuite_cell, perfsuite_measure):
    perfsuite_measure(run_latency_cell)
"""
ONE_CELL = ["-p", "no:cacheprovider", "--perfsuite-device", "cpu", "--perfsuite-rounds", "5", "--perfsuite-warmup",
            "1", "--perfsuite-cells", "adapter == 'lora' and batch == 1"]
LORA = syn.cell("lora")


def plant(pytester, ratio: float, *, base_ms: float = 1000.0, host: str | None = None) -> str:
    """Five baseline runs of the LoRA cell at ``ratio`` × the plain model's time, on this machine (or ``host``)."""
    env = machine_env("cpu") | {"threads": 1} | ({"host": host} if host else {})
    runs = [syn.results([syn.record(LORA, seed=k, ratio=ratio, base_ms=base_ms, run_sd=0.01, e=env)])
            for k in range(5)]
    (report,) = add_runs(runs, directory=pytester.path / "baselines")
    return str(report.path)


@pytest.fixture
def bench(pytester, monkeypatch):
    # one thread in the re-measure's process: two OpenMP threads on a busy 2-core runner stall for whole scheduler
    # slices (see perfsuite.selftest.options.THREADS_NOTE)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makepyfile(test_bench=BENCH)
    return pytester


def test_an_improvement_passes_and_prints_the_table(bench):
    plant(bench, 3.0)  # the baseline's LoRA took 3× the plain model and a whole second
    result = bench.runpytest_inprocess(*ONE_CELL, "--perfsuite-compare")
    result.stdout.fnmatch_lines(["*perfsuite comparison*", "perfsuite compare (end of session)",
                                 "part smoke: this machine's baseline: a confirmed regression fails the run*",
                                 "  detects changes above (median over cells): slowdown * pp, time * %",
                                 "latency[[]lora-r8-b1-s32[]]  improvement  time *",
                                 "latency[[]lora-r8-b1-s32[]]  improvement  slowdown *",
                                 "1 cells: 1 improvement"])
    assert result.ret == 0


def test_a_confirmed_regression_fails_the_session(bench):
    plant(bench, 0.5, base_ms=1e-4)  # the baseline's LoRA ran at half the plain model's time, in 0.1 µs
    result = bench.runpytest_inprocess(*ONE_CELL, "--perfsuite-compare")
    result.stdout.fnmatch_lines(["*perfsuite comparison*", "latency[[]lora-r8-b1-s32[]]  regression  *",
                                 "1 cells: 1 regression", "*1 passed*"])
    assert "5→2" in result.stdout.str()  # re-measured once in a fresh process before it counted
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_another_machines_baseline_is_shown_and_never_fails(bench):
    plant(bench, 0.5, base_ms=1e-4, host="the-machine-the-baseline-came-from")
    result = bench.runpytest_inprocess(*ONE_CELL, "--perfsuite-compare")
    result.stdout.fnmatch_lines(["*REFERENCE ONLY: a baseline of another machine*",
                                 "*differs in: host: 'the-machine-the-baseline-came-from' vs *",
                                 "latency[[]lora-r8-b1-s32[]]  reference  slowdown *"])
    result.stdout.no_fnmatch_line("*  regression  *")
    assert result.ret == 0


def test_a_broken_baseline_is_refused_before_anything_is_measured(bench):
    (bench.path / "broken.json").write_text('{"perfsuite_baseline": 3, "runs": ')
    result = bench.runpytest_inprocess(*ONE_CELL, "--perfsuite-compare=broken.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: perfsuite compare: broken.json: not valid JSON*"])
    assert "Traceback" not in result.stderr.str() and "passed" not in result.stdout.str()  # nothing measured


def test_a_broken_file_among_the_baselines_is_refused_too(bench):
    plant(bench, 3.0)
    (bench.path / "baselines" / "torn.json").write_text('{"perfsuite_baseline": 4, "name": "torn", "runs": [')
    result = bench.runpytest_inprocess(*ONE_CELL, "--perfsuite-compare")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: perfsuite compare: *torn.json: not valid JSON*"])


def test_without_any_baseline_nothing_is_compared(bench):
    result = bench.runpytest_inprocess(*ONE_CELL, "--perfsuite-compare")
    result.stdout.fnmatch_lines(["part smoke: no baseline for this machine and part",
                                 "*record this machine's baseline with: perfsuite baseline record*"])
    assert result.ret == 0


def test_a_baseline_cell_the_session_did_not_measure_fails_it_unless_allowed(bench):
    """Issue 27, probe 2, in a pytest session: -k drops a cell the baseline has within --perfsuite-cells."""
    env = machine_env("cpu") | {"threads": 1}
    both = (LORA, syn.cell("lora", batch=4))  # far slower than any real run: no regression, only the missing cell
    add_runs([syn.results([syn.record(c, seed=10 * k + i, ratio=3.0, base_ms=1000.0, run_sd=0.01, e=env)
                           for i, c in enumerate(both)]) for k in range(5)], directory=bench.path / "baselines")
    args = [*ONE_CELL[:-1], "adapter == 'lora' and batch in (1, 4)", "-k", "not b4", "--perfsuite-compare"]
    result = bench.runpytest_inprocess(*args)
    result.stdout.fnmatch_lines(["MISSING: 1 cell of the baseline not measured by this run*lora-r8-b4-s32*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert bench.runpytest_inprocess(*args, "--perfsuite-allow-missing").ret == 0
