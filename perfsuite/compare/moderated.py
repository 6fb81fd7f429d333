"""Borrowing strength across cells: the moderated t of a nightly (one new run against a few baseline runs).

A nightly compares one run with a baseline of 3-5 runs. Each cell alone has 2-4 degrees of freedom for its
between-run spread, and at the level a run's error control asks of a lone cell (α / N, N ≈ 900 tests) Student's t
on 2 df needs a change 25x its standard error: the gate saw nothing below +65-200 %. Genomics met the same problem
(thousands of genes, three replicates) and solved it by shrinking each gene's variance toward a prior fitted on all
genes: limma's moderated t (Smyth 2004, Stat. Appl. Genet. Mol. Biol. 3:3), s̃² = (d0·s0² + d·s²) / (d0 + d) on
d0 + d degrees of freedom. Our cells are its genes and our runs its replicates — with one difference that matters:
limma assumes independent genes, and our cells are not. Cells of one loop share its rounds and process, and every
cell of a run shares the machine's speed of the moment, so the spreads of all cells come from the same few runs:
a pool of 900 of them holds the information of a handful, and a prior fitted as if they were independent is far
too sure of itself (measured: 1.2-3.9 % false alarms per run, 12-17 % at paper scale, instead of ≤ 1 %).

So the prior is fitted on what correlated sampling cannot explain, and trusted no further than the pool is worth:

* **variance components** (:func:`components`): each run's deviations (Helmert contrasts of a cell's runs) are
  split by analysis of variance into a part shared by every cell of the family (the machine), a part shared by the
  cells of one loop, and the cell's own part — method of moments, the known loop structure, no correlation guessed;
* **the pool's worth** (:attr:`Components.eff_df`): the effective degrees of freedom of the pooled variance,
  d · (tr Σ)² / tr(Σ²) for the covariance Σ the components imply (Satterthwaite): ~d when the machine dominates,
  up to d·T for independent cells;
* **the prior** (:func:`fit_prior`): limma's moments on log s² (Smyth 2004, §6.2), with the spread that sampling
  alone gives reduced by the cells' mean squared correlation (correlated cells' spreads agree more than
  independent ones'), so heterogeneity between cells is not mistaken for certainty; its weight d0 then capped so
  that d0 + d never exceeds the pool's effective df.

A family with too few cells to fit anything gets no prior: the ordinary t on its own runs. Everything here is
numpy on per-run log estimates; :mod:`perfsuite.compare.verdicts` turns the results into verdicts and
:mod:`perfsuite.selftest.grid` measures the false alarms and power this gives, through the same functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT, Shift, decide, pct_of_log, t_quantile, t_two_sided_p

# A family needs this many cells with the same complete baseline runs to fit a prior: fewer, and the moments of
# log s² say nothing (each cell then has its own runs' degrees of freedom only).
MIN_PRIOR_TESTS = 3
# Degrees of freedom are capped here: beyond it Student's t is the normal distribution to 4 digits at α / 1000, and
# the incomplete beta function converges slowly.
MAX_DF = 10_000.0


# --- special functions (no scipy in the core install) -------------------------------------------------------------

def digamma(x: float) -> float:
    """ψ(x) for x > 0: recurrence up to x ≥ 6, then the asymptotic series (error < 1e-12)."""
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return acc + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))


def trigamma(x: float) -> float:
    """ψ'(x) for x > 0: recurrence up to x ≥ 12, then the asymptotic series (relative error < 1e-12)."""
    acc = 0.0
    while x < 12.0:
        acc += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    return acc + 1.0 / x + f / 2 + f / x * (1 / 6 - f * (1 / 30 - f * (1 / 42 - f / 30)))


def trigamma_inverse(y: float) -> float:
    """The x with ψ'(x) = y (y > 0), by limma's Newton iteration (Smyth 2004, appendix)."""
    if y > 1e7:
        return 1.0 / math.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = trigamma(x)
        step = tri * (1.0 - tri / y) / _tetragamma(x)
        x += step
        if -step / x < 1e-8:
            break
    return x


