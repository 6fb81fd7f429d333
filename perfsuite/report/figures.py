"""Report, step 3 — figures: the grids of :mod:`perfsuite.report.data` and :mod:`perfsuite.report.phi_data` →
matplotlib figures, after the papers.

* :func:`latency_figure` — LoRA (Hu et al. 2021) Fig. 5: a panel row per adapter, a column per sequence
  length; y = rank r, x = batch; colour = % slow-down against r = 0, one shared colour bar.
* :func:`recompute_figure` — LLM-42 (Gond et al. 2026) Fig. 13: y = batch, x = window; recompute cost (%)
  and throughput normalised to the best cell; cells over the token budget blank.
* :func:`subspace_figure` — LoRA Figs. 4 and 7: φ(A, A′, i, j), i down, j across, a panel per (layer,
  matrix) and the random-Gaussian control, one shared colour bar.
* the comparison in the same layout, drawn by verdict: :mod:`perfsuite.report.verdict_figure`.

Figures are built with :class:`matplotlib.figure.Figure` directly, never pyplot: no GUI backend, no global
figure registry to leak into, nothing to close. Values are written in the cells; a cell without a
number is hatched and says why (OOM, missing, …), except cells blank by design (over the token budget).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LinearSegmentedColormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from perfsuite.formats.io import atomic_path
from perfsuite.formats.record import STATUS_OK, STATUS_OUTSIDE_BUDGET
from perfsuite.report.data import CELL_NOTES, Grid, LatencyData, RecomputeData, adapter_label, setup_label
from perfsuite.report.phi_data import SubspaceGroup, check_phi, panel_title, subspace_groups
from perfsuite.subspace.phi import PhiGrid

VECTOR_FORMATS = ("svg", "pdf")
PNG_DPI = 150
HEATMAP_CMAP = "magma"  # the LoRA paper's dark purple → peach scale (seaborn's "rocket" is the same family)
# LLM-42 Fig. 13's blue → sand → orange, for recompute cost.
RECOMPUTE_CMAP = LinearSegmentedColormap.from_list("perfsuite_recompute", ["#3a6ea5", "#9cc3da", "#efd9b4", "#e8924a",
                                                                           "#c4501b"])
THROUGHPUT_CMAP = "viridis"
MISSING_FACE = "#eeeeee"  # hatched background of a cell without a number
MISSING_HATCH = "////"
CELL_FONT = 7.5
OUTLIER_FACTOR = 2.0  # colour scales stop at this × the 90th percentile (see colour_scale)
CHANGE_CMAP = "RdBu_r"  # change heatmaps: blue faster, white unchanged, red slower
CHANGE_MIN_SPAN = 5.0  # the change scale spans at least ±5 (% or pp): small noise stays pale


def _text_colour(cmap, norm, v: float) -> str:
    r, g, b, _ = cmap(norm(v))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def draw_grid(ax, grid: Grid, *, cmap, norm, label=lambda v: f"{v:.1f}", annotate: bool = True,
              fontsize: float = CELL_FONT):
    """One heatmap panel: rows top to bottom as listed, numbers in the cells, holes hatched with their reason."""
    cmap = colormaps[cmap] if isinstance(cmap, str) else cmap
    data = np.ma.masked_invalid(grid.values)
    im = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(grid.cols)), [str(c) for c in grid.cols])
    ax.set_yticks(range(len(grid.rows)), [str(r) for r in grid.rows])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    for i, line in enumerate(grid.status):
        for j, status in enumerate(line):
            if status == STATUS_OK:
                if annotate:
                    v = grid.values[i, j]
                    ax.text(j, i, label(v), ha="center", va="center", fontsize=fontsize,
                            color=_text_colour(cmap, norm, v))
            elif status != STATUS_OUTSIDE_BUDGET:  # over the budget: blank, as in LLM-42 Fig. 13
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=MISSING_FACE, edgecolor="#9a9a9a",
                                       hatch=MISSING_HATCH, linewidth=0))
                ax.text(j, i, CELL_NOTES.get(status, status), ha="center", va="center", fontsize=fontsize - 1,
                        color="#444444", bbox={"facecolor": MISSING_FACE, "edgecolor": "none", "pad": 0.6})
    ax.set_xlim(-0.5, len(grid.cols) - 0.5)
    ax.set_ylim(len(grid.rows) - 0.5, -0.5)
    return im


def colour_scale(grids: Iterable[Grid], *, floor: float | None = 0.0, robust: bool = False) -> tuple[Normalize, str]:
    """One colour scale for all the panels, from min(floor, data) to max(data), and the colour bar's ``extend``.

    ``robust``: a few outliers (e.g. a first-call warm-up) must not turn every other cell black, so the
    top is capped at OUTLIER_FACTOR × the 90th percentile; the bar then gets an arrow, and the capped cells
    still show their own number.
    """
    vals = np.concatenate([g.values[np.isfinite(g.values)] for g in grids] or [np.array([])])
    lo = float(vals.min()) if vals.size else 0.0
    hi = float(vals.max()) if vals.size else 1.0
    if floor is not None:
        lo = min(lo, floor)
    extend = "neither"
    if robust and vals.size >= 4:
        cap = OUTLIER_FACTOR * float(np.percentile(vals, 90))
        if cap > lo and hi > cap:
            hi, extend = cap, "max"
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0), extend


def _pct(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"


# --- latency ---------------------------------------------------------------------------------------


ROW_INCHES = 0.34  # height of one rank row of a latency panel
PANEL_PAD_INCHES = 0.42  # a panel's gaps and tick labels
MIN_FIGURE_WIDTH = 5.2  # inches: room for the row labels, the colour bar and a legend at the smallest grid
LABEL_FONT = 9


def adapter_row_label(adapter: str) -> str:
    """A panel row's label: the paper's name, and under it the name the command line takes (its legend)."""
    if adapter == "none":
        return "plain model\n(none)"
    label = adapter_label(adapter)
    return label if label == adapter else f"{label}\n({adapter})"


def wrap_to(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` (each line wrapped on its own)."""
    import textwrap

    chars = max(12, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) if len(line) > chars else line for line in text.split("\n"))


