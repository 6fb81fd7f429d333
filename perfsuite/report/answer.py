"""Report — the first screen of a compared run: the answer before the method.

What moved (a short table, one row per cell the comparison confirmed as a regression or an improvement: where, by how
much, how sure), then one sentence of what this comparison could have detected, then the figures; the method (what
each part was compared with, its error control, the baseline's sittings) and every metric's verdict go behind a fold.
The detectable change is said here once, as the comparison computed it (``detectable`` of each judged metric: the
smallest change that would have been significant at the run's error control; its median over the cells).
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsuite.compare.render import MODE_TEXT, detectable_medians, group_line, part_lines, summary_line, verdict_tables
from perfsuite.formats.comparison import CellVerdict, Comparison, MetricVerdict
from perfsuite.table import Table

MOVED = ("regression", "changed", "improvement")  # the verdicts the first table lists ("changed": a deterministic
# outcome such as recompute % differs: behaviour changed)
LISTED = ("missing", "new")  # named under it, a few each
MAX_NAMED = 5
METRIC_NAMES = {"norm_time": "time (probe-normalised)", "time": "time", "slowdown": "slow-down", "memory": "peak memory"}


@dataclass(frozen=True)
class Answer:
    """The first screen's parts, written by the page's HTML and Markdown writers alike."""

    headline: str  # "1 regression, 1 improvement among 23 cells compared with this machine's baseline (5 runs)"
    moved: Table | None  # one row per cell that moved; None when none did
    others: tuple[str, ...]  # one line per other kind that needs a look (missing, new)
    detectable: str  # one sentence: what this comparison could have seen
    method: tuple[str, ...]  # behind the fold: what each part was compared with, and how
    verdicts: tuple[Table, ...]  # behind the fold: every metric's verdict


def _where(cell_id: str) -> str:
    return cell_id


def _change(m: MetricVerdict) -> str:
    if m.unit == "=":  # a deterministic outcome: the values, not a relative change
        return f"{m.baseline:g} → {m.current:g}" if m.baseline is not None and m.current is not None else (
            "" if m.change is None else f"differs by {m.change:.3g}")
    unit = " pp" if m.unit == "pp" else " %"
    return "" if m.change is None else f"{m.change:+.1f}{unit}"


def _sure(m: MetricVerdict) -> str:
    """How sure: the 95 % interval of the change and the adjusted p-value (the verdict's gate)."""
    unit = " pp" if m.unit == "pp" else " %"
    ci = f"[{m.ci_low:+.1f}, {m.ci_high:+.1f}]{unit}" if m.ci_low is not None and m.ci_high is not None else ""
    p = m.p_adjusted if m.p_adjusted is not None else m.p_value
    ptext = "" if p is None else f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"
    return ", ".join(x for x in (ci, ptext) if x)


def moved_table(cells: list[CellVerdict]) -> Table | None:
    """One row per cell confirmed to have moved: its verdict, and each metric that gave it (change, interval, p)."""
    rows, strong = [], set()
    for c in sorted(cells, key=lambda c: (MOVED.index(c.verdict), -max((abs(m.change or 0) for m in c.metrics),
                                                                        default=0.0), c.cell_id)):
        gave = [m for m in c.metrics if m.verdict == c.verdict and m.is_judged] or [m for m in c.metrics if m.is_judged]
        rows.append((_where(c.cell_id), c.verdict, "; ".join(METRIC_NAMES.get(m.metric, m.metric) for m in gave),
                     "; ".join(_change(m) for m in gave), "; ".join(_sure(m) for m in gave),
                     "; ".join(f"{m.baseline_runs}→{m.current_runs}" for m in gave[:1])))
        if c.verdict in ("regression", "changed"):
            strong.add(len(rows) - 1)
    if not rows:
        return None
    return Table("What moved", ("cell", "verdict", "metric", "change", "how sure (95 % interval, adjusted p)",
                                "runs (baseline→now)"), tuple(rows), strong_rows=frozenset(strong), marks_holes=False)


def detectable_sentence(comparison: Comparison) -> str:
    """What this comparison could have confirmed, in one sentence (the gating parts' judged metrics)."""
    gating = [p for p in comparison.parts if p.gates]
    if not gating:
        modes = sorted({p.mode for p in comparison.parts})
        return ("Nothing here can be confirmed: " + "; ".join(MODE_TEXT.get(m, m) for m in modes) + ".")
    found: dict[str, list[float]] = {}
    for p in gating:
        for name, v in detectable_medians(comparison, p.profile).items():
            if "not judged" not in name:
                found.setdefault(name, []).append(v)
    if "norm_time" in found:  # speed is judged on it; the raw time, where also judged (r = 0 cells), is not a second
        found.pop("time", None)  # figure of the same thing
    if not found:
        return "This comparison could not say how large a change it can detect (too few runs on one side)."
    sizes = " or ".join(f"{max(v):.1f} {'pp' if name == 'slowdown' else '%'} in {METRIC_NAMES.get(name, name).split(' (')[0]}"
                        for name, v in sorted(found.items()))
    control = next((p for p in gating if p.tests), None)
    how = (f", at this run's error control: α {control.alpha:g} over {control.tests} tests" if control and control.alpha
           else "")
    return (f"What this comparison could detect: a change of about {sizes} (the median over cells of the smallest "
            f"change that would have been confirmed{how}); a smaller change reads inconclusive or unchanged.")


def headline(comparison: Comparison) -> str:
    n = len(comparison.cells)
    names = {"changed": ("behaviour change", "behaviour changes")}
    counts = [f"{comparison.count(v)} " + (names[v][comparison.count(v) != 1] if v in names else
                                           f"{v}{'s' if comparison.count(v) != 1 else ''}")
              for v in MOVED if comparison.count(v)]
    groups = sum(len(p.failing_groups()) for p in comparison.parts)
    if groups:
        counts.insert(0, f"{groups} method-wide regression{'s' if groups != 1 else ''}")
    gating = [p for p in comparison.parts if p.gates]
    against = (f"this machine's baseline ({gating[0].baseline_runs} run{'s' if gating[0].baseline_runs != 1 else ''})"
               if gating and gating[0].mode == "gating" else
               f"this machine's baseline with other software ({'; '.join(gating[0].differences)})"
               if gating and gating[0].mode == "environment" else "the other side of an A/B run" if gating
               else "another machine's baseline, for reference only")
    if not counts:
        return f"No confirmed change among {n} cells compared with {against}."
    return f"{', '.join(counts)} among {n} cells compared with {against}."


def answer(comparison: Comparison) -> Answer:
    cells = list(comparison.cells)
    others = [group_line(g).strip() for p in comparison.parts for g in p.failing_groups()]
    for verdict, what in (("missing", "in the baseline, not in this run"), ("new", "no baseline yet")):
        ids = [c.cell_id for c in cells if c.verdict == verdict]
        if ids:
            named = ", ".join(ids[:MAX_NAMED]) + (f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else "")
            others.append(f"{len(ids)} {verdict} ({what}): {named}")
    rest = summary_line(comparison)
    return Answer(headline(comparison), moved_table([c for c in cells if c.verdict in MOVED]), tuple(others),
                  detectable_sentence(comparison), (rest, *(line.strip() for line in part_lines(comparison, reach=False))),
                  tuple(verdict_tables(comparison)))
