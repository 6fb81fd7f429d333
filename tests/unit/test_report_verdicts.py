"""The comparison drawn by verdict (perfsuite.report.verdict_figure), read off the rendered pixels as a reader sees
them: a confirmed regression red and marked, an inconclusive move grey however large, a new cell labelled new; and
no label of any latency-layout figure cut off at the smallest grid."""

import html

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import synthetic as syn
from perfsuite.formats.comparison import Comparison
from perfsuite.formats.results import tidy_frame
from perfsuite.report import VERDICT_STYLES, change_data, latency_data, latency_figure, recompute_data, recompute_figure
from perfsuite.report.data import ChangeData, Grid
from perfsuite.report.modes import mode_gap_data, mode_gap_figure
from perfsuite.report.overhead import overhead_data, overhead_figure
from perfsuite.report.verdict_figure import style_of, verdict_figure


def rendered(fig) -> np.ndarray:
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def cell_colour(fig, img, ax, i: int, j: int) -> np.ndarray:
    """The median colour of a patch in the lower-left quarter of cell (i, j): away from its number and its mark."""
    x, y = ax.transData.transform((j - 0.28, i + 0.28))
    row, col = int(round(img.shape[0] - y)), int(round(x))
    return np.median(img[row - 3:row + 4, col - 3:col + 4].reshape(-1, 3), axis=0)


def texts_in(ax, i: int, j: int) -> list[str]:
    return [t.get_text() for t in ax.texts if abs(t.get_position()[0] - j) < 0.5 and abs(t.get_position()[1] - i) < 0.5]


def panel_of(fig, adapter_label: str):
    return next(ax for ax in fig.axes if ax.get_ylabel().startswith(adapter_label))


def test_the_planted_comparison_is_drawn_by_verdict():
    """One confirmed regression (LoRA +12 pp), one inconclusive move larger than it (AdapterH +19.3 pp, the issue's
    example of noise painted deep red), one new cell (AdapterL, which was labelled "missing")."""
    results, doc = syn.planted_comparison()
    data = {d.metric: d for d in change_data(results.frame, Comparison.from_dict(doc))}["slowdown"]
    assert data.adapters == ("houlsby", "lin", "lora")  # no r = 0 filler row: the slow-down of none is 0
    fig = verdict_figure(data)
    img = rendered(fig)
    lora, houlsby, lin = panel_of(fig, "LoRA"), panel_of(fig, "Adapter$^H$"), panel_of(fig, "Adapter$^L$")

    r, g, b = cell_colour(fig, img, lora, 0, 0)
    assert r - max(g, b) > 60, (r, g, b)  # red: a confirmed slow-down
    assert "▲" in texts_in(lora, 0, 0) and "+12.0" in texts_in(lora, 0, 0)

    r, g, b = cell_colour(fig, img, houlsby, 0, 0)
    assert max(r, g, b) - min(r, g, b) < 12 and r < 235, (r, g, b)  # grey, though its change is the larger
    assert texts_in(houlsby, 0, 0) == ["+19.3"]  # printed, unmarked
    small = next(t for t in houlsby.texts if t.get_text() == "+19.3")
    big = next(t for t in lora.texts if t.get_text() == "+12.0")
    assert small.get_fontsize() < big.get_fontsize() and big.get_fontweight() == "bold"

    assert texts_in(lin, 0, 0) == ["new"]  # what it is, not "missing"
    r, g, b = cell_colour(fig, img, lin, 0, 0)
    assert min(r, g, b) > 240

    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["regression, confirmed (▲)", "inconclusive: not confirmed", "new: no baseline yet"]
    assert "1 confirmed change" in fig.get_suptitle()
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()][:3] == [
        "Adapter$^H$\n(houlsby)", "Adapter$^L$\n(lin)", "LoRA\n(lora)"]  # figure names with the command line's


