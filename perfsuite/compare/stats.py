"""Two-sample statistics for verdicts: between separate runs (the noise that matters), and within one run.

**Between runs.** Samples inside one process understate the variance (pyperf's lesson): on this
project's 2-core CPU runner a cell's median time moved 3-10 % from one process to the next while its
within-run bootstrap interval was 1-2 % wide. So a verdict compares *run-level* estimates — one per
separate process: the log of the cell's median time, or of its median time over its paired reference —
with a t test on the between-run spread, moderated across the cells of the run
(:mod:`perfsuite.compare.moderated`), or paired over A/B blocks (:func:`paired_runs`). The spread is floored
at the runs' own within-run standard error, so a lucky tight baseline cannot make the gate narrower than one
run's sampling error. With a single run on each side there is no between-run spread to test against:
the caller must not give a verdict that fails a run (see :mod:`perfsuite.compare.verdicts`).

**Within one run** (the spread floor, and a description of a single pair of runs): timing samples are
skewed and contaminated (a fifth of the rounds of a cell can be hit by a descheduled thread), so the
effect is a ratio of medians with a percentile bootstrap interval (Efron & Tibshirani 1993), seeded so
the same samples always give the same answer, and the exact Mann–Whitney U test below
``BOOTSTRAP_MIN_N`` samples a side.

Everything works on ratios (logs), so results do not depend on the unit. A verdict needs two gates, as
in asv: significant AND at least the minimum effect. Bad input (empty, non-finite, non-positive)
raises: an error never becomes a verdict.

Over 350 lines on purpose: every test a verdict can rest on (within a run, paired, the per-run error control,
Student's t itself) with the constants that tie them together, read together when a gate is reviewed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np


# Two-sided significance level. 1 %: a run compares tens of cells, and sampling noise alone should rarely pass
# this gate; drift between runs is the minimum effect's job.
ALPHA = 0.01
# Smallest change (%) that can be called a regression or an improvement, whatever its significance: a floor under
# the noise-calibrated gate (changes below it are not worth an alarm even on a quiet machine). Overridden by
# --min-effect.
MIN_EFFECT_PCT = 3.0
BOOTSTRAP_RESAMPLES = 2000  # p-value resolution 1/2001; Monte Carlo error at p = 1 % is about 0.2 %
BOOTSTRAP_MIN_N = 8  # fewer samples a side: exact Mann-Whitney U instead (the bootstrap covers well from 8 up)
BOOTSTRAP_SEED = 20240607  # fixed, so a comparison is a pure function of its samples
# Bounded memory: a bootstrap holds resamples × n numbers (2000 × 100 k samples was 0.9 GB at once, 5 M killed the
# process), so a side longer than this is thinned to this many evenly spaced samples first (time order kept, so
# drift stays in). Its interval is then a little wider than the full side's would be: conservative, never tighter.
BOOTSTRAP_MAX_N = 5000  # at most 2000 × 5000 × 16 B = 160 MB for one side's resamples
# Up to this many samples per side (and no ties) the exact null distribution of U is used; else the normal
# approximation with tie and continuity corrections.
EXACT_MAX_N = 20

# Every verdict, in the order a reader needs them (the comparison format's list, which checks them on reading).
BOOTSTRAP_SE_RESAMPLES = 400  # resamples for a run's within-run standard error (a floor: precision matters little)
# No run is ever set aside as an outlier before a test: Dixon's Q screen (dropped) raised per-run false alarms at a
# 5-run baseline to 1.4-3.0 % because the test's level did not account for it. One process hammered by a neighbour
# is met instead by re-measuring: a regression must be confirmed by a fresh run (perfsuite.compare.sequential).


@dataclass(frozen=True)
class Shift:
    """Baseline vs current: effect (% change), its interval, the p-value, and the verdict from the two gates."""

    change_pct: float  # 100·(current / baseline − 1) of the compared quantity
    ci_low_pct: float  # 1 − α interval; -inf when there is none
    ci_high_pct: float  # +inf likewise
    p_value: float  # two-sided
    verdict: str
    df: float | None = None  # between runs: the t test's degrees of freedom (moderated: not whole; None: within a run)
    noise_pct: float | None = None  # between runs: the run-to-run spread used, as % (floored)
    detectable_pct: float | None = None  # between runs: the smallest change that would have been significant
    se_log: float | None = None  # between runs: standard error of the difference of the mean logs


def pct_of_log(v: float) -> float:
    """100·(e^v − 1), the % change of a log difference; inf beyond what a float holds (an interval with a t quantile
    of few degrees of freedom at a family's tiny α can be that wide)."""
    return 100.0 * math.expm1(v) if v < 700 else math.inf


def check_samples(x, what: str) -> np.ndarray:
    """A 1-D float array of finite, positive values, or ValueError saying what is wrong."""
    a = np.asarray(x, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{what}: need a non-empty list of samples, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: samples contain NaN or infinity")
    if np.any(a <= 0):
        raise ValueError(f"{what}: samples must be positive (times or time ratios), found {a.min()!r}")
    return a


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-ranks (1-based, ties averaged) and the sizes of the tie groups."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    counts = np.diff(np.r_[starts, len(values)])
    mid = starts + (counts + 1) / 2.0  # mean of the 1-based ranks start+1 .. start+count
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mid, counts)
    return ranks, counts


@lru_cache(maxsize=256)
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """How many of the C(n+m, n) orderings give U = 0 .. n·m: the Gaussian binomial [n+m choose n]_q."""
    poly = [1]
    for i in range(1, m + 1):
        # multiply by (1 − q^(n+i)) ...
        grown = poly + [0] * (n + i)
        for k in range(len(grown) - 1, n + i - 1, -1):
            grown[k] -= grown[k - n - i]
        # ... and divide by (1 − q^i), exactly: c[k] = a[k] + c[k − i]
        for k in range(i, len(grown)):
            grown[k] += grown[k - i]
        poly = grown[: n * i + 1]
    return tuple(poly)


def _exact_cdf(n: int, m: int) -> np.ndarray:
    counts = _u_counts(n, m)
    total = math.comb(n + m, n)
    return np.array([c / total for c in np.cumsum(np.array(counts, dtype=object))])


def mann_whitney(x, y, *, exact_max_n: int = EXACT_MAX_N) -> tuple[float, float]:
    """(U of ``y``, two-sided p-value). U counts pairs with y_j > x_i (ties count ½); n·m/2 under no change.
    Exact up to ``exact_max_n`` values a side without ties (the normal approximation's tail is too heavy for a
    handful of values against many: 4 v 30 cannot go below p ≈ 0.0015, exactly 4e-5)."""
    x = check_samples(x, "baseline")
    y = check_samples(y, "current")
    n, m = len(x), len(y)
    ranks, ties = _ranks(np.concatenate([x, y]))
    u = float(ranks[n:].sum() - m * (m + 1) / 2.0)
    if n <= exact_max_n and m <= exact_max_n and np.all(ties == 1):
        cdf = _exact_cdf(n, m)
        k = int(round(u))
        lower = cdf[k]  # P(U <= u)
        upper = 1.0 - (cdf[k - 1] if k > 0 else 0.0)  # P(U >= u)
        return u, float(min(1.0, 2.0 * min(lower, upper)))
    big_n = n + m
    tie_term = float((ties**3 - ties).sum()) / (big_n * (big_n - 1)) if big_n > 1 else 0.0
    var = n * m / 12.0 * ((big_n + 1) - tie_term)
    if var <= 0:  # every value equal: no evidence of any difference
        return u, 1.0
    z = (abs(u - n * m / 2.0) - 0.5) / math.sqrt(var)
    return u, float(min(1.0, 2.0 * NormalDist().cdf(-max(z, 0.0))))


def _thinned(a: np.ndarray) -> np.ndarray:
    """``a`` itself, or BOOTSTRAP_MAX_N of its values evenly spaced in order when it is longer (bounded memory)."""
    if a.size <= BOOTSTRAP_MAX_N:
        return a
    return a[np.linspace(0, a.size - 1, BOOTSTRAP_MAX_N).round().astype(np.intp)]


def _median(a: np.ndarray) -> np.ndarray:
    """np.median over the last axis, without its overflow: the two middle values' mean as lo + (hi - lo) / 2
    (np.median adds them first: two times of 1e308 gave inf)."""
    k = a.shape[-1] // 2
    if a.shape[-1] % 2:
        return np.partition(a, k, axis=-1)[..., k]
    part = np.partition(a, (k - 1, k), axis=-1)
    lo, hi = part[..., k - 1], part[..., k]
    return lo + (hi - lo) / 2.0


MAX_LOG_RATIO = 700.0  # e^700 ≈ 1e304: a ratio of medians beyond it is reported at it (finite, absurd, flagged)


def _pct(log_ratio):
    """Relative change in % of a log ratio, clipped to ±MAX_LOG_RATIO so that it stays finite."""
    return 100.0 * np.expm1(np.clip(log_ratio, -MAX_LOG_RATIO, MAX_LOG_RATIO))


def median_ratio(x, y, alpha: float = ALPHA) -> tuple[float, float, float, float]:
    """(change %, interval low %, high %, p) of median(y) / median(x): percentile bootstrap, or exact U when small.
    Computed on log ratios: positive times anywhere in float range (1e-300 against 1e308) give finite numbers."""
    x = check_samples(x, "baseline")
    y = check_samples(y, "current")
    change = float(_pct(math.log(float(_median(y))) - math.log(float(_median(x)))))
    if min(len(x), len(y)) < BOOTSTRAP_MIN_N:
        _, p = mann_whitney(x, y)
        return change, -math.inf, math.inf, p
    x, y = _thinned(x), _thinned(y)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    mx = _median(x[rng.integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))])
    my = _median(y[rng.integers(0, len(y), (BOOTSTRAP_RESAMPLES, len(y)))])
    log_ratio = np.log(my) - np.log(mx)
    low, high = np.quantile(log_ratio, [alpha / 2.0, 1.0 - alpha / 2.0])
    # two-sided: twice the smaller tail beyond "no change", counted conservatively (ties count on both sides)
    tail = min(int(np.sum(log_ratio <= 0.0)), int(np.sum(log_ratio >= 0.0)))
    p = min(1.0, (2 * tail + 1) / (BOOTSTRAP_RESAMPLES + 1))
    return change, float(_pct(low)), float(_pct(high)), p


