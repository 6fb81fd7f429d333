"""A run against a baseline: a verdict per cell, with the effect size and its confidence interval.

Verdicts: regression / improvement (significant AND at least the minimum
effect, see :mod:`perfsuite.compare.stats`), unchanged, inconclusive (too noisy to say,
or a suspect regression that did not reproduce when re-measured), new (only in
this run), missing (only in the baseline, or did not run now).

What is compared (``metric``):
  slowdown  the per-round ratios adapted / r = 0 (the slow-down % against the plain model, timed in
            interleaved rounds). Portable across machines of one dtype and model, and immune to drift that
            moves both models alike. The default (``auto``), on the same device too: over 8 separate smoke
            runs on the shared 2-core CPU runner (1 288 A/A cell comparisons) it moved by 2.7 % at most and
            gave no regression verdict, while the absolute times moved by up to 20 % and gave 166 (13 %).
            What it cannot see is a change that slows the plain model as much as the adapted one; the r = 0
            cells are 0 % by construction.
  recompute the same for recompute cells: their times over plain decoding's, timed in interleaved rounds
            (compared with ``slowdown``; their deterministic ``recompute_pct`` is reported, not tested).
  time      the adapted model's raw times (ms), only against a baseline of the same device fingerprint; asked
            for with ``--metric time`` (for a quiet, dedicated machine), or, with ``auto``, the fallback for a
            cell without r = 0 samples on the same device.

``change_pct`` is always a relative change of the cell's time — for ``slowdown`` and ``recompute``, of its time
in units of its reference's time: ``median(current) / median(baseline) - 1`` of the per-round samples — so one
minimum effect applies to all. ``baseline`` and ``current`` are the cell's own summary numbers: median time (ms),
slow-down % (``slowdown_pct``, from pairs of rounds), or overhead % over plain decoding.

The comparison document (``perfsuite compare --json``) — format history of ``perfsuite_comparison``:
  1 — {perfsuite_comparison, baseline, compared, cells: [{cell_id, verdict, metric, baseline, current,
      change_pct, ci_low_pct, ci_high_pct, p_value}], summary: {verdict: count}}; an interval bound is null
      when the samples are too few for any interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from perfsuite.formats.baseline import Baseline, BaselineError, baseline_from_results
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.results import Results
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT, VERDICTS, Shift, compare_samples

COMPARISON_VERSION = 1
METRICS = {
    "slowdown": "slow-down % against the r = 0 model, round by round; portable across machines",
    "recompute": "recompute cells' time against plain decoding, round by round; portable across machines",
    "time": "absolute time of the adapted model, ms; same device only",
}
MODES = ("auto", "slowdown", "time")  # what --metric asks for; "slowdown" stands for the portable metrics
# The reference each portable metric divides a cell's times by, timed in interleaved rounds.
PAIRED_WITH = {"slowdown": "ref_samples_ms", "recompute": "ref_samples_ms"}
# Suspect regressions are re-measured this many times by default, and each re-measurement must agree (the pytest
# option and `perfsuite run` use this; `perfsuite compare` needs the benchmarks at hand and has --remeasure).
REMEASURE = 1

RemeasureFn = Callable[[list[str]], dict[str, dict]]  # cell ids -> fresh cell records (as in a baseline)


class CompareError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class CompareOptions:
    metric: str = "auto"  # auto: slowdown (time for cells without r = 0 samples, on the same device)
    alpha: float = ALPHA  # significance level of the U test (two-sided)
    min_effect_pct: float = MIN_EFFECT_PCT  # smallest change called a regression or an improvement
    remeasure: int = 0  # re-measure a suspect regression this many times; each must agree

    def __post_init__(self) -> None:
        if self.metric not in MODES:
            raise CompareError(f"unknown metric {self.metric!r}; use {', '.join(MODES)}")
        if not 0 < self.alpha < 1:
            raise CompareError(f"alpha must be between 0 and 1, not {self.alpha}")
        if not self.min_effect_pct >= 0:
            raise CompareError(f"the minimum effect must be >= 0 %, not {self.min_effect_pct}")
        if self.remeasure < 0:
            raise CompareError(f"remeasure must be >= 0, not {self.remeasure}")


def metric_samples(record: dict, metric: str) -> np.ndarray | None:
    """The samples a metric tests, or None if the cell has none: raw times (ms), or the per-round ratios of the
    cell's times to its reference's (r = 0 model for ``slowdown``, plain decoding for ``recompute``).

    The ratios are per round, not per pair of rounds as in ``slowdown_pct`` (perfsuite.timing.PairedTiming): every
    run alternates which one is timed first in the same way, so the mix of orders is the same in both runs and
    cancels in their comparison, and all the rounds stay samples. Measured with ``perfsuite selftest`` on the CPU
    runner, testing the 15 pair ratios of 30 rounds instead found a 5 % slow-down in 47 of 60 trials, not 60 of 60.
    """
    times = record.get("samples_ms")
    if not times:
        return None
    if metric == "time":
        return np.asarray(times, dtype=float)
    reference = record.get(PAIRED_WITH[metric])
    if not reference or len(reference) != len(times) or min(reference) <= 0:
        return None
    return np.asarray(times, dtype=float) / np.asarray(reference, dtype=float)


def metric_value(record: dict, metric: str) -> float | None:
    """The number shown for a cell: its median time (ms), its slow-down %, or its overhead % over plain decoding."""
    try:
        return _metric_value(record, metric)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CompareError(f"{record.get('cell_id', 'a cell')}: its {metric} value is not a number ({e})") from None


def _metric_value(record: dict, metric: str) -> float | None:
    if metric == "time" and record.get("time_ms") is not None:
        return float(record["time_ms"])
    if metric == "slowdown" and record.get("slowdown_pct") is not None:
        return float(record["slowdown_pct"])
    if metric == "recompute" and record.get("throughput_ratio"):
        return 100.0 * (1.0 / float(record["throughput_ratio"]) - 1.0)
    samples = metric_samples(record, metric)
    if samples is None or not len(samples):
        return None
    median = float(np.median(samples))
    return median if metric == "time" else 100.0 * (median - 1.0)


def compare_records(baseline: dict, current: dict, metric: str, options: CompareOptions) -> Shift | None:
    """The statistics of one cell on one metric, or None when either side lacks that metric's samples."""
    x, y = metric_samples(baseline, metric), metric_samples(current, metric)
    if x is None or y is None:
        return None
    return compare_samples(x, y, alpha=options.alpha, min_effect_pct=options.min_effect_pct)


