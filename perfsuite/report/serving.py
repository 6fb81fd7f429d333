"""Report: serving-time figures — mixed-adapter batches, decode steps and quantized bases.

* :func:`heatmap_figure` — per mixed-batch method: % slow-down over the plain model, y = K (distinct adapters in
  the batch), x = batch, at the profile's rank; grouped and shuffled requests side by side, a panel row per shape
  (prefill of s tokens, decode step after L cached).
* :func:`k1_figure` — K = 1 against mixed batches, per method: slow-down over the plain model against K (log
  scale), a line per batch and order; the K = 1 point is the single-adapter batch every mixed one is also
  reported against.
* :func:`adapter_figure` — the latency workload's decode steps and its quantized bases: y = adapter, x = batch,
  a panel per shape (and quantization).

:func:`serving_sections` draws them all and returns (title, files, tables, note) per section for the page
(:mod:`perfsuite.report.page`). The data are read from the tidy frame here; nothing here changes the paper-layout
figures of :mod:`perfsuite.report.figures`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from perfsuite.cells.grid import ORDERS, SERVING_METHODS
from perfsuite.report.data import (Grid, adapter_label, adapter_order, as_int, as_reference, file_stem, make_grid,
                                   records_by_setup, setup_label)
from perfsuite.report.figures import HEATMAP_CMAP, colour_scale, draw_grid, save_figure
from perfsuite.report.tables import cell_text, plain_label
from perfsuite.table import Table

METHOD_LABELS = {"gathered": "gathered bmm (BGMV shape)", "loop": "loop over adapters (row index lists)",
                 "peft": "peft adapter_names (mixed batch)"}
SERVING_NOTE = ("Each request of a batch uses its own LoRA (K distinct adapters, grouped by adapter or shuffled); "
                "every output was checked row by row against the request alone through its own adapter before "
                "it was timed. Colour: % slow-down over the plain model (r = 0) of the same loop; the tables add "
                "the slow-down over the same method's single-adapter batch (K = 1).")


def _text(v) -> str | None:
    return v if isinstance(v, str) and v else None


def shape_of(rec: dict) -> str:
    """A row's shape: ``prefill s16`` or ``decode L64``."""
    if _text(rec.get("phase")) == "decode":
        return f"decode L{as_int(rec.get('kv_len'))}"
    return f"prefill s{as_int(rec.get('seq_len'))}"


def _shape_order(shape: str) -> tuple:
    phase, n = shape.split(" ")
    return (phase != "prefill", int(n[1:]))


@dataclass(frozen=True)
class MethodData:
    """One method's heatmaps: per shape and order a K × batch grid (slow-down over the plain model, and over K = 1)."""

    stem: str
    setup: dict[str, str]
    method: str
    rank: int
    shapes: tuple[str, ...]
    panels: dict[tuple[str, str], Grid]  # (shape, order) → K × batch, slowdown_pct
    vs_k1: dict[tuple[str, str], Grid]  # the same positions, slowdown_vs_k1_pct
    times: dict[tuple[str, str], Grid]  # the same positions, time_ms


def _setups(frame: pd.DataFrame) -> list[tuple[dict, list[dict]]]:
    """Serving rows by (model, dtype, device, quant): the plain models of both implementations in one setup."""
    out: dict[tuple, list[dict]] = {}
    for setup, recs in records_by_setup(frame, "serving"):
        for r in recs:
            quant = _text(r.get("quant")) or "none"
            key = (setup["model"], setup["dtype"], setup["device"], quant)
            out.setdefault(key, []).append(r)
    return [({"model": k[0], "dtype": k[1], "device": k[2], **({"quant": k[3]} if k[3] != "none" else {})}, v)
            for k, v in sorted(out.items())]


def _label(setup: dict) -> str:
    return setup_label(setup) + (f", {setup['quant']} base" if "quant" in setup else "")


