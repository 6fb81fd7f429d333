"""Report — the implementation overhead: hf time over ref time per latency cell, drawn after the latency figure.

For every (model, dtype, device) whose latency cells ran on both implementations, a panel row per adapter that
both have (and the plain model's r = 0 row), a column per sequence length; y = rank, x = batch; the value is the
median time of the ``hf`` cell (transformers + peft) over that of its ``ref`` twin (perfsuite's own model): how
much the real stack costs for the same work. The two medians come from the same run, not from paired rounds,
so drift between the two cells' moments is in the ratio.
"""

from __future__ import annotations

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from perfsuite.formats.record import STATUS_OK
from perfsuite.report.figures import LABEL_FONT, colour_scale, draw_grid, latency_layout, wrap_to
from perfsuite.report.data import LatencyAxes, any_numbers, latency_key
from perfsuite.report.data import (LatencyData, records_by_setup, file_stem, adapter_label,
                                   is_number, setup_label)
from perfsuite.report.tables import cell_text, plain_label
from perfsuite.table import Table

OVERHEAD_CMAP = "cividis"
METRIC = "overhead_ratio"  # hf time_ms / ref time_ms, in the grids this module builds
NOTE = ("Median time of each transformers + peft cell over its perfsuite-reference twin (same shapes, same weights "
        "for the plain model and LoRA's work): 1.00 = the real stack costs nothing extra. "
        "peft's LoRA adapts q, k, v of the fused c_attn with one rank-r pair, the reference q and v with one each: "
        "the same parameters and multiply-adds.")


def _pair(ref: dict | None, hf: dict | None) -> dict | None:
    """The record a grid position shows: the ratio when both cells have a time, else the one that explains why not."""
    if ref is None or hf is None:
        return None
    for rec in (hf, ref):
        if (rec.get("status") or STATUS_OK) != STATUS_OK or not is_number(rec.get("time_ms")):
            return rec  # its status, or "no data" (it ran without a time)
    return {"status": STATUS_OK, METRIC: float(hf["time_ms"]) / float(ref["time_ms"])}


def overhead_data(frame: pd.DataFrame) -> list[LatencyData]:
    """One :class:`~perfsuite.report.data.LatencyData` of ratios per (model, dtype, device) that has latency
    cells of both implementations; none otherwise."""
    by_setup: dict[tuple, dict[str, list[dict]]] = {}
    for setup, recs in records_by_setup(frame, "latency"):
        key = (setup["model"], setup["dtype"], setup["device"], setup.get("mode"))  # hf over ref in one mode
        by_setup.setdefault(key, {})[setup.get("impl", "ref")] = recs
    both = [(k, v) for k, v in sorted(by_setup.items(), key=lambda kv: tuple(str(x) for x in kv[0])) if "ref" in v and "hf" in v]
    out = []
    for (model, dtype, device, mode), impls in both:
        maps = {impl: {latency_key(r): r for r in recs} for impl, recs in impls.items()}
        keys = set(maps["ref"]) & set(maps["hf"])  # the cells both implementations measured
        axes = LatencyAxes.of(keys, with_base=any(k[0] == "none" for k in keys))
        panels = {}
        for a, s in axes.panels():
            def lookup(r, b, a=a, s=s):
                k = ("none", 0, s, b) if r == 0 else (a, r, s, b)
                return _pair(maps["ref"].get(k), maps["hf"].get(k))

            panels[(a, s)] = axes.grid(a, s, lookup, METRIC)
        setup = {"model": model, "dtype": dtype, "device": device, **({"mode": mode} if mode else {})}
        out.append(LatencyData(file_stem("overhead", setup, len(both) > 1), setup, axes.adapters, axes.seq_lens,
                               panels, panels))
    return out


def overhead_figure(data: LatencyData) -> Figure:
    """The latency figure's layout, coloured by hf time / ref time."""
    norm, extend = colour_scale(data.panels.values(), floor=1.0, robust=True)
    fig, axes, im = latency_layout(data.adapters, data.seq_lens, data.panels, lambda ax, adapter, seq: draw_grid(
        ax, data.grid(adapter, seq), cmap=colormaps[OVERHEAD_CMAP], norm=norm, label=lambda v: f"{v:.2f}"))
    bar = fig.colorbar(im, ax=axes, aspect=max(12, 8 * len(data.adapters)), pad=0.02, extend=extend)
    bar.set_label("hf time / ref time", fontsize=LABEL_FONT)
    fig.suptitle(wrap_to(f"Implementation overhead\nhf / ref time, {setup_label(data.setup)}", fig.get_figwidth(), 10),
                 fontsize=10)
    return fig


def overhead_tables(data: LatencyData) -> list[Table]:
    """The ratios as drawn: a row per (adapter, seq len, r), a column per batch."""
    batches = next(iter(data.panels.values())).cols if data.panels else ()
    rows = []
    for a in data.adapters:
        for s in data.seq_lens:
            g = data.panels[(a, s)]
            for i, r in enumerate(g.rows):
                who = "none" if r == 0 else plain_label(adapter_label(a))
                rows.append((who, str(s), str(r), *(cell_text(g, i, j, 2) for j in range(len(g.cols)))))
    return [Table("hf time / ref time (×)", ("adapter", "seq len", "r", *(f"b={b}" for b in batches)), tuple(rows))]


def has_numbers(data: LatencyData) -> bool:
    return any_numbers(data.panels.values())
