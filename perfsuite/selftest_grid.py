"""Per-run false alarms of a whole grid, simulated: what an unchanged nightly of ~900 tests would report.

Measuring a paper-grid run between processes takes hours, so its false-alarm rate *per run* is simulated from the
noise a run meets, and judged by the very functions a run uses: each cell's test
(:func:`perfsuite.compare.stats.between_runs`, or :func:`~perfsuite.compare.stats.paired_runs` in A/B), the part's
error control (:func:`perfsuite.compare.verdicts.control_errors`) and the shared-move rule
(:func:`~perfsuite.compare.verdicts.attribute_shared_moves`); against a baseline a suspect is re-measured once in a
fresh (simulated) process, as ``perfsuite run`` does.

The noise model, per run (one process) and cell, on log run estimates:
  time (probe-normalised)  machine + loop + own, with correlation ``loop_correlation`` between cells of one loop
                           and ``cross_correlation`` between loops of one run (the issue's measured 0.95 / 0.4),
                           total sd ``time_noise_pct``;
  slow-down                shared by the loop's cells (their common r = 0 rounds) with correlation
                           ``slowdown_correlation``, total sd ``slowdown_noise_pct``.
Defaults: the between-process spreads measured on this project's VMs (README, "Baselines, verdicts and A/B runs"):
probe-normalised time 5.2 % (median over the smoke cells, 8 processes, 2-core EPYC under load), slow-down 1.0 %
(the Xeon VM's A/B figure; 1.8 % its worst); the correlation of slow-downs in a loop (0.5) is assumed, not
measured. All are options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from perfsuite.cells.grid import Cell, get_profile
from perfsuite.compare.stats import ALPHA, ERROR_CONTROL, MIN_EFFECT_PCT, between_runs, paired_runs, wilson_interval
from perfsuite.compare.verdicts import PAIRED_MIN_BLOCKS, CompareOptions, attribute_shared_moves, control_errors

SIM_MODES = ("ab", "baseline")


@dataclass(frozen=True)
class GridSimulation:
    grid: str = "paper"
    mode: str = "ab"  # ab: runs a side, paired; baseline: one run (+ one re-measure of suspects) against runs
    runs: int = 5
    trials: int = 200  # simulated runs (per-run false alarms are counted over these)
    time_noise_pct: float = 5.2
    slowdown_noise_pct: float = 1.0
    loop_correlation: float = 0.95
    cross_correlation: float = 0.4
    slowdown_correlation: float = 0.5
    alpha: float = ALPHA
    min_effect_pct: float = MIN_EFFECT_PCT
    error_control: str = ERROR_CONTROL
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SIM_MODES:
            raise ValueError(f"mode must be one of {SIM_MODES}")
        if self.runs < 2 or self.trials < 1:
            raise ValueError("need runs >= 2 and trials >= 1")
        if not 0 <= self.cross_correlation <= self.loop_correlation <= 1 or not 0 <= self.slowdown_correlation <= 1:
            raise ValueError("need 0 <= cross-loop <= in-loop correlation <= 1, slow-down correlation in [0, 1]")
        if self.time_noise_pct < 0 or self.slowdown_noise_pct < 0:
            raise ValueError("noise must be >= 0 %")


@dataclass(frozen=True)
class GridRate:
    simulation: GridSimulation
    cells: int
    loops: int
    tests: int  # tests per run (the family the error control spans)
    false_runs: int  # simulated unchanged runs with at least one regression
    false_tests: int  # regressions over all of them (before any re-measure: the suspects)

    def line(self) -> str:
        n = self.simulation.trials
        low, high = wilson_interval(self.false_runs, n)
        return (f"per-run false alarms: {self.false_runs}/{n} ({100.0 * self.false_runs / n:.1f} %) "
                f"[{100 * low:.1f}, {100 * high:.1f}]")

    def describe(self) -> str:
        s = self.simulation
        how = (f"A/B, {s.runs} runs a side" + (", paired" if s.runs >= PAIRED_MIN_BLOCKS else "")) if s.mode == "ab" else f"1 run against {s.runs}, suspects re-measured once"
        return (f"simulated {s.grid} grid: {self.cells} latency cells in {self.loops} loops, {self.tests} tests a run; "
                f"{how}; error control {s.error_control} at alpha {s.alpha:g}, minimum effect {s.min_effect_pct:g} %; "
                f"noise: time {s.time_noise_pct:g} % (in-loop correlation {s.loop_correlation:g}, across loops "
                f"{s.cross_correlation:g}), slow-down {s.slowdown_noise_pct:g} % (in-loop {s.slowdown_correlation:g}); "
                f"{s.trials} unchanged runs, seed {s.seed}")


def grid_loops(grid: str) -> list[list[Cell]]:
    """The latency loops of a profile: its cells grouped by shape, the plain model first."""
    from perfsuite.workloads.latency import group_key

    loops: dict[tuple, list[Cell]] = {}
    for c in get_profile(grid).cells(device="cpu"):
        if c.workload == "latency":
            loops.setdefault(group_key(c), []).append(c)
    return [sorted(v, key=lambda c: (c.adapter != "none", c.id)) for v in loops.values()]


class _Noise:
    """Draws one run's log estimates (time, slow-down) for every cell, with the model's correlations."""

    def __init__(self, sim: GridSimulation, loops: list[list[Cell]], rng: np.random.Generator):
        self.sim, self.loops, self.rng = sim, loops, rng

    def run(self) -> dict[str, tuple[float, float]]:
        s, rng = self.sim, self.rng
        st, ss = s.time_noise_pct / 100.0, s.slowdown_noise_pct / 100.0
        machine = rng.normal(0.0, st * math.sqrt(s.cross_correlation))
        out = {}
        for loop in self.loops:
            shared = rng.normal(0.0, st * math.sqrt(s.loop_correlation - s.cross_correlation))
            shared_ratio = rng.normal(0.0, ss * math.sqrt(s.slowdown_correlation))
            for c in loop:
                t = machine + shared + rng.normal(0.0, st * math.sqrt(1.0 - s.loop_correlation))
                r = shared_ratio + rng.normal(0.0, ss * math.sqrt(1.0 - s.slowdown_correlation))
                out[c.id] = (t, r)
        return out


def _entry(metric: str, shift) -> dict:
    return {"metric": metric, "unit": "pp" if metric == "slowdown" else "%", "verdict": shift.verdict,
            "baseline": 20.0 if metric == "slowdown" else 1.0, "change_pct": shift.change_pct,
            "ci_low_pct": shift.ci_low_pct, "ci_high_pct": shift.ci_high_pct, "p_value": shift.p_value, "df": shift.df,
            "se_log": shift.se_log, "detectable": None}


def _judge_cell(cell: Cell, base: list[tuple[float, float]], cur: list[tuple[float, float]], sim: GridSimulation,
                paired: bool) -> dict:
    test = paired_runs if paired else between_runs
    plain = cell.adapter == "none" or cell.rank == 0
    metrics = []
    for k, metric in ((0, "norm_time"), (1, "slowdown")):
        if metric == "slowdown" and plain:
            continue
        shift = test([b[k] for b in base], [c[k] for c in cur], alpha=sim.alpha, min_effect_pct=sim.min_effect_pct)
        metrics.append(_entry(metric, shift))
    return {"cell_id": cell.id, "verdict": "unchanged", "metrics": metrics, "moved": []}


def simulate_grid(sim: GridSimulation) -> GridRate:
    loops = grid_loops(sim.grid)
    cells = {c.id: c for loop in loops for c in loop}
    rng = np.random.default_rng(sim.seed)
    noise = _Noise(sim, loops, rng)
    options = CompareOptions(alpha=sim.alpha, min_effect_pct=sim.min_effect_pct, error_control=sim.error_control)
    false_runs = false_tests = tests = 0
    for _ in range(sim.trials):
        base = [noise.run() for _ in range(sim.runs)]
        cur = [noise.run() for _ in range(sim.runs if sim.mode == "ab" else 1)]
        paired = sim.mode == "ab" and sim.runs >= PAIRED_MIN_BLOCKS  # as compare_runs decides
        entries = {cid: _judge_cell(c, [b[cid] for b in base], [r[cid] for r in cur], sim, paired)
                   for cid, c in cells.items()}
        together = {cid: frozenset(range(len(cur))) for cid in cells}
        tests = control_errors(entries, options)["tests"]
        attribute_shared_moves(entries, cells, together)
        suspects = [cid for cid, e in entries.items() if e["verdict"] == "regression"]
        false_tests += len(suspects)
        if suspects:  # one fresh process: both sides in A/B (one more block), the current side against a baseline
            fresh, fresh_base = noise.run(), noise.run()
            for cid in suspects:
                extra_base = [fresh_base[cid]] if paired else []
                entries[cid] = _judge_cell(cells[cid], [b[cid] for b in base] + extra_base,
                                           [r[cid] for r in cur] + [fresh[cid]], sim, paired)
                together[cid] = together[cid] | {len(cur)}
            control_errors(entries, options)
            attribute_shared_moves(entries, cells, together)
        false_runs += any(e["verdict"] == "regression" for e in entries.values())
    return GridRate(sim, len(cells), len(loops), tests, false_runs, false_tests)


def with_options(sim: GridSimulation, **changes) -> GridSimulation:
    return replace(sim, **{k: v for k, v in changes.items() if v is not None})