def test_the_time_figure_draws_the_plain_model_once_and_the_judged_metric():
    results, doc = syn.planted_comparison()
    data = {d.metric: d for d in change_data(results.frame, Comparison.from_dict(doc))}["time"]
    assert data.adapters == ("none", "houlsby", "lin", "lora") and data.panels[("none", 32)].rows == (0,)
    assert all(0 not in data.panels[(a, 32)].rows for a in data.adapters[1:])
    assert data.verdicts[("lora", 32)] == {(0, 0): "regression"} and data.verdicts[("lin", 32)] == {(0, 0): "new"}


def test_a_verdict_the_styles_do_not_know_is_drawn_muted_under_its_own_name():
    """Verdict kinds are being added to the comparison (an equivalence verdict, 'behaviour changed'): each maps to a
    style through VERDICT_STYLES, and one not in it falls back to muted, never to a confirmed look."""
    assert not style_of("equivalent").confirmed and style_of("equivalent").legend == "equivalent"
    assert {v for v, s in VERDICT_STYLES.items() if s.confirmed} == {"regression", "improvement"}
    grid = Grid("Seq Len = 32", (8,), (1, 4), np.array([[30.0, -30.0]]), (("ok", "ok"),))
    data = ChangeData("change-slowdown", "slowdown", {"model": "tiny", "dtype": "float32", "device": "cpu"},
                      ("lora",), (32,), {("lora", 32): grid},
                      {("lora", 32): {(0, 0): "behaviour_changed", (0, 1): "regression"}})
    fig = verdict_figure(data)
    img = rendered(fig)
    ax = fig.axes[0]
    r, g, b = cell_colour(fig, img, ax, 0, 0)
    assert max(r, g, b) - min(r, g, b) < 12, (r, g, b)  # +30 pp, unknown verdict: grey
    assert "behaviour changed" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts_in(ax, 0, 0) == ["+30.0"] and "▲" in texts_in(ax, 0, 1)


def smallest_frame():
    """The smallest latency grid: one adapter, one rank, one batch, one sequence length, on both implementations
    and in two modes (so the overhead and mode figures draw too)."""
    rows = []
    for impl in ("ref", "hf"):
        for mode in ("eager", "compile"):
            for adapter in ("none", "spectral-r"):
                c = syn.cell(adapter, impl=impl, mode=mode, model="meta-llama/Llama-3.2-1B-Instruct-shaped")
                rows.append({"cell_id": c.id, **c.to_dict(), "status": "ok", "reason": None, "time_ms": 1.0,
                             "slowdown_pct": None if adapter == "none" else 12.3, "iqr_pct": 1.0})
    return tidy_frame(rows)


def clipped_texts(fig) -> list[str]:
    """The drawn texts (titles, labels, tick labels that are drawn, legend, cell texts) that reach past the figure's
    edge, where a PNG cuts them off: matplotlib's tight box of each axes, its texts, and the figure's own texts."""
    rendered(fig)
    renderer = fig.canvas.get_renderer()
    box = fig.bbox

    def outside(e) -> bool:
        return e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1

    out = [f"axes {ax.get_ylabel() or ax.get_title() or k}" for k, ax in enumerate(fig.axes)
           if outside(ax.get_tightbbox(renderer))]
    for t in [*fig.texts, *(t for leg in fig.legends for t in leg.get_texts()), *(t for ax in fig.axes for t in ax.texts)]:
        if t.get_visible() and t.get_text().strip() and outside(t.get_window_extent(renderer)):
            out.append(t.get_text())
    if outside(fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)):  # the suptitle and all the rest
        out.append(f"figure: {fig.get_suptitle()}")
    return out


def test_no_label_is_clipped_at_the_smallest_grid():
    frame = smallest_frame()
    results, doc = syn.planted_comparison()
    only_lora = {**doc, "cells": [c for c in doc["cells"] if "lora" in c["cell_id"]]}
    figures = [latency_figure(d) for d in latency_data(frame)]
    figures += [overhead_figure(d) for d in overhead_data(frame)] + [mode_gap_figure(d) for d in mode_gap_data(frame)]
    small = tidy_frame([r for r in results.frame.to_dict("records") if r["adapter"] in ("none", "lora")])
    figures += [verdict_figure(d) for d in change_data(small, Comparison.from_dict(only_lora))]
    (fig13,) = recompute_data(syn_recompute_frame())
    figures.append(recompute_figure(fig13))
    assert len(figures) == 4 + 2 + 2 + 2 + 1
    for fig in figures:
        assert clipped_texts(fig) == [], fig.get_suptitle()


