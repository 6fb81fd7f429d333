"""The trends page's interactive charts: one per (workload, adapter, metric), every night of every series as a point
on a dated axis with its commit, steps shaded over their commit range, hover for a night's series, date, commit,
value and run.

The page stays static and self-contained, as asv's published pages are: each chart's data goes into the page as
JSON (its nights once, each point [night, value]), and the drawing script, ``trend_chart.js`` beside this module, is
bundled inline once per page — no library, no CDN, no server. A year of nightlies over the ``full`` grid is about
180,000 points, ~2 MB of JSON: the PNG figures stay for the Markdown summary and for a reader without scripts.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources

from perfsuite.history.changes import SeriesChanges
from perfsuite.history.store import Run

SCRIPT = "trend_chart.js"
UNIT_LABELS = {"time_ms": ("ms", "median time (ms)"), "slowdown_ratio": ("× plain", "time / plain model's"),
               "peak_mem_bytes": ("bytes", "peak memory (bytes)")}


class RunIndex:
    """The nights of a chart, each once: [time in ms, date, short commit, run id], indexed by run id."""

    def __init__(self) -> None:
        self.rows: list[list] = []
        self.at: dict[int, int] = {}

    def of(self, run: Run) -> int:
        if run.run_id not in self.at:
            self.at[run.run_id] = len(self.rows)
            self.rows.append([_millis(run.datetime), run.datetime[:10], run.short, run.run_id])
        return self.at[run.run_id]


def _millis(text: str) -> int:
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return 0


def series_label(s: SeriesChanges) -> str:
    """A series' shape within its adapter's chart: the cell's parameters after the adapter's whole name
    (``fused-lora-r8-b1-s32`` → ``r8-b1-s32``, not ``lora-r8-b1-s32``)."""
    cell = s.series.cell
    return cell.param_id.removeprefix(f"{cell.adapter}-") if cell.param_id != cell.adapter else cell.param_id


def chart_data(group: list[SeriesChanges]) -> dict:
    """The JSON one chart draws: its nights, and its series, each with its points, its levels and its steps (as
    indices into the nights)."""
    runs = RunIndex()
    metric = group[0].series.metric
    unit, ylabel = UNIT_LABELS.get(metric, ("", metric))
    series = []
    for s in group:
        pts = s.series.points
        idx = [runs.of(p.run) for p in pts]
        levels = [[idx[s.start + g.start], idx[s.start + g.stop - 1], g.level] for g in s.detection.segments
                  if s.start + g.stop - 1 < len(idx)]
        steps = [{"good": runs.of(c.good), "at": runs.of(c.at), "bad": runs.of(c.bad),
                  "label": f"{series_label(s)} {c.step_pct:+.1f} % {c.commit_range}"} for c in s.changes]
        series.append({"label": series_label(s), "cell": s.series.cell.id,
                       "points": [[i, float(f"{p.value:.6g}")] for i, p in zip(idx, pts)],
                       "levels": levels, "steps": steps})
    return {"unit": unit, "ylabel": ylabel, "series": series, "runs": runs.rows}


def chart_html(data: dict) -> str:
    """One chart's placeholder, its data, its legend and its hover line; drawn by the page's script."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return ("<div class=\"trend-chart\"><div class=\"chart\"></div><div class=\"trend-legend\"></div>"
            "<div class=\"trend-tip\" role=\"status\"></div>"
            f"<script type=\"application/json\">{payload}</script></div>")


def page_script() -> str:
    """What closes a page with charts: their styles and the drawing script, inline."""
    script = resources.files("perfsuite.history").joinpath(SCRIPT).read_text(encoding="utf-8")
    return f"<style>{CHART_CSS}</style><script>{script}</script>"


CHART_CSS = """
.trend-chart { margin: .5em 0 1em; } .trend-chart .chart { width: 100%; min-width: 640px; }
.trend-legend span { margin-right: 1.2em; font-size: 12.5px; white-space: nowrap; }
.trend-tip { display: none; font: 12.5px ui-monospace, monospace; background: #fffbe6; border: 1px solid #e0d9a8;
             padding: 2px 6px; margin-top: 4px; }
"""
