"""A whole grid's nightly, simulated: false alarms per run, power as users meet it, and what re-measuring costs.

Measuring a paper-grid night between processes takes hours, so it is simulated from the noise a run meets — and
judged by exactly the code a run uses: the simulated runs become the same :class:`~perfsuite.compare.family.Test`\\ s
that records become, and :func:`perfsuite.compare.judge.judge` judges them (each family's moderated prior, the
group tests, Holm over the part with α spent across the looks, the shared-move rule, and the escalation: a suspect's
loops re-measured — here, drawn again as a fresh process — up to the budget, as ``perfsuite run`` does on the machine
that measured them). Only the per-run estimates are drawn instead of measured.

**Designs** (``--design``): ``1vK`` — one new run against a K-run baseline, re-measures as ``perfsuite run`` makes
them (``--remeasure``; 0 for a merge job without a device); ``KvK`` — A/B, K runs a side, suspects re-measured as one
more block of both sides (paired from :data:`~perfsuite.compare.verdicts.PAIRED_MIN_BLOCKS` blocks).

**The noise model**, per run (one process) and cell, on log run estimates:
  time (probe-normalised)  machine + loop + own, correlation ``loop_correlation`` between cells of one loop and
                           ``cross_correlation`` between loops of one run, total sd ``time_noise_pct``;
  slow-down                shared by the loop's cells (their common r = 0 rounds) with correlation
                           ``slowdown_correlation``, total sd ``slowdown_noise_pct``;
  within a run             every estimate's own sampling error ``within_noise_pct`` (the floor of a test's spread).
Merged LoRA's ranks share one timing per shape, so they share their draws. Defaults: the issue's 3 % for both
between-run spreads (this project's VMs measured 0.5-5 %: docs/verdicts.md), correlations 0.95 / 0.4 (measured) and 0.5
(assumed). All are options.

**Power** is the smallest slow-down flagged in 95 % of nights, for three kinds of change: *uniform* (every adapter
cell of the grid), *method* (every cell of one adapter, drawn per night), *single* (one adapter cell, drawn per
night); a night detects it when it calls a regression on a changed cell or on the group of a changed method.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from perfsuite.cells.grid import Cell, budget_violation, get_profile, token_budget
from perfsuite.compare.estimates import loop_key
from perfsuite.compare.family import EVERY_ADAPTER, Test
from perfsuite.compare.stats import ALPHA, ERROR_CONTROL, MIN_EFFECT_PCT, wilson_interval
from perfsuite.compare.judge import REMEASURE, CompareOptions, judge
from perfsuite.compare.verdicts import PAIRED_MIN_BLOCKS

DESIGNS = ("1v3", "1v5", "2v5", "5v5")
KINDS = ("uniform", "method", "single")
DETECT_RATE = 0.95


def parse_design(text: str) -> tuple[int, int]:
    """``MvK``: M current runs against K baseline runs (A/B when M = K > 1)."""
    m = re.fullmatch(r"(\d+)v(\d+)", text or "")
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1 or int(m.group(1)) + int(m.group(2)) < 3:
        raise ValueError(f"design {text!r}: use MvK, e.g. 1v5 (one run against a 5-run baseline) or 5v5 (A/B)")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class GridSimulation:
    grid: str = "paper"
    design: str = "1v5"
    trials: int = 200  # simulated nights (per-run false alarms are counted over these)
    remeasure: int = REMEASURE  # the budget of looks (0: no device to re-measure on)
    time_noise_pct: float = 3.0
    slowdown_noise_pct: float = 3.0
    within_noise_pct: float = 0.5
    loop_correlation: float = 0.95
    cross_correlation: float = 0.4
    slowdown_correlation: float = 0.5
    alpha: float = ALPHA
    min_effect_pct: float = MIN_EFFECT_PCT
    error_control: str = ERROR_CONTROL
    seed: int = 0

    def __post_init__(self) -> None:
        parse_design(self.design)
        if self.trials < 1 or self.remeasure < 0:
            raise ValueError("need trials >= 1 and remeasure >= 0")
        if not 0 <= self.cross_correlation <= self.loop_correlation <= 1 or not 0 <= self.slowdown_correlation <= 1:
            raise ValueError("need 0 <= cross-loop <= in-loop correlation <= 1, slow-down correlation in [0, 1]")
        if min(self.time_noise_pct, self.slowdown_noise_pct, self.within_noise_pct) < 0:
            raise ValueError("noise must be >= 0 %")

    @property
    def current_runs(self) -> int:
        return parse_design(self.design)[0]

    @property
    def base_runs(self) -> int:
        return parse_design(self.design)[1]

    @property
    def ab(self) -> bool:
        return self.current_runs == self.base_runs and self.current_runs > 1


def grid_loops(grid: str) -> list[list[Cell]]:
    """The timing loops of a profile's latency and recompute cells: a latency shape group (the plain model first),
    or a recompute cell alone (its own loop of verified and plain decoding)."""
    loops: dict[str, list[Cell]] = {}
    for c in get_profile(grid).cells(device="cpu"):
        outside = c.workload == "recompute" and budget_violation(c.batch, c.window, token_budget(c))
        if c.workload in ("latency", "recompute") and not outside:  # a cell outside the budget is never timed
            loops.setdefault(loop_key(c), []).append(c)
    return [sorted(v, key=lambda c: (c.adapter != "none", c.id)) for v in loops.values()]


def _draw_key(cell: Cell) -> str:
    """Cells timed as one model share one draw (merged LoRA: one timing per shape, whatever the rank)."""
    return replace(cell, rank=1).id if cell.adapter == "lora-merged" else cell.id


class Nights:
    """Draws runs (one process each) of a grid's cells: per cell its (probe-normalised time, slow-down) log
    estimates, with the model's correlations, and any planted slow-down on the changed cells."""

    def __init__(self, sim: GridSimulation, loops: list[list[Cell]], rng: np.random.Generator):
        self.sim, self.rng = sim, rng
        self.loops = []  # per loop: each cell's id and the index of the draw it takes
        for loop in loops:
            keys: dict[str, int] = {}
            self.loops.append([(c.id, keys.setdefault(_draw_key(c), len(keys))) for c in loop])

    def run(self, shift: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
        s, rng = self.sim, self.rng
        st, ss = s.time_noise_pct / 100.0, s.slowdown_noise_pct / 100.0
        machine = rng.normal(0.0, st * math.sqrt(s.cross_correlation))
        out = {}
        shift = shift or {}
        for loop in self.loops:
            n = max(k for _, k in loop) + 1
            t = (machine + rng.normal(0.0, st * math.sqrt(s.loop_correlation - s.cross_correlation))
                 + rng.normal(0.0, st * math.sqrt(1.0 - s.loop_correlation), n)).tolist()
            r = (rng.normal(0.0, ss * math.sqrt(s.slowdown_correlation))
                 + rng.normal(0.0, ss * math.sqrt(1.0 - s.slowdown_correlation), n)).tolist()
            for cid, k in loop:
                d = shift.get(cid, 0.0)
                out[cid] = (t[k] + d, r[k] + d)
        return out


def _metrics(cell: Cell) -> tuple[str, ...]:
    plain = cell.workload == "latency" and (cell.adapter == "none" or cell.rank == 0)
    return ("norm_time",) if plain else ("norm_time", "slowdown")


def _group(cell: Cell) -> str | None:
    return cell.adapter if cell.workload == "latency" and cell.adapter != "none" and cell.rank > 0 else None


def _tests(cells: dict[str, Cell], base: list[dict], cur: list[dict], within: float) -> list[Test]:
    tests = []
    timed: set[str] = set()
    for cid, c in cells.items():
        key = _draw_key(c)
        shared, _ = key in timed, timed.add(key)  # merged LoRA's other ranks: timed as the first (timed_as)
        for k, metric in enumerate(("norm_time", "slowdown")):
            if metric not in _metrics(c):
                continue
            tests.append(Test(cid, metric, c.workload, loop_key(c), {j: b[cid][k] for j, b in enumerate(base)},
                              [r[cid][k] for r in cur], [within] * (len(base) + len(cur)),
                              group=_group(c) if metric == "slowdown" else None, shared=shared))
    return tests


@dataclass(frozen=True)
class Night:
    """What one simulated night called: regressions (cells and groups) and the loops it re-measured."""

    regressed_cells: frozenset[str]
    regressed_groups: frozenset[str]
    remeasured_loops: int


def simulate_night(sim: GridSimulation, loops: list[list[Cell]], nights: Nights,
                   shift: dict[str, float] | None = None) -> Night:
    """One night (or one A/B comparison) through :func:`perfsuite.compare.verdicts.judge`."""
    cells = {c.id: c for loop in loops for c in loop}
    loop_of = {c.id: loop_key(c) for c in cells.values()}
    base = [nights.run() for _ in range(sim.base_runs)]
    cur = [nights.run(shift) for _ in range(sim.current_runs)]
    within = sim.within_noise_pct / 100.0
    options = CompareOptions(alpha=sim.alpha, min_effect_pct=sim.min_effect_pct, error_control=sim.error_control,
                             remeasure=sim.remeasure)
    paired = sim.ab and sim.base_runs >= PAIRED_MIN_BLOCKS
    remeasured: set[str] = set()

    def more(cids: list[str]):
        remeasured.update(loop_of[c] for c in cids)  # a suspect is re-measured in its whole loop
        fresh = nights.run(shift)
        fresh_base = nights.run() if sim.ab else None
        est = {cid: {m: (fresh[cid][k], within) for k, m in enumerate(("norm_time", "slowdown"))} for cid in cids}
        return est, (None if fresh_base is None else
                     {cid: {m: (fresh_base[cid][k], within) for k, m in enumerate(("norm_time", "slowdown"))}
                      for cid in cids})

    entries, groups, _ = judge(_tests(cells, base, cur, within), cells, options, base_runs=sim.base_runs,
                               paired=paired, runs_of={cid: frozenset(range(sim.current_runs)) for cid in cells},
                               more=more if sim.remeasure else None)
    return Night(frozenset(cid for cid, e in entries.items() if e["verdict"] == "regression"),
                 frozenset(g["group"] for g in groups if g["verdict"] == "regression"), len(remeasured))


@dataclass(frozen=True)
class GridRate:
    """Per-run false alarms of unchanged nights, and what they cost in re-measured runs."""

    simulation: GridSimulation
    cells: int
    loops: int
    false_runs: int
    remeasured_runs: float  # mean re-measured loops per night, as a share of a whole run's loops

    def line(self) -> str:
        n = self.simulation.trials
        low, high = wilson_interval(self.false_runs, n)
        return (f"per-run false alarms: {self.false_runs}/{n} ({100.0 * self.false_runs / n:.1f} %) "
                f"[{100 * low:.1f}, {100 * high:.1f}]")

    def cost_line(self) -> str:
        return (f"runs per unchanged night: {self.simulation.current_runs + self.remeasured_runs:.2f} "
                f"({self.simulation.current_runs} + re-measured loops worth {self.remeasured_runs:.2f} runs)")

    def describe(self) -> str:
        s = self.simulation
        how = (f"A/B, {s.current_runs} runs a side" + (", paired" if s.base_runs >= PAIRED_MIN_BLOCKS else "")
               if s.ab else f"{s.current_runs} run(s) against a {s.base_runs}-run baseline")
        return (f"simulated {s.grid} grid, design {s.design}: {self.cells} cells in {self.loops} loops; {how}, "
                f"suspects re-measured up to {s.remeasure}x; error control {s.error_control} at alpha {s.alpha:g}, "
                f"minimum effect {s.min_effect_pct:g} %; noise: time {s.time_noise_pct:g} % (in-loop correlation "
                f"{s.loop_correlation:g}, across loops {s.cross_correlation:g}), slow-down {s.slowdown_noise_pct:g} % "
                f"(in-loop {s.slowdown_correlation:g}), within a run {s.within_noise_pct:g} %; seed {s.seed}")


def simulate_grid(sim: GridSimulation) -> GridRate:
    """Unchanged nights: how many call any regression, and how much they re-measure."""
    loops = grid_loops(sim.grid)
    nights = Nights(sim, loops, np.random.default_rng(sim.seed))
    false_runs, cost = 0, 0
    for _ in range(sim.trials):
        night = simulate_night(sim, loops, nights)
        false_runs += bool(night.regressed_cells or night.regressed_groups)
        cost += night.remeasured_loops
    return GridRate(sim, sum(len(lp) for lp in loops), len(loops), false_runs, cost / sim.trials / max(1, len(loops)))


def _changed(kind: str, loops: list[list[Cell]], rng: np.random.Generator) -> tuple[set[str], set[str]]:
    """(changed cells, changed groups) of one night's planted change: a group changed when any of its cells did (its
    mean moved), the group of every adapter included."""
    adapters = [c for loop in loops for c in loop if _group(c)]
    if kind == "uniform":
        return {c.id for c in adapters}, {c.adapter for c in adapters} | {EVERY_ADAPTER}
    if kind == "method":
        method = sorted({c.adapter for c in adapters})[int(rng.integers(len({c.adapter for c in adapters})))]
        return {c.id for c in adapters if c.adapter == method}, {method, EVERY_ADAPTER}
    cell = adapters[int(rng.integers(len(adapters)))]
    return {cell.id}, {cell.adapter, EVERY_ADAPTER}


def detection_rate(sim: GridSimulation, kind: str, effect_pct: float, trials: int | None = None) -> float:
    """The share of nights with a ``kind`` slow-down of ``effect_pct`` that call it (common random numbers: the
    same seed draws the same nights for every effect size)."""
    loops = grid_loops(sim.grid)
    rng = np.random.default_rng(sim.seed + 1)
    nights = Nights(sim, loops, rng)
    hits = 0
    n = trials or sim.trials
    for _ in range(n):
        cells, groups = _changed(kind, loops, rng)
        night = simulate_night(sim, loops, nights, {c: math.log1p(effect_pct / 100.0) for c in cells})
        hits += bool(night.regressed_cells & cells or night.regressed_groups & groups)
    return hits / n


def detectable(sim: GridSimulation, kind: str, *, trials: int | None = None, low: float = 0.5,
               high: float = 400.0, steps: int = 9) -> float | None:
    """The smallest slow-down (%) called in ≥ 95 % of nights, by bisection on a log scale (None: not even
    ``high``)."""
    if detection_rate(sim, kind, high, trials) < DETECT_RATE:
        return None
    for _ in range(steps):
        mid = math.sqrt(low * high)
        if detection_rate(sim, kind, mid, trials) >= DETECT_RATE:
            high = mid
        else:
            low = mid
    return high


def with_options(sim: GridSimulation, **changes) -> GridSimulation:
    return replace(sim, **{k: v for k, v in changes.items() if v is not None})
