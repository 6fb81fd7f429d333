"""One night's look at one series: what is SHOWN (every step found, on `history show` and the trends page) and
what is FILED (the steps that open or update an issue: `history show --json`'s ``filed`` points, which
``.github/scripts/github_issues.py change-points`` turns into issues). :func:`look` is the only way from a
series to both, and :func:`decide` the only filing decision: the nightly (:mod:`perfsuite.history.changes`)
and the measurement (:mod:`perfsuite.history.synthetic`, `perfsuite history simulate`'s monitoring rows)
call these same functions.

Why a separate decision. Change points are searched afresh every night over the whole series, and each search
holds its level α = 0.01 (:mod:`~perfsuite.history.changepoints`); a series watched night after night is
searched 60 times in 60 nights, so filing every step shown opened a false issue on 6 % of unchanged series (22 %
with a lag-1 autocorrelation of 0.3). Filing therefore spends a budget per series, not per search:

* SERIES_ALPHA (1 %) over a watch of WATCH_LOOKS (60) nightly looks, spent evenly: a step is filed only where
  its p-value is below LOOK_ALPHA = 0.01 / 60 on that night (Bonferroni over the looks: a bound, whatever the
  correlation between one night's search and the next);
* a search's p-value is that of the best of many splits, and near the start of a series (few nights before
  the split) the best of many is far more extreme than one test's nominal p (the standardised difference's
  maximum over splits grows without bound at the edges); σ̂ and the autocorrelation φ̂ of a dozen nights are far
  off too (φ̂'s standard error is about 1/√n). Measured: filing at p < LOOK_ALPHA alone let 14 of 400 unchanged
  series with φ = 0.3 open a false issue over 60 looks, 13 of them from a split in their first 20 nights, where a
  slow fortnight of an AR(1) series looks like a level. So a step with fewer than FILE_MIN_BEFORE_RUNS nights before its range
  (the start of a series: a new machine setup, or the nights after an acknowledged step) is filed only when it is
  also at least EARLY_STEP_SIGMAS × σ̂ (+10 % at 1.5 % noise is; a slow fortnight was at most 2 σ̂);
* a provisional step (under MIN_SEGMENT_RUNS nights old) is shown, never filed.

A +5 % step at 1.5 % noise reaches p < LOOK_ALPHA 5-8 nights after it (the search's Mann–Whitney of the nights
after against 30 before), so the budget costs a few nights, not the step. Measured, on simulated series, with
`perfsuite history simulate --tables monitoring` (README, "History and change points").

Deterministic outcomes (``EXACT_METRICS``: recompute_pct, mismatches, matches_fixed_schedule on fixed seeds)
are not searched for change points: any change from one night to the next is a behaviour change, found by an
exact comparison with the night before, and always filed (there is no noise to spend a budget on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfsuite.history.changepoints import MIN_SEGMENT_RUNS, Detection, DetectionError, Segment, Step, detect

SERIES_ALPHA = 0.01  # false change-point issues a series may open over a watch of WATCH_LOOKS nights
WATCH_LOOKS = 60
LOOK_ALPHA = SERIES_ALPHA / WATCH_LOOKS  # one night's share of the budget: 1.7e-4
# Nights before a step's range for its p-value alone to file it; an earlier step must also be EARLY_STEP_SIGMAS σ̂.
# Measured (400 unchanged series, φ = 0.3, 60 looks; `history simulate --tables monitoring`-style): 12 nights let
# 1.8 % of series open a false issue, 16: 0.8 %, 20: 0.5 %; an early step at 4 σ̂ added none (3 σ̂: +0.25 %).
FILE_MIN_BEFORE_RUNS = 20
EARLY_STEP_SIGMAS = 4.0
EXACT_TEST = "exact"


@dataclass(frozen=True)
class Filing:
    """Whether a shown step is filed (opens or updates an issue), and why or why not, in words."""

    filed: bool
    reason: str


@dataclass(frozen=True)
class Look:
    """One night's look at one series: the steps shown and, for each, the filing decision."""

    detection: Detection
    filings: tuple[Filing, ...]  # one per detection.steps, in that order

    @property
    def filed(self) -> tuple[Step, ...]:
        return tuple(s for s, f in zip(self.detection.steps, self.filings) if f.filed)


def decide(step: Step, noise_pct: float) -> Filing:
    """The filing decision for one shown step of a series whose noise σ̂ is ``noise_pct`` (see the module
    docstring)."""
    if step.test == EXACT_TEST:
        return Filing(True, "behaviour changed: a deterministic outcome differs from the night before")
    if step.provisional:
        return Filing(False, f"provisional: under {MIN_SEGMENT_RUNS} nights at the new level")
    if step.p_value >= LOOK_ALPHA:
        return Filing(False, f"p = {step.p_value:.1g} ≥ {LOOK_ALPHA:.2g}, the filing level "
                             f"({100 * SERIES_ALPHA:g} % over {WATCH_LOOKS} nightly looks)")
    if step.first < FILE_MIN_BEFORE_RUNS:
        sigmas = abs(math.log1p(step.step_pct / 100.0)) / max(noise_pct / 100.0, 1e-12)
        if sigmas < EARLY_STEP_SIGMAS:
            return Filing(False, f"{step.first} nights before it and {sigmas:.1f} σ̂: an early step needs "
                                 f"{FILE_MIN_BEFORE_RUNS} nights before it or {EARLY_STEP_SIGMAS:g} σ̂")
    return Filing(True, f"p = {step.p_value:.1g} < {LOOK_ALPHA:.2g}")


def look(values, *, exact: bool = False) -> Look:
    """The series as it stands tonight: searched for change points (``exact``: compared night to night), and each
    step found decided by :func:`decide`."""
    detection = exact_detection(values) if exact else detect(values)
    return Look(detection, tuple(decide(s, detection.noise_pct) for s in detection.steps))


def exact_detection(values) -> Detection:
    """Every night whose value differs from the night before, as a step of its own (test ``exact``); the levels
    are the runs of equal values. ``step_pct`` is None where the value before is 0 (0 → 31 % recomputed)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise DetectionError("a deterministic series needs finite values in one dimension")
    changed = [i for i in range(1, v.size) if v[i] != v[i - 1]]
    steps = tuple(Step(i, i, i, float(v[i - 1]), float(v[i]),
                       100.0 * (v[i] / v[i - 1] - 1.0) if v[i - 1] != 0 else None, 0.0, test=EXACT_TEST)
                  for i in changed)
    bounds = [0, *changed, int(v.size)]
    segments = tuple(Segment(a, b, float(v[a])) for a, b in zip(bounds, bounds[1:]) if b > a)
    return Detection(0.0, steps, segments, len(changed))
