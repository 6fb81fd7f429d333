"""The grid-scale simulation of per-run false alarms: it judges with the run's own functions, so the error control
shows in it; seeded, no timing."""

import re

import pytest

from perfsuite.cli import main
from perfsuite.selftest_grid import GridSimulation, grid_loops, simulate_grid


def test_the_paper_grid_is_eighteen_loops_of_twenty_five():
    loops = grid_loops("paper")
    prefill = [loop for loop in loops if loop[0].phase == "prefill"]
    assert len(prefill) == 18 and {len(loop) for loop in prefill} == {25}
    decode = [loop for loop in loops if loop[0].phase == "decode"]  # one step of the plain model + 8 adapters at r10
    assert len(decode) == 9 and {len(loop) for loop in decode} == {9} and len(loops) == 27
    assert all(loop[0].adapter == "none" for loop in loops)


def test_per_test_alpha_cries_wolf_per_run_and_holm_does_not():
    """The paper grid, 1035 tests a run: each at α = 1 % fails unchanged runs; Holm over the run does not."""
    loud = simulate_grid(GridSimulation(trials=12, error_control="none", slowdown_noise_pct=1.8))
    held = simulate_grid(GridSimulation(trials=12, error_control="holm", slowdown_noise_pct=1.8))
    # r = 0: time only; adapters: time and slow-down; prefill shapes, then the decode steps
    assert loud.tests == held.tests == 18 + 432 * 2 + 9 + 72 * 2
    assert loud.false_runs >= 2 and held.false_runs == 0
    assert loud.false_tests > held.false_tests


def test_bad_simulations_are_refused():
    with pytest.raises(ValueError):
        GridSimulation(mode="xyz")
    with pytest.raises(ValueError):
        GridSimulation(loop_correlation=0.3, cross_correlation=0.5)


def test_cli_prints_one_line_with_its_interval(capsys):
    assert main(["selftest", "--grid", "smoke", "--simulate", "--trials", "5", "--modes", "ab"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("simulated smoke grid: 27 latency cells in 3 loops, 51 tests a run; A/B")
    assert re.fullmatch(r"per-run false alarms: \d+/5 \(\d+\.\d %\) \[\d+\.\d, \d+\.\d\]", out[1])


# --- the measured production loop, judged per run (planted blocks, no timing) ---------------------------------------

def _planted_pool(processes, slowdown_of_lora, seed=0):
    """Worker blocks of a 3-cell loop (plain, LoRA, Houlsby) + probe: level 0 unchanged, level 1 LoRA slower."""
    import numpy as np

    from perfsuite.cells.grid import Cell

    cells = [Cell("latency", a, r, batch=1, seq_len=32) for a, r in (("none", 0), ("lora", 8), ("houlsby", 8))]
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(processes):
        machine = float(rng.uniform(0.9, 1.1))
        blocks = {}
        for level, factor in ((0, 1.0), (1, slowdown_of_lora)):
            base = list(0.3 * machine * rng.lognormal(0, 0.01, 30))
            probe = list(0.2 * machine * rng.lognormal(0, 0.01, 30))
            block = {cells[0].id: {"samples_ms": base, "probe_samples_ms": probe, "cycle": 4}}
            for c in cells[1:]:
                ratio = 1.2 * (factor if c.adapter == "lora" else 1.0) * float(rng.lognormal(0, 0.005))
                block[c.id] = {"samples_ms": [b * ratio * float(rng.lognormal(0, 0.01)) for b in base],
                               "ref_samples_ms": base, "probe_samples_ms": probe, "cycle": 4}
            blocks[level] = block
        pool.append(blocks)
    return {c.id: c for c in cells}, pool


@pytest.mark.parametrize("mode", ["ab", "baseline"])
def test_a_loop_trial_judges_the_whole_run_and_the_measured_cell(mode):
    import numpy as np

    from perfsuite.selftest import Level, SelftestOptions, _loop_trial
    from perfsuite.compare.verdicts import CompareOptions

    cells, pool = _planted_pool(12, 1.15)
    options = SelftestOptions(processes=12, runs=5, loop="smoke", modes=(mode,))
    rng = np.random.default_rng(1)
    aa, slow = Level(0.0, 0), Level(15.0, 1)
    for _ in range(5):
        _loop_trial(mode, pool, 0, rng, options, CompareOptions(), cells, aa)
        _loop_trial(mode, pool, 1, rng, options, CompareOptions(), cells, slow)
    assert aa.count(f"{mode}/run", "regression") == 0
    assert slow.count(f"{mode}/cell", "regression") == 5 and slow.count(f"{mode}/run", "regression") == 5
