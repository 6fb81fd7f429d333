"""Report, step 0 — the files of several runs → one set of records: each cell's median over the runs, with its spread.

``perfsuite report`` takes shards of one run or several runs (the five files ``perfsuite baseline record`` writes,
say). Shards hold disjoint cells and merge as they are; a cell in several files is a cell of several runs. Files
are grouped into runs in the order given (a file joins the first run none of whose cells it repeats, so the shards
of run A and those of run B form two runs), and a cell measured in more than one run is reported as the median
of its runs, each number on its own (time, slow-down, recompute cost, …), with the lowest and highest run beside
it (``METRIC_lo``, ``METRIC_hi``) and the count (``runs_combined``). One report of the runs, not one per run: a reader
wants the level and how far the runs strayed from it, which five pages side by side would leave to them.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Iterable, Sequence

from perfsuite.formats.record import CellRecord
from perfsuite.formats.results import Results, RunInfo, load_results
from perfsuite.report.data import is_number

RUNS_KEY = "runs_combined"  # how many runs a combined record's numbers are the median of
SPREAD_METRICS = ("time_ms", "slowdown_pct", "recompute_pct", "throughput_tok_s", "norm_time")  # get _lo/_hi


def load_for_report(paths: Sequence[str | Path]) -> Results:
    """The files as the report reads them: unreadable files in ``errors`` (one line each), the rest grouped into
    runs and, where a cell is in several runs, combined (:func:`combine_runs`)."""
    singles = [load_results([p], strict=False) for p in paths]
    errors = [e for s in singles for e in s.errors]
    runs = group_runs([s for s in singles if s.runs])
    out = combine_runs(runs)
    out.errors = errors + out.errors
    return out


def group_runs(files: Iterable[Results]) -> list[Results]:
    """Files → runs: each file joins the first run that holds none of its cells (shards), else starts one."""
    runs: list[tuple[set[str], Results]] = []
    for f in files:
        ids = {r.id for r in f.records}
        home = next((r for seen, r in runs if not seen & ids), None)
        if home is None:
            runs.append((set(ids), Results(list(f.records), list(f.runs), list(f.errors), list(f.sources))))
            continue
        seen = next(s for s, r in runs if r is home)
        seen |= ids
        home.records += f.records
        home.runs += f.runs
        home.sources += f.sources
    return [r for _, r in runs]


def combine_runs(runs: list[Results]) -> Results:
    """One :class:`Results` of the runs: a cell of one run as it is, a cell of several their median record."""
    if len(runs) == 1:
        return runs[0]
    by_cell: dict[str, list[tuple[CellRecord, str]]] = {}
    for run in runs:
        for rec, src in zip(run.records, run.sources):
            by_cell.setdefault(rec.id, []).append((rec, src))
    records, sources = [], []
    for entries in by_cell.values():
        rec, src = median_record([r for r, _ in entries]), entries[0][1]
        records.append(rec)
        sources.append(src)
    infos: list[RunInfo] = [info for run in runs for info in run.runs]
    return Results(records, infos, [], sources)


def median_record(records: list[CellRecord]) -> CellRecord:
    """The median of one cell's runs: every number its median over the runs that measured it, the lowest and
    highest of the main ones beside it; other values (φ grids, which seeded training makes the same in every run;
    notes) from the first run that measured it; the raw timed rounds (``*samples_ms``) of none.
    A cell no run measured stays the first run's record of why."""
    ok = [r for r in records if r.ok]
    if not ok:
        return records[0]
    if len(ok) == 1 and len(records) == 1:
        return ok[0]
    metrics: dict = {}
    for key, value in ok[0].metrics.items():
        values = [r.metrics.get(key) for r in ok]
        if all(is_number(v) and not isinstance(v, bool) for v in values):
            metrics[key] = statistics.median(values)
            if key in SPREAD_METRICS:
                metrics[f"{key}_lo"], metrics[f"{key}_hi"] = min(values), max(values)
        elif not key.endswith("samples_ms"):  # one run's raw timed rounds do not stand for the median: dropped
            metrics[key] = value
    metrics[RUNS_KEY] = len(ok)
    return CellRecord(ok[0].cell, ok[0].status, ok[0].reason, ok[0].env, ok[0].model_dims, metrics)
