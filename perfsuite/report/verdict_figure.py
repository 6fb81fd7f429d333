"""Report — the comparison drawn by verdict, in the latency layout: a reader who looks only at the figure reaches
the verdict the table gives.

A change heatmap coloured by the size of the change painted noise as regressions: an inconclusive +19 pp was as red
as a confirmed one. Here colour is kept for what the comparison confirmed: a confirmed regression is red (the
colour scale spans the confirmed changes) with a thick border and ▲, an improvement blue with ▼; every other
verdict is muted (grey, its change printed small), and cells without a number say what they are (``new``: no
baseline yet; ``missing``: in the baseline, not in this run). Each verdict maps to its look through one table,
:data:`VERDICT_STYLES`; a verdict it does not know (a kind added to the comparison later) is drawn muted, with its
own name in the legend, never as a confirmed change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from perfsuite.formats.record import STATUS_OK
from perfsuite.report.data import CHANGE_UNITS, NOT_COMPARED, ChangeData, setup_label
from perfsuite.report.figures import (CELL_FONT, CHANGE_CMAP, CHANGE_MIN_SPAN, LABEL_FONT, MISSING_HATCH, latency_layout,
                                      wrap_to)

MUTED_TEXT = "#5a5a5a"
HATCH_COLOUR = "#a8a8a8"
SMALL_FONT = CELL_FONT - 1.0  # the change of a cell the comparison did not confirm: there, but quiet


@dataclass(frozen=True)
class VerdictStyle:
    """How one verdict looks in a change figure."""

    legend: str  # what the legend says of it
    confirmed: bool = False  # coloured by its change, bordered and marked; else muted
    mark: str = ""  # drawn in the cell's corner
    face: str = "#e6e6e6"  # the muted cell's colour (a confirmed cell takes the colour scale's)
    hatch: str = ""
    label: str | None = None  # written instead of a number (cells with a verdict and no change)


VERDICT_STYLES: dict[str, VerdictStyle] = {
    "regression": VerdictStyle("regression, confirmed (▲)", confirmed=True, mark="▲"),
    "improvement": VerdictStyle("improvement, confirmed (▼)", confirmed=True, mark="▼"),
    "inconclusive": VerdictStyle("inconclusive: not confirmed", face="#d4d4d4", hatch="...."),
    "unchanged": VerdictStyle("unchanged", face="#f2f2f2"),
    "reference": VerdictStyle("reference only: another machine's baseline", face="#e9e9e9", hatch="\\\\\\\\"),
    "new": VerdictStyle("new: no baseline yet", face="#f3f7fa", label="new"),
    "missing": VerdictStyle("missing: in the baseline, not in this run", face="#eeeeee", hatch=MISSING_HATCH,
                            label="missing"),
    NOT_COMPARED: VerdictStyle("not compared", face="#ffffff", hatch=MISSING_HATCH, label="not compared"),
}


def style_of(verdict: str) -> VerdictStyle:
    """The look of ``verdict``; an unknown one is muted under its own name."""
    return VERDICT_STYLES.get(verdict) or VerdictStyle(verdict.replace("_", " "), label=None)


def verdict_norm(data: ChangeData) -> TwoSlopeNorm:
    """A scale centred on no change over the confirmed cells' changes only (at least ±CHANGE_MIN_SPAN), so an
    unconfirmed outlier cannot wash out the colour of a confirmed change."""
    confirmed = [abs(float(g.values[i, j])) for key, g in data.panels.items()
                 for (i, j), v in data.verdicts[key].items() if style_of(v).confirmed and np.isfinite(g.values[i, j])]
    span = max([CHANGE_MIN_SPAN, *confirmed])
    return TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)


def draw_verdicts(ax, data: ChangeData, adapter: str, seq: int, *, cmap, norm) -> None:
    """One panel: every position drawn by its verdict's style."""
    g = data.panels[(adapter, seq)]
    verdicts = data.verdicts[(adapter, seq)]
    ax.set_xticks(range(len(g.cols)), [str(c) for c in g.cols])
    ax.set_yticks(range(len(g.rows)), [str(r) for r in g.rows])
    ax.tick_params(length=0, labelsize=LABEL_FONT - 1)
    for side in ax.spines.values():
        side.set_visible(False)
    for i in range(len(g.rows)):
        for j in range(len(g.cols)):
            status = g.status[i][j]
            verdict = verdicts.get((i, j), status if status != STATUS_OK else NOT_COMPARED)
            style = style_of(verdict)
            has_number = status == STATUS_OK
            value = float(g.values[i, j]) if has_number else float("nan")
            confirmed = style.confirmed and has_number
            face = cmap(norm(value)) if confirmed else style.face
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=face, hatch=style.hatch, linewidth=0,
                                   edgecolor=HATCH_COLOUR if style.hatch else face, gid=f"verdict:{verdict}"))
            if confirmed:
                ink = "white" if _dark(face) else "black"
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="black", linewidth=2.2))
                ax.text(j + 0.42, i - 0.40, style.mark, ha="right", va="top", fontsize=CELL_FONT, color=ink)
                ax.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=CELL_FONT + 0.5, fontweight="bold",
                        color=ink)
            else:
                text = f"{value:+.1f}" if has_number and style.label is None else style.label or style.legend
                ax.text(j, i, text, ha="center", va="center", fontsize=SMALL_FONT, color=MUTED_TEXT,
                        style="normal" if has_number and style.label is None else "italic",
                        bbox={"facecolor": style.face, "edgecolor": "none", "pad": 0.8})
    ax.set_xlim(-0.5, len(g.cols) - 0.5)
    ax.set_ylim(len(g.rows) - 0.5, -0.5)


