"""perfsuite.report.page and ``perfsuite report``: the files written, and that the page's tables are the frame's."""

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from perfsuite.cli import main
from perfsuite.formats.comparison import ComparisonError, load_comparison
from perfsuite.report import render_report
from perfsuite.formats.results import load_results

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
GOOD = [FIXTURES / n for n in ("latency_smoke.json", "recompute_fig13.json", "subspace_small.json")]


class Tables(HTMLParser):
    """Every <table> of a page as (title before it, rows of cell texts)."""

    def __init__(self):
        super().__init__()
        self.tables, self._heading, self._cell, self._row = [], "", None, None
        self._in = None

    def handle_starttag(self, tag, attrs):
        if tag in ("h3", "summary"):
            self._in, self._heading = tag, ""
        elif tag == "table":
            self.tables.append((self._heading, []))
        elif tag == "tr":
            self._row = []
            self.tables[-1][1].append(self._row)
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append(self._cell)
            self._cell = None
        elif tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._in:
            self._heading += data


def html_tables(path: Path) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(path.read_text())
    return {title: rows for title, rows in parser.tables}


def rendered(cell: str) -> str:
    """A Markdown cell as a reader sees it: backslash escapes and HTML entities undone (perfsuite.table.markdown_text)."""
    return html.unescape(re.sub(r"\\([\\`|\[\]()!])", r"\1", cell))


