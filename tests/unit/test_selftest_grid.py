"""The grid-scale simulation of per-run false alarms: it judges with the run's own functions, so the error control
shows in it; seeded, no timing."""

import re

import pytest

from perfsuite.cli import main
from dataclasses import replace

from perfsuite.selftest.grid import GridSimulation, detection_rate, grid_loops, parse_design, simulate_grid


def test_the_paper_grid_is_eighteen_loops_of_twenty_five():
    loops = [loop for loop in grid_loops("paper") if loop[0].workload == "latency" and loop[0].phase == "prefill"]
    assert len(loops) == 18 and {len(loop) for loop in loops} == {25}
    assert all(loop[0].adapter == "none" for loop in loops)
    # two prefill loops and the decode steps' loop; each recompute cell within the budget its own
    assert len(grid_loops("smoke")) == 2 + 1 + 4


def test_every_decode_shape_is_a_loop_of_its_own():
    """loop_key keys a latency loop by every field but the adapter's (a decode step's cache length, a quantized base)."""
    decode = [loop for loop in grid_loops("paper") if loop[0].phase == "decode"]
    assert len(decode) == 9 and {len(loop) for loop in decode} == {9}  # 3 batches × 3 cache lengths, 9 models


def test_designs_are_read_and_bad_ones_refused():
    assert parse_design("1v5") == (1, 5) and parse_design("5v5") == (5, 5)
    for bad in ("1v1", "5", "0v5", "v5", "1x5"):
        with pytest.raises(ValueError):
            parse_design(bad)
    with pytest.raises(ValueError):
        GridSimulation(loop_correlation=0.3, cross_correlation=0.5)
    with pytest.raises(ValueError):
        GridSimulation(design="1v1")


def test_the_simulation_is_judged_by_the_production_judge(monkeypatch):
    """Every simulated night goes through perfsuite.compare.verdicts.judge, the function compare_part calls: a
    planted judge that calls everything a regression makes every night a false alarm."""
    import perfsuite.compare.verdicts as verdicts
    import perfsuite.selftest.grid as grid

    seen = []

    def loud(tests, cells, options, **kw):
        seen.append(len(tests))
        return {cid: {"verdict": "regression", "metrics": []} for cid in cells}, [], {}

    monkeypatch.setattr(grid, "judge", loud)
    rate = simulate_grid(GridSimulation(grid="smoke", trials=3, design="1v3"))
    # adapters: 2 tests; r = 0: 1; recompute: 2; the decode loop: 8 adapters and its r = 0
    assert rate.false_runs == 3 and seen == [2 * 16 + 2 + 4 * 2 + 2 * 8 + 1] * 3
    assert grid.judge is loud and verdicts.judge is not loud


def test_per_test_alpha_cries_wolf_per_run_and_holm_does_not():
    """The paper grid, ~880 tests a night: each at α = 1 % fails unchanged nights; Holm over the run does not."""
    loud = simulate_grid(GridSimulation(trials=10, error_control="none", remeasure=0))
    held = simulate_grid(GridSimulation(trials=10, error_control="holm", remeasure=0))
    assert loud.false_runs >= 2 and held.false_runs == 0


def test_a_method_wide_move_is_found_that_no_lone_cell_shows():
    """+6 % on every LoRA cell of the paper grid at 3 % noise: each cell alone is far below what α / 900 needs, the
    group test (one hypothesis for the method) calls it, confirmed by a re-measure."""
    sim = GridSimulation(trials=6, design="1v5")
    assert detection_rate(sim, "method", 6.0) >= 5 / 6
    assert detection_rate(replace(sim, remeasure=0), "single", 6.0) == 0.0


def test_re_measuring_costs_little_on_an_unchanged_night():
    rate = simulate_grid(GridSimulation(trials=20, design="1v5"))
    assert rate.false_runs == 0 and rate.remeasured_runs < 0.5


def test_cli_prints_the_figures_users_ask_for(capsys):
    assert main(["selftest", "--grid", "smoke", "--simulate", "--trials", "5", "--design", "1v3",
                 "--detect", "single", "--detect-trials", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("simulated smoke grid, design 1v3: 31 cells in 7 loops; 1 run(s) against a 3-run")
    assert re.fullmatch(r"per-run false alarms: \d+/5 \(\d+\.\d %\) \[\d+\.\d, \d+\.\d\]", out[1])
    assert out[2].startswith("runs per unchanged night: ")
    assert re.fullmatch(r"detects \(95 % of runs\): single (\d+\.\d|> 400) %", out[3])


def test_cli_refuses_bad_simulation_options(capsys):
    assert main(["selftest", "--grid", "smoke", "--simulate", "--design", "3"]) == 2
    assert "design '3'" in capsys.readouterr().err
    assert main(["selftest", "--grid", "smoke", "--simulate", "--detect", "all"]) == 2


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

    from perfsuite.selftest.options import Level, SelftestOptions
    from perfsuite.selftest.trials import _loop_trial
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


def test_a_screening_run_hammered_by_a_neighbour_fails_no_night(monkeypatch):
    """One cell's first-look run +100 % (a neighbour on the runner), its re-measures clean: averaged with them it
    passed the part's level (27 of 40 smoke nights failed, review); a regression now also needs the fresh runs on
    their own to point the same way, and no night fails. A real +100 % is still called."""
    import math

    import numpy as np

    import perfsuite.selftest.grid as grid

    sim = GridSimulation(grid="smoke", design="1v5")
    loops = grid_loops("smoke")
    target = next(c.id for loop in loops for c in loop if c.adapter == "lora" and c.workload == "latency")
    original, calls = grid.Nights.run, [0]

    def hammered(self, shift=None):
        out = original(self, shift)
        calls[0] += 1
        if calls[0] == sim.base_runs + 1:  # the night's one run, the screening look
            out[target] = tuple(v + math.log(2.0) for v in out[target])
        return out

    monkeypatch.setattr(grid.Nights, "run", hammered)
    failed = 0
    nights = grid.Nights(sim, loops, np.random.default_rng(100))
    for _ in range(15):
        calls[0] = 0
        night = grid.simulate_night(sim, loops, nights)
        failed += bool(night.regressed_cells or night.regressed_groups)
    assert failed == 0
    calls[0] = -1000  # no hammer: a real +100 % on that cell, in every run of the night
    night = grid.simulate_night(sim, loops, nights, {target: math.log(2.0)})
    assert target in night.regressed_cells
