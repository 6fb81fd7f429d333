"""``perfsuite run`` end to end, as a user types it: results, comparison and report; Ctrl-C keeps the cells
measured so far and --resume measures only the rest; shards merge into the unsharded grid."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import synthetic as syn

from perfsuite.cli import main
from perfsuite.compare.baselines import add_runs
from perfsuite.formats.results import load_results

ROOT = Path(__file__).parents[2]
# columns that are measured (differ between any two runs); everything else must match cell for cell
TIMED = {"time_ms", "ref_time_ms", "slowdown_pct", "iqr_pct", "flops_per_s", "samples_ms", "ref_samples_ms",
         "source", "rounds", "peak_mem_bytes", "cycle",  # a shard's shape groups hold fewer models: other cycles
         "device_ms", "device_samples_ms", "device_slowdown_pct",  # device time: the wall time on a CPU
         "norm_time", "probe_time_ms", "probe_samples_ms", "throughput_tok_s", "plain_throughput_tok_s",
         "throughput_ratio"}


def test_run_writes_results_comparison_and_report(finished_run):
    """Against another run's results (one run: no between-run spread, so described, never a verdict); the run is
    tests/conftest.py's, shared with the tests that only read or copy a finished run."""
    proc, out = finished_run.proc, finished_run.out
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "perfsuite run: summary" in proc.stdout and "cells measured: 8, not run: 0" in proc.stdout
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["benchmarks"]) == 8 and doc["perfsuite"]["profile"] == "smoke"
    comparison = json.loads((out / "comparison.json").read_text())
    assert {c["cell_id"] for c in comparison["cells"]} == {b["extra_info"]["cell_id"] for b in doc["benchmarks"]}
    assert comparison["parts"][0]["mode"] == "gating" and comparison["parts"][0]["baseline_runs"] == 1
    assert comparison["summary"]["regression"] == 0 and comparison["summary"]["improvement"] == 0
    assert (out / "report" / "index.html").exists() and (out / "report" / "summary.md").exists()
    summary = (out / "report" / "summary.md").read_text()
    assert "**No confirmed change among 8 cells compared with this machine's baseline (1 run).**" in summary


