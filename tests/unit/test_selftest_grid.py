"""The grid-scale simulation of per-run false alarms: it judges with the run's own functions, so the error control
shows in it; seeded, no timing."""

import re

import pytest

from perfsuite.cli import main
from perfsuite.selftest_grid import GridSimulation, grid_loops, simulate_grid


def test_the_paper_grid_is_eighteen_loops_of_twenty_five():
    loops = grid_loops("paper")
    assert len(loops) == 18 and {len(loop) for loop in loops} == {25}
    assert all(loop[0].adapter == "none" for loop in loops)


def test_per_test_alpha_cries_wolf_per_run_and_holm_does_not():
    """The paper grid, 882 tests a run: each at α = 1 % fails unchanged runs; Holm over the run does not."""
    loud = simulate_grid(GridSimulation(trials=12, error_control="none", slowdown_noise_pct=1.8))
    held = simulate_grid(GridSimulation(trials=12, error_control="holm", slowdown_noise_pct=1.8))
    assert loud.tests == held.tests == 18 + 432 * 2  # r = 0: time only; adapters: time and slow-down
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
    assert out[0].startswith("simulated smoke grid: 18 latency cells in 2 loops, 34 tests a run; A/B")
    assert re.fullmatch(r"per-run false alarms: \d+/5 \(\d+\.\d %\) \[\d+\.\d, \d+\.\d\]", out[1])
