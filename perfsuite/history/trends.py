"""Trend figures and the trends page: each series over the nightlies, its levels and change points, kept small.

A year of nightlies × the ``full`` grid is ~500 series of 365 points; github-action-benchmark draws one chart
per series from one growing ``data.js`` and its pages reach tens of MB. Here instead:

* one interactive chart per workload, adapter and metric (:mod:`perfsuite.history.chart`): every night a point on
  a dated axis with its commit, steps shaded over their commit range, hover for a night; beside it, for the
  Markdown summary and readers without scripts, a PNG of small multiples (a panel per shape, each series
  downsampled to at most ``SMALL_POINTS`` points, median per bin, change points in red);
* a large figure only for a series with a change point: every night, its 95 % band, the levels between
  change points, and the commit range of each step;
* under each figure the table of its numbers (per series: nights, levels, noise, steps); every point is in
  ``trends.csv`` beside the page.

Figures are built with :class:`matplotlib.figure.Figure` (Agg), never pyplot, like :mod:`perfsuite.report.figures`.
The sections are :class:`perfsuite.report.page.Section`, so `perfsuite report` can carry them too.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from perfsuite.formats.io import atomic_path, write_text_atomic
from perfsuite.history.changes import ChangePoint, SeriesChanges
from perfsuite.history.chart import chart_data, chart_html, page_script, series_label
from perfsuite.report.page import Section, html_page
from perfsuite.table import Table, figure_text, spreadsheet_safe

SMALL_POINTS = 90  # points per small panel at most: a panel is ~190 px wide
SMALL_COLUMNS = 6  # panels per row
PANEL_INCHES = (1.9, 1.05)
SMALL_DPI = 80
LARGE_INCHES = (9.0, 2.6)
LARGE_DPI = 90
MAX_LARGE_FIGURES = 40  # cells with change points drawn large; the rest are listed in the table
POINT_COLOUR, LEVEL_COLOUR, STEP_COLOUR, BAND_COLOUR = "#4c72b0", "#1d1d1f", "#c4281c", "#c9d6ea"
PNG_COLOURS = 64  # palette PNGs (median-cut at 32 colours lost the red of the steps)
CSV_NAME = "trends.csv"
UNITS = {"time_ms": "ms", "slowdown_ratio": "× plain", "peak_mem_bytes": "bytes", "recompute_pct": "%",
         "mismatches": "tokens", "matches_fixed_schedule": "1 = yes"}


@dataclass(frozen=True)
class TrendsFiles:
    index: Path
    csv: Path
    figures: tuple[Path, ...]
    sections: tuple[Section, ...]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def bins(n: int, target: int = SMALL_POINTS) -> list[tuple[int, int]]:
    """At most ``target`` runs of consecutive nights, [start, stop), covering 0..n."""
    if n <= target:
        return [(i, i + 1) for i in range(n)]
    edges = np.linspace(0, n, target + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def downsample(values: np.ndarray, target: int = SMALL_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): at most ``target`` points, each the median of a bin of consecutive nights, x its middle night."""
    spans = bins(len(values), target)
    xs = np.array([(a + b - 1) / 2.0 for a, b in spans])
    ys = np.array([np.median(values[a:b]) for a, b in spans])
    return xs, ys


def save_png(fig: Figure, path: Path, dpi: int) -> Path:
    """The figure as a PNG of PNG_COLOURS colours: a third of the bytes of matplotlib's, the reds kept."""
    from PIL import Image  # matplotlib's own dependency

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with atomic_path(path) as tmp:
        Image.open(buf).convert("RGB").quantize(colors=PNG_COLOURS, method=Image.Quantize.FASTOCTREE).save(
            tmp, format="PNG", optimize=True)
    return path




def _levels(s: SeriesChanges) -> list[tuple[int, int, float]]:
    return [(s.start + g.start, s.start + g.stop, g.level) for g in s.detection.segments]


