"""Verdicts: runs compared with a baseline's runs (or A runs with B runs), cell by cell, metric by metric.

Each cell is compared on every metric it has, each from one estimate per separate run (process):
  time      log of the cell's median time — catches a change that slows everything alike (a torch
            upgrade, a slower attention), which the slow-down alone cannot see;
  slowdown  log of the cell's time over its paired reference's (the r = 0 model for latency, plain decoding
            for recompute), from rounds timed in alternation so drift hits both: the adapter's own cost.
            Shown in percentage points of slow-down (20.2 % → 27.0 % is +6.8 pp).
  norm_time log of the cell's time (recompute: plain decoding's) over a fixed torch probe timed in the same loop
            (:mod:`perfsuite.probe`): the machine's speed of the moment cancels in the ratio, as the plain model
            cancels it for the slow-down. Where a record has probe rounds, ``norm_time`` is judged in place of
            ``time``; the raw time is still computed and shown, verdict ``reference`` (for information).
Per-run error control: the p-values of every judged test of one part are adjusted together
(:data:`perfsuite.compare.stats.ERROR_CONTROL`, Holm's step-down: the chance that an unchanged run raises any
false alarm stays below α, not α per test); a verdict needs the adjusted p-value below α.
The test is :func:`perfsuite.compare.stats.between_runs`: the spread *between runs* is the noise a verdict
must beat. Modes:
  gating    the baseline is of this machine (same fingerprint): a confirmed regression fails the run.
            A suspect is re-measured in a fresh process and must stay a regression with that run added.
  reference the baseline is of another machine: changes are shown for the slow-down, labelled, and never
            fail the run (verdict ``reference``); times across machines are not compared at all.
With one run a side there is no between-run spread: the comparison is described from the within-run
samples, but a regression or improvement it suggests is reported as ``inconclusive``, never as a verdict.
The document is :mod:`perfsuite.formats.comparison`: what leaves this module is a typed :class:`Comparison`. The
judging itself works on the document's entries (dicts) in place, the form the simulated grid of
:mod:`perfsuite.selftest_grid` judges too, hundreds of runs of ~900 tests a second.

Over 350 lines on purpose: a metric's test, the attribution rule, the per-run error control and the re-measures
act on the same entries in one order; the per-run estimates they start from are in :mod:`perfsuite.compare.estimates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from perfsuite.cells.grid import Cell
from perfsuite.compare.baselines import Part, find, parts_of
from perfsuite.compare.estimates import cell_metrics, judged, log_values, probe_samples, run_estimate, shown
from perfsuite.compare.quality import assess
from perfsuite.compare.stats import ALPHA, ERROR_CONTROL, ERROR_CONTROLS, MIN_EFFECT_PCT, adjust_p_values, \
    between_runs, compare_samples, decide, family_alpha, paired_runs, pct_of_log, \
    screen_runs, t_quantile
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.baseline import Baseline
from perfsuite.formats.comparison import COMPARISON_FORMAT, VERDICTS, Comparison
from perfsuite.formats.record import CellRecord
from perfsuite.formats.results import Results
from perfsuite.paired import finite as _finite

METRICS = {
    "time": "median time of the cell, %; same machine only",
    "norm_time": "time over the fixed torch probe of the same loop (recompute: plain decoding's), %; same machine only",
    "slowdown": "time over the paired reference (r = 0 model, or plain decoding), in percentage points of slow-down",
}
UNITS = {"time": "%", "norm_time": "%", "slowdown": "pp"}
TIME_METRICS = ("norm_time", "time")  # the metrics that judge a cell's own speed: whichever it has, first first
# Suspect regressions are re-measured this many times (in a fresh process) by default before they count.
REMEASURE = 1
# A/B blocks are tested paired (run i of A against run i of B: drift over the session drops out) from this many
# blocks on. Below it the paired test's n − 1 degrees of freedom cost more than the drift it removes at the level
# a run's error control asks of a lone cell: with 5 blocks, α = 0.01 / 34 (smoke), t(1 − α/2) is 11.4 on 4 df
# against 6.0 on the unpaired test's 8, so the paired test could only see a change ~2x larger unless the drift
# between blocks exceeded the processes' own spread. ``perfsuite ab --runs 10`` pairs.
PAIRED_MIN_BLOCKS = 10
# What a cell's verdict is when its metrics disagree: the first of these that any metric has.
CELL_VERDICT_ORDER = ("regression", "improvement", "inconclusive", "unchanged", "reference")

RemeasureFn = Callable[[list[str]], dict[str, CellRecord]]  # cell ids -> a fresh record each
# A/B: cell ids -> a fresh record each of side A and of side B (one block more, both sides in fresh processes)
RemeasureBothFn = Callable[[list[str]], tuple[dict[str, CellRecord], dict[str, CellRecord]]]


class CompareError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class CompareOptions:
    alpha: float = ALPHA  # two-sided significance level of the between-run t test
    min_effect_pct: float = MIN_EFFECT_PCT  # smallest change called a regression or an improvement
    remeasure: int = 0  # re-measure a suspect regression this many times (fresh processes); each must agree
    error_control: str = ERROR_CONTROL  # how one part's tests share α: see perfsuite.compare.stats.ERROR_CONTROLS

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise CompareError(f"alpha must be between 0 and 1, not {self.alpha}")
        if not self.min_effect_pct >= 0:
            raise CompareError(f"the minimum effect must be >= 0 %, not {self.min_effect_pct}")
        if self.remeasure < 0:
            raise CompareError(f"remeasure must be >= 0, not {self.remeasure}")
        if self.error_control not in ERROR_CONTROLS:
            raise CompareError(f"unknown error control {self.error_control!r}; use {', '.join(ERROR_CONTROLS)}")


# --- one cell, one metric -----------------------------------------------------------------------------------------

def compare_metric(base: list[CellRecord], cur: list[CellRecord], metric: str, options: CompareOptions,
                   *, gating: bool = True, paired: bool = False) -> dict:
    """One metric of one cell: baseline runs vs current runs → a metric entry of the comparison document.
    ``paired``: run i of each side were made side by side (A/B blocks): a paired t test on their differences."""
    try:
        xs = [e for e in (run_estimate(r, metric) for r in base) if e is not None]
        ys = [e for e in (run_estimate(r, metric) for r in cur) if e is not None]
    except ValueError as e:  # bad samples: an error, never a verdict
        raise CompareError(f"cannot compare {metric}: {e}") from None
    entry = {"metric": metric, "unit": UNITS[metric], "verdict": "inconclusive", "baseline": None, "current": None,
             "change": None, "ci_low": None, "ci_high": None, "detectable": None, "change_pct": None,
             "ci_low_pct": None, "ci_high_pct": None, "p_value": None, "df": None, "noise_pct": None,
             "baseline_runs": len(xs), "current_runs": len(ys), "se_log": None, "p_adjusted": None}
    if not xs or not ys:
        return entry | {"note": "no samples on one side"}
    floor = float(np.median([se for _, se in xs + ys]))
    x, x_out = screen_runs([v for v, _ in xs])
    y, y_out = screen_runs([v for v, _ in ys])
    if x_out or y_out:
        entry["outlier_runs"] = x_out + y_out  # set aside by Dixon's Q test: see perfsuite.compare.stats
    entry["baseline"], entry["current"] = shown(float(np.mean(x)), metric), shown(float(np.mean(y)), metric)
    entry["change"] = (entry["current"] - entry["baseline"] if metric == "slowdown"
                       else 100.0 * math.expm1(float(np.mean(y)) - float(np.mean(x))))
    paired = paired and len(xs) == len(ys) >= 2
    try:
        if paired:
            shift = paired_runs([v for v, _ in xs], [v for v, _ in ys], floor_sd=floor, alpha=options.alpha,
                                min_effect_pct=options.min_effect_pct)
            entry["paired"] = True
        elif x.size + y.size >= 3:
            shift = between_runs(x, y, floor_sd=floor, alpha=options.alpha, min_effect_pct=options.min_effect_pct)
        else:  # one run a side: the within-run samples describe it, they cannot give a verdict
            shift = compare_samples(np.exp(log_values(base[0], metric)), np.exp(log_values(cur[0], metric)),
                                    alpha=options.alpha, min_effect_pct=options.min_effect_pct)
            entry["note"] = "one run a side: no between-run spread, so no verdict (record more runs)"
    except ValueError as e:  # bad samples: an error, never a verdict
        raise CompareError(f"cannot compare {metric}: {e}") from None
    entry |= {"change_pct": _finite(shift.change_pct), "ci_low_pct": _finite(shift.ci_low_pct),
              "ci_high_pct": _finite(shift.ci_high_pct), "p_value": shift.p_value, "df": shift.df,
              "noise_pct": shift.noise_pct, "se_log": shift.se_log}
    # the interval in the metric's unit: % of time, or pp of slow-down (the ratio's relative change × its baseline)
    scale = 1.0 + entry["baseline"] / 100.0 if metric == "slowdown" else 1.0
    entry["ci_low"], entry["ci_high"], entry["detectable"] = (
        None if v is None else _finite(scale * v) for v in (entry["ci_low_pct"], entry["ci_high_pct"],
                                                             shift.detectable_pct))
    verdict = shift.verdict
    if "note" in entry and verdict in ("regression", "improvement"):
        verdict = "inconclusive"
    entry["verdict"] = verdict if gating else "reference"
    return entry


def cell_verdict(metric_verdicts: list[str]) -> str:
    for v in CELL_VERDICT_ORDER:
        if v in metric_verdicts:
            return v
    return "inconclusive"


def _time_entry(entry: dict) -> dict | None:
    """The judged time-like metric entry of a cell (probe-normalised time where there is one, else raw time)."""
    metrics = {m["metric"]: m for m in entry.get("metrics", [])}
    return next((metrics[m] for m in TIME_METRICS if m in metrics and metrics[m].get("judged", True)), None)


def _refresh(entry: dict) -> None:
    judged_verdicts = [m["verdict"] for m in entry["metrics"] if m.get("judged", True)]
    entry["verdict"] = cell_verdict(judged_verdicts) if entry["metrics"] else entry["verdict"]
    entry["moved"] = [m["metric"] for m in entry["metrics"]
                      if m.get("judged", True) and m["verdict"] in ("regression", "improvement")]


def attribute_shared_moves(entries: dict[str, dict], cells: dict[str, Cell],
                           runs_of: dict[str, frozenset[int]] | None = None) -> None:
    """Judge a move of the plain model once, on its own r = 0 cell, not again on every adapter of its loop.

    A latency cell whose time moved while its slow-down against the plain model of the same loop did not has
    moved *with* that plain model: the cause is shared by the loop — the plain model, the framework, the machine,
    or, on a CPU, another cell of the loop through process-wide state (measured: a LoRA change moved its loop's
    other cells by 5-7 %; README, "Cells of one loop share a process"). The adapter's time entry becomes
    ``unchanged`` with ``with_reference`` naming the r = 0 cell only when that cell carries the verdict instead:
    it was measured in the same loop of the same runs (``runs_of``: cell id → the current runs that have it; an
    adapter's runs must all have it) and its own time was judged a move in the same direction. Otherwise — r = 0
    not selected (``--cells``), out of memory, unmoved or inconclusive — the adapter keeps its own verdict: a
    regression is never hidden behind a cell that did not report it. Recompute cells keep theirs: their
    reference, plain decoding, is not a cell.
    """
    for cid, entry in entries.items():
        cell = cells.get(cid)
        if cell is None or cell.workload != "latency" or cell.adapter == "none" or cell.rank == 0:
            continue
        ref_id = replace(cell, adapter="none", rank=0).id
        ref_entry = entries.get(ref_id)
        metrics = {m["metric"]: m for m in entry["metrics"]}
        time, slowdown = _time_entry(entry), metrics.get("slowdown")
        if not (ref_entry and ref_id in cells and time and slowdown and slowdown["verdict"] == "unchanged"
                and time["verdict"] in ("regression", "improvement")):
            continue
        if runs_of is not None and not runs_of.get(cid, frozenset()) <= runs_of.get(ref_id, frozenset()):
            continue  # the r = 0 cell was not timed in every loop this adapter was
        ref_time = _time_entry(ref_entry)
        if ref_time is None or ref_time["verdict"] != time["verdict"]:
            continue  # the plain model did not report the move: the adapter must
        time["verdict"], time["with_reference"] = "unchanged", ref_id
        _refresh(entry)


def control_errors(entries: dict[str, dict], options: "CompareOptions") -> dict:
    """Adjust the p-values of every judged between-run test of one part together and decide again from them
    (:data:`~perfsuite.compare.stats.ERROR_CONTROL`); what was done, for the part's entry. ``detectable`` is
    quoted at the family's strictest per-test level (α / tests), what a lone moved cell must reach."""
    family = [m for e in entries.values() for m in e.get("metrics", [])
              if m.get("judged", True) and m.get("df") and m.get("p_value") is not None and "note" not in m
              and m["verdict"] != "reference"]
    adjusted = adjust_p_values([m["p_value"] for m in family], options.error_control)
    level = family_alpha(options.alpha, len(family), options.error_control)
    for m, p_adj in zip(family, adjusted):
        m.pop("with_reference", None)
        m["p_adjusted"] = p_adj
        low = -math.inf if m["ci_low_pct"] is None else m["ci_low_pct"]
        high = math.inf if m["ci_high_pct"] is None else m["ci_high_pct"]
        m["verdict"] = decide(m["change_pct"], low, high, p_adj, alpha=options.alpha,
                              min_effect_pct=options.min_effect_pct)
        if m.get("se_log") is not None:
            scale = 1.0 + m["baseline"] / 100.0 if m["metric"] == "slowdown" else 1.0
            m["detectable"] = _finite(scale * pct_of_log(t_quantile(1.0 - level / 2.0, m["df"]) * m["se_log"]))
    for e in entries.values():
        if e.get("metrics"):
            _refresh(e)
    return {"error_control": options.error_control, "tests": len(family), "alpha": options.alpha,
            "per_test_alpha": level}


def compare_cell(cell_id: str, part: str | None, base: list[CellRecord], cur: list[CellRecord],
                 options: CompareOptions, *, gating: bool, paired: bool = False) -> dict:
    metrics = cell_metrics(cur[-1])
    if not gating:  # times across machines say nothing about the code (a probe's ratio neither: other hardware)
        metrics = tuple(m for m in metrics if m not in TIME_METRICS)
    elif "norm_time" in metrics and not all(probe_samples(r) for r in base):
        metrics = tuple(m for m in metrics if m != "norm_time")  # a baseline from before the probe: raw time judges
    try:
        entries = [compare_metric(base, cur, m, options, gating=gating, paired=paired) for m in metrics]
    except CompareError as e:
        raise CompareError(f"cell {cell_id}: {e}") from None
    for e in entries:
        if not judged(e["metric"], metrics):
            e["judged"], e["verdict"] = False, "reference"  # raw time beside the probe-normalised one: shown only
    verdicts = [e["verdict"] for e in entries if e.get("judged", True)]
    return {"cell_id": cell_id, "part": part, "verdict": cell_verdict(verdicts) if entries else "reference",
            "moved": [e["metric"] for e in entries if e.get("judged", True) and e["verdict"] in ("regression", "improvement")],
            "remeasured": 0, "metrics": entries}


def _missing(cell_id: str, part: str | None, why: str) -> dict:
    return {"cell_id": cell_id, "part": part, "verdict": "missing", "moved": [], "remeasured": 0, "metrics": [],
            "note": why}


def _new(cell_id: str, part: str | None) -> dict:
    return {"cell_id": cell_id, "part": part, "verdict": "new", "moved": [], "remeasured": 0, "metrics": []}


# --- parts and documents ------------------------------------------------------------------------------------------

def compare_part(current: list[Part], baseline: Baseline, options: CompareOptions, *, gating: bool,
                 remeasure: RemeasureFn | None = None, control: dict | None = None, paired: bool = False,
                 remeasure_both: RemeasureBothFn | None = None, in_scope: Callable[[Cell], bool] | None = None
                 ) -> list[dict]:
    """Every cell of a part: current runs (one :class:`Part` each, one machine) against a baseline's runs.
    ``control``, when given, receives what the per-run error control did (for the part's entry). ``paired``
    (A/B): run i of the baseline and of the current side were made side by side; a cell present in every run of
    both is tested on the pairs' differences. ``remeasure_both`` (A/B): a suspect is re-measured on both sides,
    one more block. ``in_scope``: the baseline cells the runs set out to measure (a selection or shard); None: all
    of them."""
    part = current[0].profile
    base_extra: dict[str, list[CellRecord]] = {}
    cur_runs: dict[str, list[CellRecord]] = {}
    runs_of: dict[str, set[int]] = {}
    for i, run in enumerate(current):
        for rec in run.records:
            cur_runs.setdefault(rec.id, []).append(rec)
            runs_of.setdefault(rec.id, set()).add(i)
    lost = {r.id: r for run in current for r in run.not_run}
    entries = {}
    def pairs(cid: str, base: list[CellRecord]) -> bool:  # in every run of both sides: block i is run i of each
        return paired and len(base) == len(cur_runs[cid]) == len(baseline.runs) + len(base_extra.get(cid, []))

    for cid, recs in cur_runs.items():
        base = baseline.cell_runs(cid)
        entries[cid] = (compare_cell(cid, part, base, recs, options, gating=gating, paired=pairs(cid, base))
                        if base else _new(cid, part))
    for cid in baseline.cell_ids():
        if cid not in entries and (in_scope is None or in_scope(baseline.cell_runs(cid)[-1].cell)):
            why = f"did not run ({lost[cid].status}: {lost[cid].reason})" if cid in lost else "not in this run"
            entries[cid] = _missing(cid, part, why) | ({"not_run": lost[cid].status} if cid in lost else {})
    cells = {cid: recs[-1].cell for cid, recs in cur_runs.items()}
    together = {cid: frozenset(v) for cid, v in runs_of.items()}

    def judge() -> None:  # the whole part's family of tests, then the shared-move rule on the adjusted verdicts
        if gating:
            (control if control is not None else {}).update(control_errors(entries, options))
        attribute_shared_moves(entries, cells, together)

    judge()
    for _ in range(options.remeasure if gating else 0):
        suspects = [cid for cid, e in entries.items() if e["verdict"] == "regression"]
        if not suspects:
            break
        if remeasure is None and remeasure_both is None:
            raise CompareError("re-measuring suspect cells needs a way to run them")
        fresh_base, fresh = remeasure_both(suspects) if remeasure_both else ({}, remeasure(suspects))
        new_run = len(current) + max((len(r) for r in cur_runs.values()), default=0)  # an index no run has
        for cid in suspects:
            if cid not in fresh or (remeasure_both and cid not in fresh_base):
                raise CompareError(f"cell {cid}: the re-measurement did not produce it")
            cur_runs[cid].append(fresh[cid])
            together[cid] = together[cid] | {new_run}
            if remeasure_both:
                base_extra.setdefault(cid, []).append(fresh_base[cid])
            base = baseline.cell_runs(cid) + base_extra.get(cid, [])
            again = compare_cell(cid, part, base, cur_runs[cid], options, gating=True, paired=pairs(cid, base))
            entries[cid] = again | {"remeasured": entries[cid]["remeasured"] + 1}
        judge()
    return [entries[cid] for cid in sorted(entries)]


def comparison_of(parts: list[dict], cells: list[dict]) -> Comparison:
    """The entries judged here as the typed comparison (checked as a reader checks a file)."""
    summary = {v: sum(c["verdict"] == v for c in cells) for v in VERDICTS}
    return Comparison.from_dict(COMPARISON_FORMAT.stamp({"gating": any(p["mode"] in ("gating", "ab") for p in parts),
                                                         "parts": parts, "cells": cells, "summary": summary}))


def part_entry(part: Part | None, mode: str, baseline: Baseline | None, *, profile: str | None = None,
               current_runs: int = 1, hint: str | None = None) -> dict:
    fp = part.fingerprint if part else None
    return {"profile": part.profile if part else profile, "mode": mode,
            "baseline": (str(baseline.path) if baseline.path else baseline.name) if baseline else None,
            "baseline_runs": len(baseline.runs) if baseline else 0, "current_runs": current_runs,
            "machine": fp.describe() if fp else None,
            "baseline_machine": baseline.fingerprint.describe() if baseline else None,
            "differences": baseline.fingerprint.differences(fp) if baseline and fp else [], "hint": hint}


def compare_results(results: Results, baselines: list[Baseline], options: CompareOptions = CompareOptions(), *,
                    remeasure: RemeasureFn | None = None, record_hint: str | None = None) -> Comparison:
    """The comparison of a run against the baselines available: per part, this machine's baseline
    (gating), else another machine's of the same part and setup (reference), else none."""
    from perfsuite.compare.scope import run_scope

    parts, cells, in_scope = [], [], run_scope(results.runs)
    for part in parts_of(results):
        exact, other = find(part, baselines)
        hint = record_hint or "record this machine's baseline with: perfsuite baseline record"
        if exact is not None:
            control: dict = {}
            cells += compare_part([part], exact, options, gating=True, remeasure=remeasure, control=control,
                                  in_scope=in_scope)
            parts.append(part_entry(part, "gating", exact) | control | {"baseline_quality": assess(exact).to_json()})
        elif other is not None:
            parts.append(part_entry(part, "reference", other, hint=hint))
            cells += compare_part([part], other, options, gating=False, in_scope=in_scope)
        else:
            parts.append(part_entry(part, "none", None, hint=hint))
    return comparison_of(parts, cells)


def compare_runs(a: list[Results], b: list[Results], options: CompareOptions = CompareOptions(), *,
                 labels: tuple[str, str] = ("A", "B"), paired: bool | None = None,
                 remeasure: RemeasureBothFn | None = None) -> Comparison:
    """A/B: separate runs of A against separate runs of B on one machine (see :mod:`perfsuite.ab`), per part.
    ``paired``: test run i of A against run i of B, one block (A B, B A, …), on the blocks' differences; None:
    from PAIRED_MIN_BLOCKS blocks on.
    ``remeasure``: a suspect re-measured on both sides in fresh processes (``options.remeasure`` times)."""
    from perfsuite.compare.baselines import baseline_of

    a_parts: dict[tuple, list[Part]] = {}
    b_parts: dict[tuple, list[Part]] = {}
    for side, runs in ((a_parts, a), (b_parts, b)):
        for results in runs:
            for part in parts_of(results):
                side.setdefault((part.profile, part.fingerprint.setup), []).append(part)
    parts, cells = [], []
    for key in sorted(set(a_parts) | set(b_parts), key=str):
        if key not in a_parts or key not in b_parts:
            only = labels[0] if key in a_parts else labels[1]
            raise CompareError(f"part {key[0]} ({', '.join(key[1])}) ran only on {only}")
        a_runs, b_runs = a_parts[key], b_parts[key]
        base = baseline_of([_as_fingerprint(p, a_runs[0].fingerprint) for p in a_runs], name=labels[0],
                           keep=len(a_runs))
        control: dict = {}
        cells += compare_part(b_runs, base, options, gating=True, control=control,
                              paired=(len(a_runs) >= PAIRED_MIN_BLOCKS if paired is None else paired)
                              and len(a_runs) == len(b_runs), remeasure_both=remeasure)
        parts.append(part_entry(b_runs[0], "ab", base, current_runs=len(b_runs)) | {"baseline": labels[0]} | control)
    return comparison_of(parts, cells)


def _as_fingerprint(part: Part, fp) -> Part:
    """A/B runs differ only in the code under test: their host and software are the same machine's."""
    return Part(part.profile, fp, part.records, part.not_run, part.source)
