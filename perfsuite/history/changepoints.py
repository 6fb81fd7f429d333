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
change points and the power this gives are measured by :mod:`perfsuite.history.synthetic` (README,
"History and change points").
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
    step_pct: float  # 100 · (after / before − 1)
    p_value: float  # Mann-Whitney U, nights before vs after


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


def check_values(values) -> np.ndarray:
    y = np.asarray(values, dtype=float)
    if y.ndim != 1:
        raise DetectionError(f"a series is one-dimensional, got shape {y.shape}")
    if y.size and (not np.all(np.isfinite(y)) or np.any(y <= 0)):
        raise DetectionError("a series needs finite, positive values (times or time ratios)")
    return y


def noise_sigma(log_values: np.ndarray) -> float:
    """Between-run noise σ̂ of log values from their successive differences (robust to steps and outliers)."""
    if log_values.size < 3:
        return NOISE_FLOOR
    d = np.diff(log_values)
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(MAD_TO_SIGMA * mad / math.sqrt(2.0), NOISE_FLOOR)


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


def _measure(values: np.ndarray, y: np.ndarray, sigma: float, bounds: list[int], k: int) -> Step:
    """The step at ``bounds[k]`` between its neighbours (at most TEST_WINDOW_RUNS nights each side)."""
    lo, at, hi = bounds[k - 1], bounds[k], bounds[k + 1]
    start, stop = max(lo, at - TEST_WINDOW_RUNS), min(hi, at + TEST_WINDOW_RUNS)
    before, after = values[start:at], values[at:stop]
    b, a = float(np.median(before)), float(np.median(after))
    _, p = mann_whitney(before, after)
    first, last = location_set(y[start:stop], at - start, sigma)
    return Step(at, start + first, start + last, b, a, 100.0 * (a / b - 1.0), p)


def _passes(step: Step, alpha: float, min_step_pct: float) -> bool:
    return step.p_value < alpha and abs(step.step_pct) >= min_step_pct


def detect(values, *, alpha: float = ALPHA, min_step_pct: float = MIN_STEP_PCT,
           penalty_factor: float = PENALTY_FACTOR) -> Detection:
    """The change points of a series of positive values in run order (see the module docstring)."""
    values = check_values(values)
    y = np.log(values)
    sigma = noise_sigma(y)
    cands = _candidates(y, sigma, penalty_factor) if len(y) >= MIN_HISTORY_RUNS else []
    kept = list(cands)
    while True:  # drop the weakest failing candidate, measure its neighbours again
        bounds = [0, *kept, len(values)]
        steps = [_measure(values, y, sigma, bounds, k) for k in range(1, len(bounds) - 1)]
        failing = [s for s in steps if not _passes(s, alpha, min_step_pct)]
        if not failing:
            break
        weakest = max(failing, key=lambda s: (s.p_value, -abs(s.step_pct)))
        kept.remove(weakest.index)
    bounds = [0, *kept, len(values)]
    segments = tuple(Segment(a, b, float(np.median(values[a:b]))) for a, b in zip(bounds, bounds[1:]) if b > a)
    return Detection(100.0 * sigma, tuple(steps), segments, len(cands))