def small_multiples(group: list[SeriesChanges], title: str) -> Figure:
    """One panel per series of the group: downsampled values, the levels, red lines at change points."""
    cols = min(SMALL_COLUMNS, len(group))
    rows = math.ceil(len(group) / cols)
    fig = Figure(figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, s in zip(axes.flat, group):
        values = np.array([p.value for p in s.series.points])
        x, y = downsample(values)
        ax.plot(x, y, lw=0.8, color=POINT_COLOUR, marker=".", ms=2.5)  # a one-night series is a point
        for a, b, level in _levels(s):
            ax.hlines(level, a - 0.5, b - 0.5, color=LEVEL_COLOUR, lw=0.8)
        for c in s.changes:
            ax.axvline(_index(s, c) - 0.5, color=STEP_COLOUR, lw=1.2)
        mark = f"  {len(s.changes)} step{'s' * (len(s.changes) != 1)}" if s.changes else ""
        ax.set_title(figure_text(series_label(s)) + mark, fontsize=7, color=STEP_COLOUR if s.changes else "#333333")
        ax.tick_params(labelsize=5.5, length=2, pad=1)
        ax.set_xticks([])
    for ax in list(axes.flat)[len(group):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return fig


def _index(s: SeriesChanges, c: ChangePoint) -> int:
    """The index of the step's most likely first night."""
    return next(i for i, p in enumerate(s.series.points) if p.run.run_id == c.at.run_id)


def large_figure(s: SeriesChanges) -> Figure:
    """Every night of one series with its band, the levels, and each step's commit range shaded."""
    pts = s.series.points
    x = np.arange(len(pts))
    fig = Figure(figsize=LARGE_INCHES, layout="constrained")
    ax = fig.subplots()
    lo = np.array([p.ci_low if p.ci_low is not None else np.nan for p in pts], dtype=float)
    hi = np.array([p.ci_high if p.ci_high is not None else np.nan for p in pts], dtype=float)
    ax.fill_between(x, lo, hi, color=BAND_COLOUR, lw=0, label="95 % interval of the night's median")
    ax.plot(x, [p.value for p in pts], ".", ms=2.5, color=POINT_COLOUR, label="nightly median")
    for k, (a, b, level) in enumerate(_levels(s)):
        ax.hlines(level, a - 0.5, b - 0.5, color=LEVEL_COLOUR, lw=1.2, label="level" if k == 0 else None)
    runs = {p.run.run_id: i for i, p in enumerate(pts)}
    for c in s.changes:
        at = _index(s, c)
        ax.axvspan(runs[c.good.run_id], runs[c.bad.run_id], color=STEP_COLOUR, alpha=0.15, lw=0)
        ax.axvline(at - 0.5, color=STEP_COLOUR, lw=1)
        ax.annotate(f"{c.step_text}  {c.commit_range}", (at, 1.0), xycoords=("data", "axes fraction"),
                    fontsize=7, color=STEP_COLOUR, ha="left", va="top", xytext=(3, -2), textcoords="offset points")
    if s.ack is not None and s.start < len(pts):
        ax.axvline(s.start, color="#2a7d2a", lw=1, ls="--", label=f"acknowledged: {s.ack.note[:40]}")
    ticks = np.linspace(0, len(pts) - 1, min(8, len(pts))).astype(int)
    ax.set_xticks(ticks, [pts[i].run.datetime[:10] for i in ticks], fontsize=6.5)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel(f"{s.series.metric} ({UNITS.get(s.series.metric, '')})", fontsize=7.5)
    ax.set_title(figure_text(f"{s.series.cell.id} — {s.series.metric}") + f", noise σ̂ {s.detection.noise_pct:.1f} %",
                 fontsize=8.5)
    ax.legend(fontsize=6, loc="lower left", frameon=False, ncol=4)
    return fig


# --- tables -----------------------------------------------------------------------------------------


def change_table(changes: list[ChangePoint], title: str = "Change points") -> Table:
    rows = tuple((c.cell_id, c.metric, c.step_text if c.kind == "step" else f"behaviour: {c.step_text}",
                  f"{c.before:.4g}", f"{c.after:.4g}", c.commit_range, str(c.nights),
                  f"{c.good.datetime[:10]}..{c.bad.datetime[:10]}",
                  "exact" if c.kind == "behaviour" else f"{c.p_value:.1g}",
                  "" if c.kind == "behaviour" else f"{c.noise_pct:.1f}%", "; ".join(c.software_changes), c.status)
                 for c in changes)
    return Table(title, ("cell", "metric", "step", "before", "after", "commits", "nightlies", "dates", "p",
                         "noise σ̂", "software changed", "issue"), rows,
                 lead=("issue: FILED opens or updates an issue; a provisional or weaker step is shown here only "
                       "(docs/history.md, \"Shown and filed\")." if rows else
                       "No change point: every series is at one level since its last acknowledged step."),
                 strong_rows=frozenset(k for k, c in enumerate(changes) if c.filed), marks_holes=False)


def series_table(group: list[SeriesChanges], title: str) -> Table:
    rows = []
    for s in group:
        levels = [g.level for g in s.detection.segments]
        rows.append((s.series.cell.id, s.series.metric, str(len(s.series.points)),
                     s.series.points[0].run.datetime[:10], f"{levels[0]:.4g}" if levels else "",
                     f"{levels[-1]:.4g}" if levels else "", f"{s.detection.noise_pct:.1f}%",
                     ", ".join(f"{c.step_text} {c.commit_range}" for c in s.changes),
                     f"{s.ack.run.short}: {s.ack.note}" if s.ack else ""))
    return Table(title, ("cell", "metric", "nightlies", "since", "first level", "latest level", "noise σ̂", "steps",
                         "acknowledged"), tuple(rows), collapsed=True, marks_holes=False)


# --- sections and page ------------------------------------------------------------------------------


def _groups(found: list[SeriesChanges]) -> dict[tuple[str, str, str], list[SeriesChanges]]:
    groups: dict[tuple[str, str, str], list[SeriesChanges]] = {}
    for s in found:
        if s.series.points:
            groups.setdefault((s.series.cell.workload, s.series.cell.adapter, s.series.metric), []).append(s)
    return groups


def trend_sections(found: list[SeriesChanges], out_dir: str | Path) -> list[Section]:
    """Draw and save the figures; one section per (workload, adapter, metric), then one per stepped series."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for (workload, adapter, metric), group in sorted(_groups(found).items()):
        title = f"Trends — {workload}, {adapter}, {metric}"
        path = out_dir / f"trends-{slug(workload)}-{slug(adapter)}-{slug(metric)}.png"
        save_png(small_multiples(group, figure_text(title)), path, SMALL_DPI)
        stepped = [c for s in group for c in s.changes]
        tables = ((change_table(stepped, "Change points in this figure"),) if stepped else ()) + (
            series_table(group, "Every series of this figure"),)
        sections.append(Section(title, (path,), tables,
                                f"{len(group)} series, every nightly a point on its date and commit; dashed: the "
                                "levels between change points; red: a step, shaded over its commit range. Hover a "
                                "point for its night. (The static image: a panel per series, at most "
                                f"{SMALL_POINTS} points each, medians of consecutive nightlies.)",
                                html=chart_html(chart_data(group)), script=page_script()))
    stepped = [s for s in found if s.changes][:MAX_LARGE_FIGURES]
    for s in stepped:
        path = out_dir / f"trend-{slug(s.series.cell.id)}-{slug(s.series.metric)}-{s.series.series_key}.png"
        save_png(large_figure(s), path, LARGE_DPI)
        sections.append(Section(f"Trend — {s.series.cell.id}, {s.series.metric}", (path,),
                                (change_table(list(s.changes), "Its change points"),),
                                f"On {s.series.machine}. The shaded span of a step is its commit range."))
    return sections


def write_points_csv(found: list[SeriesChanges], path: Path) -> Path:
    """The numbers drawn: every night of a series with a change point (its large figure), the medians of the
    bins of the others (their panels). ``nights`` says how many nightlies a row stands for."""
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["cell_id", "metric", "series_key", "nights", "first_date", "last_date", "commit",
                "value", "ci_low", "ci_high", "level", "step_pct"])
    for s in found:
        pts = s.series.points
        values = np.array([p.value for p in pts])
        level = {i: g.level for g in s.detection.segments for i in range(s.start + g.start, s.start + g.stop)}
        steps = {_index(s, c): c.step_pct for c in s.changes}
        for a, b in bins(len(pts), len(pts) if s.changes else SMALL_POINTS):
            one = pts[a] if b - a == 1 else None
            w.writerow([*map(spreadsheet_safe, (s.series.cell.id, s.series.metric, s.series.series_key)), b - a,
                        pts[a].run.datetime[:10], pts[b - 1].run.datetime[:10],
                        spreadsheet_safe(one.run.commit) if one else "", f"{np.median(values[a:b]):.6g}",
                        _opt(one and one.ci_low), _opt(one and one.ci_high), _opt(level.get(b - 1)),
                        _opt(next((v for i, v in steps.items() if a <= i < b), None))])
    return write_text_atomic(path, f.getvalue())


def _opt(v) -> str:
    return "" if v is None else f"{v:.6g}"


def render_trends(found: list[SeriesChanges], out_dir: str | Path, *, title: str = "perfsuite history — trends",
                  head: tuple[Table, ...] = ()) -> TrendsFiles:
    """The standalone trends page: DIR/index.html with the change points on top, the figures, trends.csv."""
    out_dir = Path(out_dir)
    sections = trend_sections(found, out_dir)
    csv_path = write_points_csv(found, out_dir / CSV_NAME)
    changes = [c for s in found for c in s.changes]
    tables = [t for t in (change_table(changes), *head) if t.rows]  # only tables with rows
    notes = [] if changes else ["No change point: every series is at one level since its last acknowledged step."]
    index = out_dir / "index.html"
    write_text_atomic(index, html_page(title, tables, [], [], sections, [CSV_NAME], notes=notes).replace(
        "<img ", "<img loading=\"lazy\" "))
    return TrendsFiles(index, csv_path, tuple(p for s in sections for p in s.figures), tuple(sections))
