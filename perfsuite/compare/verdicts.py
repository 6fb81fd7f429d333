"""Verdicts: runs compared with a baseline's runs (or A runs with B runs), cell by cell, metric by metric.

Each cell is compared on every metric it has, each from one estimate per separate run (process):
  time      log of the cell's median time — catches a change that slows everything alike (a torch
            upgrade, a slower attention), which the slow-down alone cannot see;
  slowdown  log of the cell's time over its paired reference's (the r = 0 model for latency, plain decoding
            for recompute), from rounds timed in alternation so drift hits both: the adapter's own cost.
            Shown in percentage points of slow-down (20.2 % → 27.0 % is +6.8 pp).
  norm_time log of the cell's time (recompute: plain decoding's) over a fixed torch probe timed in the same loop
            (:mod:`perfsuite.measure.probe`): the machine's speed of the moment cancels in the ratio, as the plain model
            cancels it for the slow-down. Where a record has probe rounds, ``norm_time`` is judged in place of
            ``time``; the raw time is still computed and shown, verdict ``reference`` (for information).
  memory    log of the cell's peak memory above what was resident before its call.
``norm_time`` and ``slowdown`` are ratios of members of one loop, so they are judged only between runs whose loop
held the same members (``loop_members``); across other loops the raw time judges, with a note saying why.
Deterministic outcomes (recompute %, mismatches, φ on fixed seeds) are compared exactly by
:mod:`perfsuite.compare.outcomes`: a change is verdict ``changed``.

The tests (:mod:`perfsuite.compare.family`): a cell's between-run variance is moderated across the cells of its
family (:mod:`perfsuite.compare.moderated`: limma's moderated t made safe for correlated cells), and the slow-downs
of one adapter on every shape are one more test, a *group*. Per-run error control: every judged test of a part,
groups included, is adjusted together (Holm's step-down: the chance that an unchanged run raises any false alarm
stays below α), with α spent over the looks a re-measured suspect may take (:mod:`perfsuite.compare.sequential`).
Modes:
  gating    the baseline is of this machine (same fingerprint): a confirmed regression fails the run.
            A suspect is re-measured in a fresh process until decided (``remeasure``: the budget of looks).
  environment  the baseline is of this machine's hardware and setup with other software (a torch upgrade):
            judged on every metric, raw time included, the version changes named; fails the run like gating
            unless accepted (``accept_environment``).
  reference the baseline is of another machine: changes are shown for the slow-down, labelled, and never
            fail the run (verdict ``reference``); times across machines are not compared at all.
With one run a side there is no between-run spread: the comparison is described from the within-run
samples, but a regression or improvement it suggests is reported as ``inconclusive``, never as a verdict.
The document is :mod:`perfsuite.formats.comparison`: what leaves this module is a typed :class:`Comparison`. The
judging itself (:mod:`perfsuite.compare.judge`) works on the document's entries (dicts) in place, the form the
simulated grid of :mod:`perfsuite.selftest.grid` judges too, hundreds of runs of ~900 tests.

Re-exported for callers (the names every command and test imports from here): :class:`CompareOptions`,
:class:`CompareError`, :data:`REMEASURE`, :func:`attribute_shared_moves`, :func:`control_errors`, :func:`judge`.
"""

from __future__ import annotations

from typing import Callable

from perfsuite.cells.grid import Cell
from perfsuite.compare.baselines import Part, find, find_environment, parts_of
from perfsuite.compare.estimates import IN_LOOP_METRICS, cell_metrics, judged, log_values, loop_key, loop_members, \
    probe_samples, run_estimate
from perfsuite.compare.family import Test, metric_entry
from perfsuite.compare.judge import CELL_VERDICT_ORDER, REMEASURE, TIME_METRICS, CompareError, CompareOptions, \
    attribute_shared_moves, cell_verdict, control_errors, judge
from perfsuite.compare.moderated import Prior
from perfsuite.compare.outcomes import outcome_entries
from perfsuite.compare.quality import assess
from perfsuite.formats.baseline import Baseline
from perfsuite.formats.comparison import COMPARISON_FORMAT, VERDICTS, Comparison
from perfsuite.formats.record import CellRecord
from perfsuite.formats.results import Results

