"""The mode figures: a latency heatmap per mode, and eager vs graphs, from a synthetic GPU-shaped results file."""

import numpy as np
import pytest

import synthetic as syn
from perfsuite.report.data import latency_data
from perfsuite.report.modes import mode_gap_data, mode_gap_figure, mode_gap_tables
from perfsuite.report.page import render_report


@pytest.fixture(scope="module")
def gpu_results():
    return syn.results(syn.gpu_modes_records(), profile="paper")


def test_each_mode_gets_its_own_latency_figure(gpu_results):
    stems = sorted(d.stem for d in latency_data(gpu_results.frame))
    assert stems == ["latency-gpt2-medium-float16-cuda", "latency-gpt2-medium-float16-cuda-graphs"]


def test_eager_vs_graphs_pairs_each_cell_with_its_twin_and_the_gap_is_the_launch_overhead(gpu_results):
    (data,) = mode_gap_data(gpu_results.frame)
    assert data.other == "graphs" and data.setup == {"model": "gpt2-medium", "dtype": "float16", "device": "cuda"}
    assert data.device_name == syn.SYNTHETIC_GPU
    eager, graphs, gap = (g[("lora", 128)] for g in (data.eager, data.moded, data.gap))
    i, j = eager.rows.index(10), eager.cols.index(1)
    assert gap.values[i, j] == pytest.approx(eager.values[i, j] - graphs.values[i, j])
    # b1 × s128: eager is launch-bound (+52 % for 312 more launches), a graph replay pays the device work only
    assert eager.values[i, j] > 40 and graphs.values[i, j] < eager.values[i, j] / 2
    assert np.all(gap.values[:, :][np.isfinite(gap.values)] >= -1.0)
    (table,) = mode_gap_tables(data)
    assert table.rows[0][:3] == ("AdapterH", "128", "10") and "→" in table.rows[0][3]


def test_the_report_draws_the_eager_vs_graphs_figure_titled_synthetic(gpu_results, tmp_path):
    files = render_report(gpu_results, tmp_path, vector=None)
    names = sorted(p.name for p in files.figures)
    assert "modes-eager-vs-graphs.png" in names and "latency-gpt2-medium-float16-cuda-graphs.png" in names
    fig = mode_gap_figure(mode_gap_data(gpu_results.frame)[0])
    assert "synthetic" in fig._suptitle.get_text()
    assert "Eager vs graphs" in files.summary.read_text()


def test_no_gap_figure_without_both_modes():
    eager_only = [r for r in syn.gpu_modes_records() if r.cell.mode == "eager"]
    assert mode_gap_data(syn.results(eager_only, profile="paper").frame) == []


def test_the_committed_synthetic_file_is_what_the_planting_function_writes(tmp_path):
    """tests/fixtures/results/modes_gpu_synthetic.json (and docs/img's example figure) come from gpu_modes_records;
    `perfsuite report` on it draws the eager-vs-graphs figure."""
    from pathlib import Path

    from perfsuite.formats.results import load_results

    path = Path(__file__).parents[1] / "fixtures" / "results" / "modes_gpu_synthetic.json"
    loaded = load_results([path])
    planted = syn.gpu_modes_records()
    assert sorted(r.id for r in loaded.records) == sorted(r.id for r in planted)
    assert {r.env["device_name"] for r in loaded.records} == {syn.SYNTHETIC_GPU}
    assert len(mode_gap_data(loaded.frame)) == 1


def test_a_compiled_cell_that_recompiled_in_its_loop_is_named_under_its_figure(tmp_path):
    recs = [r for r in syn.gpu_modes_records(adapters=("lora",), ranks=(10,), batches=(1,), seq_lens=(128,))
            if r.cell.mode == "eager"]
    from dataclasses import replace

    compiled = [replace(r, cell=replace(r.cell, mode="compile")).with_metrics(recompiles_in_loop=int(r.cell.rank > 0))
                for r in recs]
    files = render_report(syn.results(recs + compiled, profile="paper"), tmp_path, vector=None)
    text = files.summary.read_text()
    assert "Recompiled inside the timed loop (times include compilation): latency[lora-r10-b1-s128-compile]." in text
    assert text.count("Recompiled inside") == 1


def test_latency_tables_add_device_slowdown_and_host_bound_share_where_events_measured_them(gpu_results):
    from perfsuite.report.tables import latency_tables

    eager = next(d for d in latency_data(gpu_results.frame) if "mode" not in d.setup)
    titles = [t.title for t in latency_tables(eager)]
    assert titles[2:] == ["Slow-down against r = 0 on device time (%), CUDA events",
                          "Host-bound share of wall time (%): the device idle"]
    device = eager.device[("lora", 128)]
    assert eager.device[("none", 128)].values[0, 0] == 0.0  # the plain model's row: 0 by definition
    lora = next(r for r in syn.gpu_modes_records() if r.id == "latency[lora-r10-b1-s128]")
    assert device.values[0, 0] == pytest.approx(lora.get("device_slowdown_pct"))


def test_cpu_results_have_no_device_tables():
    from perfsuite.report.tables import latency_tables

    cpu = syn.results([syn.record(syn.cell("lora"), seed=1), syn.record(syn.cell("none"), seed=2)])
    (data,) = latency_data(cpu.frame)
    assert not data.device and len(latency_tables(data)) == 2
