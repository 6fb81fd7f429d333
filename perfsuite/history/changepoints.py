"""Change points of one nightly series: where its level stepped, by how much, and how sure we are.

The search is ``ruptures`` (BSD, numpy + scipy): binary segmentation (``Binseg``) with the L1 cost on the
logarithm of the values. Why these choices:

* a maintained library instead of our own search: ``ruptures`` is the reference implementation of PELT,
  binary segmentation and their costs. Apache Otava's e-divisive was the other candidate; its package
  (0.8.0) pins numpy 2.2 and scipy < 1.17 and pulls BigQuery, Postgres and Slack clients, which a
  benchmark suite cannot impose on its users;
* binary segmentation, top-down like e-divisive, costs about 20 ms on a year of nightlies (PELT with the
  L2 cost: 350 ms, too slow for 500 cells every night);
* the L1 cost fits a level by the median, so a night hit by a descheduled runner does not pull the
  level, as everywhere else in perfsuite; the logarithm makes a step a relative change, the same
  for a 0.3 ms and a 300 ms cell.

``ruptures`` gives no p-values: its penalty must be calibrated. Here it is per cell, from that cell's own
between-run noise, σ̂ = 1.4826 · MAD(successive differences) / √2 (robust: a step moves one difference,
an outlier night two), so a noisy cell needs a bigger step than a quiet one: penalty =
``PENALTY_FACTOR`` · σ̂ · ln(n). Each candidate must then pass two gates, as in asv and Otava: the
nights after it differ from the nights before (Mann–Whitney U, p < ``ALPHA``) AND the step is at least
``MIN_STEP_PCT``. A candidate that fails is dropped and its neighbours are measured again. The false
change points and the power this gives are measured by :mod:`perfsuite.history.synthetic` (docs/history.md,
"History and change points").

Two additions for what the search misses:

* nightly noise is autocorrelated (a machine has slow weeks): successive differences then understate σ by
  √(1 − φ), so σ̂ is also taken from the residuals around a running median and the larger one is used, and every
  test's noise is inflated by the AR(1) long-run factor √((1 + φ̂)/(1 − φ̂)) (φ̂: the residuals' lag-1
  autocorrelation, ≥ 0);
* the penalty grows with ln(n) and needs MIN_SEGMENT_RUNS nights after a step: a step in the last nights is
  found weeks late. The **recent window** tests the last k nights (k in RECENT_RUNS) against up to
  TEST_WINDOW_RUNS nights before them, at once; a step found there that has not lasted MIN_SEGMENT_RUNS nights
  is reported *provisional*. Two samples as small as 2-4 nights cannot pass α by rank alone (4 v 4: exact
  Mann–Whitney's smallest p is 0.029, and a permutation test of 8 values has the same 70 orderings), so where
  the exact table cannot reach α the gate is a z test of the difference of medians against σ̂ of the whole
  series, with the variance AR(1) noise of φ̂ gives two adjacent groups of their sizes (:func:`median_z_p`),
  Bonferroni over the windows tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfsuite.compare.stats import mann_whitney
from perfsuite.errors import PerfsuiteError

# A level needs this many nights on each side of a step: one bad night is never a change point, and a
# step at the end of the series is called once it has lasted this long (PyTorch HUD asks for 2
# consecutive violations; a nightly value is one sample, so we ask for a little more).
MIN_SEGMENT_RUNS = 4
MIN_HISTORY_RUNS = 2 * MIN_SEGMENT_RUNS  # shorter series: too short to tell a step from noise
# Penalty per change point, in units of σ̂ · ln(n) (the L1 cost is linear in the deviations). Calibrated with
# `perfsuite history simulate` (200 series per setting, 60 and 365 nightlies, noise 1-10 %): 1.0 and 1.5 let
# through 1.5-5 % false change points on 60-nightly A/A series at 3 % noise; 2.0 none, and finds a +5 % step
# at 3 % noise in 87 % of 60-nightly series (3.0: 53 %).
PENALTY_FACTOR = 2.0
ALPHA = 0.01  # the Mann-Whitney gate: nights after vs nights before
# Smallest step (%) reported. Averaging over nights makes steps far below one run's 3 % minimum effect
# measurable; under 1.5 % a step is not worth an issue.
MIN_STEP_PCT = 1.5
# Nights compared on each side of a candidate (bounded by the neighbouring change points); conbench looks back
# at up to 100 commits, a month of nightlies is enough to measure a level.
TEST_WINDOW_RUNS = 30
# A change point's place: every split whose L1 cost is within this many σ̂ of the best one's. Calibrated on
# simulated steps (200 series each): at 3.0 the range holds the true night in 92-100 % of the detections at
# 1-5 % noise (1.5: 80-100 %, half as wide).
LOCATION_SLACK = 3.0
NOISE_FLOOR = 1e-3  # σ̂ of a series that never moves (e.g. peak memory): 0.1 %, so the penalty is never 0
MAD_TO_SIGMA = 1.4826  # MAD of a normal sample × this = its standard deviation
# The recent window: the last k nights against up to TEST_WINDOW_RUNS before them, for each k here (Bonferroni over
# them); a step found with fewer than MIN_SEGMENT_RUNS nights after it is provisional.
RECENT_RUNS = (2, 3, 4)
# A series' α is shared: this part to the search's gates, the rest to the recent window (so an unchanged series
# still shows a false change point, of either kind, about α of the time at most).
SEARCH_SHARE = 0.5
RECENT_MIN_BEFORE = 2 * MIN_SEGMENT_RUNS  # nights needed before the recent window
RESIDUAL_WINDOW = 2 * MIN_SEGMENT_RUNS + 1  # running-median width for σ̂ from residuals (a step moves few of them)
MAX_AUTOCORRELATION = 0.8  # φ̂ is clipped here: the inflation √((1+φ)/(1−φ)) stays finite (3.0)
MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2)  # sd of a normal sample's median / sd of its mean, for large samples
# Var(median) / Var(mean) of n normal values, for the small groups a recent window compares (n > 8: π/2, which is
# above every n's own ratio, so the test stays on the safe side); simulated, 2e6 samples each, rounded up.
MEDIAN_VARIANCE_RATIO = {1: 1.0, 2: 1.0, 3: 1.35, 4: 1.20, 5: 1.44, 6: 1.29, 7: 1.48, 8: 1.35}


class DetectionError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class Step:
    """A change point at index ``index``: the level of the nights before it and of the nights from it on."""

    index: int  # the first night of the new level (the best split)
    first: int  # earliest night the new level may have begun: the split is located within first..last
    last: int
    before: float  # median of the nights compared before
    after: float  # median of the nights compared after
    step_pct: float | None  # 100 · (after / before − 1); None only for an exact step from 0 (history.looks)
    p_value: float  # Mann-Whitney U, nights before vs after (or the z test where ranks cannot reach α)
    provisional: bool = False  # found by the recent window and not yet MIN_SEGMENT_RUNS nights old
    test: str = "mann-whitney"  # or "z" (see the module docstring), or "exact" (history.looks.exact_detection)


@dataclass(frozen=True)
class Segment:
    start: int  # first index
    stop: int  # one past the last index
    level: float  # median of its values


@dataclass(frozen=True)
class Detection:
    """What was found in one series: its noise, the steps that passed both gates, the levels between them."""

    noise_pct: float  # σ̂ of the between-run noise, % (of the log values ≈ relative)
    steps: tuple[Step, ...]
    segments: tuple[Segment, ...]
    candidates: int  # change points ruptures proposed, before the gates
    autocorrelation: float = 0.0  # φ̂, the lag-1 autocorrelation σ̂ was inflated for (history.looks bounds it)


def check_values(values) -> np.ndarray:
    y = np.asarray(values, dtype=float)
    if y.ndim != 1:
        raise DetectionError(f"a series is one-dimensional, got shape {y.shape}")
    if y.size and (not np.all(np.isfinite(y)) or np.any(y <= 0)):
        raise DetectionError("a series needs finite, positive values (times or time ratios)")
    return y


def noise_sigma(log_values: np.ndarray) -> float:
    """Between-run noise σ̂ of log values: the larger of the estimate from successive differences (robust to steps
    and outliers, but √(1 − φ) too small under lag-1 autocorrelation φ) and the one from residuals around a running
    median (which autocorrelation does not shrink)."""
    if log_values.size < 3:
        return NOISE_FLOOR
    d = np.diff(log_values)
    mad = float(np.median(np.abs(d - np.median(d))))
    from_diffs = MAD_TO_SIGMA * mad / math.sqrt(2.0)
    r = _residuals(log_values)
    from_residuals = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r)))) if r.size >= 3 else 0.0
    return max(from_diffs, from_residuals, NOISE_FLOOR)


def _residuals(y: np.ndarray) -> np.ndarray:
    """Each value minus the median of the RESIDUAL_WINDOW values around it (shorter at the ends)."""
    half = RESIDUAL_WINDOW // 2
    return np.array([y[i] - np.median(y[max(0, i - half):i + half + 1]) for i in range(y.size)])


def autocorrelation(log_values: np.ndarray, bounds: list[int] | None = None) -> float:
    """Lag-1 autocorrelation φ̂ of the residuals around the levels of the segments between ``bounds`` (default: one
    segment), clipped to [0, MAX_AUTOCORRELATION]."""
    if log_values.size < RESIDUAL_WINDOW:
        return 0.0
    r = _level_residuals(log_values, bounds)
    r = r - r.mean()
    denom = float(np.dot(r, r))
    phi = float(np.dot(r[1:], r[:-1])) / denom if denom > 0 else 0.0
    phi += (1.0 + 4.0 * phi) / r.size  # the lag-1 estimate's bias, −(1 + 4φ)/n (Kendall 1954)
    return min(max(phi, 0.0), MAX_AUTOCORRELATION)


def _level_residuals(log_values: np.ndarray, bounds: list[int] | None) -> np.ndarray:
    bounds = bounds or [0, log_values.size]
    parts = [log_values[a:b] - np.median(log_values[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]
    return np.concatenate(parts) if parts else np.zeros(0)


def level_sigma(log_values: np.ndarray, bounds: list[int]) -> float:
    """σ̂ from the residuals around the segments' levels (robust MAD): the marginal spread, which neither successive
    differences nor a running median see whole when nights are autocorrelated."""
    r = _level_residuals(log_values, bounds)
    return MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r)))) if r.size >= 3 else 0.0


def inflation(phi: float) -> float:
    """How much AR(1) noise of lag-1 autocorrelation φ widens the spread of a level (long-run sd / sd)."""
    return math.sqrt((1.0 + phi) / (1.0 - phi))


def _candidates(y: np.ndarray, sigma: float, penalty_factor: float) -> list[int]:
    try:
        import ruptures  # imported here: adding runs or listing cells does not need scipy loaded
    except ImportError:
        raise DetectionError("the change-point search needs the ruptures package (pip install ruptures; "
                             "ruptures 1.1.10 installs on Python < 3.14 only)") from None

    penalty = penalty_factor * sigma * math.log(len(y))
    algo = ruptures.Binseg(model="l1", min_size=MIN_SEGMENT_RUNS, jump=1).fit(y)
    return [int(b) for b in algo.predict(pen=penalty)[:-1]]


def _l1_cost(y: np.ndarray) -> float:
    return float(np.abs(y - np.median(y)).sum()) if y.size else 0.0


def location_set(y: np.ndarray, at: int, sigma: float, slack: float = LOCATION_SLACK) -> tuple[int, int]:
    """(first, last): the splits of ``y`` whose L1 cost is within ``slack`` · σ̂ of the split at ``at``'s, so
    the commit range of a change point widens where noise leaves its place uncertain."""
    costs = {j: _l1_cost(y[:j]) + _l1_cost(y[j:]) for j in range(1, len(y))}
    ok = [j for j, c in costs.items() if c <= costs[at] + slack * sigma]
    return min(ok), max(ok)


def _measure(values: np.ndarray, y: np.ndarray, sigma: float, bounds: list[int], k: int,
             place_sigma: float | None = None, phi: float = 0.0) -> Step:
    """The step at ``bounds[k]`` between its neighbours (at most TEST_WINDOW_RUNS nights each side)."""
    lo, at, hi = bounds[k - 1], bounds[k], bounds[k + 1]
    start, stop = max(lo, at - TEST_WINDOW_RUNS), min(hi, at + TEST_WINDOW_RUNS)
    before, after = values[start:at], values[at:stop]
    b, a = float(np.median(before)), float(np.median(after))
    # ranks alone assume independent nights: the z test against σ̂ (inflated for autocorrelation) must agree
    p = max(mann_whitney(before, after)[1], median_z_p(y[start:at], y[at:stop], sigma, phi))
    first, last = location_set(y[start:stop], at - start, place_sigma or sigma)
    return Step(at, start + first, start + last, b, a, 100.0 * (a / b - 1.0), p)


def _passes(step: Step, alpha: float, min_step_pct: float) -> bool:
    return step.p_value < alpha and abs(step.step_pct) >= min_step_pct


def median_z_p(before: np.ndarray, after: np.ndarray, sigma: float, phi: float = 0.0) -> float:
    """Two-sided p of the difference of the medians of two adjacent groups of log values whose noise is known from
    the whole series: ``sigma`` its long-run σ̂ (inflated for a lag-1 autocorrelation ``phi``, :func:`inflation`).

    The spread of the difference is that of AR(1) noise of that φ over the two groups as they lie, one after the
    other (:func:`ar1_difference_variance`): a short group's mean is less inflated than a long one's, and adjacent
    groups covary, so the long-run inflation on both sides overstated it (a +5 % step at 1.5 % noise and φ = 0.3
    was shown within 4 nights in 68 % of series). Each median is less efficient than its mean by its size's own
    ratio (MEDIAN_VARIANCE_RATIO; √(π/2) in sd for large groups); the covariance of the groups is that of their
    means, which the medians' exceeds: the difference's spread is, if anything, overstated."""
    marginal = sigma / inflation(phi)
    v_before, v_after, cov = ar1_difference_variance(before.size, after.size, phi)
    var = (_median_ratio(before.size) * v_before + _median_ratio(after.size) * v_after - 2.0 * cov)
    se = marginal * math.sqrt(max(var, 1e-300))
    z = abs(float(np.median(after) - np.median(before))) / se
    return float(math.erfc(z / math.sqrt(2.0)))


def _median_ratio(n: int) -> float:
    return MEDIAN_VARIANCE_RATIO.get(n, MEDIAN_EFFICIENCY ** 2)


def ar1_difference_variance(n: int, k: int, phi: float) -> tuple[float, float, float]:
    """(Var of the mean of n values, Var of the mean of the k values right after them, their covariance) for
    stationary AR(1) noise of lag-1 autocorrelation φ and unit variance."""
    def var_mean(m: int) -> float:
        return (m + 2.0 * sum((m - d) * phi ** d for d in range(1, m))) / (m * m)

    # value i of the first group (0..n-1) and j of the second (n..n+k-1) are d = j - i apart: count each distance
    cov = sum(min(d, n, k, n + k - d) * phi ** d for d in range(1, n + k)) / (n * k)
    return var_mean(n), var_mean(k), cov


def _ranks_can_reach(n: int, m: int, alpha: float) -> bool:
    """Whether exact Mann–Whitney with n and m values can give p < α at all: its smallest p is 2 / C(n+m, n)."""
    return 2.0 / math.comb(n + m, n) < alpha


def recent_step(values: np.ndarray, y: np.ndarray, sigma: float, since: int, *, alpha: float = ALPHA,
                min_step_pct: float = MIN_STEP_PCT, place_sigma: float | None = None, phi: float = 0.0
                ) -> Step | None:
    """A step in the last nights: the last k nights (k in RECENT_RUNS) against up to TEST_WINDOW_RUNS nights before
    them (none before ``since``, the last change point), each at α / len(RECENT_RUNS); both the rank test (where it
    can reach that level) and the z test against the inflated σ̂ must pass, and the step be at least
    ``min_step_pct``. Of the windows that pass, the split that fits best (least L1 cost) places the step, with the
    range of splits as good within LOCATION_SLACK · σ̂. Provisional when it is under MIN_SEGMENT_RUNS nights old."""
    level = alpha / len(RECENT_RUNS)
    n = len(values)
    window = max(since, n - max(RECENT_RUNS) - TEST_WINDOW_RUNS)
    passing = []
    for k in RECENT_RUNS:
        at = n - k
        start = max(since, at - TEST_WINDOW_RUNS)
        if at - start < RECENT_MIN_BEFORE:
            continue
        before, after = values[start:at], values[at:]
        ranks = _ranks_can_reach(at - start, k, level)
        z_p = median_z_p(y[start:at], y[at:], sigma, phi)
        p = max(z_p, mann_whitney(before, after, exact_max_n=TEST_WINDOW_RUNS)[1]) if ranks else z_p
        b, a = float(np.median(before)), float(np.median(after))
        step = Step(at, at, at, b, a, 100.0 * (a / b - 1.0), p, provisional=k < MIN_SEGMENT_RUNS,
                    test="mann-whitney+z" if ranks else "z")
        if _passes(step, level, min_step_pct):
            passing.append((_l1_cost(y[window:at]) + _l1_cost(y[at:]), step))
    if not passing:
        return None
    _, best = min(passing, key=lambda cs: cs[0])
    first, last = location_set(y[window:], best.index - window, place_sigma or sigma)
    return Step(best.index, window + first, window + last, best.before, best.after, best.step_pct, best.p_value,
                best.provisional, best.test)


def detect(values, *, alpha: float = ALPHA, min_step_pct: float = MIN_STEP_PCT,
           penalty_factor: float = PENALTY_FACTOR, recent: bool = True) -> Detection:
    """The change points of a series of positive values in run order (see the module docstring); ``recent``: also
    test the last nights against the nights before them (a provisional step, at the end)."""
    values = check_values(values)
    y = np.log(values)
    sigma = place_sigma = noise_sigma(y)  # a step's place: the cost's slack in the nights' own noise
    cands = _candidates(y, sigma, penalty_factor) if len(y) >= MIN_HISTORY_RUNS else []
    # σ̂ and φ̂ from the residuals around the levels a first search found, the last nights left out (a step there is
    # the recent window's to find, not noise)
    settled = len(y) - max(RECENT_RUNS) if recent and len(y) - max(RECENT_RUNS) >= MIN_HISTORY_RUNS else len(y)
    levels = [0, *[c for c in cands if c < settled], settled]
    phi = autocorrelation(y[:settled], levels)
    widened = max(sigma, level_sigma(y[:settled], levels)) * inflation(phi)
    if widened > sigma:  # (widened ≤ sigma only where φ̂ = 0: σ̂ then carries no inflation either)
        sigma = widened
        cands = _candidates(y, sigma, penalty_factor) if len(y) >= MIN_HISTORY_RUNS else []
    kept = list(cands)
    while True:  # drop the weakest failing candidate, measure its neighbours again
        bounds = [0, *kept, len(values)]
        steps = [_measure(values, y, sigma, bounds, k, place_sigma, phi) for k in range(1, len(bounds) - 1)]
        failing = [s for s in steps if not _passes(s, alpha * SEARCH_SHARE if recent else alpha, min_step_pct)]
        if not failing:
            break
        weakest = max(failing, key=lambda s: (s.p_value, -abs(s.step_pct)))
        kept.remove(weakest.index)
    bounds = [0, *kept, len(values)]
    last = steps[-1].index if steps else 0
    if recent and len(values) - last > max(RECENT_RUNS) and len(values) >= MIN_HISTORY_RUNS:
        new = recent_step(values, y, sigma, last, alpha=alpha * (1.0 - SEARCH_SHARE), min_step_pct=min_step_pct,
                          place_sigma=place_sigma, phi=phi)
        if new is not None:
            steps.append(new)
            bounds = [0, *kept, new.index, len(values)]
    segments = tuple(Segment(a, b, float(np.median(values[a:b]))) for a, b in zip(bounds, bounds[1:]) if b > a)
    return Detection(100.0 * sigma, tuple(steps), segments, len(cands), phi)