METRICS = {
    "time": "median time of the cell, %; same machine only",
    "norm_time": "time over the fixed torch probe of the same loop (recompute: plain decoding's), %; same machine only",
    "slowdown": "time over the paired reference (r = 0 model, or plain decoding), in percentage points of slow-down",
    "memory": "peak memory of one call above what was resident, %; same machine only",
}
SAME_MACHINE_METRICS = ("norm_time", "time", "memory")  # never compared across machines
# A/B blocks are tested paired (run i of A against run i of B: drift over the session drops out) from this many
# blocks on. Below it the paired test's n − 1 degrees of freedom cost more than the drift it removes at the level
# a run's error control asks of a lone cell, where the unpaired test borrows strength across the cells of its
# family. ``perfsuite ab --runs 10`` pairs.
PAIRED_MIN_BLOCKS = 10
RemeasureFn = Callable[[list[str]], dict[str, CellRecord]]  # cell ids -> a fresh record each
# A/B: cell ids -> a fresh record each of side A and of side B (one block more, both sides in fresh processes)
RemeasureBothFn = Callable[[list[str]], tuple[dict[str, CellRecord], dict[str, CellRecord]]]


# --- records → tests ----------------------------------------------------------------------------------------------

def _estimate(rec: CellRecord, metric: str, cell_id: str):
    try:
        return run_estimate(rec, metric)
    except ValueError as e:  # bad samples: an error, never a verdict
        raise CompareError(f"cell {cell_id}: cannot compare {metric}: {e}") from None


def cell_tests(cell_id: str, base: dict[int, CellRecord], cur: list[CellRecord], *, gating: bool,
               environment: bool = False) -> list[Test]:
    """The tests of one cell: which metrics, and their per-run estimates on each side (see the module docstring
    for which metrics are judged where)."""
    last = cur[-1]
    metrics = cell_metrics(last)
    note = None
    if not gating:  # times across machines say nothing about the code (a probe's ratio neither: other hardware)
        metrics = tuple(m for m in metrics if m not in SAME_MACHINE_METRICS)
    elif "norm_time" in metrics and not all(probe_samples(r) for r in base.values()):
        metrics = tuple(m for m in metrics if m != "norm_time")  # a baseline from before the probe: raw time judges
    if "memory" in metrics and not all("memory" in cell_metrics(r) for r in base.values()):
        metrics = tuple(m for m in metrics if m != "memory")  # a baseline from before CPU memory was recorded
    loops = {loop_members(r) for r in (*base.values(), *cur)} - {None}
    if len(loops) > 1 and any(m in IN_LOOP_METRICS for m in metrics):
        metrics = tuple(m for m in metrics if m not in IN_LOOP_METRICS)
        if gating and "time" not in metrics and last.samples_ms:
            metrics = ("time", *metrics)
        note = "timed in another loop than the baseline's (other members): norm_time and slow-down not comparable"
    cell = last.cell
    group = cell.adapter if cell.workload == "latency" and cell.adapter != "none" and cell.rank > 0 else None
    tests = []
    for metric in metrics:
        xs = {j: _estimate(r, metric, cell_id) for j, r in base.items()}
        ys = [_estimate(r, metric, cell_id) for r in cur]
        xs = {j: v for j, v in xs.items() if v is not None}
        ys = [v for v in ys if v is not None]
        shown_only = not judged(metric, metrics) and not environment
        within = None
        if len(xs) == 1 and len(ys) == 1 and metric != "memory":
            b = log_values(next(r for j, r in base.items() if j in xs), metric)
            c = log_values(cur[[i for i, v in enumerate(cur) if v is not None][0]], metric)
            within = (b, c)
        tests.append(Test(cell_id, metric, cell.workload, loop_key(cell), {j: v for j, (v, _) in xs.items()},
                          [v for v, _ in ys], [se for _, se in (*xs.values(), *ys)], judged=not shown_only,
                          group=group if metric == "slowdown" else None, within=within, note=note,
                          shared=last.get("timed_as") is not None))
    return tests


# --- parts and documents ------------------------------------------------------------------------------------------

def _fresh_estimates(records: dict[str, CellRecord], tests_of: dict[str, list[Test]]) -> dict[str, dict]:
    """A re-measure's records as the estimates its suspects' tests take (``{cell: {metric: (est, se)}}``)."""
    out: dict[str, dict] = {}
    for cid, rec in records.items():
        metrics = {}
        for t in tests_of.get(cid, []):
            est = _estimate(rec, t.metric, cid)
            if est is not None:
                metrics[t.metric] = est
        out[cid] = metrics
    return out


