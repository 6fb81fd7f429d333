"""A comparison document rendered for a terminal and for a pull-request comment."""

from __future__ import annotations

from perfsuite.compare.stats import VERDICTS
from perfsuite.compare.verdicts import METRICS


def _value(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    return f"{v:.4g} ms" if metric == "time" else f"{v:+.1f}%"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _ci(e: dict) -> str:
    if e["change_pct"] is None or (e["ci_low_pct"] is None and e["ci_high_pct"] is None):
        return "-"
    low = "-inf" if e["ci_low_pct"] is None else f"{e['ci_low_pct']:+.1f}"
    high = "+inf" if e["ci_high_pct"] is None else f"{e['ci_high_pct']:+.1f}"
    return f"[{low}, {high}]%"


def _p(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2g}" if v >= 1e-4 else "<1e-4")


def _rows(comparison: dict) -> list[list[str]]:
    return [[e["cell_id"], e["verdict"], e["metric"], _value(e["baseline"], e["metric"]),
             _value(e["current"], e["metric"]), _pct(e["change_pct"]), _ci(e), _p(e["p_value"])]
            for e in comparison["cells"]]


def summary_line(comparison: dict) -> str:
    s = comparison["summary"]
    return f"{len(comparison['cells'])} cells: " + ", ".join(f"{s.get(v, 0)} {v}" for v in VERDICTS)


def describe_metric(comparison: dict) -> str:
    metric = comparison["compared"]
    return f"{metric} ({METRICS.get(metric, metric)})"


HEADER = ["cell", "verdict", "metric", "baseline", "current", "change", "CI", "p"]


def render_terminal(comparison: dict) -> str:
    """A fixed-width table for a terminal, then the verdict counts."""
    rows = [HEADER] + _rows(comparison)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    right = {3, 4, 5, 6, 7}

    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    lines = [f"perfsuite compare against {comparison['baseline']}",
             f"compared: {describe_metric(comparison)}", fmt(rows[0]), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows[1:]]
    lines.append(summary_line(comparison))
    return "\n".join(lines)


_NOTABLE = ("regression", "improvement", "inconclusive", "new", "missing")


def render_markdown(comparison: dict) -> str:
    """A pull-request comment: the outcome first, notable cells in a table, all cells folded below."""
    s = comparison["summary"]
    n_reg = s.get("regression", 0)
    head = f"**{n_reg} regression{'s' if n_reg != 1 else ''}**" if n_reg else "no regression"
    out = [f"### perfsuite: {head}", "",
           f"Compared **{comparison['compared']}** ({METRICS.get(comparison['compared'], '')}) "
           f"against `{comparison['baseline']}`.", "", summary_line(comparison), ""]

    def table(entries):
        rows = _rows({"cells": entries})
        t = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|"]
        t += ["| " + " | ".join([f"`{r[0]}`", f"**{r[1]}**" if r[1] == "regression" else r[1], *r[2:]]) + " |"
              for r in rows]
        return t

    notable = [e for e in comparison["cells"] if e["verdict"] in _NOTABLE]
    notable.sort(key=lambda e: _NOTABLE.index(e["verdict"]))
    if notable:
        out += table(notable) + [""]
    out += ["<details><summary>All cells</summary>", ""] + table(comparison["cells"]) + ["", "</details>"]
    return "\n".join(out)