def syn_recompute_frame():
    c = syn.Cell("recompute", "lora", 8, batch=1, seq_len=16, window=16, gen_len=16)
    return tidy_frame([{"cell_id": c.id, **c.to_dict(), "status": "ok", "reason": None, "recompute_pct": 3.5,
                        "throughput_tok_s": 120.0}])


@pytest.mark.parametrize("width", [1, 6])
def test_the_legend_and_title_fit_however_many_verdicts(width):
    verdicts = ["regression", "improvement", "inconclusive", "unchanged", "reference", "new", "missing", "equivalent"]
    values = np.arange(len(verdicts) * width, dtype=float).reshape(len(verdicts), width) - 10
    grid = Grid("Seq Len = 32", tuple(range(1, len(verdicts) + 1)), tuple(range(1, width + 1)), values,
                tuple(("ok",) * width for _ in verdicts))
    data = ChangeData("change-slowdown", "slowdown", {"model": "a-long-model-name/with-a-path", "dtype": "bfloat16",
                                                      "device": "cuda", "impl": "hf", "mode": "graphs"},
                      ("adapterdrop",), (32,), {("adapterdrop", 32): grid},
                      {("adapterdrop", 32): {(i, j): v for i, v in enumerate(verdicts) for j in range(width)}})
    assert clipped_texts(verdict_figure(data)) == []


# --- the first screen --------------------------------------------------------------------------------------------


def test_the_report_opens_with_what_moved_then_what_could_be_seen_then_the_figures(tmp_path):
    """The issue's first screen was a run-on paragraph quoting two different detectable changes, and a verdict table
    of every metric of every cell. Now: the headline, one row per cell that moved, one sentence of what could be
    detected (one figure per metric, said once), the figures; the method and all verdicts folded."""
    from perfsuite.report import render_report

    results, doc = syn.planted_comparison()
    files = render_report(results, tmp_path, comparison=doc, vector=None)
    page = html.unescape(files.index.read_text())
    order = [page.index(x) for x in ("1 regression among 4 cells compared with this machine's baseline (5 runs).",
                                     "<h3>What moved</h3>", "What this comparison could detect",
                                     "change-slowdown.png", "<details class=\"method\">", "<h3>Runs</h3>")]
    assert order == sorted(order)
    first = page[:page.index("<details class=\"method\">")]
    moved = first[first.index("<h3>What moved</h3>"):first.index("What this comparison could detect")]
    assert moved.count("<tr") == 2 and "latency[lora-r8-b1-s32]" in moved  # header and the one regression
    assert "+12.0 pp" in moved and "[+8.1, +15.9] pp, p = 0.0004" in moved and "houlsby" not in moved
    assert "1 new (no baseline yet): latency[lin-r8-b1-s32]" in first
    # the detectable change: the median of the judged metrics' own figure, once on the page
    assert "a change of about 15.2 pp in slow-down or 6.0 % in time" in first
    assert page.count("could detect") == 1 and "must move at least" not in page and "detects changes above" not in page
    fold = page[page.index("<details class=\"method\">"):page.index("<h3>Runs</h3>")]
    assert "per-run error control" in fold and "latency[houlsby-r8-b1-s32]" in fold  # every verdict, folded
    md = files.summary.read_text()
    assert md.index("**1 regression among") < md.index("#### What moved") < md.index("could detect") < md.index(
        "<details><summary>Method")


def test_a_reference_comparison_says_nothing_can_be_confirmed(tmp_path):
    from perfsuite.report import render_report

    results, doc = syn.planted_comparison()
    doc = syn.comparison_doc([(c["cell_id"], "reference", []) for c in doc["cells"]], mode="reference")
    page = html.unescape(render_report(results, tmp_path, comparison=doc, vector=None).index.read_text())
    assert "No confirmed change among 4 cells compared with another machine's baseline, for reference only." in page
    assert "Nothing here can be confirmed: REFERENCE ONLY" in page and "What moved" not in page
