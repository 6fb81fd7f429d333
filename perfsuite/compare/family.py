"""The family of tests one run part makes: every cell × metric compared, as numbers, and what each test says.

A :class:`Test` is one metric of one cell: its per-run log estimates on the baseline side (by baseline run) and
the current side, the runs' own sampling errors, and the loop it was timed in. Tests of one metric and workload
form a *family* that shares a prior (:mod:`perfsuite.compare.moderated`); each test becomes a metric entry of the
comparison document (:func:`metric_entry`), and the slow-downs of one adapter across every shape one *group* entry
(:func:`group_entries`): a method that moved everywhere is one hypothesis. Records become tests in
:mod:`perfsuite.compare.verdicts`; the grid self-test builds the same tests from simulated runs
(:mod:`perfsuite.selftest.grid`), so both are judged by this code.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from perfsuite.compare.estimates import shown
from perfsuite.compare.moderated import Prior, family_prior, group_test, moderated_test
from perfsuite.compare.stats import compare_samples, paired_runs
from perfsuite.measure.paired import finite as _finite

UNITS = {"time": "%", "norm_time": "%", "slowdown": "pp", "memory": "%"}
GROUP_METRIC = "slowdown"  # an adapter's own cost: what one method's change moves on every shape
EVERY_ADAPTER = "every adapter"  # the group of all adapters' slow-downs: a change to what every adapter shares


@dataclass
class Test:
    """One metric of one cell, as per-run log estimates (the verdict's evidence)."""

    cell_id: str
    metric: str
    workload: str
    loop: str  # the loop its rounds came from (perfsuite.compare.estimates.loop_key)
    base: dict[int, float]  # baseline run index → log estimate
    current: list[float]  # one per current run, in order (re-measures append)
    errors: list[float] = field(default_factory=list)  # every run's within-run standard error (the floor)
    judged: bool = True  # False: shown beside the metric that judges (raw time beside norm_time)
    group: str | None = None  # the group (adapter method) its slow-down belongs to
    within: tuple | None = None  # one run a side: the two runs' own samples (logs), to describe the change
    note: str | None = None
    initial: int | None = None  # how many of ``current`` are the night's own runs (the rest: re-measures); None: all
    shared: bool = False  # its rounds are another cell's (merged LoRA: one timing for every rank): a copy, not a
    # cell of its own, so it neither feeds the family's prior nor counts twice in a group

    @property
    def fresh(self) -> list[float]:
        """The re-measured runs: ``current`` beyond the night's own."""
        return list(self.current[self.initial:]) if self.initial is not None else []

    @property
    def family(self) -> tuple[str, str]:
        return self.metric, self.workload

    @property
    def floor(self) -> float:
        return float(statistics.median(self.errors)) if self.errors else 0.0

    def paired_values(self) -> tuple[list[float], list[float]] | None:
        """Run i of each side, where both sides are blocks (A/B): baseline run i ↔ current run i."""
        if sorted(self.base) != list(range(len(self.current))):
            return None
        return [self.base[i] for i in range(len(self.current))], list(self.current)


def priors(tests: list[Test], runs: int) -> dict[tuple[str, str], Prior]:
    """Each family's prior from its baseline matrix (tests × ``runs`` baseline runs, NaN where a run lacks the
    cell); only judged tests take part."""
    out: dict[tuple[str, str], Prior] = {}
    by_family: dict[tuple[str, str], list[Test]] = {}
    for t in tests:
        if t.judged and not t.shared:
            by_family.setdefault(t.family, []).append(t)
    for fam, members in by_family.items():
        matrix = np.full((len(members), runs), np.nan)
        for i, t in enumerate(members):
            for j, v in t.base.items():
                if j < runs:
                    matrix[i, j] = v
        out[fam] = family_prior(matrix, [t.loop for t in members])
    return out


def _empty(test: Test) -> dict:
    return {"metric": test.metric, "unit": UNITS[test.metric], "verdict": "inconclusive", "baseline": None,
            "current": None, "change": None, "ci_low": None, "ci_high": None, "detectable": None, "change_pct": None,
            "ci_low_pct": None, "ci_high_pct": None, "p_value": None, "df": None, "noise_pct": None,
            "baseline_runs": len(test.base), "current_runs": len(test.current), "se_log": None, "p_adjusted": None}


def metric_entry(test: Test, prior: Prior, *, alpha: float, min_effect_pct: float, paired: bool = False) -> dict:
    """The comparison document's entry of one test: the change, its interval and p-value, the moderated degrees
    of freedom (``df``) and how many of them the family's prior lent (``prior_df``). ValueError for bad numbers."""
    entry = _empty(test)
    if not test.base or not test.current:
        return entry | {"note": "no samples on one side"}
    x = [test.base[j] for j in sorted(test.base)]
    y = list(test.current)
    mx, my = sum(x) / len(x), sum(y) / len(y)
    entry["baseline"], entry["current"] = shown(mx, test.metric), shown(my, test.metric)
    entry["change"] = (entry["current"] - entry["baseline"] if test.metric == "slowdown"
                       else 100.0 * math.expm1(my - mx))
    pairs = test.paired_values() if paired else None
    if pairs and len(pairs[0]) >= 2:
        shift = paired_runs(*pairs, floor_sd=test.floor, alpha=alpha, min_effect_pct=min_effect_pct)
        entry["paired"] = True
    elif len(x) + len(y) >= 3 or (prior.s2 > 0 and prior.df >= 1):  # a test needs a degree of freedom
        shift = moderated_test(x, y, prior=prior, floor_sd=test.floor, alpha=alpha, min_effect_pct=min_effect_pct)
        if prior.s2 > 0 and prior.df > 0:
            entry["prior_df"] = _finite(prior.df) if math.isfinite(prior.df) else _finite(prior.cap)
    elif test.within is not None:  # one run a side: the within-run samples describe it, they cannot give a verdict
        shift = compare_samples(np.exp(test.within[0]), np.exp(test.within[1]), alpha=alpha,
                                min_effect_pct=min_effect_pct)
        entry["note"] = "one run a side: no between-run spread, so no verdict (record more runs)"
    else:
        return entry | {"note": "one run a side: no between-run spread, so no verdict (record more runs)"}
    entry |= {"change_pct": _finite(shift.change_pct), "ci_low_pct": _finite(shift.ci_low_pct),
              "ci_high_pct": _finite(shift.ci_high_pct), "p_value": shift.p_value, "df": shift.df,
              "noise_pct": shift.noise_pct, "se_log": shift.se_log}
    scale = _scale(test.metric, entry["baseline"])
    entry["ci_low"], entry["ci_high"], entry["detectable"] = (
        None if v is None else _finite(scale * v) for v in (entry["ci_low_pct"], entry["ci_high_pct"],
                                                             shift.detectable_pct))
    verdict = shift.verdict
    if "note" in entry and verdict in ("regression", "improvement"):
        verdict = "inconclusive"
    entry["verdict"] = verdict
    if test.note:
        entry["note"] = test.note
    fresh = test.fresh
    if fresh and not pairs:  # the confirmation: the re-measured runs on their own (perfsuite.compare.sequential)
        alone = moderated_test(x, fresh, prior=prior, floor_sd=test.floor, alpha=alpha, min_effect_pct=min_effect_pct)
        entry["p_fresh"], entry["change_fresh_pct"] = alone.p_value, _finite(alone.change_pct)
    return entry


def _scale(metric: str, baseline: float | None) -> float:
    """A relative change in the metric's unit: % of time as it is, pp of slow-down as its ratio's change × ratio."""
    return 1.0 + baseline / 100.0 if metric == "slowdown" and baseline is not None else 1.0


def method_groups(cells_per_method: dict[str, int]) -> int:
    """How many group tests :func:`group_entries` makes of one workload whose methods have these numbers of
    slow-down cells: one per method of two or more, and every adapter's where there are several methods (what
    counting a family before its tests exist — a baseline's quote, the selftest's level — must agree with)."""
    return sum(n > 1 for n in cells_per_method.values()) + (len(cells_per_method) > 1)


def group_entries(tests: list[Test], priors_: dict[tuple[str, str], Prior], *, alpha: float,
                  min_effect_pct: float) -> list[dict]:
    """One entry per adapter method with slow-downs on two or more cells of the family, and one for every adapter
    together where there are several methods (a change to what all of them share, the adapter plumbing): their
    mean change against the variance the family's components give that mean
    (:func:`perfsuite.compare.moderated.group_test`)."""
    groups: dict[tuple[str, str], list[Test]] = {}
    for t in tests:
        if t.judged and not t.shared and t.metric == GROUP_METRIC and t.group and t.base and t.current:
            groups.setdefault((t.workload, t.group), []).append(t)
    for workload in sorted({w for w, _ in groups}):
        methods = [members for (w, _), members in groups.items() if w == workload]
        if len(methods) > 1:
            groups[(workload, EVERY_ADAPTER)] = [t for members in methods for t in members]
    out = []
    for (workload, name), members in sorted(groups.items()):
        prior = priors_.get((GROUP_METRIC, workload))
        if len(members) < 2 or prior is None or prior.components is None:
            continue
        diffs = [float(np.mean(t.current)) - float(np.mean(list(t.base.values()))) for t in members]
        base_runs = min(len(t.base) for t in members)
        current_runs = min(len(t.current) for t in members)
        shift = group_test(diffs, [t.loop for t in members], comp=prior.components, base_runs=base_runs,
                           current_runs=current_runs, alpha=alpha, min_effect_pct=min_effect_pct)
        fresh = {}
        if all(t.fresh for t in members):  # the confirmation: the re-measured runs on their own
            alone = group_test([float(np.mean(t.fresh)) - float(np.mean(list(t.base.values()))) for t in members],
                               [t.loop for t in members], comp=prior.components, base_runs=base_runs,
                               current_runs=min(len(t.fresh) for t in members), alpha=alpha,
                               min_effect_pct=min_effect_pct)
            fresh = {"p_fresh": alone.p_value, "change_fresh_pct": _finite(alone.change_pct)}
        out.append(fresh | {"group": name, "workload": workload, "metric": GROUP_METRIC, "unit": "%",
                    "cells": sorted(t.cell_id for t in members), "verdict": shift.verdict,
                    "change_pct": _finite(shift.change_pct), "ci_low_pct": _finite(shift.ci_low_pct),
                    "ci_high_pct": _finite(shift.ci_high_pct), "p_value": shift.p_value, "p_adjusted": None,
                    "df": shift.df, "se_log": shift.se_log, "detectable": _finite(shift.detectable_pct),
                    "baseline_runs": base_runs, "current_runs": current_runs})
    return out