def _tetragamma(x: float) -> float:
    """ψ''(x) for x > 0 (only Newton's step uses it)."""
    acc = 0.0
    while x < 12.0:
        acc -= 2.0 / x ** 3
        x += 1.0
    f = 1.0 / (x * x)
    return acc - f - f / x - f * f * (1 / 2 - f * (1 / 6 - f * (1 / 6 - 3 * f / 10)))


# --- the structure of a family's noise ----------------------------------------------------------------------------

def helmert(k: int) -> np.ndarray:
    """(k − 1) × k orthonormal contrasts: k runs' deviations as k − 1 independent ones (under the null, each
    N(0, Σ) across cells), whatever the runs' mean."""
    h = np.zeros((max(k - 1, 0), k))
    for j in range(1, k):
        h[j - 1, :j] = 1.0
        h[j - 1, j] = -float(j)
        h[j - 1] /= math.sqrt(j * (j + 1))
    return h


@dataclass(frozen=True)
class Components:
    """Variance components of a family's per-run log estimates (variances, in log units²), from d contrasts."""

    machine: float  # shared by every cell of the family
    loop: float  # shared by the cells of one loop
    own: float  # the cell's own
    d: int  # contrasts (degrees of freedom) per cell
    loop_sizes: tuple[int, ...]

    @property
    def total(self) -> float:
        return self.machine + self.loop + self.own

    def _sum_sq_cov(self) -> float:
        """tr(Σ²) over the family's cells: Σ over every pair (g, h) of cov(g, h)²."""
        t = sum(self.loop_sizes)
        sq = sum(n * n for n in self.loop_sizes)
        return (t * self.total ** 2 + (sq - t) * (self.machine + self.loop) ** 2
                + (t * t - sq) * self.machine ** 2)

    @property
    def eff_df(self) -> float:
        """Effective degrees of freedom of the family's pooled variance: d · (tr Σ)² / tr(Σ²) (Satterthwaite)."""
        t = sum(self.loop_sizes)
        ss = self._sum_sq_cov()
        return float(self.d * t) if ss <= 0 else min(self.d * t * t * self.total ** 2 / ss, float(self.d * t))

    @property
    def mean_sq_corr(self) -> float:
        """Mean squared correlation between two different cells of the family."""
        t = sum(self.loop_sizes)
        if t < 2 or self.total <= 0:
            return 0.0
        return max(0.0, (self._sum_sq_cov() - t * self.total ** 2) / (t * (t - 1) * self.total ** 2))

    def to_json(self) -> dict:
        return {"machine": self.machine, "loop": self.loop, "own": self.own, "d": self.d,
                "loops": len(self.loop_sizes), "cells": sum(self.loop_sizes), "eff_df": self.eff_df,
                "mean_sq_corr": self.mean_sq_corr}


def components(contrasts: np.ndarray, loops) -> Components:
    """Method-of-moments variance components from ``contrasts`` (cells × d, each row a cell's Helmert contrasts)
    and each cell's loop: one-way nested analysis of variance (machine ⊃ loop ⊃ cell), negative estimates at 0."""
    v = np.asarray(contrasts, dtype=float)
    t, d = v.shape
    keys = list(loops)
    names = sorted(set(keys), key=str)
    index = np.array([names.index(k) for k in keys])
    sizes = np.bincount(index, minlength=len(names)).astype(float)
    n_loops = len(names)
    loop_mean = np.stack([v[index == i].mean(0) for i in range(n_loops)])  # (L, d)
    grand = v.mean(0)  # (d,)
    ss_machine = t * float((grand ** 2).sum())
    ss_loop = float((sizes[:, None] * (loop_mean - grand) ** 2).sum())
    ss_own = float(((v - loop_mean[index]) ** 2).sum())
    sq = float((sizes ** 2).sum())
    own = ss_own / (d * (t - n_loops)) if t > n_loops else 0.0  # every cell its own loop: all of it is "loop"
    loop = max(0.0, (ss_loop / d - own * (n_loops - 1)) / (t - sq / t)) if n_loops > 1 else 0.0
    machine = max(0.0, (ss_machine / d - loop * sq / t - own) / t)
    return Components(machine, loop, own, d, tuple(int(s) for s in sizes))