def _dark(rgba) -> bool:
    r, g, b, _ = rgba
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.5


def present_verdicts(data: ChangeData) -> list[str]:
    """The verdicts drawn, confirmed ones first, then in the table's order, unknown ones last."""
    seen = {v for panel in data.verdicts.values() for v in panel.values()}
    seen |= {s for g in data.panels.values() for line in g.status for s in line if s != STATUS_OK}
    order = list(VERDICT_STYLES)
    return sorted(seen, key=lambda v: (order.index(v) if v in order else len(order), v))


def verdict_figure(data: ChangeData) -> Figure:
    """The comparison in the latency layout, drawn by verdict (see the module's docstring)."""
    cmap = colormaps[CHANGE_CMAP]
    norm = verdict_norm(data)
    verdicts = present_verdicts(data)
    legend_rows = (len(verdicts) + 1) // 2
    fig, axes, _ = latency_layout(data.adapters, data.seq_lens, data.panels,
                                  lambda ax, a, s: draw_verdicts(ax, data, a, s, cmap=cmap, norm=norm),
                                  extra_height=0.25 * legend_rows + 0.3)
    unit = CHANGE_UNITS[data.metric]
    confirmed = sum(style_of(v).confirmed for panel in data.verdicts.values() for v in panel.values())
    if confirmed:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, aspect=max(12, 8 * len(data.adapters)),
                           pad=0.02)
        bar.set_label(f"confirmed change ({unit})", fontsize=LABEL_FONT)
    top = 0.75 * norm.vmax  # the legend's swatch of a confirmed change: a strong one's colour
    handles = [Patch(facecolor=cmap(norm(top)) if v == "regression" else cmap(norm(-top)) if v == "improvement"
                     else style_of(v).face, edgecolor="black" if style_of(v).confirmed else HATCH_COLOUR,
                     hatch=style_of(v).hatch, linewidth=2 if style_of(v).confirmed else 0.6, label=style_of(v).legend)
               for v in verdicts]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=LABEL_FONT - 1, frameon=False)
    what = "Δ slow-down against r = 0" if data.metric == "slowdown" else "Δ time (probe-normalised where recorded)"
    found = (f"{confirmed} confirmed change{'s' if confirmed != 1 else ''} in colour and marked; the rest grey"
             if confirmed else "no confirmed change: every cell grey")
    fig.suptitle(wrap_to(f"{what} vs. the baseline ({unit})\n{found}\n{setup_label(data.setup)}",
                         fig.get_figwidth(), 10), fontsize=10)
    return fig
