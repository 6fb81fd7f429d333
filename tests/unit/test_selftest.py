"""The detector's self-measurement: trials drawn from a pool of processes, judged as users' comparisons are."""

import json

import numpy as np
import pytest
import torch

from perfsuite.cli import main
from perfsuite.compare.verdicts import CompareOptions
from perfsuite.selftest.options import Level, SelftestOptions
from perfsuite.selftest.trials import SelftestReport, _trial, realized_effect


def planted_pool(processes: int, effects: list[float], *, run_sd: float, seed: int = 0) -> list[dict]:
    """Worker blocks without workers: per process a random slow-down of the plain model (its time) and of the
    ratio (run_sd), the adapted call ``1.2 × (1 + effect)`` times the plain one."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(processes):
        base = 0.3 * np.exp(rng.normal(0, 3 * run_sd))
        ratio_process = np.exp(rng.normal(0, run_sd))
        blocks = {}
        for i, e in enumerate(effects):
            ref = base * rng.lognormal(0, 0.01, 30)
            blocks[i] = {"samples_ms": list(ref * 1.2 * (1 + e / 100) * ratio_process * rng.lognormal(0, 0.01, 30)),
                         "ref_samples_ms": list(ref)}
        pool.append(blocks)
    return pool


@pytest.mark.parametrize("mode", ["ab", "baseline"])
def test_trials_find_planted_slowdowns_and_no_a_a_change(mode):
    options = SelftestOptions(processes=30, trials=60, runs=5, effects_pct=(20.0,), metrics=("slowdown",))
    pool = planted_pool(30, [0.0, 20.0], run_sd=0.01)
    rng = np.random.default_rng(1)
    levels = [Level(0.0, 0), Level(20.0, 1)]
    for _ in range(options.trials):
        for li, lv in enumerate(levels):
            _trial(mode, pool, li, rng, options, CompareOptions(), options.cell, lv)
    key = f"{mode}/slowdown"
    assert levels[0].count(key, "regression") == 0 and len(levels[0].verdicts[key]) == 60
    assert levels[1].count(key, "regression") >= 57  # a 20 % step against 1 % between-process noise


def test_the_realized_effect_is_measured_in_the_blocks_against_each_process_a_a_block():
    """Per process, the level's estimate against its own A/A block; the median over processes, in %."""
    pool = planted_pool(9, [0.0, 7.0], run_sd=0.02)
    cell = SelftestOptions().cell
    assert realized_effect(pool, 1, "slowdown", cell) == pytest.approx(7.0, abs=0.5)  # 1 % within-run noise
    assert abs(realized_effect(pool, 1, "time", cell) - 7.0) < 1.0  # the same plain model in both blocks
    assert realized_effect([{0: {}, 1: {}}], 1, "time", cell) is None  # no samples: no figure, not 0


def test_a_baseline_trial_uses_distinct_processes_and_remeasures_a_suspect():
    """One process far off (a 'noisy neighbour') is the current run: it is a suspect, the next process clears it."""
    options = SelftestOptions(processes=7, trials=1, runs=5, remeasure=1, effects_pct=(5.0,), metrics=("time",),
                              modes=("baseline",))
    pool = planted_pool(7, [0.0], run_sd=0.002)

    class Picks:
        def choice(self, n, size, replace):
            assert n == 7 and size == 7 and not replace  # 5 baseline runs, the current run, one re-measurement
            return np.arange(7)

    for block in pool[5].values():  # the current run's process is 30 % slow
        block["samples_ms"] = [1.3 * t for t in block["samples_ms"]]
        block["ref_samples_ms"] = [1.3 * t for t in block["ref_samples_ms"]]
    lv = Level(0.0, 0)
    _trial("baseline", pool, 0, Picks(), options, CompareOptions(), options.cell, lv)
    assert lv.verdicts["baseline/time"] == ["inconclusive"]  # suspect, not confirmed by the fresh process


