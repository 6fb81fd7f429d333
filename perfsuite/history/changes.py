"""The store's change points: each series searched from its last acknowledged step on, every step found named by
the commit range it happened in, and marked filed or not (:func:`perfsuite.history.looks.look`: shown on
`history show` and the trends page; only the filed ones open issues).

A step's range ``good..bad`` is git's: ``good`` is the last night still at the old level, ``bad`` the first
night certainly at the new one (:func:`~perfsuite.history.changepoints.location_set` widens it where noise
leaves the place uncertain); ``git log good..bad`` lists the suspects, ``git bisect start bad good`` searches
them. Software that changed inside the range (torch, CUDA, driver) is named too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from perfsuite.formats.io import Format, write_json_atomic
from perfsuite.history.changepoints import Detection
from perfsuite.history.looks import EXACT_TEST, look
from perfsuite.history.rows import EXACT_METRICS
from perfsuite.history.store import Ack, HistoryStore, Run, Series


def _update_to_2(doc: dict) -> dict:
    """Format 1 filed every change point it listed; 2 lists what is shown and marks what is filed."""
    doc["change_points"] = [{"kind": "step", "filed": True, "filing": "", **c} for c in doc["change_points"]]
    doc["filed"] = len(doc["change_points"])
    return doc


# Format history: 1 — change_points (each one filed as an issue), by_commit_range. 2 — each change point has kind
# ("step" or "behaviour"), filed and filing (the decision's reason); step_pct may be null (a behaviour change from
# 0); "filed" counts the filed ones; by_commit_range groups the filed ones only.
CHANGES_FORMAT = Format("history change points", "perfsuite_history_changes", 2, {2: _update_to_2})


@dataclass(frozen=True)
class ChangePoint:
    """One step of one series, located between two runs."""

    cell_id: str
    metric: str
    series_key: str
    step_pct: float | None  # None: a behaviour change from 0 (no relative size)
    before: float  # level before (median of the nights compared)
    after: float
    p_value: float
    noise_pct: float  # the series' between-run noise σ̂, which set its threshold
    good: Run  # last night at the old level
    at: Run  # the most likely first night at the new level
    bad: Run  # first night certainly at the new level
    nights: int  # nightlies from just after ``good`` to ``bad``: where the step may have begun
    software_changes: tuple[str, ...]
    provisional: bool = False  # found in the last nights, not yet MIN_SEGMENT_RUNS nights old (may still vanish)
    kind: str = "step"  # or "behaviour": a deterministic outcome changed (exact comparison, no p-value)
    filed: bool = False  # opens or updates an issue tonight (perfsuite.history.looks.decide)
    filing: str = ""  # why it is filed or not

    @property
    def commit_range(self) -> str:
        return f"{self.good.short}..{self.bad.short}"

    @property
    def step_text(self) -> str:
        """"+5.2 %", or for a behaviour change from 0 "0 → 31.25"."""
        return f"{self.step_pct:+.1f} %" if self.step_pct is not None else f"{_num(self.before)} → {_num(self.after)}"

    @property
    def status(self) -> str:
        """What the nightly does with it: FILED, or shown only (provisional, or why not filed)."""
        if self.filed:
            return "FILED"
        return "PROVISIONAL (the last nights)" if self.provisional else f"shown, not filed: {self.filing}"

    def line(self) -> str:
        """The one-line form `perfsuite history show` prints."""
        soft = f"; software changed: {'; '.join(self.software_changes)}" if self.software_changes else ""
        what = "BEHAVIOUR CHANGED " if self.kind == "behaviour" else ""
        evidence = "exact" if self.kind == "behaviour" else f"p = {self.p_value:.1g}  noise {self.noise_pct:.1f} %"
        levels = f"  ({_num(self.before)} → {_num(self.after)})" if self.step_pct is not None else ""
        return (f"{self.cell_id}  {self.metric}  {what}{self.step_text}{levels}"
                f"  commits {self.commit_range} ({self.nights} nightl{'y' if self.nights == 1 else 'ies'}, "
                f"{self.good.datetime[:10]}..{self.bad.datetime[:10]})  {evidence}{soft}  {self.status}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d |= {"good": asdict(self.good), "at": asdict(self.at), "bad": asdict(self.bad),
              "commit_range": self.commit_range, "software_changes": list(self.software_changes)}
        return d


@dataclass(frozen=True)
class SeriesChanges:
    """A series, where its search started (after the last ack), what was found."""

    series: Series
    start: int  # index of the first night searched
    ack: Ack | None
    detection: Detection
    changes: tuple[ChangePoint, ...]


def _num(v: float) -> str:
    return f"{v:.4g}"


def latest_ack(series: Series, acks: list[Ack]) -> tuple[int, Ack | None]:
    """(index of the first night from the latest ack of this cell on, that ack) or (0, None)."""
    mine = [a for a in acks if a.cell_id == series.cell.id]
    if not mine:
        return 0, None
    ack = max(mine, key=lambda a: (a.run.datetime, a.run.run_id))
    key = (ack.run.datetime, ack.run.run_id)
    start = next((i for i, p in enumerate(series.points) if (p.run.datetime, p.run.run_id) >= key),
                 len(series.points))
    return start, ack


def series_changes(series: Series, acks: list[Ack]) -> SeriesChanges:
    start, ack = latest_ack(series, acks)
    points = series.points[start:]
    tonight = look([p.value for p in points], exact=series.metric in EXACT_METRICS)
    detection = tonight.detection
    changes = []
    for step, filing in zip(detection.steps, tonight.filings):
        first, last = start + step.first, start + step.last
        good, bad = series.points[first - 1].run, series.points[last].run
        soft = sorted({f"{series.software[first - 1]} → {series.software[i]}" for i in range(first, last + 1)
                       if series.software[i] != series.software[first - 1]})
        changes.append(ChangePoint(series.cell.id, series.metric, series.series_key, step.step_pct, step.before,
                                   step.after, step.p_value, detection.noise_pct, good,
                                   series.points[start + step.index].run, bad, last - first + 1,
                                   tuple(soft), step.provisional,
                                   "behaviour" if step.test == EXACT_TEST else "step", filing.filed, filing.reason))
    return SeriesChanges(series, start, ack, detection, tuple(changes))


def find_changes(store: HistoryStore, cells_expr: str | None = None, metric: str = "all") -> list[SeriesChanges]:
    acks = store.acks()
    return [series_changes(s, acks) for s in store.series(cells_expr, metric)]


def changes_document(found: list[SeriesChanges], store_path: str | Path) -> dict:
    """The JSON the nightly turns into issues: every change point shown (``filed``: the ones that open or update an
    issue), and the filed ones grouped by commit range."""
    points = [c for s in found for c in s.changes]
    groups: dict[str, list[ChangePoint]] = {}
    for c in points:
        if c.filed:
            groups.setdefault(c.commit_range, []).append(c)
    return CHANGES_FORMAT.stamp({
        "store": str(store_path), "series": len(found), "change_points": [c.to_dict() for c in points],
        "filed": sum(c.filed for c in points),
        "by_commit_range": [{"commit_range": k, "good": v[0].good.commit, "bad": v[0].bad.commit,
                             "cells": sorted({c.cell_id for c in v}),
                             "max_step_pct": max((c.step_pct for c in v if c.step_pct is not None), key=abs,
                                                 default=None)} for k, v in groups.items()]})


def write_changes(path: str | Path, found: list[SeriesChanges], store_path: str | Path) -> Path:
    return write_json_atomic(path, changes_document(found, store_path))