@dataclass(frozen=True)
class Prior:
    """What a family's cells borrow: a prior variance ``s2`` worth ``df`` degrees of freedom (0: none)."""

    s2: float
    df: float  # d0, already capped; 0 when there is no prior
    cap: float  # the pool's effective df (d0 + d never exceeds it)
    base_d: int  # the baseline contrasts the components were fitted on
    components: Components | None = None

    @staticmethod
    def none() -> "Prior":
        return Prior(0.0, 0.0, 0.0, 0, None)

    def to_json(self) -> dict:
        return {"s2": self.s2, "df": self.df, "cap": self.cap, "base_d": self.base_d,
                "components": self.components.to_json() if self.components else None}


def fit_prior(s2: np.ndarray, d: np.ndarray, mean_sq_corr: float = 0.0) -> tuple[float, float]:
    """(s0², d0) by limma's moments of log s² (Smyth 2004, §6.2), where the spread sampling alone gives is
    ψ'(d/2) · (1 − mean squared correlation): correlated cells' variances agree more than independent ones', and that
    agreement must not pass for a homogeneous family. d0 = inf: no spread beyond sampling (the pool is the prior)."""
    s2 = np.asarray(s2, dtype=float)
    d = np.asarray(d, dtype=float)
    keep = (s2 > 0) & (d > 0)
    s2, d = s2[keep], d[keep]
    if s2.size < MIN_PRIOR_TESTS:
        return 0.0, 0.0
    e = np.log(s2) - np.array([digamma(x / 2) for x in d]) + np.log(d / 2)
    mean = float(e.mean())
    sampling = float(np.mean([trigamma(x / 2) for x in d])) * (1.0 - min(max(mean_sq_corr, 0.0), 1.0))
    spread = float(e.var(ddof=1)) - sampling
    if spread <= 1e-12:
        return math.exp(mean), math.inf
    d0 = 2.0 * trigamma_inverse(spread)
    return math.exp(mean + digamma(d0 / 2) - math.log(d0 / 2)), d0


def family_prior(base: np.ndarray, loops) -> Prior:
    """The prior of one family from its baseline matrix ``base`` (cells × runs, NaN where a run lacks the cell):
    components from the cells present in every run, limma's moments corrected for their correlation, the weight
    capped at the pool's effective degrees of freedom."""
    base = np.asarray(base, dtype=float)
    loops = list(loops)
    full = ~np.isnan(base).any(axis=1) if base.size else np.zeros(0, bool)
    k = base.shape[1] if base.ndim == 2 else 0
    if k < 2 or int(full.sum()) < MIN_PRIOR_TESTS:
        return Prior.none()
    rows = base[full]
    contrasts = rows @ helmert(k).T
    comp = components(contrasts, [lp for lp, f in zip(loops, full) if f])
    d = k - 1
    s2 = (rows.var(axis=1, ddof=1))
    s0, d0 = fit_prior(s2, np.full(s2.shape, float(d)), comp.mean_sq_corr)
    if s0 <= 0:
        return Prior.none()
    cap = comp.eff_df
    return Prior(s0, min(d0, max(cap - d, 0.0)), cap, d, comp)


# --- one test -----------------------------------------------------------------------------------------------------