def method_data(frame: pd.DataFrame) -> list[MethodData]:
    """One :class:`MethodData` per setup and method among the serving rows (uniform ranks, the most common rank)."""
    setups = _setups(frame)
    out = []
    for setup, recs in setups:
        for method in SERVING_METHODS:
            mine = [r for r in recs if r.get("method") == method and not _text(r.get("rank_mix"))]
            if not mine:
                continue
            rank = Counter(as_int(r["rank"]) for r in mine).most_common(1)[0][0]
            mine = [r for r in mine if as_int(r["rank"]) == rank]
            shapes = tuple(sorted({shape_of(r) for r in mine}, key=_shape_order))
            ks = sorted({as_int(r["n_adapters"]) for r in mine})
            panels, vs_k1, times = {}, {}, {}
            for shape in shapes:
                batches = sorted({as_int(r["batch"]) for r in mine if shape_of(r) == shape})
                for order in ORDERS:
                    by = {(as_int(r["n_adapters"]), as_int(r["batch"])): r for r in mine if shape_of(r) == shape
                          and (r.get("order") == order or as_int(r["n_adapters"]) == 1)}
                    if not any(as_int(r["n_adapters"]) > 1 and r.get("order") == order for r in mine):
                        continue
                    look = lambda k, b, by=by: by.get((k, b))  # noqa: E731
                    title = f"{shape}, {order}"
                    panels[shape, order] = make_grid(title, ks, batches, look, "slowdown_pct")
                    vs_k1[shape, order] = make_grid(title, ks, batches, look, "slowdown_vs_k1_pct")
                    times[shape, order] = make_grid(title, ks, batches, look, "time_ms")
            many = len(setups) > 1
            stem = file_stem(f"serving-{method}", {**setup, "impl": SERVING_METHODS[method]}, many)
            out.append(MethodData(stem + (f"-{setup['quant']}" if "quant" in setup else ""), setup, method, rank,
                                  shapes, panels, vs_k1, times))
    return out


def heatmap_figure(data: MethodData) -> Figure:
    """K × batch heatmaps of one method, grouped and shuffled side by side, a row per shape."""
    orders = [o for o in ORDERS if any(k[1] == o for k in data.panels)]
    shapes = [s for s in data.shapes if any(k[0] == s for k in data.panels)]
    any_grid = next(iter(data.panels.values()))
    panel_w, panel_h = max(2.0, 0.55 * len(any_grid.cols) + 0.9), max(1.4, 0.34 * len(any_grid.rows) + 0.7)
    fig = Figure(figsize=(len(orders) * panel_w + 1.6, len(shapes) * panel_h + 1.0), layout="constrained")
    axes = fig.subplots(len(shapes), len(orders), squeeze=False)
    norm, extend = colour_scale(list(data.panels.values()), robust=True)
    im = None
    for r, shape in enumerate(shapes):
        for c, order in enumerate(orders):
            ax = axes[r][c]
            grid = data.panels.get((shape, order))
            if grid is None:
                ax.set_axis_off()
                continue
            im = draw_grid(ax, grid, cmap=HEATMAP_CMAP, norm=norm, label=lambda v: f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}")
            ax.set_title(grid.title, fontsize=9)
            ax.set_ylabel("K adapters" if c == 0 else "")
            ax.set_xlabel("batch" if r == len(shapes) - 1 else "")
    if im is not None:
        fig.colorbar(im, ax=axes, pad=0.02, extend=extend).set_label("slow-down (%)")
    fig.suptitle(f"{METHOD_LABELS.get(data.method, data.method)}, r = {data.rank} — {_label(data.setup)}", fontsize=10)
    return fig