def test_report_counts_rates_with_intervals():
    options = SelftestOptions(processes=40, trials=300, effects_pct=(5.0,), metrics=("slowdown",), modes=("ab",))
    aa = Level(0.0, 0, verdicts={"ab/slowdown": ["unchanged"] * 297 + ["regression"] * 2 + ["improvement"]})
    five = Level(5.0, 8, measured_pct=5.1, realized_pct={"slowdown": 6.3}, verdicts={"ab/slowdown": ["regression"] * 291 + ["inconclusive"] * 9})
    report = SelftestReport(options=options, device="cpu", forward_ms=0.3, extra_op_us=1.9, levels=[aa, five],
                            seconds=90.0, processes=40)
    rate, low, high = report.rate(aa, "ab/slowdown")
    assert rate == pytest.approx(2 / 300) and low < rate < high < 0.03
    table = report.table().splitlines()
    assert table[0] == ("perfsuite selftest on cpu: tiny lora r8 b1 s32, forward 0.300 ms, 100 rounds per block; 40 "
                        "separate worker processes in 90 s; 300 comparisons per mode and level drawn from them")
    assert table[3] == "A/B, metric slowdown:"
    assert table[5].split()[:6] == ["A/A", "-", "-", "2/300", "=", "0.7%"]
    assert table[6].split()[:6] == ["+5%", "+5.1%", "+6.3%", "291/300", "=", "97.0%"]
    assert table[6].split()[-2:] == ["0", "9"]
    assert json.loads(json.dumps(report.to_json()))["levels"][1]["trials"] == {"ab/slowdown": 300}


def test_quick_selftest_runs_end_to_end_in_separate_processes(capsys, tmp_path):
    threads = torch.get_num_threads()
    assert main(["selftest", "--quick", "--device", "cpu", "--json", str(tmp_path / "s.json")]) == 0
    captured = capsys.readouterr()
    assert torch.get_num_threads() == threads  # the selftest's thread setting does not leak
    out = captured.out.splitlines()
    assert out[0].startswith("perfsuite selftest on cpu: tiny lora r8 b1 s32, forward ")
    assert "4 separate worker processes" in out[0]
    assert "A/B, metric slowdown:" in out and "against a baseline, metric time:" in out
    assert "calibrated +20%: " in captured.err and "worker processes: 4/4" in captured.err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [lv["nominal_pct"] for lv in doc["levels"]] == [0.0, 20.0] and doc["processes"] == 4
    assert all(lv["trials"] == {f"{m}/{k}": 3 for m in ("ab", "baseline") for k in ("slowdown", "norm_time", "time")}
               for lv in doc["levels"])
    assert doc["levels"][1]["extra_ops"] >= 1 and doc["levels"][1]["measured_pct"] > 0
    assert set(doc["levels"][1]["realized_pct"]) == {"slowdown", "norm_time", "time"}
    assert "alpha 0.01 over a run of 100 tests" in out[1]  # one cell of a smoke run: the gate's family of 100


@pytest.mark.parametrize("argv,message", [
    (["--effects", "two"], "--effects 'two': give comma-separated percentages"),
    (["--metrics", "speed"], "--metrics: unknown ['speed']"),
    (["--modes", "ab,nightly"], "--modes: unknown ['nightly']"),
    (["--model", "gpt5"], "unknown model preset 'gpt5'"),
    (["--adapter", "nope"], "unknown adapter 'nope'"),
    (["--trials", "0"], "need trials >= 1"),
    (["--processes", "6"], "need at least 10 processes for 5 runs a side"),
])
def test_bad_options_are_one_line_errors(capsys, argv, message):
    assert main(["selftest", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfsuite selftest: error: ") and message in err and err.count("\n") == 1


def test_the_json_file_is_replaced_whole_or_not_at_all(monkeypatch, tmp_path, capsys):
    """--json writes through the atomic writer: a disk that fills during the write leaves the earlier file whole
    and no temporary beside it (one error line, exit 2)."""
    import perfsuite.commands.selftest as command
    import perfsuite.formats.io as io

    report = SelftestReport(options=SelftestOptions(), device="cpu", forward_ms=0.3, extra_op_us=1.9, levels=[],
                            seconds=1.0, processes=40)
    monkeypatch.setattr(command, "run_selftest", lambda options, progress: report)
    path = tmp_path / "s.json"
    assert main(["selftest", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["processes"] == 40
    path.write_text('{"earlier": true}\n')

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    assert main(["selftest", "--json", str(path)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert json.loads(path.read_text()) == {"earlier": True} and [p.name for p in tmp_path.iterdir()] == ["s.json"]
