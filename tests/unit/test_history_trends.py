"""Trend figures and pages: from two real smoke runs, from the issue's synthetic history (the step drawn and
listed under its figure), inside `perfsuite report`; downsampling keeps panels small."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ruptures", reason="ruptures does not install on this Python")

from perfsuite.cells.grid import get_profile  # noqa: E402
from perfsuite.cli import main  # noqa: E402
from perfsuite.history.synthetic import build_store  # noqa: E402
from perfsuite.history.trends import SMALL_POINTS, downsample  # noqa: E402

ROOT = Path(__file__).parents[2]
# Two real CPU smoke runs of the whole grid, committed (different commits and days).
REAL_RUNS = [ROOT / "tests/fixtures/results/smoke_all_workloads.json", ROOT / "reports/smoke-cpu/results.json"]
STEPPED = "latency[lora-r8-b1-s32]"


def test_two_real_smoke_runs_in_a_fresh_store_render_a_trends_page(tmp_path, capsys):
    store = tmp_path / "h.sqlite"
    for path in REAL_RUNS:
        assert main(["history", "add", str(path), "--store", str(store)]) == 0
    assert main(["history", "show", "--store", str(store)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    # the fixture's 23 cells and the committed reference run's 32 (its 9 decode steps and 4 recompute cells of other
    # ids are new): 36 cells; the runs differ in threads (2, then 1), a setup of its own, so every series is one
    # night of one run (each cell's raw time, ratios, memory and exact outcomes where recorded): 152 series
    assert last.startswith("0 change points (0 filed) in 152 series of 36 cells, 2 runs"), last
    assert main(["history", "report", "--store", str(store), "--out", str(tmp_path / "page")]) == 0
    page = (tmp_path / "page" / "index.html").read_text()
    assert "Trends — latency, lora, slowdown_ratio" in page and "No change point" in page
    for png in (tmp_path / "page").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "page").glob("*.png"))) >= 10


@pytest.fixture(scope="module")
def stepped_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("trends") / "store.sqlite"
    cells = [c for c in get_profile("smoke").cells(device="cpu") if c.workload == "latency"]
    build_store(path, cells, 60, steps={STEPPED: (40, 5.0)}, seed=13)
    return path


def test_the_trend_page_draws_the_step_and_lists_it_under_the_figure(stepped_store, tmp_path, capsys):
    out = tmp_path / "page"
    assert main(["history", "report", "--store", str(stepped_store), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    large = out / "trend-latency-lora-r8-b1-s32-slowdown_ratio-"
    (figure,) = out.glob(large.name + "*.png")
    assert f'src="{figure.name}"' in page and 'loading="lazy"' in page
    assert "Trend — latency[lora-r8-b1-s32], slowdown_ratio" in page
    section = page.split("Trend — latency[lora-r8-b1-s32]", 1)[1]
    assert "Its change points" in section and re.search(r'<td class="num">\+[3-7]\.\d %</td>', section)
    assert "<td>FILED</td>" in section.split("<h2")[0], "20 nights at +5 %: its issue column says filed"
    with open(out / "trends.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["cell_id"] == STEPPED and r["metric"] == "slowdown_ratio"]
    assert len(rows) == 60 and sum(bool(r["step_pct"]) for r in rows) == 1
    levels = sorted({float(r["level"]) for r in rows})
    assert len(levels) == 2 and 1.03 < levels[1] / levels[0] < 1.07


def test_report_with_history_adds_the_trend_sections(stepped_store, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(REAL_RUNS[0]), "--history", str(stepped_store), "--out", str(out),
                 "--vector", "none"]) == 0
    page = (out / "index.html").read_text()
    assert "Latency —" in page and "Trends — latency, lora, slowdown_ratio" in page
    assert page.index("Latency —") < page.index("Trends —")


def test_report_on_a_missing_store_is_one_line(tmp_path, capsys):
    assert main(["history", "report", "--store", str(tmp_path / "none.sqlite"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 2000), target=st.integers(2, SMALL_POINTS))
def test_downsampling_keeps_at_most_the_target_within_the_range(n, target):
    values = np.random.default_rng(n).lognormal(size=n)
    x, y = downsample(values, target)
    assert len(x) == len(y) == min(n, target)
    assert np.all(np.diff(x) > 0) and x[0] >= 0 and x[-1] <= n - 1
    assert values.min() <= y.min() and y.max() <= values.max()


def test_series_are_named_after_the_whole_adapter_name():
    """Panels of hyphenated adapters dropped the first word: fused-lora's read "lora-r8-b1-s32", lora-merged's
    "merged-r8-b1-s32", as if they were LoRA's."""
    from types import SimpleNamespace

    from perfsuite.cells.grid import Cell
    from perfsuite.history.chart import series_label

    for adapter in ("fused-lora", "lora-merged", "lora"):
        s = SimpleNamespace(series=SimpleNamespace(cell=Cell("latency", adapter, 8, batch=1, seq_len=32)))
        assert series_label(s) == "r8-b1-s32"


def test_a_page_without_change_points_shows_no_empty_table(tmp_path):
    from perfsuite.history.changes import find_changes
    from perfsuite.history.store import open_store
    from perfsuite.history.trends import render_trends

    cells = [c for c in get_profile("smoke").cells(device="cpu") if c.workload == "latency"][:4]
    build_store(tmp_path / "h.sqlite", cells, 12)
    with open_store(tmp_path / "h.sqlite") as store:
        page = render_trends(find_changes(store), tmp_path / "t").index.read_text()
    assert "<h3>Change points</h3>" not in page and "No change point: every series is at one level" in page
    assert page.count("class=\"trend-chart\"") >= 1 and page.count("<script>") == 1  # the chart script, once
