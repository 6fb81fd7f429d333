"""Two-sample statistics for a verdict on raw timing samples: the ratio of medians, bootstrapped.

Timing samples are skewed and contaminated: on a shared runner a fifth of the
rounds of a cell can be hit by a descheduled thread, in either run. So nothing
here assumes normality, and the effect is a ratio of medians, which ignores up
to half the samples being off:

* effect: ``median(current) / median(baseline) - 1``, as a % change;
* interval and p-value: a percentile bootstrap of that ratio, each run resampled
  on its own (Efron & Tibshirani 1993, ch. 13 and 16), with a fixed seed so the
  same samples always give the same answer. On this project's CPU runner the
  Mann–Whitney U test missed 5 of 150 real 5 % slow-downs whose blocks had a
  fifth of their rounds descheduled; the bootstrap of medians found all 150;
* below ``BOOTSTRAP_MIN_N`` samples a side the bootstrap has too few distinct
  medians to mean much: the exact Mann–Whitney U test decides instead (it
  cannot reach 1 % with 4 samples or fewer a side, which is the honest answer),
  and no interval is given.

Everything works on ratios, so results do not depend on the unit or on scaling
both runs by one factor. A verdict needs two gates, as in asv: significant AND
at least the minimum effect. Bad input (empty, non-finite, non-positive)
raises: an error never becomes a verdict.
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
# Smallest change (%) that can be called a regression or an improvement. Measured on the shared 2-core CPU runner:
# between 8 separate smoke runs (1 288 A/A cell comparisons) the paired slow-down moved by at most 2.7 % (99th
# percentile 1.9 %), and `perfsuite selftest` estimates a real 5 % slow-down at 5.0 ± 0.4 %. 3 % sits above the
# A/A noise with margin, and well below a real 5 % slow-down. Overridden by --min-effect.
MIN_EFFECT_PCT = 3.0
# A non-significant cell whose interval reaches past this multiple of the minimum effect is "inconclusive", not
# "unchanged": the run could hide a slow-down of the size the detector is meant to catch (its measured power is
# for 5 % with a 3 % minimum). Narrower intervals around a small change are "unchanged", as in asv.
TOO_NOISY_FACTOR = 2.0
BOOTSTRAP_RESAMPLES = 2000  # p-value resolution 1/2001; Monte Carlo error at p = 1 % is about 0.2 %
BOOTSTRAP_MIN_N = 8  # fewer samples a side: exact Mann-Whitney U instead (the bootstrap covers well from 8 up)
BOOTSTRAP_SEED = 20240607  # fixed, so a comparison is a pure function of its samples
# Up to this many samples per side (and no ties) the exact null distribution of U is used; else the normal
# approximation with tie and continuity corrections.
EXACT_MAX_N = 20

VERDICTS = ("regression", "improvement", "unchanged", "inconclusive", "new", "missing")


@dataclass(frozen=True)
class Shift:
    """Baseline vs current samples: effect (% change), its interval, the U test's p-value, and the verdict."""

    change_pct: float  # 100·(median(current) / median(baseline) − 1)
    ci_low_pct: float  # bootstrap 1 − α interval; -inf when the samples are too few for one
    ci_high_pct: float  # +inf likewise
    p_value: float  # two-sided: bootstrap, or exact Mann–Whitney U for small samples
    verdict: str


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


def mann_whitney(x, y) -> tuple[float, float]:
    """(U of ``y``, two-sided p-value). U counts pairs with y_j > x_i (ties count ½); n·m/2 under no change."""
    x = check_samples(x, "baseline")
    y = check_samples(y, "current")
    n, m = len(x), len(y)
    ranks, ties = _ranks(np.concatenate([x, y]))
    u = float(ranks[n:].sum() - m * (m + 1) / 2.0)
    if n <= EXACT_MAX_N and m <= EXACT_MAX_N and np.all(ties == 1):
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


def median_ratio(x, y, alpha: float = ALPHA) -> tuple[float, float, float, float]:
    """(change %, interval low %, high %, p) of median(y) / median(x): percentile bootstrap, or exact U when small."""
    x = check_samples(x, "baseline")
    y = check_samples(y, "current")
    change = 100.0 * (float(np.median(y)) / float(np.median(x)) - 1.0)
    if min(len(x), len(y)) < BOOTSTRAP_MIN_N:
        _, p = mann_whitney(x, y)
        return change, -math.inf, math.inf, p
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    mx = np.median(x[rng.integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))], axis=1)
    my = np.median(y[rng.integers(0, len(y), (BOOTSTRAP_RESAMPLES, len(y)))], axis=1)
    ratio = my / mx
    low, high = np.quantile(ratio, [alpha / 2.0, 1.0 - alpha / 2.0])
    # two-sided: twice the smaller tail beyond "no change", counted conservatively (ties count on both sides)
    tail = min(int(np.sum(ratio <= 1.0)), int(np.sum(ratio >= 1.0)))
    p = min(1.0, (2 * tail + 1) / (BOOTSTRAP_RESAMPLES + 1))
    return change, 100.0 * (float(low) - 1.0), 100.0 * (float(high) - 1.0), p


def decide(change_pct: float, ci_low_pct: float, ci_high_pct: float, p_value: float, *, alpha: float = ALPHA,
           min_effect_pct: float = MIN_EFFECT_PCT) -> str:
    """The verdict from the two gates.

    regression / improvement: significant (p < α) AND the change is at least the minimum effect.
    inconclusive: not significant, yet the change looks as large as the minimum effect, or the interval reaches
        past TOO_NOISY_FACTOR × the minimum effect (or there is no interval): too noisy to say.
    unchanged: otherwise — no significant change as large as the minimum effect.
    """
    if p_value < alpha and change_pct >= min_effect_pct:
        return "regression"
    if p_value < alpha and change_pct <= -min_effect_pct:
        return "improvement"
    wide = TOO_NOISY_FACTOR * min_effect_pct
    if p_value >= alpha and (abs(change_pct) >= min_effect_pct or ci_high_pct >= wide or ci_low_pct <= -wide):
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
