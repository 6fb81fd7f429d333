"""perfsuite.report.tables: the numbers each heatmap draws and the tables printed under it."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from perfsuite.cells.grid import ADAPTER_NAMES
from perfsuite.formats.comparison import ComparisonError, check_comparison, load_comparison, read_comparison
from perfsuite.report.data import MISSING, ReportError, change_data, latency_data, recompute_data, report_frame
from perfsuite.report.phi_data import check_phi, phi_frame, subspace_groups, subspace_records
from perfsuite.report.tables import latency_tables, missing_lines, recompute_tables, subspace_tables
from perfsuite.formats.results import load_results

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
SMOKE = load_results([FIXTURES / "latency_smoke.json"])
PARTIAL = load_results([FIXTURES / "latency_partial.json"])
RECOMPUTE = load_results([FIXTURES / "recompute_fig13.json"])
SUBSPACE = load_results([FIXTURES / "subspace_small.json"])
COMPARISON = read_comparison(FIXTURES / "comparison.json")
# LLM-42 Fig. 13, batch → recompute % per window 16, 32, …; the fixture's plain-model panel holds exactly these.
FIG13 = {1: [3.44, 6.81, 12.42, 24.92, 46.41, 42.33], 2: [3.31, 6.03, 13.86, 28.96, 42.28], 4: [2.97, 6.47, 14.09, 27.85],
         8: [3.11, 6.49, 13.83], 16: [3.09, 6.40], 32: [2.82]}


def slowdown(results, cell_id):
    (value,) = results.frame.loc[results.frame["cell_id"] == cell_id, "slowdown_pct"]
    return value


# --- latency ---------------------------------------------------------------------------------------


def test_latency_grid_holds_the_frame_numbers():
    (data,) = latency_data(SMOKE.frame)
    assert data.stem == "latency" and data.setup == {"model": "tiny", "dtype": "float32", "device": "cpu"}
    assert data.adapters == ("none", *ADAPTER_NAMES) and data.seq_lens == (32,)
    g = data.grid("houlsby", 32)
    assert (g.rows, g.cols, g.title) == ((8,), (1, 4), "Seq Len = 32")
    np.testing.assert_allclose(g.values, [[slowdown(SMOKE, f"latency[houlsby-r8-b{b}-s32]") for b in (1, 4)]])
    assert g.values[0, 0] == pytest.approx(29.697487796306454)
    np.testing.assert_allclose(data.grid("none", 32).values,
                               [[slowdown(SMOKE, f"latency[none-r0-b{b}-s32]") for b in (1, 4)]])
    tg = data.times[("houlsby", 32)]
    assert tg.values[0, 1] == pytest.approx(SMOKE.frame.set_index("cell_id").loc["latency[houlsby-r8-b4-s32]", "time_ms"])


def test_the_plain_model_is_a_row_of_its_own_not_an_r0_row_in_every_adapter_panel():
    (data,) = latency_data(SMOKE.frame)
    assert data.grid("none", 32).rows == (0,)
    assert all(0 not in data.grid(a, 32).rows for a in data.adapters if a != "none")
    assert len(data.cell_statuses()) == 18  # the r = 0 cells once


def test_the_plain_model_is_the_zero_of_the_slowdown_scale_when_it_is_not_timed_against_itself():
    """Schema 2: the r = 0 cell has a time but no slow-down (nothing to pair it with): its row reads 0 %, not a
    hole; a plain cell without a time stays 'no data'."""
    frame = SMOKE.frame.copy()
    plain = frame["adapter"] == "none"
    frame.loc[plain, "slowdown_pct"] = np.nan
    (data,) = latency_data(frame)
    g = data.grid("none", 32)
    assert list(g.values[0]) == [0.0, 0.0] and list(g.status[0]) == ["ok", "ok"]
    assert data.grid("lora", 32).values[0, 0] == pytest.approx(slowdown(SMOKE, "latency[lora-r8-b1-s32]"))
    frame.loc[plain & (frame["batch"] == 4), "time_ms"] = np.nan
    (data,) = latency_data(frame)
    assert list(data.grid("none", 32).status[0]) == ["ok", "no_data"]


def test_partial_results_show_oom_and_missing_never_zero():
    (data,) = latency_data(PARTIAL.frame)
    assert data.adapters == ("none", "houlsby", "lin")
    h, lin = data.grid("houlsby", 32), data.grid("lin", 32)
    assert h.status == (("ok", "oom"),) and data.grid("none", 32).status == (("ok", "ok"),)
    assert lin.status == (("ok", MISSING),)
    assert math.isnan(h.values[0, 1]) and math.isnan(lin.values[0, 1])
    lines = missing_lines(PARTIAL, data.cell_statuses())
    assert lines == ["not in these results: recompute, subspace",
                     "latency[houlsby-r8-b4-s32] did not run (oom: CUDA out of memory. Tried to allocate 2.00 GiB)",
                     "latency[lin-r8-b4-s32]: in no result file"]


def test_latency_table_is_the_drawn_numbers():
    (data,) = latency_data(PARTIAL.frame)
    slow, times = latency_tables(data)
    assert slow.columns == ("adapter", "seq len", "r", "b=1", "b=4")
    # the plain model's slow-down is 0 by definition: no row of it; its times are a row of the time table
    assert [r[:3] for r in slow.rows] == [("AdapterH", "32", "8"), ("AdapterL", "32", "8")]
    houlsby = slow.rows[0]
    assert houlsby[3].rstrip("†") == f"{slowdown(PARTIAL, 'latency[houlsby-r8-b1-s32]'):.1f}" == "29.7"
    assert houlsby[4] == "OOM" and slow.rows[1][4] == "missing"
    assert "noisy" in slow.note and houlsby[3].endswith("†")  # the smoke run's IQR is 18 % of the median
    assert times.collapsed and [r[:3] for r in times.rows][0] == ("none", "32", "0") and times.rows[1][3] == "0.330"


def test_one_figure_per_setup():
    frame = SMOKE.frame.copy()
    frame.loc[frame["adapter"] == "lora", "dtype"] = "bfloat16"
    stems = [d.stem for d in latency_data(frame)]
    assert stems == ["latency-tiny-bfloat16-cpu", "latency-tiny-float32-cpu"]


def test_no_data_when_the_cell_ran_without_timing():
    frame = SMOKE.frame.copy()
    frame.loc[frame["cell_id"] == "latency[lora-r8-b1-s32]", "slowdown_pct"] = float("nan")
    (data,) = latency_data(frame)
    assert data.grid("lora", 32).status[0][0] == "no_data"
    assert "latency[lora-r8-b1-s32]: ran, but recorded no number" in missing_lines(SMOKE, data.cell_statuses())


# --- recompute -------------------------------------------------------------------------------------


def test_recompute_grid_matches_the_paper_and_leaves_the_budget_blank():
    (data,) = recompute_data(RECOMPUTE.frame)
    assert [p.key for p in data.panels] == [("none", 0, 128, 512), ("lora", 16, 128, 512)]
    plain = data.panels[0]
    assert plain.cost.rows == (32, 16, 8, 4, 2, 1) and plain.cost.cols == (16, 32, 64, 128, 256, 512)
    for i, b in enumerate(plain.cost.rows):
        n = len(FIG13[b])
        np.testing.assert_allclose(plain.cost.values[i, :n], FIG13[b])
        assert plain.cost.status[i][n:] == ("outside_budget",) * (6 - n)
        assert np.isnan(plain.cost.values[i, n:]).all()
    assert data.cell_statuses()["recompute[none-r0-b32-s128-w512-g512]"] == "outside_budget"


def test_normalised_throughput_is_over_the_panel_best():
    (data,) = recompute_data(RECOMPUTE.frame)
    frame = RECOMPUTE.frame
    for p in data.panels:
        mine = frame[(frame["adapter"] == p.key[0]) & (frame["status"] == "ok")]
        best = mine["throughput_tok_s"].max()
        assert p.best_tok_s == pytest.approx(best)
        assert np.nanmax(p.throughput.values) == pytest.approx(1.0)
        cid = f"recompute[{p.key[0]}-r{p.key[1]}-b2-s128-w64-g512]"
        (tput,) = mine.loc[mine["cell_id"] == cid, "throughput_tok_s"]
        assert p.throughput.values[p.cost.rows.index(2), 2] == pytest.approx(tput / best)


def test_recompute_tables():
    (data,) = recompute_data(RECOMPUTE.frame)
    cost, tput, *_ = recompute_tables(data)
    assert cost.columns == ("batch \\ window", "16", "32", "64", "128", "256", "512")
    assert cost.rows[-1] == ("1", "3.44%", "6.81%", "12.42%", "24.92%", "46.41%", "42.33%")
    assert cost.rows[0] == ("32", "2.82%", "", "", "", "", "")  # over the budget: blank, as in the figure
    assert "outside the token budget" in cost.note and "1.00 = " in tput.note
    assert cost.title.startswith("plain model (prompt 128, 512 output tokens)")


# --- subspace --------------------------------------------------------------------------------------


def test_subspace_groups_follow_the_paper_figures():
    phis = subspace_records(SUBSPACE.frame)
    assert len(phis) == 10
    seed, rank = subspace_groups(phis)
    assert seed.stem == "subspace-seed-r8-r8" and rank.stem == "subspace-rank-r4-r8"
    assert [(p.layer, p.matrix) for p in seed.panels] == [(0, "q"), (0, "v"), (1, "q"), (1, "v")]
    assert [(c.r_a, c.r_b) for c in seed.controls] == [(8, 8)] and [(c.r_a, c.r_b) for c in rank.controls] == [(4, 8)]
    assert seed.title == "$\\phi({A}_{r=8}, A'_{r=8}, i, j)$" and "A_{r=8}, i" in rank.title
    raw = SUBSPACE.frame["subspace"].iloc[0][0]
    np.testing.assert_array_equal(seed.panels[0].phi, np.array(raw["phi"]))


def test_subspace_tables_and_long_csv():
    seed, _ = subspace_groups(subspace_records(SUBSPACE.frame))
    summary, *grids = subspace_tables(seed)
    assert summary.column("matrix") == ["q", "v", "q", "v", ""]
    assert summary.column("φ(1,1)")[0] == f"{seed.panels[0].phi[0, 0]:.3f}"
    assert len(grids) == 5 and grids[0].rows[0][1] == f"{seed.panels[0].phi[0, 0]:.2f}"
    long = phi_frame(seed.panels)
    assert len(long) == 4 * 64
    assert long.iloc[9].to_dict() | {"phi": 0} == {"layer": 0, "matrix": "q", "comparison": "seed",
                                                    "label": seed.panels[0].label, "r_a": 8, "r_b": 8, "i": 2, "j": 2,
                                                    "phi": 0}
    assert long.iloc[9]["phi"] == seed.panels[0].phi[1, 1]


@pytest.mark.parametrize("record, message", [
    ({"layer": 0, "matrix": "q"}, "has no 'phi' grid"),
    ({"phi": [[0.5, 0.1], [0.2]]}, "'phi' is not a grid of numbers"),
    ({"phi": [0.5, 0.1]}, "must be r_a lists of r_b numbers"),
    ({"phi": [[0.5, 0.1]], "r_a": 2}, "r_a = 2 but 'phi' has 1 rows"),
    ("phi", "expected a comparison record"),
])
def test_malformed_phi_records(record, message):
    with pytest.raises(ReportError, match=message):
        check_phi(record, "x.json: comparison 3")


# --- comparison files and the change heatmap ------------------------------------------------------


def test_a_version_1_comparison_file_migrates():
    """The fixture is a format-1 file: one metric per cell, named as the old code named them."""
    cells = {c.cell_id: c for c in COMPARISON.cells}
    reg = cells["latency[houlsby-r8-b1-s32]"]
    assert reg.verdict == "regression" and reg.moved == ("time",)
    (m,) = reg.metrics
    assert (m.metric, m.unit, m.change, m.ci_low, m.ci_high) == ("time", "%", 31.0, 18.2, 45.3)
    assert cells["latency[lin-r8-b4-s32]"].moved == () and COMPARISON.gating is True
    assert COMPARISON.parts[0].baseline == "baseline/main-2026-11-20.json"


@pytest.mark.parametrize("doc, message", [
    ({"cells": []}, "not a perfsuite comparison"),
    ({"perfsuite_comparison": 6, "cells": []}, "comparison format 6 is newer than this perfsuite reads"),
    ({"perfsuite_comparison": "1", "cells": []}, "unknown comparison format '1'"),
    ({"perfsuite_comparison": 1, "cells": {}}, "cannot migrate comparison format 1 to 2: 'cells' is not a list"),
    ({"perfsuite_comparison": 2, "cells": "x", "parts": []}, "'cells' is not a list of verdicts"),
])
def test_bad_comparison_files(tmp_path, doc, message):
    path = tmp_path / "cmp.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ComparisonError, match=f"{path}: .*{message}"):
        load_comparison(path)
    assert check_comparison({"perfsuite_comparison": 1, "cells": []})["cells"] == []


def test_change_data_draws_the_comparison_in_the_latency_layout():
    frame = load_results([FIXTURES / "latency_smoke.json"]).frame
    (time,) = change_data(frame, COMPARISON)  # the fixture compared times only: no slow-down figure
    assert time.metric == "time" and time.stem == "change-time"
    g = time.panels[("houlsby", 32)]
    assert g.rows == (8,) and g.cols == (1, 4)
    assert g.values[0, 0] == pytest.approx(31.0) and time.marks("houlsby", 32) == {(0, 0): "regression"}
    # the plain model's own time change: its own row, once
    assert time.panels[("none", 32)].rows == (0,) and time.panels[("none", 32)].values[0, 0] == pytest.approx(0.4)
    assert time.marks("lora", 32) == {(0, 1): "regression"}
    assert time.marks("parallel", 32) == {(0, 0): "improvement"}
    assert time.marks("lin", 32) == {} and "inconclusive" in time.verdicts[("lin", 32)].values()


# --- the frame as CSV ------------------------------------------------------------------------------


def test_report_frame_keeps_run_metadata_and_flattens():
    results = load_results([FIXTURES / "latency_smoke.json", FIXTURES / "subspace_small.json"])
    frame = report_frame(results)
    assert "subspace" not in frame.columns
    row = frame.set_index("cell_id").loc["latency[lin-r8-b1-s32]"]
    assert row["run_profile"] == "smoke" and row["run_commit"].startswith("f493f28")
    assert row["batch"] == 1 and str(frame["batch"].dtype) == "Int64"
    assert json.loads(row["samples_ms"])[0] == pytest.approx(
        results.frame.set_index("cell_id").loc["latency[lin-r8-b1-s32]", "samples_ms"][0])


def test_many_cells_with_one_reason_share_a_line():
    results = load_results([FIXTURES / "recompute_fig13.json"])
    results.frame = results.frame.assign(status="no_device", reason="profile 'recompute' needs a GPU")
    lines = missing_lines(results)
    assert lines[1] == ("72 cells did not run (no_device: profile 'recompute' needs a GPU): "
                        "recompute[lora-r16-b1-s128-w16-g512], recompute[lora-r16-b1-s128-w32-g512], "
                        "recompute[lora-r16-b1-s128-w64-g512], recompute[lora-r16-b1-s128-w128-g512], "
                        "recompute[lora-r16-b1-s128-w256-g512] and 67 more")
    assert len(lines) == 2


def test_the_gpu_state_sits_beside_the_times_only_where_a_gpu_recorded_one():
    from perfsuite.report.tables import gpu_state_table

    assert gpu_state_table([{"cell_id": "a", "gpu_state_before": None}]) is None  # a CPU run: no table, no zeros
    state = {"sm_clock_mhz": 1980, "max_sm_clock_mhz": 1980, "temperature_c": 60, "power_w": 400.0}
    table = gpu_state_table([{"cell_id": "latency[lora-r8-b1-s128]", "gpu_state_before": state,
                              "gpu_state_after": state | {"sm_clock_mhz": 1410}, "gpu_throttled": "SM clock 1410 MHz",
                              "remeasured_throttled": True}])
    assert table.rows == (("latency[lora-r8-b1-s128]", "1980 → 1410", "1980", "60", "400", "SM clock 1410 MHz",
                           "yes"),)