def compare_part(current: list[Part], baseline: Baseline, options: CompareOptions, *, gating: bool,
                 remeasure: RemeasureFn | None = None, control: dict | None = None, paired: bool = False,
                 remeasure_both: RemeasureBothFn | None = None, in_scope: Callable[[Cell], bool] | None = None,
                 environment: bool = False, main_runs: int | None = None) -> list[dict]:
    """Every cell of a part: current runs (one :class:`Part` each, one machine) against a baseline's runs.
    ``control``, when given, receives what the per-run error control did (for the part's entry), the group entries
    included. ``paired`` (A/B): run i of the baseline and of the current side were made side by side; a cell present
    in every run of both is tested on the pairs' differences. ``remeasure_both`` (A/B): a suspect is re-measured on
    both sides, one more block. ``in_scope``: the baseline cells the runs set out to measure (a selection or shard);
    None: all of them. ``environment``: the baseline is of other software; raw time is judged too. ``main_runs``: the
    first parts are the run itself, the rest re-measures of some of its cells made elsewhere (a nightly shard's):
    a regression may be called on those cells, with α spent over ``options.remeasure`` looks."""
    part = current[0].profile
    cur_runs: dict[str, list[CellRecord]] = {}
    runs_of: dict[str, set[int]] = {}
    fresh: set[tuple[str, str]] = set()
    for i, run in enumerate(current):
        for rec in run.records:
            cur_runs.setdefault(rec.id, []).append(rec)
            runs_of.setdefault(rec.id, set()).add(i)
            if main_runs is not None and i >= main_runs:
                fresh.update((rec.id, m) for m in (*cell_metrics(rec), "time"))
    lost = {r.id: r for run in current for r in run.not_run}
    tests: list[Test] = []
    outcomes: dict[str, list[dict]] = {}
    out: dict[str, dict] = {}
    for cid, recs in cur_runs.items():
        base = {j: run.cells[cid] for j, run in enumerate(baseline.runs) if cid in run.cells}
        if not base:
            out[cid] = _new(cid, part)
            continue
        tests += cell_tests(cid, base, recs, gating=gating, environment=environment)
        outcomes[cid] = outcome_entries(list(base.values()), recs, gating=gating)
        for m in outcomes[cid]:
            if m["verdict"] == "changed" and options.accept_behaviour:
                m |= {"accepted": True, "judged": False}
    for cid in baseline.cell_ids():
        if cid not in out and cid not in cur_runs and (in_scope is None or in_scope(baseline.cell_runs(cid)[-1].cell)):
            why = f"did not run ({lost[cid].status}: {lost[cid].reason})" if cid in lost else "not in this run"
            out[cid] = _missing(cid, part, why) | ({"not_run": lost[cid].status} if cid in lost else {})
    tests_of: dict[str, list[Test]] = {}
    for t in tests:
        tests_of.setdefault(t.cell_id, []).append(t)
        if main_runs is not None:  # the runs beyond the night's own are re-measures made elsewhere (a shard's)
            t.initial = min(len(t.current), len([i for i in runs_of[t.cell_id] if i < main_runs]))

    def more(cids: list[str]):
        if remeasure_both is not None:
            fresh_base, fresh = remeasure_both(cids)
            return _fresh_estimates(fresh, tests_of), _fresh_estimates(fresh_base, tests_of)
        if remeasure is None:
            raise CompareError("re-measuring suspect cells needs a way to run them")
        return _fresh_estimates(remeasure(cids), tests_of), None

    can_run = remeasure is not None or remeasure_both is not None or main_runs is None
    entries, groups, done = judge(tests, {cid: recs[-1].cell for cid, recs in cur_runs.items()}, options,
                                  base_runs=len(baseline.runs), gating=gating, paired=paired,
                                  runs_of={cid: frozenset(v) for cid, v in runs_of.items()},
                                  more=more if gating and options.remeasure and can_run else None, extra=outcomes,
                                  looks=options.remeasure, fresh=fresh)
    for cid in set(cur_runs) & set(tests_of) | {c for c in outcomes if outcomes[c]}:
        if cid in entries:
            out[cid] = {"cell_id": cid, "part": part, **entries[cid], "remeasured": entries[cid].get("remeasured", 0)}
    for cid in cur_runs:  # a cell with nothing to compare (no samples, no outcome): described as such
        out.setdefault(cid, {"cell_id": cid, "part": part, "verdict": "reference" if not gating else "inconclusive",
                             "moved": [], "remeasured": 0, "metrics": []})
    if control is not None:
        control.update(done)
        if groups:
            control["groups"] = groups
    return [_ordered(out[cid]) for cid in sorted(out)]