def k1_figure(datas: list[MethodData]) -> Figure:
    """Slow-down over the plain model against K for every method of a setup: a panel per (method, shape), a line
    per batch and order; K = 1 (the single-adapter batch) is the first point of every line."""
    panels = [(d, s) for d in datas for s in d.shapes]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(ncols * 3.4 + 0.4, nrows * 2.6 + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for n, (d, shape) in enumerate(panels):
        ax = axes[n // ncols][n % ncols]
        for order, style in zip(ORDERS, ("-", "--")):
            grid = d.panels.get((shape, order))
            if grid is None:
                continue
            for j, b in enumerate(grid.cols):
                ys = grid.values[:, j]
                ok = np.isfinite(ys)
                if ok.sum() >= 1:
                    ax.plot(np.asarray(grid.rows)[ok], ys[ok], style, marker="o", markersize=3,
                            label=f"b={b}, {order}", color=f"C{j}")
        ax.axhline(0.0, color="#999999", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ks = sorted({k for o in ORDERS if (shape, o) in d.panels for k in d.panels[shape, o].rows})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_title(f"{d.method}: {shape}", fontsize=9)
        ax.set_xlabel("K adapters (K = 1: single-adapter batch)", fontsize=8)
        ax.set_ylabel("slow-down over plain (%)", fontsize=8)
        ax.legend(fontsize=6, ncol=2)
    for n in range(len(panels), nrows * ncols):
        axes[n // ncols][n % ncols].set_axis_off()
    fig.suptitle(f"K = 1 vs mixed batches — {_label(datas[0].setup)}", fontsize=10)
    return fig


def method_tables(data: MethodData) -> list[Table]:
    """The numbers of the heatmap: slow-down over the plain model (as drawn), over K = 1, and the medians."""
    tables = []
    for grids, what, digits, collapsed in ((data.panels, "slow-down over the plain model (%)", 1, False),
                                           (data.vs_k1, "slow-down over K = 1 (%)", 1, False),
                                           (data.times, "median time per call (ms)", 3, True)):
        rows = []
        for (shape, order), g in grids.items():
            for i, k in enumerate(g.rows):
                rows.append((shape, order, str(k), *(cell_text(g, i, j, digits, mark_noisy=True)
                                                     for j in range(len(g.cols)))))
        batches = next(iter(grids.values())).cols
        tables.append(Table(f"{data.method}, r = {data.rank}: {what}", ("shape", "order", "K",
                                                                      *(f"b={b}" for b in batches)),
                            tuple(rows), collapsed=collapsed))
    return tables


# --- the latency workload's serving-time cells: decode steps and quantized bases ---------------------------


@dataclass(frozen=True)
class AdapterData:
    """Latency cells outside the paper's layout, drawn as adapter × batch, a panel per shape."""

    stem: str
    title: str
    setup: dict[str, str]
    panels: dict[str, Grid]  # shape → adapter × batch (rank in the label), slowdown_pct
    times: dict[str, Grid]
    labels: dict[int, str]  # row index → "LoRA r8"


def adapter_data(frame: pd.DataFrame) -> list[AdapterData]:
    """Decode steps of every adapter (unquantized), and each quantized base's cells."""
    out = []
    setups = records_by_setup(frame, "latency", paper_layout=False)
    for setup, recs in setups:
        off = [r for r in recs if _text(r.get("phase")) == "decode" or (_text(r.get("quant")) or "none") != "none"]
        kinds = {}
        for r in off:
            quant = _text(r.get("quant")) or "none"
            kinds.setdefault(quant, []).append(r)
        for quant, rows in sorted(kinds.items(), key=lambda kv: (kv[0] != "none", kv[0])):
            keys = {(r["adapter"], as_int(r["rank"])) for r in rows if r["adapter"] != "none"}
            order = adapter_order(a for a, _ in keys)
            keys = [("none", 0)] + sorted(keys, key=lambda k: (order.index(k[0]), k[1]))
            batches = sorted({as_int(r["batch"]) for r in rows})
            shapes = sorted({shape_of(r) for r in rows}, key=_shape_order)
            panels, times = {}, {}
            for shape in shapes:
                by = {((r["adapter"], as_int(r["rank"])), as_int(r["batch"])): r for r in rows if shape_of(r) == shape}
                look = lambda i, b, by=by: (as_reference(by.get((keys[i], b))) if i == 0  # noqa: E731
                                            else by.get((keys[i], b)))
                panels[shape] = make_grid(shape, list(range(len(keys))), batches, look, "slowdown_pct")
                times[shape] = make_grid(shape, list(range(len(keys))), batches, look, "time_ms")
            labels = {i: "plain" if a == "none" else f"{plain_label(adapter_label(a))} r{r}" for i, (a, r) in enumerate(keys)}
            what = "Decode step" if quant == "none" else f"Quantized base ({quant})"
            stem = file_stem("decode" if quant == "none" else f"quant-{quant}", setup, len(setups) > 1)
            out.append(AdapterData(stem, f"{what} — {setup_label(setup)}", setup, panels, times, labels))
    return out


def adapter_figure(data: AdapterData) -> Figure:
    shapes = list(data.panels)
    g0 = data.panels[shapes[0]]
    fig = Figure(figsize=(len(shapes) * max(2.4, 0.6 * len(g0.cols) + 1.6) + 1.2, 0.32 * len(g0.rows) + 1.4),
                 layout="constrained")
    axes = fig.subplots(1, len(shapes), squeeze=False)[0]
    norm, extend = colour_scale(list(data.panels.values()), robust=True)
    im = None
    for c, shape in enumerate(shapes):
        ax = axes[c]
        im = draw_grid(ax, data.panels[shape], cmap=HEATMAP_CMAP, norm=norm)
        ax.set_yticks(range(len(g0.rows)), [data.labels[i] if c == 0 else "" for i in g0.rows], fontsize=7)
        ax.set_title(shape, fontsize=9)
        ax.set_xlabel("batch")
    fig.colorbar(im, ax=axes, pad=0.02, extend=extend).set_label("slow-down (%)")
    fig.suptitle(data.title, fontsize=10)
    return fig


def adapter_tables(data: AdapterData) -> list[Table]:
    tables = []
    for grids, what, digits, collapsed in ((data.panels, "slow-down over the plain model (%)", 1, False),
                                           (data.times, "median time per call (ms)", 3, True)):
        rows = [(shape, data.labels[i], *(cell_text(g, i, j, digits, mark_noisy=not collapsed) for j in range(len(g.cols))))
                for shape, g in grids.items() for i in range(len(g.rows))]
        batches = next(iter(grids.values())).cols
        tables.append(Table(f"{data.title}: {what}", ("shape", "adapter", *(f"b={b}" for b in batches)), tuple(rows),
                            collapsed=collapsed))
    return tables


def _finite(grids) -> bool:
    return any(np.isfinite(g.values).any() for g in grids)


def serving_sections(frame: pd.DataFrame, out_dir: Path, *, vector: str | None) -> list[tuple]:
    """Draw every serving-time figure the frame allows: (title, files, tables, note) per section, in page order."""
    sections = []
    datas = method_data(frame)
    for d in datas:
        if not d.panels:
            continue
        paths = save_figure(heatmap_figure(d), out_dir, d.stem, vector=vector) if _finite(d.panels.values()) else []
        sections.append((f"Serving — {METHOD_LABELS[d.method]}, {_label(d.setup)}", tuple(paths),
                         tuple(method_tables(d)), SERVING_NOTE))
    by_setup: dict[str, list[MethodData]] = {}
    for d in datas:
        if d.panels:
            by_setup.setdefault(_label(d.setup), []).append(d)
    for label, ds in by_setup.items():
        if _finite(g for d in ds for g in d.panels.values()):
            stem = ds[0].stem.replace(f"serving-{ds[0].method}", "serving-k1-vs-mixed", 1)
            paths = save_figure(k1_figure(ds), out_dir, stem, vector=vector)
            sections.append((f"Serving — K = 1 vs mixed batches, {label}", tuple(paths), (),
                             "Slow-down over the plain model against K for each method; K = 1 is the "
                             "single-adapter batch."))
    for d in adapter_data(frame):
        paths = save_figure(adapter_figure(d), out_dir, d.stem, vector=vector) if _finite(d.panels.values()) else []
        note = ("One decode step (one token per request against a KV cache of L tokens) of each adapter, against "
                "the plain model of the same loop." if d.title.startswith("Decode") else
                "Unmerged adapters on a quantized base, against the quantized plain model of the same loop; merged "
                "LoRA cannot be folded into quantized weights (recorded unsupported).")
        sections.append((d.title, tuple(paths), tuple(adapter_tables(d)), note))
    return sections