def test_a_fresh_machine_has_no_baseline_and_exits_0_and_a_finished_run_is_kept_beside(finished_run, tmp_path):
    """What a new user meets: baselines only of other machines (or none); nothing can fail the run. The run goes
    into a copy of a finished run's folder, as the README command typed twice does: the finished run is moved to
    DIR/previous (its results and report intact), said on the terminal and in the summary."""
    lora = syn.cell("lora")
    other = [syn.results([syn.record(lora, seed=k, ratio=5.0, e=syn.env(host="the-baseline-machine"))])
             for k in range(3)]
    add_runs(other, directory=tmp_path / "baselines")
    out = tmp_path / "run"
    shutil.copytree(finished_run.out, out)
    proc = syn.cli("run", *finished_run.args, "--out", str(out), "--baselines-dir", str(tmp_path / "baselines"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"the finished run in {out} is moved to {out / 'previous'}/" in proc.stdout
    assert f"previous:   the finished run that was in {out} is now in {out / 'previous'}/" in proc.stdout
    before = (finished_run.out / "results.json").read_text()
    assert (out / "previous" / "results.json").read_text() == before != (out / "results.json").read_text()
    assert (out / "previous" / "report" / "index.html").read_text() == (
        finished_run.out / "report" / "index.html").read_text()
    assert ("comparison: part smoke: no baseline for this machine; compared with " in proc.stdout
            and "for reference only (never fails the run); record one with: perfsuite baseline record --profile "
                "smoke" in proc.stdout)
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["parts"][0]["mode"] == "reference" and not comparison["gating"]
    assert {c["verdict"] for c in comparison["cells"]} <= {"reference", "new", "missing"}
    # no baseline at all (exit 0, "no baseline for this machine in baselines"): tests/plugin/test_wheel.py's run


def test_baseline_record_then_run_gates_on_this_machine(tmp_path):
    cells = ["--cells", "workload == 'latency' and adapter in ('none', 'lora') and batch == 1"]
    # one real run in a fresh process (the loop over --runs: tests/unit/test_baseline.py, planted)
    rec = syn.cli("baseline", "record", "--runs", "1", "--rounds", "5", "--warmup", "1", *cells, "--dir",
                  str(tmp_path / "b"), "--out", str(tmp_path / "rec"))
    assert rec.returncode == 0, rec.stdout[-2000:] + rec.stderr[-2000:]
    assert "[baseline record 1/1]" in rec.stderr and "1 run(s) kept (1 added, 0 dropped), 2 cells" in rec.stdout
    proc = syn.cli("run", "--rounds", "5", "--warmup", "1", *cells, "--out", str(tmp_path / "run"),
                   "--baselines-dir", str(tmp_path / "b"), "--no-report")
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    comparison = json.loads((tmp_path / "run" / "comparison.json").read_text())
    assert comparison["gating"] and comparison["parts"][0]["baseline_runs"] == 1
    assert "against this machine's" in proc.stdout


def test_ctrl_c_keeps_measured_cells_and_resume_finishes(tmp_path, capsys):
    out = tmp_path / "run"
    # recompute cells: each takes a few tenths of a second of its own at 10 rounds (0.3-0.6 s on the 2-core VM;
    # latency cells share their shape's loop: once a group is measured, its other cells finish at once), more than
    # the 50 ms this test takes to press Ctrl-C once two are journaled
    slow = ["--rounds", "10", "--warmup", "1", "--cells", "workload == 'recompute'"]
    # SIGINT back to its default in the child: a test run started in the background of a non-interactive shell
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler (the run would finish)
    proc = subprocess.Popen([sys.executable, "-m", "perfsuite.cli", "run", *slow, "--out", str(out), "--no-compare",
                             "--no-report"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until two cells are journaled, then press Ctrl-C
        if journal.exists() and journal.read_text().count('"kind": "benchmark"') >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert f"finish with: perfsuite run --resume --out {out}" in stdout
    assert main(["run", "--out", str(out)]) == 2  # refused before it measures: no process needed
    assert "holds an unfinished run: pass --resume to finish it" in capsys.readouterr().err
    kept = {b["extra_info"]["cell_id"] for b in json.loads((out / "results.json").read_text())["benchmarks"]}
    assert 2 <= len(kept) < 4

    resumed = syn.cli("run", "--resume", "--out", str(out), "--no-compare", "--no-report")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["benchmarks"]) == 4 and doc["perfsuite"]["rounds"] == 10  # the journal's own settings
    assert [e["status"] for e in doc["perfsuite"]["not_run"]] == ["outside_budget"]
    headers = [json.loads(x) for x in journal.read_text().splitlines() if '"kind": "header"' in x]
    assert len(headers) == 2 and set(headers[1]["resumed"]) >= kept
    assert not set(headers[1]["cells"]) & kept, "a resumed run measures only the missing cells"


def test_shards_merge_into_the_unsharded_grid(finished_run, tmp_path, capsys):
    whole = finished_run.out  # the same cells, unsharded
    shard_files = []
    for i in (1, 2):  # two latency shape groups: one per shard (a group is never split)
        out = tmp_path / f"shard{i}"
        proc = syn.cli("run", *finished_run.args, "--shard", f"{i}/2", "--out", str(out), "--no-compare", "--no-report")
        assert proc.returncode == 0, proc.stderr[-2000:]
        shard_files.append(out / "results.json")
    merged = load_results(shard_files).frame
    single = load_results([whole / "results.json"]).frame
    keep = [c for c in single.columns if c not in TIMED]
    assert list(merged["cell_id"]) == list(single["cell_id"])
    assert merged[keep].equals(single[keep])
    assert main(["report", *map(str, shard_files), "--out", str(tmp_path / "report")]) == 0, capsys.readouterr().err
    assert (tmp_path / "report" / "index.html").exists()