def confirm(first: str, retries: list[str]) -> str:
    """A regression stands only if every re-measurement is a regression too; one that does not reproduce is
    inconclusive (the measurements disagree). Other verdicts are not re-measured."""
    if first != "regression" or not retries:
        return first
    return "regression" if all(v == "regression" for v in retries) else "inconclusive"


def resolve_metric(requested: str, current: Baseline, baseline: Baseline) -> str:
    """The metric compared: ``slowdown`` (the portable metrics) unless ``time`` is asked for (see the module
    docstring for why)."""
    same = current.fingerprint == baseline.fingerprint
    if requested == "time" and not same:
        raise CompareError("absolute times are compared only against a baseline of the same device fingerprint; "
                           f"these differ in {'; '.join(baseline.fingerprint.differences(current.fingerprint))}. "
                           "Use --metric slowdown (portable) or a baseline of this device")
    if requested != "time":
        for key in ("dtype", "model"):
            if getattr(current.fingerprint, key) != getattr(baseline.fingerprint, key):
                old, new = getattr(baseline.fingerprint, key), getattr(current.fingerprint, key)
                raise CompareError(f"the slow-down is portable across machines, not across {key}s: baseline "
                                   f"{old!r}, current {new!r}")
    return "time" if requested == "time" else "slowdown"


def cell_metric(metric: str, requested: str, base: dict, cur: dict, same_device: bool) -> str:
    """The metric of one cell. Portable mode: ``recompute`` for cells timed against plain decoding, ``slowdown``
    for cells timed against r = 0; with ``auto``, a cell with neither (another workload) falls back to its times
    on the same device. A cell lacking its metric's samples is inconclusive."""
    if metric == "time":
        return "time"
    portable = "recompute" if (cur.get("cell") or {}).get("workload") == "recompute" else "slowdown"
    if metric_samples(base, portable) is not None and metric_samples(cur, portable) is not None:
        return portable
    return "time" if requested == "auto" and same_device else metric