def decide(change_pct: float, ci_low_pct: float, ci_high_pct: float, p_value: float, *, alpha: float = ALPHA,
           min_effect_pct: float = MIN_EFFECT_PCT) -> str:
    """The verdict from the two gates.

    regression / improvement: significant (p < α) AND the change is at least the minimum effect.
    inconclusive: not significant, yet the change looks as large as the minimum effect (a suspect that the
        noise cannot confirm), or there is no interval at all (too few samples).
    unchanged: otherwise — no significant change as large as the minimum effect. How large a change the
        comparison could have missed is its interval's half-width, reported beside the verdict (asv's
        "no change" likewise does not claim a wide interval away).
    """
    if p_value < alpha and change_pct >= min_effect_pct:
        return "regression"
    if p_value < alpha and change_pct <= -min_effect_pct:
        return "improvement"
    if abs(change_pct) >= min_effect_pct or not (math.isfinite(ci_low_pct) and math.isfinite(ci_high_pct)):
        return "inconclusive"
    return "unchanged"


def compare_samples(baseline, current, *, alpha: float = ALPHA, min_effect_pct: float = MIN_EFFECT_PCT) -> Shift:
    """The whole comparison of two independent samples of one positive quantity (times, or time ratios)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if not min_effect_pct >= 0:
        raise ValueError(f"the minimum effect must be >= 0 %, not {min_effect_pct}")
    change, low, high, p = median_ratio(baseline, current, alpha)
    return Shift(change, low, high, p, decide(change, low, high, p, alpha=alpha, min_effect_pct=min_effect_pct))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate (used to report false-alarm and detection rates with their uncertainty)."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# --- between runs: Student's t on run-level log estimates ---------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, not {df}")
    if not math.isfinite(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


@lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = ``p`` (0.5 < p < 1), by bisection on :func:`t_two_sided_p`."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"need 0.5 < p < 1, not {p}")
    target = 2.0 * (1.0 - p)  # two-sided tail beyond t
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_p(mid, df) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def bootstrap_se(values, statistic=np.median, resamples: int = BOOTSTRAP_SE_RESAMPLES) -> float:
    """Standard error of ``statistic`` of ``values`` by a seeded bootstrap (0 for fewer than 2 values)."""
    v = _thinned(np.asarray(values, dtype=float))
    if v.size < 2:
        return 0.0
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    stats = statistic(v[rng.integers(0, v.size, (resamples, v.size))], axis=1)
    return float(np.std(stats, ddof=1))


# --- per-run error control: many tests in one run ---------------------------------------------------------------

# How a run's many tests share the significance level, per part of a run. "holm": Holm's step-down (1979) controls
# the family-wise error rate — the chance that an unchanged run raises ANY false alarm stays below α whatever the
# correlation between the tests — which is what a gate that fails the nightly needs: "no false alarm per run",
# not "α per test" (a paper grid makes ~900 tests a night: ~4 false alarms a night at α each). "bh":
# Benjamini–Hochberg (1995) controls the false discovery rate instead (the expected share of false ones among the
# flagged), more powerful when many cells truly moved, but an unchanged run may still fail α of the time only if
# the tests are independent or positively dependent. "none": every test at α on its own (the old behaviour).
ERROR_CONTROL = "holm"
ERROR_CONTROLS = {"holm": "Holm step-down: family-wise error rate <= alpha per run part",
                  "bh": "Benjamini-Hochberg: false discovery rate <= alpha per run part",
                  "none": "none: each test at alpha on its own"}


def adjust_p_values(p_values, method: str = ERROR_CONTROL) -> list[float]:
    """The p-values adjusted for the family they were tested in: a test passes the family's level α when its
    adjusted p-value is below α. Holm: p_(i)·(m − i + 1), made monotone from the smallest up; Benjamini–Hochberg:
    p_(i)·m / i, made monotone from the largest down; both capped at 1. Order is kept."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError("p-values must be a flat list")
    if p.size and (not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    if method not in ERROR_CONTROLS:
        raise ValueError(f"unknown error control {method!r}; use one of {', '.join(ERROR_CONTROLS)}")
    m = p.size
    if m == 0 or method == "none":
        return [float(v) for v in p]
    order = np.argsort(p, kind="mergesort")
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in out]


