"""``--perfsuite-compare``: the comparison at the end of a real benchmark session, run in a subprocess."""

import json
import statistics

import pytest

pytest_plugins = ["pytester"]

BENCH = """
import pytest
from perfsuite.workloads.latency import run_latency_cell


@pytest.mark.perfsuite(workload="latency")
def test_latency(benchmark, perfsuite_cell, perfsuite_state, perfsuite_models):
    record = run_latency_cell(benchmark, perfsuite_cell, perfsuite_models, rounds=perfsuite_state.rounds,
                              warmup=perfsuite_state.warmup)
    benchmark.extra_info.update(record.to_dict())
"""
ONE_CELL = ["-p", "no:cacheprovider", "--perfsuite-device", "cpu", "--perfsuite-rounds", "5", "--perfsuite-warmup",
            "1", "--perfsuite-cells", "adapter == 'lora' and batch == 1"]


def baseline_file(pytester, ratio: float) -> str:
    """A baseline of another machine whose LoRA cell ran at ``ratio`` × its r = 0 time: compared on the slow-down."""
    base = [0.25 + 0.001 * i for i in range(20)]
    adapted = [ratio * t for t in base]
    cell = {"workload": "latency", "adapter": "lora", "rank": 8, "batch": 1, "seq_len": 32, "window": None,
            "gen_len": None, "rank_b": None, "dtype": "float32", "device": "cpu", "model": "tiny"}
    doc = {"perfsuite_baseline": 2, "name": "test", "profile": "smoke",
           "fingerprint": {"device_name": "cpu: test machine", "torch_version": "2.0", "cuda_version": None,
                           "dtype": "float32", "model": "tiny"},
           "cells": {"latency[lora-r8-b1-s32]": {"cell": cell, "samples_ms": adapted, "base_samples_ms": base,
                                                 "time_ms": statistics.median(adapted)}}}
    path = pytester.path / "baseline.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def bench(pytester, monkeypatch):
    # one thread: two OpenMP threads on a busy 2-core runner stall for whole scheduler slices (see perfsuite.selftest)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makepyfile(test_bench=BENCH)
    return pytester


def test_no_regression_passes_and_prints_the_table(bench):
    result = bench.runpytest_subprocess(*ONE_CELL, f"--perfsuite-compare={baseline_file(bench, 3.0)}")
    result.stdout.fnmatch_lines(["*perfsuite comparison*", "perfsuite compare against *baseline.json",
                                 "compared: slowdown*", "latency[[]lora-r8-b1-s32[]]  improvement  slowdown *",
                                 "1 cells: 0 regression, 1 improvement, *"])
    assert result.ret == 0


def test_a_confirmed_regression_fails_the_session(bench):
    result = bench.runpytest_subprocess(*ONE_CELL, f"--perfsuite-compare={baseline_file(bench, 0.5)}")
    result.stdout.fnmatch_lines(["*perfsuite comparison*", "latency[[]lora-r8-b1-s32[]]  regression  slowdown *",
                                 "1 cells: 1 regression, *",
                                 "suspect regressions re-measured before deciding: 1 cells", "*1 passed*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_broken_baseline_is_an_error_not_a_verdict(bench):
    (bench.path / "broken.json").write_text('{"perfsuite_baseline": 2, "cells": ')
    result = bench.runpytest_subprocess(*ONE_CELL, "--perfsuite-compare=broken.json")
    result.stdout.fnmatch_lines(["perfsuite compare: error: broken.json: not valid JSON*"])
    result.stdout.no_fnmatch_line("*regression*")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_without_a_matching_baseline_nothing_is_compared(bench):
    result = bench.runpytest_subprocess(*ONE_CELL, "--perfsuite-compare")
    result.stdout.fnmatch_lines(["perfsuite compare: no baseline in baselines/ matches this run's device and "
                                 "profile; nothing compared*"])
    assert result.ret == 0