def _as_reference(side, what: str) -> Baseline:
    if isinstance(side, Baseline):
        return side
    if isinstance(side, Results):
        try:
            return baseline_from_results(side, name=what)
        except BaselineError as e:
            raise CompareError(str(e)) from None
    raise TypeError(f"{what}: expected Results or Baseline, got {type(side).__name__}")


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _entry(cell_id: str, verdict: str, metric: str, base: dict | None, cur: dict | None,
           shift: Shift | None) -> dict:
    return {"cell_id": cell_id, "verdict": verdict, "metric": metric,
            "baseline": metric_value(base, metric) if base else None,
            "current": metric_value(cur, metric) if cur else None,
            "change_pct": _finite(shift.change_pct) if shift else None,
            "ci_low_pct": _finite(shift.ci_low_pct) if shift else None,
            "ci_high_pct": _finite(shift.ci_high_pct) if shift else None,
            "p_value": shift.p_value if shift else None}


def _shift(base: dict, cur: dict, metric: str, options: CompareOptions, cell_id: str) -> Shift | None:
    try:
        return compare_records(base, cur, metric, options)
    except ValueError as e:  # bad samples: an error, never a verdict
        raise CompareError(f"cell {cell_id}: cannot compare: {e}") from None


def compare(results: Results | Baseline, baseline: Baseline | Results, options: CompareOptions = CompareOptions(),
            *, remeasure: RemeasureFn | None = None) -> dict:
    """The comparison document (see the module docstring) of ``results`` against ``baseline``.

    With ``options.remeasure`` > 0, cells whose verdict is a regression are measured again through
    ``remeasure(cell_ids)`` (up to that many times) and stay regressions only if each re-measurement agrees.
    """
    current = _as_reference(results, "current results")
    reference = _as_reference(baseline, "baseline")
    metric = resolve_metric(options.metric, current, reference)
    same_device = current.fingerprint == reference.fingerprint
    metrics: dict[str, str] = {}  # cell id -> the metric its verdict is on
    if options.remeasure and remeasure is None:
        raise CompareError("re-measuring suspect cells needs a way to run them (remeasure=...)")
    entries: dict[str, dict] = {}
    for cell_id, cur in current.cells.items():
        base = reference.cells.get(cell_id)
        if base is None:
            entries[cell_id] = _entry(cell_id, "new", metric, None, cur, None)
            continue
        metrics[cell_id] = m = cell_metric(metric, options.metric, base, cur, same_device)
        shift = _shift(base, cur, m, options, cell_id)
        entries[cell_id] = _entry(cell_id, shift.verdict if shift else "inconclusive", m, base, cur, shift)
    for cell_id in sorted(set(reference.cells) - set(current.cells)):
        entries[cell_id] = _entry(cell_id, "missing", metric, reference.cells[cell_id], None, None)

    suspects = [c for c, e in entries.items() if e["verdict"] == "regression"]
    for _ in range(options.remeasure):
        if not suspects:
            break
        fresh = remeasure(suspects)
        still = []
        for cell_id in suspects:
            cur = fresh.get(cell_id)
            if cur is None:
                raise CompareError(f"cell {cell_id}: the re-measurement did not produce it")
            m = metrics[cell_id]
            shift = _shift(reference.cells[cell_id], cur, m, options, cell_id)
            verdict = confirm("regression", [shift.verdict if shift else "inconclusive"])
            entries[cell_id] = _entry(cell_id, verdict, m, reference.cells[cell_id], cur, shift)
            if verdict == "regression":
                still.append(cell_id)
        suspects = still

    cells = list(entries.values())
    summary = {v: sum(e["verdict"] == v for e in cells) for v in VERDICTS}
    name = str(reference.path) if reference.path else reference.name
    return {"perfsuite_comparison": COMPARISON_VERSION, "baseline": name, "compared": metric, "cells": cells,
            "summary": summary}


def compare_with_reference(results: Results, baseline: str | Path | None, baselines_dir: str | Path,
                           options: CompareOptions, remeasure: RemeasureFn | None = None) -> tuple[dict, Path] | None:
    """Compare with ``baseline`` (a file), or with the matching one in ``baselines_dir`` (a baseline of another
    machine serves the portable metrics); None when there is none. The one path of ``perfsuite compare``,
    ``perfsuite run`` and ``--perfsuite-compare``."""
    from perfsuite.formats.baseline import find_baseline, load_reference

    path = Path(baseline) if baseline else find_baseline(results, baselines_dir, portable=options.metric != "time")
    if path is None:
        return None
    return compare(results, load_reference(path), options, remeasure=remeasure), path


def has_regression(comparison: dict) -> bool:
    return comparison["summary"].get("regression", 0) > 0
