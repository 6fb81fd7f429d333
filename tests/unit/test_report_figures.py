"""perfsuite.report.figures: panel layout, labels and cell texts (never pixels), from frames alone."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from perfsuite.cells.grid import Cell, latency_cells
from perfsuite.report import (ReportError, latency_data, latency_figure, recompute_data, recompute_figure,
                              render_subspace, subspace_figure, subspace_groups, subspace_records)
from perfsuite.report.phi_data import check_phi, panel_title
from perfsuite.formats.results import load_results, tidy_frame

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
PAPER_SEQ = (128, 256, 512)
PAPER_BATCH = (1, 2, 4, 8, 16, 32)


def paper_frame():
    """LoRA Fig. 5's grid (AdapterH, AdapterL; r 0/10/100/250; 6 batches; 3 seq lens) with made-up slow-downs,
    one cell out of memory and one lost."""
    rows = []
    for c in latency_cells("gpt2-medium", ("houlsby", "lin"), (0, 10, 100, 250), PAPER_BATCH, PAPER_SEQ):
        key = (c.adapter, c.rank, c.batch, c.seq_len)
        if key == ("lin", 100, 16, 256):
            continue
        base = {"cell_id": c.id, **c.to_dict(), "source": "paper.json"}
        if key == ("houlsby", 250, 32, 512):
            rows.append({**base, "status": "oom", "reason": "CUDA out of memory"})
            continue
        slow = 0.0 if c.rank == 0 else 30.0 / (1 + np.log2(c.batch)) * 128 / c.seq_len
        rows.append({**base, "status": "ok", "reason": None, "slowdown_pct": slow, "time_ms": 5.0, "iqr_pct": 1.0})
    return tidy_frame(rows)


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def hatched(ax) -> int:
    return sum(isinstance(p, Rectangle) and bool(p.get_hatch()) for p in ax.patches)


def test_latency_layout_like_lora_figure_5():
    (data,) = latency_data(paper_frame())
    fig = latency_figure(data)
    panels, bars = fig.axes[:6], fig.axes[6:]
    assert len(fig.axes) == 2 * 3 + 1 and len(bars) == 1  # one shared colour bar
    assert [ax.get_title() for ax in panels[:3]] == ["Seq Len = 128", "Seq Len = 256", "Seq Len = 512"]
    assert [ax.get_title() for ax in panels[3:]] == ["", "", ""]
    # the paper's names, the command line's under them (the figure's legend of names)
    assert [panels[0].get_ylabel(), panels[3].get_ylabel()] == ["Adapter$^H$\n(houlsby)", "Adapter$^L$\n(lin)"]
    assert [ax.get_xlabel() for ax in panels] == ["", "", "", "Batch Size", "Batch Size", "Batch Size"]
    # no r = 0 row: the plain model against itself is 0 by definition (it filled a row of 0.0 per adapter)
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["10", "100", "250"]
    assert [t.get_text() for t in panels[3].get_xticklabels()] == [str(b) for b in PAPER_BATCH]
    assert bars[0].get_ylabel() == "slow-down (%)" and "against the plain model (r = 0)" in fig.get_suptitle()
    assert texts(panels[0])[0] == "30"
    # the out-of-memory and the lost cell are hatched and say so; every other cell shows its number
    assert "OOM" in texts(panels[2]) and hatched(panels[2]) == 1
    assert "missing" in texts(panels[4]) and hatched(panels[4]) == 1
    assert sum(hatched(ax) for ax in panels) == 2
    assert all(len(texts(ax)) == 18 for ax in panels)


def test_latency_smoke_layout_one_row_per_adapter():
    (data,) = latency_data(load_results([FIXTURES / "latency_smoke.json"]).frame)
    fig = latency_figure(data)
    assert len(fig.axes) == 8 + 1
    assert fig.axes[0].get_title() == "Seq Len = 32" and fig.axes[7].get_xlabel() == "Batch Size"
    assert [ax.get_ylabel() for ax in fig.axes[:8]] == [
        "Adapter$^H$\n(houlsby)", "Adapter$^L$\n(lin)", "Adapter$^P$\n(pfeiffer)", "Adapter$^D$\n(adapterdrop)",
        "Adapter$^{\\parallel}$\n(parallel)", "Adapter$^R$\n(spectral-r)", "LoRA\n(lora)", "LoRA (merged)\n(lora-merged)"]
    assert texts(fig.axes[0]) == ["30", "18"]
    # a warm-up outlier (spectral-r, 118 %) caps the colour scale, with an arrow on the bar, not a black figure
    assert fig.axes[-1].get_ylim()[1] < 100 and texts(fig.axes[5])[0] == "118"
    assert "tiny, float32, cpu" in fig.get_suptitle()


def test_recompute_layout_like_llm42_figure_13():
    (data,) = recompute_data(load_results([FIXTURES / "recompute_fig13.json"]).frame)
    fig = recompute_figure(data)
    assert len(fig.axes) == 2 * 2 + 2  # cost and throughput per panel row, a colour bar per column
    cost, tput = fig.axes[0], fig.axes[1]
    assert cost.get_ylabel() == "plain model\nBatch Size" and cost.get_xlabel() == "Window Size"
    assert fig.axes[2].get_ylabel() == "LoRA r = 16\nBatch Size" and tput.get_ylabel() == "Batch Size"
    assert [t.get_text() for t in cost.get_yticklabels()] == ["32", "16", "8", "4", "2", "1"]
    assert [t.get_text() for t in cost.get_xticklabels()] == ["16", "32", "64", "128", "256", "512"]
    assert [ax.get_title() for ax in fig.axes[:4]] == ["Recompute cost (% of output tokens)",
                                                       "Throughput / best cell of the row", "", ""]
    assert fig.get_suptitle().endswith("gpt2-medium, bfloat16, cuda, prompt 128, 512 output tokens")
    assert len(texts(cost)) == 21 and hatched(cost) == 0  # the 15 cells over the budget are blank
    assert "46.41%" in texts(cost) and "1.00" in texts(tput)
    assert [fig.axes[4].get_ylabel(), fig.axes[5].get_ylabel()] == ["Recompute Cost (%)", "normalised throughput"]


def test_subspace_layout_like_lora_figure_4():
    seed, rank = subspace_groups(subspace_records(load_results([FIXTURES / "subspace_small.json"]).frame))
    fig = subspace_figure(seed)
    assert len(fig.axes) == 4 + 1 + 1  # (layer, matrix) panels, the random-Gaussian control, one colour bar
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert titles == ["Layer 0  $\\Delta W_{q}$", "Layer 0  $\\Delta W_{v}$", "Layer 1  $\\Delta W_{q}$",
                      "Layer 1  $\\Delta W_{v}$", "random Gaussian"]
    assert all(ax.get_ylabel() == "i" and ax.get_xlabel() == "j" for ax in fig.axes[:5])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(i) for i in range(1, 9)]
    assert fig.axes[0].get_ylim() == (8.5, 0.5)  # i = 1 at the top, i down
    assert fig.get_suptitle() == "$\\phi({A}_{r=8}, A'_{r=8}, i, j)$"
    assert fig.axes[-1].get_ylabel() == "$\\phi$"
    assert len(subspace_figure(rank).axes) == 6


def test_subspace_eight_layers_wrap_two_layers_per_row():
    rng = np.random.default_rng(7)
    comps = [{"layer": layer, "matrix": m, "comparison": "seed", "label": "s0 vs s1", "phi": rng.random((64, 64))}
             for layer in (1, 32, 64, 96) for m in ("q", "v")]
    (group,) = subspace_groups([check_phi(c, f"comparison {k}") for k, c in enumerate(comps)])
    fig = subspace_figure(group)
    assert len(fig.axes) == 8 + 1
    positions = [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes[:8]]
    assert positions == [(2, 4)] * 8  # LoRA Fig. 7: 2 rows × 4 columns
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(j) for j in range(1, 65, 8)]


def test_smaller_groups_get_the_corner_of_a_larger_control():
    rng = np.random.default_rng(1)
    comps = [check_phi({"layer": 0, "matrix": "q", "comparison": "seed", "phi": rng.random((4, 4))}, "a"),
             check_phi({"layer": 0, "matrix": "q", "comparison": "control", "label": "G", "phi": rng.random((8, 8))},
                       "b")]
    (group,) = subspace_groups(comps)
    (control,) = group.controls
    np.testing.assert_array_equal(control.phi, comps[1].phi[:4, :4])
    assert control.label == "G (top-left 4 × 4 of 8 × 8)" and panel_title(control) == "random Gaussian"
    (only,) = subspace_groups(comps[1:])
    assert only.panels == (comps[1],) and only.stem == "subspace-control-r8-r8"


def test_render_subspace_takes_records_or_comparison_objects(tmp_path):
    from perfsuite.subspace.phi import compare, gaussian_pair

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 32)), rng.standard_normal((4, 32))
    g1, g2 = gaussian_pair(4, 4, 32, seed=1)
    comps = [compare(2, "c_attn", "seed", "seed 0 vs 1", a, b), compare(2, "c_attn", "control", "Gaussian", g1, g2)]
    paths = render_subspace(comps, tmp_path, vector=None)
    assert paths == [tmp_path / "subspace-seed-r4-r4.png"] and paths[0].stat().st_size > 1000
    with pytest.raises(ReportError, match="comparison 0: comparison record has no 'phi' grid"):
        render_subspace([{"layer": 0}], tmp_path)


def test_cells_are_cells_not_zeros():
    """A grid with no numbers at all still draws (hatched, with the reason), it never shows zeros."""
    c = Cell("latency", "lora", 8, batch=1, seq_len=32)
    frame = tidy_frame([{"cell_id": c.id, **c.to_dict(), "status": "no_device", "reason": "no GPU", "source": "x"}])
    (data,) = latency_data(frame)
    fig = latency_figure(data)
    assert texts(fig.axes[0]) == ["no device"] and hatched(fig.axes[0]) == 1
