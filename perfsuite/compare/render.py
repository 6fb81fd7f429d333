"""A comparison document as tables: built once here, written for a terminal, a pull-request comment or the report.

Each line of the verdict table starts with the cell id and then its verdict (on that metric); a cell compared
on two metrics has two lines. Times read in ms and their change in %; slow-downs in % and their change in
percentage points, so 20.2 % → 27.0 % reads +6.8 pp, not a number a reader must convert.
Each function takes the document as typed records (:class:`~perfsuite.formats.comparison.Comparison`; a JSON
document is read with ``Comparison.from_dict``).
"""

from __future__ import annotations

import statistics

from perfsuite.compare.quality import quality_lines
from perfsuite.compare.stats import ERROR_CONTROLS
from perfsuite.formats.comparison import CellVerdict, Comparison, MetricVerdict, VERDICTS
from perfsuite.table import Table, markdown_table, markdown_text, printable, text_table

COLUMNS = ("cell", "verdict", "metric", "baseline", "current", "change", "interval", "p", "runs")
MODE_TEXT = {
    "gating": "this machine's baseline: a confirmed regression fails the run",
    "environment": "this machine's baseline with other software: judged on every metric, raw time included",
    "ab": "A/B on this machine, separate processes alternated: a confirmed regression fails the run",
    "reference": "REFERENCE ONLY: a baseline of another machine; shown for information, never fails the run",
    "none": "no baseline for this machine and part",
}


def _rank(verdict: str) -> int:
    return VERDICTS.index(verdict) if verdict in VERDICTS else len(VERDICTS)


def _value(v: float | None, metric: str) -> str:
    if v is None:
        return ""
    if metric == "norm_time":
        return f"{v:.3g}x probe"
    if metric == "memory":
        return f"{v:.4g} MiB"
    if metric in ("time", "norm_time", "slowdown"):
        return f"{v:.4g} ms" if metric == "time" else f"{v:+.1f}%"
    return f"{v:.6g}"  # a deterministic outcome, as recorded


def _change(v: float | None, unit: str) -> str:
    if v is None:
        return ""
    return f"{v:+.1f} pp" if unit == "pp" else f"Δ {v:.3g}" if unit == "=" else f"{v:+.1f}%"


def verdict_text(m: MetricVerdict) -> str:
    """The verdict as a reader is told it: a bound where the change is bounded, the runs that would decide it where
    it could not be told, the acknowledgement of an accepted change."""
    if m.verdict == "unchanged" and m.within_pct is not None:
        return f"unchanged (within ±{m.within_pct:.1f}%)"
    if m.verdict == "inconclusive" and m.change_pct is not None and m.p_value is not None:
        return ("inconclusive (could not tell: " + (f"{m.more_runs} more run{'s' if m.more_runs != 1 else ''})"
                                                     if m.more_runs else "needs more baseline runs)"))
    if m.accepted:
        return f"{m.verdict} (accepted)"
    return m.verdict


def _interval(m: MetricVerdict) -> str:
    if m.ci_low is None or m.ci_high is None:
        return ""
    return f"[{m.ci_low:+.1f}, {m.ci_high:+.1f}]" + (" pp" if m.unit == "pp" else "%")


def _p(v: float | None) -> str:
    return "" if v is None else f"{v:.2g}" if v >= 1e-4 else "<1e-4"


def _rows(cells: list[CellVerdict]) -> list[tuple[tuple[str, ...], bool]]:
    """(row, is a regression) per (cell, metric), most urgent verdict first, then the largest change."""
    def key(c: CellVerdict) -> tuple[int, float, str]:
        change = max((abs(m.change) for m in c.metrics if m.change is not None), default=0.0)
        return _rank(c.verdict), -change, c.cell_id

    rows = []
    for c in sorted(cells, key=key):
        if not c.metrics:
            rows.append(((c.cell_id, c.verdict, "", "", "", "", "", "", c.note or ""), False))
        for m in c.metrics:
            runs = f"{m.baseline_runs}→{m.current_runs}"
            metric = m.metric + (" (w/ ref)" if m.with_reference else "") + ("" if m.is_judged else " (raw, shown)")
            rows.append(((c.cell_id, verdict_text(m), metric, _value(m.baseline, m.metric), _value(m.current, m.metric),
                          _change(m.change, m.unit), _interval(m), _p(m.p_value), runs),
                         m.verdict in ("regression", "changed")))
    return rows


