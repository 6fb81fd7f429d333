"""One night's look at one series: what is SHOWN (every step found, on `history show` and the trends page) and
what is FILED (the steps that open or update an issue: `history show --json`'s ``filed`` points, which
``.github/scripts/github_issues.py change-points`` turns into issues). :func:`look` is the only way from a
series to both, and :func:`decide` the only filing decision: the nightly (:mod:`perfsuite.history.changes`)
and the measurement (:mod:`perfsuite.history.synthetic`, `perfsuite history simulate`'s monitoring rows)
call these same functions.

Why a separate decision. Change points are searched afresh every night over the whole series, and each search
holds its level α = 0.01 (:mod:`~perfsuite.history.changepoints`); a series watched night after night is
searched 60 times in 60 nights, so filing every step shown opened a false issue on 4-6 % of unchanged series (22 %
with a lag-1 autocorrelation of 0.3). Filing spends a budget per series, not per search:

* SERIES_ALPHA (1 %) over a watch of WATCH_LOOKS (60) nightly looks, spent evenly: a confirmed step (not
  provisional) is filed only where its filing p-value is below LOOK_ALPHA = 0.01 / 60 on that night (Bonferroni
  over the looks: a bound, whatever the correlation between one night's search and the next);
* the filing p-value (:func:`filing_p`) is the search's own two tests again on the step's windows, with the two
  things a level of 1.7e-4 exposes: Mann–Whitney exact to TEST_WINDOW_RUNS nights a side (the normal
  approximation's tail stops a clear +5 % step near p = 2e-5 after 8 nights), and the z test's noise inflated for
  an autocorrelation of φ̂ plus PHI_BOUND_SES standard errors, √((1 − φ̂²)/n): from 60 nights φ̂ is uncertain by
  ±0.13, and the search's splits, which fit a slow fortnight as a level, absorb the autocorrelation it would
  show (φ̂ read 0.0-0.07 on unchanged series of φ = 0.3 that filed a false step);
* a search's p is that of the best of many splits, and near the start of a series (few nights before the
  split) the best of many is far more extreme than one test's nominal p. A step whose range starts in the first
  FILE_MIN_BEFORE_RUNS nights of the series (a new machine setup, or the nights after an acknowledged step) is
  filed only when it is also at least EARLY_STEP_SIGMAS × σ̂.

Measured on simulated series (`perfsuite history simulate --tables monitoring`, docs/history.md, "History and change
points"); the constants were chosen on 1000 unchanged series of φ = 0.3 and 400 stepped ones of other seeds than
the command's, with the z test of medians before it took the AR(1) variance of two adjacent groups (today: 3/1000
false issues at φ = 0.3, +5 % filed within 8 nights in 85 % (φ = 0.3) and 97.5 % (φ = 0) of series): then
PHI_BOUND_SES 0 / 0.5 / 1.0 let 12 / 8 / 4 of the 1000 file a false step, and filed +5 % at 1.5 % noise within 8
nights in 86 / 81 / 71 % (φ = 0.3) and 97 / 96 / 93 % (φ = 0) of series; FILE_MIN_BEFORE_RUNS 20 instead of 28: 9
of the 1000.

Deterministic outcomes (``EXACT_METRICS``: recompute_pct, mismatches, matches_fixed_schedule on fixed seeds)
are not searched for change points: any change from one night to the next is a behaviour change, found by an
exact comparison with the night before, and always filed (there is no noise to spend a budget on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfsuite.compare.stats import mann_whitney
from perfsuite.history.changepoints import (MAX_AUTOCORRELATION, MIN_SEGMENT_RUNS, TEST_WINDOW_RUNS, Detection,
                                            DetectionError, Segment, Step, detect, inflation, median_z_p)

SERIES_ALPHA = 0.01  # false change-point issues a series may open over a watch of WATCH_LOOKS nights
WATCH_LOOKS = 60
LOOK_ALPHA = SERIES_ALPHA / WATCH_LOOKS  # one night's share of the budget: 1.7e-4
PHI_BOUND_SES = 1.0  # the autocorrelation a filing allows for: φ̂ plus this many standard errors
FILE_MIN_BEFORE_RUNS = 28  # nights before a step's range for its p-value alone to file it (four weeks)
EARLY_STEP_SIGMAS = 4.0  # an earlier step is filed only this large against σ̂ (+10 % at 1.5 % noise is 6 σ̂)
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


def filing_p(step: Step, detection: Detection, values) -> float:
    """The p-value a confirmed step of ``detection`` (the search of ``values``) is filed on: the nights after it
    against the nights before (up to TEST_WINDOW_RUNS each side, within its neighbouring steps), exact
    Mann–Whitney and the z test of medians with the autocorrelation bounded above (module docstring); the larger."""
    v = np.asarray(values, dtype=float)
    y = np.log(v)
    at, bounds = step.index, sorted({0, v.size, *(s.index for s in detection.steps)})
    k = bounds.index(at)
    start, stop = max(bounds[k - 1], at - TEST_WINDOW_RUNS), min(bounds[k + 1], at + TEST_WINDOW_RUNS)
    ranks = mann_whitney(v[start:at], v[at:stop], exact_max_n=TEST_WINDOW_RUNS)[1]
    phi = detection.autocorrelation
    bound = min(MAX_AUTOCORRELATION, phi + PHI_BOUND_SES * math.sqrt((1.0 - phi * phi) / v.size))
    sigma = detection.noise_pct / 100.0 / inflation(phi) * inflation(bound)
    return max(ranks, median_z_p(y[start:at], y[at:stop], sigma, bound))


def decide(step: Step, detection: Detection, values) -> Filing:
    """The filing decision for one step shown by ``detection``, the search of ``values`` (module docstring)."""
    if step.test == EXACT_TEST:
        return Filing(True, "behaviour changed: a deterministic outcome differs from the night before")
    if step.provisional:
        return Filing(False, f"provisional: under {MIN_SEGMENT_RUNS} nights at the new level")
    p = filing_p(step, detection, values)
    if p >= LOOK_ALPHA:
        return Filing(False, f"filing p = {p:.1g} ≥ {LOOK_ALPHA:.2g}, the level of "
                             f"{100 * SERIES_ALPHA:g} % over {WATCH_LOOKS} nightly looks")
    if step.first < FILE_MIN_BEFORE_RUNS:
        sigmas = abs(math.log1p(step.step_pct / 100.0)) / max(detection.noise_pct / 100.0, 1e-12)
        if sigmas < EARLY_STEP_SIGMAS:
            return Filing(False, f"{step.first} nights before it and {sigmas:.1f} σ̂: an early step needs "
                                 f"{FILE_MIN_BEFORE_RUNS} nights before it or {EARLY_STEP_SIGMAS:g} σ̂")
    return Filing(True, f"filing p = {p:.1g} < {LOOK_ALPHA:.2g}")


def look(values, *, exact: bool = False) -> Look:
    """The series as it stands tonight: searched for change points (``exact``: compared night to night), and each
    step found decided by :func:`decide`."""
    detection = exact_detection(values) if exact else detect(values)
    return Look(detection, tuple(decide(s, detection, values) for s in detection.steps))


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