def md_table(text: str, title: str) -> list[list[str]]:
    """The Markdown table under heading ``title`` (or in <details> with that summary)."""
    start = text.index(title)
    lines = text[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[first:]:
        if not line.startswith("| "):
            break
        rows.append([rendered(c.strip()) for c in line.strip()[2:-2].split(" | ")])
    return [rows[0]] + rows[2:]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = load_results(GOOD)
    files = render_report(results, out, comparison=load_comparison(FIXTURES / "comparison.json"))
    return results, files


def test_files_written(report):
    _, files = report
    names = sorted(p.name for p in files.out_dir.iterdir())
    assert names == ["change-time.png", "change-time.svg", "index.html", "latency.png", "latency.svg", "recompute.png",
                     "recompute.svg", "results.csv",
                     "subspace-rank-r4-r8.png", "subspace-rank-r4-r8.svg", "subspace-seed-r8-r8.png",
                     "subspace-seed-r8-r8.svg", "subspace_phi.csv", "summary.md"]
    assert [p.name for p in files.figures][:4] == ["change-time.png", "change-time.svg", "latency.png", "latency.svg"]
    assert files.missing == ()


def test_csv_is_the_frame(report):
    results, files = report
    csv = pd.read_csv(files.csv)
    assert list(csv["cell_id"]) == list(results.frame["cell_id"])
    merged = csv.set_index("cell_id")
    frame = results.frame.set_index("cell_id")
    for col in ("slowdown_pct", "time_ms", "recompute_pct", "throughput_tok_s"):
        pd.testing.assert_series_equal(merged[col], frame[col].astype(float), check_names=False)
    assert set(merged["run_profile"]) == {"smoke", "recompute"}
    phi = pd.read_csv(files.out_dir / "subspace_phi.csv")
    assert len(phi) == 4 * 64 + 4 * 32 + 64 + 32


def test_html_tables_are_the_frame_numbers(report):
    results, files = report
    tables = html_tables(files.index)
    slow = tables["Slow-down against r = 0 (%)"]
    assert slow[0] == ["adapter", "seq len", "r", "b=1", "b=4"]
    frame = results.frame.set_index("cell_id")
    for who, _, r, b1, b4 in slow[1:]:
        name = {"none": "none", "AdapterH": "houlsby", "AdapterL": "lin", "AdapterP": "pfeiffer",
                "AdapterD": "adapterdrop", "Adapter∥": "parallel", "AdapterR": "spectral-r", "LoRA": "lora",
                "LoRA (merged)": "lora-merged"}[who]
        for b, text in ((1, b1), (4, b4)):
            assert text.rstrip("†") == f"{frame.loc[f'latency[{name}-r{r}-b{b}-s32]', 'slowdown_pct']:.1f}"
    cost = tables["plain model (prompt 128, 512 output tokens): recompute cost (% of output tokens rolled back)"]
    assert cost[-1] == ["1", "3.44%", "6.81%", "12.42%", "24.92%", "46.41%", "42.33%"]


def test_page_has_run_metadata_verdicts_on_top_then_figures(report):
    _, files = report
    page = files.index.read_text()
    runs = html_tables(files.index)["Runs"]
    assert runs[0][:9] == ["file", "date (UTC)", "commit", "profile", "device", "device name", "dtype", "torch", "CUDA"]
    assert runs[1][:8] == ["latency_smoke.json", "2026-11-23 00:11:33", "f493f28baa (main)", "smoke", "cpu",
                           "cpu: AMD EPYC", "float32", "2.13.0+cpu"]
    verdicts = html_tables(files.index)["Verdicts"]
    assert verdicts[0] == ["cell", "verdict", "metric", "baseline", "current", "change", "interval", "p", "runs"]
    assert [r[:2] for r in verdicts[1:3]] == [["latency[houlsby-r8-b1-s32]", "regression"],
                                             ["latency[lora-r8-b4-s32]", "regression"]]
    assert verdicts[1][5:7] == ["+31.0%", "[+18.2, +45.3]%"]
    assert page.index("Verdicts") < page.index("<h3>Runs") < page.index("latency.png") < page.index(
        "subspace-seed-r8-r8.png")
    assert page.index("change-time.png") < page.index("<h3>Runs")
    assert page.count("<img") == 5
    assert '<tr class="strong"><td>latency[houlsby-r8-b1-s32]</td><td>regression</td>' in page


def test_markdown_is_the_same_tables(report):
    _, files = report
    md = files.summary.read_text()
    assert md.startswith("## perfsuite report — recompute, smoke\n")
    assert md.index("#### What moved") < md.index("<summary>Method") < md.index("#### Runs") < md.index("### Latency") < md.index("### Recompute") < md.index(
        "### Subspace")
    tables = html_tables(files.index)
    for title in ("Runs", "Verdicts", "Slow-down against r = 0 (%)", "14 unchanged cells",
                  "LoRA r = 16 (prompt 128, 512 output tokens): throughput normalised to the best cell"):
        assert [[c.replace("**", "") for c in row] for row in md_table(md, title)] == tables[title]
    assert md_table(md, "Verdicts")[1][:2] == ["**latency[houlsby-r8-b1-s32]**", "**regression**"]
    assert "| **latency[houlsby-r8-b1-s32]** | **regression** | **time** |" in md
    assert "![Change of the time, by verdict](change-time.png)" in md
    assert "![Latency — tiny, float32, cpu](latency.png)" in md
    assert "<summary>φ(i, j)" not in md and "<summary>φ(i, j)" in files.index.read_text()  # grids: HTML only
    assert len(md) < 65536  # fits a GitHub comment


def test_partial_results_say_what_is_missing(tmp_path):
    files = render_report(load_results([FIXTURES / "latency_partial.json"]), tmp_path, vector=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "latency.png", "results.csv", "summary.md"]
    md = files.summary.read_text()
    missing = md[md.index("### Missing"):md.index("### Latency")]
    assert "- `not in these results: recompute, subspace`" in missing
    assert "- `latency[lin-r8-b4-s32]: in no result file`" in missing
    assert "latency[houlsby-r8-b4-s32] did not run (oom: CUDA out of memory" in missing
    assert "4 of 6 cells measured; 1 missing, 1 OOM." in md
    assert md_table(md, "Slow-down against r = 0 (%)")[1][3:] == ["29.7†", "OOM"]


def test_nothing_to_draw_is_said_not_drawn(tmp_path):
    results = load_results([FIXTURES / "recompute_fig13.json"])
    frame = results.frame.copy()
    frame["status"] = "no_device"
    results.frame = frame
    files = render_report(results, tmp_path, vector=None)
    assert files.figures == ()
    assert "_No cell has a number to draw._" in files.summary.read_text()


# --- the command line ------------------------------------------------------------------------------


def test_cli_writes_the_report(tmp_path, capsys):
    rc = main(["report", str(FIXTURES / "latency_partial.json"), "--out", str(tmp_path / "r"), "--vector", "pdf",
               "--title", "PR #12"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[:6] == [f"5 cells from 1 file(s) → {tmp_path / 'r'}/", "  index.html", "  summary.md",
                                    "  results.csv", "  latency.png", "  latency.pdf"]
    assert (tmp_path / "r" / "summary.md").read_text().startswith("## PR #12\n")


def test_cli_bad_file_is_one_line_and_the_rest_is_kept(tmp_path, capsys):
    rc = main(["report", str(FIXTURES / "broken.json"), str(FIXTURES / "latency_partial.json"),
               str(FIXTURES / "foreign_pytest_benchmark.json"), "--out", str(tmp_path), "--vector", "none"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err == [f"perfsuite report: error: {FIXTURES / 'broken.json'}: not valid JSON (line 634, column 25: "
                   "Expecting ',' delimiter)",
                   f"perfsuite report: error: {FIXTURES / 'foreign_pytest_benchmark.json'}: a pytest-benchmark file, "
                   "but not written by perfsuite (no 'perfsuite' section)"]
    assert "could not read" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "latency.png").exists()


@pytest.mark.parametrize("args, message", [
    (["newer_schema.json"], "none of the 1 result file(s) could be read; nothing to report"),
    (["latency_partial.json", "--comparison", "latency_smoke.json"],
     "latency_smoke.json: not a perfsuite comparison (no 'perfsuite_comparison' format version)"),
])
def test_cli_errors(tmp_path, capsys, args, message):
    argv = ["report", *(str(FIXTURES / a) if a.endswith(".json") else a for a in args), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("perfsuite report: error: ") and message in err
    assert not (tmp_path / "index.html").exists()


def test_render_report_checks_the_comparison(tmp_path):
    with pytest.raises(ComparisonError, match="comparison: comparison format 9 is newer"):
        render_report(load_results([FIXTURES / "latency_partial.json"]), tmp_path,
                      comparison={"perfsuite_comparison": 9, "cells": []})


def test_fixture_comparison_summary_matches_its_cells():
    doc = json.loads((FIXTURES / "comparison.json").read_text())
    counts = {}
    for c in doc["cells"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    assert counts == doc["summary"]
    assert re.fullmatch(r"latency\[.*\]", doc["cells"][0]["cell_id"])


def test_a_real_smoke_run_renders_every_workload(tmp_path):
    files = render_report(load_results([FIXTURES / "smoke_all_workloads.json"]), tmp_path, vector=None)
    assert [p.name for p in files.figures] == ["latency.png", "recompute.png", "subspace-seed-r4-r4.png",
                                               "subspace-seed-r8-r8.png", "subspace-rank-r4-r8.png"]
    assert files.missing == ()
    md = files.summary.read_text()
    assert "18 of 18 cells measured." in md
    assert "4 of 5 cells measured; 1 blank by design (over the token budget)." in md
    cost = md_table(md, "plain model (prompt 16, 32 output tokens): recompute cost")
    assert cost == [["batch \\ window", "8", "32"], ["4", "0.00%", ""], ["1", "0.00%", "0.00%"]]