def moderated_test(x, y, *, prior: Prior, floor_sd: float = 0.0, alpha: float = ALPHA,
                   min_effect_pct: float = MIN_EFFECT_PCT) -> Shift:
    """Baseline runs ``x`` against current runs ``y`` (log estimates, one per run) on the moderated variance.

    The cell's own between-run variance (both sides pooled, d = N + M − 2) is shrunk toward the family's prior:
    s̃² = (d0·s0² + d·s²) / (d0 + d), on d0 + d degrees of freedom (d0 = 0 without a prior: Student's t). Runs the
    current side adds beyond the baseline's are new information the prior's pool did not hold, so they are counted
    on top of its cap. The spread is floored at ``floor_sd`` (the runs' own within-run error), as in
    :func:`perfsuite.compare.stats.between_runs`. ValueError when there are no degrees of freedom at all."""
    x = [float(v) for v in x]  # a handful of runs: plain floats are ten times faster than numpy here
    y = [float(v) for v in y]
    if not x or not y:
        raise ValueError("need at least one run on each side")
    if not all(math.isfinite(v) for v in (*x, *y)):
        raise ValueError("run estimates contain NaN or infinity")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    d_own = len(x) + len(y) - 2
    d0 = prior.df if prior.s2 > 0 else 0.0
    if d_own + d0 < 1:
        raise ValueError("one run on each side: no between-run spread to test against")
    mx, my = sum(x) / len(x), sum(y) / len(y)
    ss = sum((v - mx) ** 2 for v in x) + sum((v - my) ** 2 for v in y)
    if math.isinf(d0):
        var, df = prior.s2, MAX_DF
    else:
        var = (d0 * prior.s2 + ss) / (d0 + d_own)
        df = min(d0 + d_own, MAX_DF)
    sd = max(math.sqrt(var), float(floor_sd))
    diff = my - mx
    se = sd * math.sqrt(1.0 / len(x) + 1.0 / len(y))
    return _shift(diff, se, df, sd, alpha, min_effect_pct)


# A standard error below this (in log units: 1e-12 of a ratio) is no spread at all: two sides that are equal up to float
# rounding are then unchanged, not infinitely significant.
MIN_SE = 1e-12


def _shift(diff: float, se: float, df: float, sd: float, alpha: float, min_effect_pct: float) -> Shift:
    se = max(se, MIN_SE)
    half = t_quantile(1.0 - alpha / 2.0, df) * se
    p = t_two_sided_p(diff / se, df)
    change, low, high = (pct_of_log(v) for v in (diff, diff - half, diff + half))
    return Shift(change, low, high, p, decide(change, low, high, p, alpha=alpha, min_effect_pct=min_effect_pct),
                 df=df, noise_pct=100.0 * math.expm1(sd), detectable_pct=pct_of_log(half), se_log=se)


def group_test(diffs, loops, *, comp: Components, base_runs: int, current_runs: int, alpha: float = ALPHA,
               min_effect_pct: float = MIN_EFFECT_PCT) -> Shift:
    """One hypothesis for a group of cells that moved together (a method on every shape): the mean of their
    current − baseline differences ``diffs``, against the variance the family's components give that mean —
    machine + loop · Σ (share of the group in each loop)² + own / cells, times 1/N + 1/M — on the Satterthwaite
    degrees of freedom of that sum (the machine's part is known to d, the loops' to d·(L − 1), the cells' own to
    d·(T − L)). A method slowed on 18 shapes is one test with 18 shapes of evidence, not 18 lone ones."""
    diffs = np.asarray(diffs, dtype=float)
    keys = list(loops)
    n = diffs.size
    if n == 0:
        raise ValueError("an empty group")
    shares = np.array([keys.count(k) for k in dict.fromkeys(keys)], dtype=float) / n
    c = 1.0 / base_runs + 1.0 / current_runs
    terms = [(comp.machine, comp.d), (comp.loop * float((shares ** 2).sum()), comp.d * max(len(comp.loop_sizes) - 1, 1)),
             (comp.own / n, comp.d * max(sum(comp.loop_sizes) - len(comp.loop_sizes), 1))]
    var = sum(v for v, _ in terms)
    den = sum(v * v / f for v, f in terms)
    df = min(var * var / den, MAX_DF) if den > 0 else MAX_DF
    se = math.sqrt(c * var)
    return _shift(float(diffs.mean()), se, max(df, 1.0), math.sqrt(var), alpha, min_effect_pct)