def summary_line(comparison: Comparison) -> str:
    s = comparison.summary
    line = f"{len(comparison.cells)} cells: " + ", ".join(f"{s[v]} {v}" for v in VERDICTS if s.get(v))
    shared = sum(bool(m.with_reference) for c in comparison.cells for m in c.metrics)
    if shared:
        line += (f" ({shared} time move{'s' if shared != 1 else ''} marked 'w/ ref': the plain model of the same loop "
                 "moved alike and the slow-down did not, so the move is judged once, on that r = 0 cell)")
    return line


MAX_NAMED_CELLS = 10  # cells named in the missing line; the table lists every one


def unmeasured_line(comparison: Comparison) -> str | None:
    """The baseline's cells this run should have measured and did not (they fail it), named; None when none."""
    cells = comparison.unmeasured
    if not cells:
        return None
    names = ", ".join(c.cell_id for c in cells[:MAX_NAMED_CELLS])
    more = f" and {len(cells) - MAX_NAMED_CELLS} more" if len(cells) > MAX_NAMED_CELLS else ""
    return (f"MISSING: {len(cells)} cell{'s' * (len(cells) != 1)} of the baseline not measured by this run, which "
            f"fails it: {names}{more} (removed, renamed, or skipped by the code under test; pass --allow-missing when "
            "that is intended)")


def detectable_medians(comparison: Comparison, part: str | None) -> dict[str, float]:
    """Per metric, the median over the part's cells of the smallest change that would have been significant (judged
    metrics: at the run's error control, what a lone moved cell needs); raw time where the probe-normalised time
    judges is named apart ("time (raw, not judged)")."""
    found: dict[str, list[float]] = {}
    for c in comparison.cells:
        if c.part == part:
            for m in c.metrics:
                if m.detectable is not None:
                    name = m.metric + ("" if m.is_judged else " (raw, not judged)")
                    found.setdefault(name, []).append(m.detectable)
    return {name: statistics.median(v) for name, v in sorted(found.items())}


def detectable_line(comparison: Comparison, part: str | None) -> str | None:
    """How large a change this comparison could see, per metric (:func:`detectable_medians`)."""
    found = detectable_medians(comparison, part)
    if not found:
        return None
    parts = [f"{name} {v:.1f} {'pp' if name == 'slowdown' else '%'}" for name, v in found.items()]
    return "  detects changes above (median over cells): " + ", ".join(parts)


def group_line(g) -> str:
    """One group test: an adapter's slow-down on every shape of the part, as one hypothesis."""
    low, high = g.get("ci_low_pct"), g.get("ci_high_pct")
    interval = f" [{low:+.1f}, {high:+.1f}]%" if low is not None and high is not None else ""
    change = g.get("change_pct")
    return (f"  method-wide {g['group']} ({len(g['cells'])} cells): {g['verdict']}, slow-down "
            f"{'' if change is None else f'{change:+.1f}%'}{interval}, p {_p(g.get('p_adjusted'))} (adjusted)")