def _ordered(entry: dict) -> dict:
    """A cell entry with the document's keys in the document's order."""
    keys = ("cell_id", "part", "verdict", "moved", "remeasured", "metrics")
    return {k: entry[k] for k in keys if k in entry} | {k: v for k, v in entry.items() if k not in keys}


def _missing(cell_id: str, part: str | None, why: str) -> dict:
    return {"cell_id": cell_id, "part": part, "verdict": "missing", "moved": [], "remeasured": 0, "metrics": [],
            "note": why}


def _new(cell_id: str, part: str | None) -> dict:
    return {"cell_id": cell_id, "part": part, "verdict": "new", "moved": [], "remeasured": 0, "metrics": []}


def compare_metric(base: list[CellRecord], cur: list[CellRecord], metric: str, options: CompareOptions,
                   *, gating: bool = True, paired: bool = False) -> dict:
    """One metric of one cell on its own (no family to borrow from): the measured self-test's comparison of one
    cell between processes, judged at ``options.alpha``."""
    tests = [t for t in cell_tests(cur[-1].id, dict(enumerate(base)), cur, gating=gating) if t.metric == metric]
    if not tests:
        return {"metric": metric, "unit": "%", "verdict": "inconclusive", "note": "no samples on one side",
                "baseline_runs": len(base), "current_runs": len(cur)}
    entry = metric_entry(tests[0], Prior.none(), alpha=options.alpha, min_effect_pct=options.min_effect_pct,
                         paired=paired)
    if not gating:
        entry["verdict"] = "reference"
    return entry


def comparison_of(parts: list[dict], cells: list[dict]) -> Comparison:
    """The entries judged here as the typed comparison (checked as a reader checks a file)."""
    summary = {v: sum(c["verdict"] == v for c in cells) for v in VERDICTS}
    return Comparison.from_dict(COMPARISON_FORMAT.stamp({"gating": any(p["mode"] in ("gating", "ab", "environment")
                                                                       for p in parts),
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
                    remeasure: RemeasureFn | None = None, record_hint: str | None = None,
                    extra_runs: list[Results] | None = None) -> Comparison:
    """The comparison of a run against the baselines available: per part, this machine's baseline (gating), else
    this machine's with other software (environment: gating unless accepted), else another machine's of the same
    part and setup (reference), else none. ``extra_runs``: re-measures of some of the run's cells made elsewhere
    (a nightly shard's), each one more run of the cells it holds."""
    from perfsuite.compare.scope import run_scope

    parts, cells, in_scope = [], [], run_scope(results.runs)
    extra_parts = [p for r in (extra_runs or []) for p in parts_of(r)]
    for part in parts_of(results):
        exact, other = find(part, baselines)
        hint = record_hint or "record this machine's baseline with: perfsuite baseline record"
        runs = [part] + [p for p in extra_parts if p.key == part.key]
        main = 1 if extra_runs else None
        if exact is not None:
            control: dict = {}
            cells += compare_part(runs, exact, options, gating=True, remeasure=remeasure, control=control,
                                  in_scope=in_scope, main_runs=main)
            parts.append(part_entry(part, "gating", exact, current_runs=len(runs)) | control
                         | {"baseline_quality": assess(exact).to_json()})
            continue
        environment = find_environment(part, baselines)
        if environment is not None:
            control = {}
            part_cells = compare_part(runs, environment, options, gating=True, remeasure=remeasure, control=control,
                                      in_scope=in_scope, environment=True, main_runs=main)
            entry = part_entry(part, "environment", environment, current_runs=len(runs), hint=(
                "accepted (--accept-environment): the changes are shown, they do not fail the run"
                if options.accept_environment else
                "fails like a regression: pass --accept-environment, or record this software's baseline")) | control
            entry["accepted"] = options.accept_environment
            if options.accept_environment:
                part_cells = [c | {"accepted": True} for c in part_cells]
            cells += part_cells
            parts.append(entry | {"baseline_quality": assess(environment).to_json()})
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


__all__ = ["CELL_VERDICT_ORDER", "METRICS", "PAIRED_MIN_BLOCKS", "REMEASURE", "TIME_METRICS", "CompareError",
           "CompareOptions", "attribute_shared_moves", "cell_metrics", "cell_tests", "cell_verdict", "compare_metric",
           "compare_part", "compare_results", "compare_runs", "comparison_of", "control_errors", "judge",
           "part_entry", "run_estimate"]