def latency_layout(adapters, seq_lens, panels: dict, draw, *, extra_height: float = 0.0) -> tuple[Figure, Any, Any]:
    """LoRA Fig. 5's layout, shared by the latency, change, overhead and mode figures: a row per adapter, a column per
    sequence length, y = rank, x = batch, axes labelled once; each panel row as tall as its ranks (the plain
    model's row, "none", has one). Row labels are horizontal and carry the command line's name beside the
    paper's. ``draw(ax, adapter, seq)`` fills one panel and returns its image (or None); the figure, the axes and
    the last image come back. ``extra_height``: inches for a legend under the panels."""
    nrows, ncols = len(adapters), len(seq_lens)
    batches = max(len(g.cols) for g in panels.values())
    heights = [max(1, max(len(panels[(a, s)].rows) for s in seq_lens)) for a in adapters]
    panel_w = max(1.5, 0.55 * batches + 0.5)
    width = max(MIN_FIGURE_WIDTH, ncols * panel_w + 2.9)
    height = ROW_INCHES * sum(heights) + PANEL_PAD_INCHES * nrows + 1.4 + extra_height
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, gridspec_kw={"height_ratios": heights})
    im = None
    for r, adapter in enumerate(adapters):
        for c, seq in enumerate(seq_lens):
            ax = axes[r][c]
            im = draw(ax, adapter, seq) or im
            if r == 0:
                ax.set_title(f"Seq Len = {seq}", fontsize=LABEL_FONT + 1)
            if c == 0:
                ax.set_ylabel(adapter_row_label(adapter), rotation=0, ha="right", va="center", fontsize=LABEL_FONT,
                              labelpad=6)
            else:
                ax.tick_params(labelleft=False)
            if r == nrows - 1:
                ax.set_xlabel("Batch Size", fontsize=LABEL_FONT)
            else:
                ax.tick_params(labelbottom=False)
    return fig, axes, im