def part_lines(comparison: Comparison, *, reach: bool = True) -> list[str]:
    """What each part was compared with and how. ``reach``: with the changes it could detect (the report says that
    once, on its first screen, and leaves it out here)."""
    out = []
    for p in comparison.parts:
        head = f"part {p.profile}: {MODE_TEXT.get(p.mode, p.mode)}"
        if p.baseline:
            head += f" — {p.baseline} ({p.baseline_runs} run{'s' if p.baseline_runs != 1 else ''})"
        out.append(head)
        if p.mode in ("reference", "environment") and p.differences:
            out.append("  differs in: " + "; ".join(p.differences))
        if p.hint and p.mode in ("reference", "none", "environment"):
            out.append(f"  {p.hint}")
        if p.gates or p.mode == "environment":
            if p.error_control and p.tests is not None:  # documents before format 3 have none
                looks = f", spent over {p.looks} look{'s' if p.looks != 1 else ''} (re-measures)" if p.looks else ""
                out.append(f"  per-run error control: {ERROR_CONTROLS.get(p.error_control, p.error_control)}, "
                           f"alpha {p.alpha:g} over {p.tests} tests{looks} (a lone moved cell needs p < "
                           f"{p.per_test_alpha:.2g})")
            out += [group_line(g) for g in (p.groups or ()) if g.get("verdict") != "unchanged"]
            if p.baseline_quality:
                out += quality_lines(p.baseline_quality, reach=reach)
            line = detectable_line(comparison, p.profile) if reach else None
            out += [line] if line else []
    return out


def verdict_tables(comparison: Comparison) -> list[Table]:
    """The cells that need a look (everything but unchanged), then the unchanged ones, folded."""
    notable = [c for c in comparison.cells if c.verdict != "unchanged"]
    same = [c for c in comparison.cells if c.verdict == "unchanged"]
    tables = []
    for cells, title, collapsed in ((notable, "Verdicts", False), (same, f"{len(same)} unchanged cells", True)):
        if not cells and collapsed:
            continue
        rows = _rows(cells)
        tables.append(Table(title, COLUMNS, tuple(r for r, _ in rows),
                            lead=summary_line(comparison) + "." if not collapsed else "",
                            strong_rows=frozenset(k for k, (_, strong) in enumerate(rows) if strong),
                            collapsed=collapsed, marks_holes=False))
    return tables


def full_table(comparison: Comparison) -> Table:
    rows = _rows(list(comparison.cells))
    return Table("", COLUMNS, tuple(r for r, _ in rows),
                 strong_rows=frozenset(k for k, (_, strong) in enumerate(rows) if strong), marks_holes=False)


def render_terminal(comparison: Comparison, title: str = "perfsuite compare") -> str:
    """The comparison for a terminal or a CI log: every recorded string printable (no escape sequence, no line
    break that could forge an annotation)."""
    lines = [printable(line) for line in (title, *part_lines(comparison))]
    if comparison.cells:
        lines.append(text_table(full_table(comparison)))
    lines += [printable(line) for line in (summary_line(comparison), unmeasured_line(comparison)) if line]
    return "\n".join(lines)


def render_markdown(comparison: Comparison, title: str = "perfsuite") -> str:
    """A pull-request comment: the outcome first, the cells that need a look, all cells folded below. Every
    recorded string (a machine, a baseline's name, a note) is inert Markdown: no HTML, no mention, no link."""
    n_reg = comparison.count("regression") + sum(len(p.failing_groups()) for p in comparison.parts)
    n_changed, n_missing = comparison.count("changed"), len(comparison.unmeasured)
    if n_reg or n_changed or n_missing:
        found = [f"{n} {what}{'s' if n != 1 and what != 'missing' else ''}"
                 for n, what in ((n_reg, "regression"), (n_changed, "behaviour change"), (n_missing, "missing")) if n]
        head = "**" + ", ".join(found) + "**"
    elif not comparison.gating:
        head = "no gating comparison (no baseline of this machine)"
    else:
        head = "no regression"
    missing = unmeasured_line(comparison)
    out = [f"### {markdown_text(title)}: {head}", "",
           *(f"- {markdown_text(line.strip())}" for line in part_lines(comparison)),
           *([f"- **{markdown_text(missing)}**"] if missing else []), ""]
    for t in verdict_tables(comparison):
        out += [markdown_table(t), ""]
    return "\n".join(out).rstrip() + "\n"