def family_alpha(alpha: float, tests: int, method: str = ERROR_CONTROL) -> float:
    """The per-test level the strictest step of the family's control asks for (Holm's and BH's first step: α/m):
    what a lone moved cell among ``tests`` must reach, so the change a run can detect is quoted at it."""
    return alpha if method == "none" or tests <= 1 else alpha / tests


def paired_runs(base_logs, cur_logs, *, floor_sd: float = 0.0, alpha: float = ALPHA,
                min_effect_pct: float = MIN_EFFECT_PCT) -> Shift:
    """A/B runs made in blocks (A B, B A, …): run i of A against run i of B, its neighbour in time.

    Paired t test on the differences of the log estimates: what drifts slowly over the session (the machine's
    load, its clock) hits both runs of a block alike and drops out of the difference, so the spread left is the
    processes' own. n − 1 degrees of freedom; the differences' SD at least √2 · ``floor_sd`` (two runs' within-run
    error). ValueError for fewer than two pairs or unequal sides."""
    x = np.asarray(base_logs, dtype=float)
    y = np.asarray(cur_logs, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError("a paired comparison needs two or more runs on each side, as many on both")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("run estimates contain NaN or infinity")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    d = y - x
    n = d.size
    sd = max(float(np.std(d, ddof=1)) if n > 1 else 0.0, math.sqrt(2.0) * float(floor_sd))
    diff, se, df = float(d.mean()), sd / math.sqrt(n), n - 1
    half = t_quantile(1.0 - alpha / 2.0, df) * se
    p = t_two_sided_p(diff / se, df) if se > 0 else (1.0 if diff == 0 else 0.0)
    change, low, high = (pct_of_log(v) for v in (diff, diff - half, diff + half))
    return Shift(change, low, high, p, decide(change, low, high, p, alpha=alpha, min_effect_pct=min_effect_pct),
                 df=df, noise_pct=100.0 * math.expm1(sd / math.sqrt(2.0)), detectable_pct=pct_of_log(half),
                 se_log=se)