def latency_figure(data: LatencyData) -> Figure:
    """LoRA paper Fig. 5 from a :class:`LatencyData`: slow-down % of each adapter against the plain model (whose
    own row, 0 by definition, is not drawn: :func:`drawn_adapters`)."""
    adapters = drawn_adapters(data)
    norm, extend = colour_scale([data.panels[p] for p in data.panels if p[0] in adapters], robust=True)
    cmap = colormaps[HEATMAP_CMAP]
    fig, axes, im = latency_layout(adapters, data.seq_lens, data.panels, lambda ax, adapter, seq: draw_grid(
        ax, data.grid(adapter, seq), cmap=cmap, norm=norm, label=_pct))
    bar = fig.colorbar(im, ax=axes, aspect=max(12, 8 * len(adapters)), pad=0.02, extend=extend)
    bar.set_label("slow-down (%)", fontsize=LABEL_FONT)
    fig.suptitle(wrap_to(f"Latency slow-down against the plain model (r = 0), %; rows: rank r\n"
                         f"{setup_label(data.setup)}", fig.get_figwidth(), 10), fontsize=10)
    return fig


def drawn_adapters(data: LatencyData) -> tuple[str, ...]:
    """The adapters a slow-down figure draws: not the plain model, 0 % against itself by definition."""
    return tuple(a for a in data.adapters if a != "none")


def centred_norm(grids) -> TwoSlopeNorm:
    """A colour scale centred on 0 (no change), symmetric, spanning the largest value and at least ±CHANGE_MIN_SPAN."""
    vals = np.concatenate([g.values[np.isfinite(g.values)] for g in grids] or [np.array([])])
    span = max(CHANGE_MIN_SPAN, float(np.max(np.abs(vals))) if vals.size else 0.0)
    return TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)


# --- recompute -------------------------------------------------------------------------------------


def recompute_figure(data: RecomputeData) -> Figure:
    """LLM-42 Fig. 13 from a :class:`RecomputeData`: a panel row per adapter; recompute cost, then
    throughput normalised to the row's best cell."""
    nrows = len(data.panels)
    cols = max(len(p.cost.cols) for p in data.panels)
    rows = max(len(p.cost.rows) for p in data.panels)
    panel_w = max(2.6, 0.62 * cols + 0.9)
    panel_h = max(1.6, 0.36 * rows + 0.7)
    fig = Figure(figsize=(2 * panel_w + 2.4, nrows * panel_h + 1.0), layout="constrained")
    axes = fig.subplots(nrows, 2, squeeze=False)
    cost_norm, _ = colour_scale([p.cost for p in data.panels])
    tput_norm = Normalize(vmin=0.0, vmax=1.0)
    ims = [None, None]
    for r, p in enumerate(data.panels):
        ims[0] = draw_grid(axes[r][0], p.cost, cmap=RECOMPUTE_CMAP, norm=cost_norm, label=lambda v: f"{v:.2f}%")
        ims[1] = draw_grid(axes[r][1], p.throughput, cmap=THROUGHPUT_CMAP, norm=tput_norm, label=lambda v: f"{v:.2f}")
        axes[r][0].set_ylabel(f"{p.title}\nBatch Size")
        axes[r][1].set_ylabel("Batch Size")
        for ax in axes[r]:
            ax.set_xlabel("Window Size")
    axes[0][0].set_title("Recompute cost (% of output tokens)", fontsize=10)
    axes[0][1].set_title("Throughput / best cell of the row", fontsize=10)
    for c, (label, fmt) in enumerate((("Recompute Cost (%)", lambda x, _: f"{x:g}%"),
                                      ("normalised throughput", lambda x, _: f"{x:g}"))):
        bar = fig.colorbar(ims[c], ax=[axes[r][c] for r in range(nrows)], aspect=max(12, 10 * nrows), pad=0.02,
                           format=FuncFormatter(fmt))
        bar.set_label(label)
    setups = {(p.key[2], p.key[3]) for p in data.panels}
    sizes = ""
    if len(setups) == 1 and None not in next(iter(setups)):
        prompt, gen = next(iter(setups))
        sizes = f", prompt {prompt}, {gen} output tokens"
    fig.suptitle(f"Recompute cost of verified decoding, batch × window\n{setup_label(data.setup)}{sizes}",
                 fontsize=10)
    return fig


# --- subspace similarity -------------------------------------------------------------------------


def _phi_ticks(n: int) -> list[int]:
    """1-based tick positions: every index when few, else about eight, always starting at 1."""
    if n <= 12:
        return list(range(1, n + 1))
    step = int(np.ceil(n / 8))
    return list(range(1, n + 1, step))


