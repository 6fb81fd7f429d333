"""The comparison document: verdicts per cell and per metric, written by ``perfsuite compare``, ``run`` and ``ab``.

Format history of ``perfsuite_comparison`` (bump on any change a reader must know about; add an update step):
  1 — {baseline, compared (the one metric), cells: [{cell_id, verdict, metric, baseline, current, change_pct,
      ci_low_pct, ci_high_pct, p_value}], summary: {verdict: count}}.
  2 — several parts and metrics: {gating (whether any verdict here can fail the run), parts: [{profile, mode
      (gating | reference | ab | none), baseline, baseline_runs, current_runs, machine, baseline_machine,
      differences, hint}], cells: [{cell_id, part, verdict, moved (the metrics that changed), remeasured,
      metrics: [{metric, unit (% or pp), verdict, baseline, current, change, ci_low, ci_high, detectable,
      change_pct, ci_low_pct, ci_high_pct, p_value, df, noise_pct, baseline_runs, current_runs, [note],
      [outlier_runs], [with_reference: the r = 0 cell a time move shared with the plain model of its loop is judged on]}]}],
      summary}. ``change``, its interval ``ci_low``/``ci_high`` and ``detectable`` (the smallest change that
      would have been significant) are in the metric's unit: % of time, or percentage points of slow-down;
      the ``*_pct`` fields are the relative change of the compared quantity the gates test.
  3 — per-run error control: a gating or A/B part carries ``error_control`` (holm | bh | none), ``tests`` (the
      family size), ``alpha`` and ``per_test_alpha``; a metric entry carries ``p_adjusted`` (its p-value adjusted
      over the part's family: the verdict's gate) and ``se_log``; the metric ``norm_time`` (time over the loop's
      fixed torch probe) judges a cell's speed where recorded, the raw ``time`` then ``judged: false`` with
      verdict ``reference``. Older documents: each test stood alone (``error_control: none``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import Format


class ComparisonError(PerfsuiteError):
    pass


def _update_to_2(doc: dict) -> dict:
    """v1 → v2: one part (the baseline), each cell's one metric as a metric entry."""
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise ValueError("'cells' is not a list of verdicts")
    new_cells = []
    for c in cells:
        if not isinstance(c, dict):
            raise ValueError("a cell entry is not an object")
        metric = c.get("metric") or doc.get("compared") or "time"
        metric = {"time_ms": "time", "slowdown_pct": "slowdown", "recompute": "slowdown"}.get(metric, metric)
        base, cur = c.get("baseline"), c.get("current")
        change = (cur - base if metric == "slowdown" and base is not None and cur is not None else c.get("change_pct"))
        scale = 1.0 + base / 100.0 if metric == "slowdown" and base is not None else 1.0
        low, high = c.get("ci_low_pct"), c.get("ci_high_pct")
        entry = {"metric": metric, "unit": "pp" if metric == "slowdown" else "%", "verdict": c.get("verdict"),
                 "baseline": base, "current": cur, "change": change,
                 "ci_low": None if low is None else scale * low, "ci_high": None if high is None else scale * high,
                 "detectable": None, "change_pct": c.get("change_pct"),
                 "ci_low_pct": c.get("ci_low_pct"), "ci_high_pct": c.get("ci_high_pct"), "p_value": c.get("p_value"),
                 "df": None, "noise_pct": None, "baseline_runs": 1, "current_runs": 1}
        new_cells.append({"cell_id": c.get("cell_id"), "part": None, "verdict": c.get("verdict"),
                          "moved": [metric] if c.get("verdict") in ("regression", "improvement") else [],
                          "remeasured": 0, "metrics": [] if c.get("verdict") in ("new", "missing") else [entry]})
    part = {"profile": None, "mode": "gating", "baseline": doc.get("baseline"), "baseline_runs": 1, "current_runs": 1,
            "machine": None, "baseline_machine": None, "differences": [], "hint": None}
    return {"gating": True, "parts": [part], "cells": new_cells, "summary": doc.get("summary") or {}}


def _update_to_3(doc: dict) -> dict:
    """v2 → v3: every test was judged on its own p-value (no per-run control)."""
    parts = doc.get("parts")
    if not isinstance(parts, list):
        raise ValueError("'parts' is not a list")
    doc["parts"] = [p | {"error_control": "none"} if isinstance(p, dict) and p.get("mode") in ("gating", "ab") else p
                    for p in parts]
    for c in doc.get("cells") or []:
        for m in (c.get("metrics") or []) if isinstance(c, dict) else []:
            if isinstance(m, dict):
                m.setdefault("p_adjusted", m.get("p_value"))
                m.setdefault("se_log", None)
    return doc


COMPARISON_FORMAT = Format("comparison", "perfsuite_comparison", 3, {2: _update_to_2, 3: _update_to_3},
                           ComparisonError)


def check_comparison(doc: Any, where: str = "comparison") -> dict:
    """A comparison document of any known version, migrated and checked; ComparisonError (one line) otherwise."""
    doc = COMPARISON_FORMAT.upgrade(doc, where)
    if not isinstance(doc.get("cells"), list) or not all(isinstance(c, dict) for c in doc["cells"]):
        raise ComparisonError(f"{where}: 'cells' is not a list of verdicts")
    if not isinstance(doc.get("parts"), list):
        raise ComparisonError(f"{where}: 'parts' is not a list")
    return doc


def load_comparison(path: str | Path) -> dict:
    return check_comparison(COMPARISON_FORMAT.load(path), str(path))
