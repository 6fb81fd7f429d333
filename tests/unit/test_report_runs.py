"""``perfsuite report`` over several runs: the five files of ``baseline record`` render as one report of medians
with their spread (they failed with "duplicate cell" four times, exit 2, and drew run 1 only); shards still merge."""

import csv
import statistics

import synthetic as syn

from perfsuite.cells.grid import Cell
from perfsuite.report.runs import RUNS_KEY, load_for_report

CELLS = [syn.cell("none"), syn.cell("lora"), syn.cell("houlsby")]
RATIOS = (1.10, 1.30, 1.20, 1.25, 1.15)  # lora's planted slow-down per run


def five_runs(tmp_path):
    paths = []
    for k, ratio in enumerate(RATIOS):
        recs = [syn.record(c, seed=10 * k + i, ratio=ratio if c.adapter == "lora" else 1.2, round_sd=0.001)
                for i, c in enumerate(CELLS)]
        recs.append(syn.skipped(Cell("recompute", "none", 0, batch=8, seq_len=16, window=16, gen_len=16),
                                "outside_budget", "over the token budget"))
        paths.append(syn.write(tmp_path / f"run-{k + 1}.json", recs))
    return paths


def test_the_five_runs_of_baseline_record_render_as_medians_with_their_spread(tmp_path):
    paths = five_runs(tmp_path)
    proc = syn.cli("report", *map(str, paths), "--out", str(tmp_path / "report"), "--vector", "none")
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert "4 cells from 5 file(s)" in proc.stdout and "median over 5 runs" in proc.stdout
    with (tmp_path / "report" / "results.csv").open() as f:
        rows = {r["cell_id"]: r for r in csv.DictReader(f)}
    lora = rows["latency[lora-r8-b1-s32]"]
    each = [load_for_report([p]).by_id()["latency[lora-r8-b1-s32]"].metrics["slowdown_pct"] for p in paths]
    assert float(lora["slowdown_pct"]) == statistics.median(each)
    assert (float(lora["slowdown_pct_lo"]), float(lora["slowdown_pct_hi"])) == (min(each), max(each))
    assert lora[RUNS_KEY] == "5" and abs(statistics.median(each) - 20.0) < 1.0  # 1.20: the middle of RATIOS
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"{statistics.median(each):.1f} ({min(each):.1f} to {max(each):.1f})" in summary
    assert "duplicate cell" not in summary


def test_shards_of_two_runs_are_two_runs_and_a_bad_file_costs_one_line(tmp_path):
    """Shards hold disjoint cells and merge into their run; run B's shards form the second run."""
    files = []
    for run, ratio in (("a", 1.1), ("b", 1.3)):
        for k, c in enumerate(CELLS[1:]):
            files.append(syn.write(tmp_path / f"{run}{k}.json", [syn.record(c, seed=k, ratio=ratio)]))
    results = load_for_report(files)
    assert len(results.runs) == 4 and len(results.records) == 2 and not results.errors
    assert {r.metrics[RUNS_KEY] for r in results.records} == {2}
    (tmp_path / "bad.json").write_text("{")
    proc = syn.cli("report", *map(str, files), str(tmp_path / "bad.json"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "bad.json" in proc.stderr
    assert (tmp_path / "r" / "index.html").exists()


def test_one_run_is_reported_as_it_is(tmp_path):
    path = five_runs(tmp_path)[0]
    results = load_for_report([path])
    assert all(RUNS_KEY not in r.metrics for r in results.records)
    assert results.records[1].samples_ms  # raw rounds kept: nothing was combined