def _grid_shape(group: SubspaceGroup) -> tuple[int, int]:
    """(rows, columns) of the non-control panels: one row when four or fewer, else whole layers per row."""
    n = len(group.panels)
    if n <= 4:
        return (1 if n else 0), n
    per_layer = max(1, len({p.matrix for p in group.panels}))
    ncols = per_layer * max(1, 4 // per_layer) if per_layer <= 4 else per_layer
    return int(np.ceil(n / ncols)), ncols


def subspace_figure(group: SubspaceGroup) -> Figure:
    """LoRA paper Figs. 4 / 7 from a :class:`SubspaceGroup`; the controls in a column on the right."""
    prow, pcol = _grid_shape(group)
    ncols = pcol + (1 if group.controls else 0)
    nrows = max(prow, len(group.controls))
    first = (group.panels or group.controls)[0]
    side = 2.3 if max(first.r_a, first.r_b) > 12 else 1.9
    aspect = first.r_a / first.r_b
    fig = Figure(figsize=(ncols * side + 1.3, nrows * max(1.4, side * min(1.0, aspect * 1.15)) + 0.9),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    placed: list[tuple[object, PhiGrid]] = []
    for k, p in enumerate(group.panels):
        placed.append((axes[k // pcol][k % pcol], p))
    for k, p in enumerate(group.controls):
        placed.append((axes[k][ncols - 1], p))
    used = {id(ax) for ax, _ in placed}
    for line in axes:
        for ax in line:
            if id(ax) not in used:
                ax.remove()
    norm = Normalize(vmin=0.0, vmax=max(float(np.nanmax(p.phi)) for _, p in placed) or 1.0)
    im = None
    for ax, p in placed:
        im = ax.imshow(p.phi, cmap=HEATMAP_CMAP, norm=norm, aspect="auto", interpolation="nearest",
                       extent=(0.5, p.r_b + 0.5, p.r_a + 0.5, 0.5))
        ax.set_xticks(_phi_ticks(p.r_b))
        ax.set_yticks(_phi_ticks(p.r_a))
        ax.tick_params(labelsize=7, length=2)
        ax.set_title(panel_title(p), fontsize=9)
        ax.set_xlabel("j", fontsize=9)
        ax.set_ylabel("i", fontsize=9)
    bar = fig.colorbar(im, ax=[ax for ax, _ in placed], aspect=max(15, 10 * nrows), pad=0.02)
    bar.set_label("$\\phi$")
    fig.suptitle(group.title, fontsize=11)
    return fig


# --- writing ---------------------------------------------------------------------------------------


def save_figure(fig: Figure, out_dir: str | Path, stem: str, *, vector: str | None = "svg") -> list[Path]:
    """``stem``.png (for the page) and ``stem``.svg/.pdf (vector; None or "none": PNG only), in ``out_dir``;
    the PNG first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png"]
    with atomic_path(paths[0]) as tmp:  # a full disk leaves the old figure, never half of one
        fig.savefig(tmp, dpi=PNG_DPI, format="png")
    if vector and vector != "none":
        if vector not in VECTOR_FORMATS:
            raise ValueError(f"vector format must be one of {VECTOR_FORMATS}, not {vector!r}")
        paths.append(out_dir / f"{stem}.{vector}")
        with atomic_path(paths[-1]) as tmp:
            fig.savefig(tmp, format=vector, metadata={"Date": None} if vector == "svg" else {"CreationDate": None})
    return paths


def render_subspace(comparisons, out_dir: str | Path, *, vector: str | None = "svg") -> list[Path]:
    """φ heatmaps from comparison records of the subspace data contract (dicts, or objects with ``to_dict()``,
    such as :class:`perfsuite.subspace.phi.PhiGrid`): one figure per (kind of comparison, r_a, r_b), a
    random-Gaussian control beside it (see :func:`~perfsuite.report.phi_data.subspace_groups`). Returns the files written, each PNG before its
    vector twin. Raises ReportError (one line) on a malformed record."""
    phis = [check_phi(c, f"comparison {k}") for k, c in enumerate(comparisons)]
    paths: list[Path] = []
    for group in subspace_groups(phis):
        paths += save_figure(subspace_figure(group), out_dir, group.stem, vector=vector)
    return paths
