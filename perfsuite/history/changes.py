"""The store's change points: each series searched from its last acknowledged step on, and every step found
named by the commit range it happened in.

A step's range ``good..bad`` is git's: ``good`` is the last night still at the old level, ``bad`` the first
night certainly at the new one (:func:`~perfsuite.history.changepoints.location_set` widens it where noise
leaves the place uncertain); ``git log good..bad`` lists the suspects, ``git bisect start bad good`` searches
them. Software that changed inside the range (torch, CUDA, driver) is named too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from perfsuite.formats.io import Format, write_json_atomic
from perfsuite.history.changepoints import Detection, detect
from perfsuite.history.store import Ack, HistoryStore, Run, Series

CHANGES_FORMAT = Format("history change points", "perfsuite_history_changes", 1)


@dataclass(frozen=True)
class ChangePoint:
    """One step of one series, located between two runs."""

    cell_id: str
    metric: str
    series_key: str
    step_pct: float
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

    @property
    def commit_range(self) -> str:
        return f"{self.good.short}..{self.bad.short}"

    def line(self) -> str:
        """The one-line form `perfsuite history show` prints."""
        soft = f"; software changed: {'; '.join(self.software_changes)}" if self.software_changes else ""
        return (f"{self.cell_id}  {self.metric}  {self.step_pct:+.1f} %  ({_num(self.before)} → {_num(self.after)})"
                f"  commits {self.commit_range} ({self.nights} nightl{'y' if self.nights == 1 else 'ies'}, "
                f"{self.good.datetime[:10]}..{self.bad.datetime[:10]})  p = {self.p_value:.1g}  "
                f"noise {self.noise_pct:.1f} %{soft}" + ("  PROVISIONAL (the last nights)" if self.provisional else ""))

    def to_dict(self) -> dict:
        d = asdict(self)
        d |= {"good": asdict(self.good), "at": asdict(self.at), "bad": asdict(self.bad), "commit_range": self.commit_range,
              "software_changes": list(self.software_changes)}
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
    detection = detect([p.value for p in points])
    changes = []
    for step in detection.steps:
        first, last = start + step.first, start + step.last
        good, bad = series.points[first - 1].run, series.points[last].run
        soft = sorted({f"{series.software[first - 1]} → {series.software[i]}" for i in range(first, last + 1)
                       if series.software[i] != series.software[first - 1]})
        changes.append(ChangePoint(series.cell.id, series.metric, series.series_key, step.step_pct, step.before,
                                   step.after, step.p_value, detection.noise_pct, good,
                                   series.points[start + step.index].run, bad, last - first + 1,
                                   tuple(soft), step.provisional))
    return SeriesChanges(series, start, ack, detection, tuple(changes))


def find_changes(store: HistoryStore, cells_expr: str | None = None, metric: str = "auto") -> list[SeriesChanges]:
    acks = store.acks()
    return [series_changes(s, acks) for s in store.series(cells_expr, metric)]


def changes_document(found: list[SeriesChanges], store_path: str | Path) -> dict:
    """The JSON the nightly turns into issues: every change point, and the same grouped by commit range."""
    points = [c for s in found for c in s.changes]
    groups: dict[str, list[ChangePoint]] = {}
    for c in points:
        groups.setdefault(c.commit_range, []).append(c)
    return CHANGES_FORMAT.stamp({
        "store": str(store_path), "series": len(found), "change_points": [c.to_dict() for c in points],
        "by_commit_range": [{"commit_range": k, "good": v[0].good.commit, "bad": v[0].bad.commit,
                             "cells": sorted({c.cell_id for c in v}),
                             "max_step_pct": max((c.step_pct for c in v), key=abs)} for k, v in groups.items()]})


def write_changes(path: str | Path, found: list[SeriesChanges], store_path: str | Path) -> Path:
    return write_json_atomic(path, changes_document(found, store_path))
