"""Comparisons: the JSON contract, metric choice, re-measurement, renderers, and the CLI on committed real runs."""

import json
from pathlib import Path

import numpy as np
import pytest

from perfsuite.formats.baseline import Baseline, Fingerprint, cell_stats, load_reference, update_baseline
from perfsuite.cli import main
from perfsuite.compare.remeasure import run_cells
from perfsuite.compare.render import render_markdown, render_terminal
from perfsuite.compare.verdicts import CompareError, CompareOptions, compare, has_regression
from perfsuite.cells.grid import Cell
from perfsuite.formats.results import load_results
from perfsuite.compare.stats import VERDICTS

FIXTURES = Path(__file__).parents[1] / "fixtures" / "baselines"
RUN_A = FIXTURES / "results_smoke_cpu_a.json"
RUN_B = FIXTURES / "results_smoke_cpu_b.json"
CELL_KEYS = ["cell_id", "verdict", "metric", "baseline", "current", "change_pct", "ci_low_pct", "ci_high_pct",
             "p_value"]


def cell(adapter="lora", rank=8, batch=1, dtype="float32", model="tiny"):
    return Cell("latency", adapter, rank, batch=batch, seq_len=32, dtype=dtype, model=model)


def samples(seed, scale=1.0, n=30, spread=0.01):
    return list(scale * np.random.default_rng(seed).lognormal(np.log(0.3), spread, n))


def reference(cells: dict, device="cpu: Test CPU", dtype="float32", model="tiny", name="ref") -> Baseline:
    """A baseline from {Cell: (adapted samples, r = 0 samples)}."""
    records = {c.id: {"cell": c.to_dict(), **cell_stats(a, b), "samples_ms": a, "ref_samples_ms": b}
               for c, (a, b) in cells.items()}
    return Baseline(name=name, fingerprint=Fingerprint(device, "2.13.0+cpu", None, dtype, model), profile="smoke",
                    cells=records)


def test_the_comparison_document_keeps_the_contract():
    base = reference({cell(): (samples(1), samples(2)), cell(batch=4): (samples(3), samples(4))})
    cur = reference({cell(): (samples(5, 1.10), samples(6)), cell(rank=16): (samples(7), samples(8))})
    doc = compare(cur, base)
    assert list(doc) == ["perfsuite_comparison", "baseline", "compared", "cells", "summary"]
    assert doc["perfsuite_comparison"] == 1 and doc["baseline"] == "ref" and doc["compared"] == "slowdown"
    assert all(list(e) == CELL_KEYS for e in doc["cells"])
    json.dumps(doc, allow_nan=False)  # no NaN or infinity in the JSON
    by_id = {e["cell_id"]: e for e in doc["cells"]}
    assert by_id["latency[lora-r8-b1-s32]"]["verdict"] == "regression"
    assert by_id["latency[lora-r16-b1-s32]"]["verdict"] == "new"
    assert by_id["latency[lora-r8-b4-s32]"]["verdict"] == "missing"
    assert by_id["latency[lora-r8-b4-s32]"]["current"] is None
    assert doc["summary"] == {v: {"regression": 1, "new": 1, "missing": 1}.get(v, 0) for v in VERDICTS}
    reg = by_id["latency[lora-r8-b1-s32]"]
    assert reg["ci_low_pct"] < reg["change_pct"] < reg["ci_high_pct"]
    assert reg["change_pct"] == pytest.approx(10.0, abs=1.5)
    assert reg["p_value"] < 1e-3 and has_regression(doc)


def test_auto_compares_the_slowdown_and_times_only_where_asked_and_possible():
    base = reference({cell(): (samples(1), samples(2))})
    same = reference({cell(): (samples(3), samples(4))})
    other = reference({cell(): (samples(3), samples(4))}, device="cpu: Other CPU")
    assert compare(same, base)["compared"] == "slowdown"
    assert compare(same, base, CompareOptions(metric="time"))["cells"][0]["metric"] == "time"
    doc = compare(other, base)
    assert doc["compared"] == "slowdown" and doc["cells"][0]["metric"] == "slowdown"
    with pytest.raises(CompareError, match="absolute times are compared only against a baseline of the same device "
                                           "fingerprint; these differ in device_name: 'cpu: Test CPU' vs 'cpu: Oth"):
        compare(other, base, CompareOptions(metric="time"))
    with pytest.raises(CompareError, match="not across dtypes"):
        compare(reference({cell(dtype="float16"): (samples(3), samples(4))}, dtype="float16"), base)


def test_a_cell_without_r0_samples_falls_back_to_time_on_the_same_device_only():
    base = reference({cell(): (samples(1), samples(2))})
    del base.cells[cell().id]["ref_samples_ms"]
    same = reference({cell(): (samples(3, 1.2), samples(4))})
    entry = compare(same, base)["cells"][0]
    assert entry["metric"] == "time" and entry["verdict"] == "regression"
    other = reference({cell(): (samples(3, 1.2), samples(4))}, device="cpu: Other CPU")
    entry = compare(other, base)["cells"][0]
    assert entry["metric"] == "slowdown" and entry["verdict"] == "inconclusive" and entry["p_value"] is None


def test_the_paired_slowdown_cancels_drift_that_moves_both_models():
    """The machine is 20 % slower for the current run, for the adapted model and r = 0 alike."""
    base = reference({cell(): (samples(1), samples(2, 0.8))})
    cur = reference({cell(): (samples(3, 1.2), samples(4, 0.96))})
    assert compare(cur, base, CompareOptions(metric="time"))["cells"][0]["verdict"] == "regression"
    slow = compare(cur, base, CompareOptions(metric="slowdown"))["cells"][0]
    assert slow["verdict"] == "unchanged" and abs(slow["change_pct"]) < 1.0
    assert slow["baseline"] == pytest.approx(25.0, abs=1.0)  # the slow-down %, not a time


def test_suspects_are_remeasured_and_must_reproduce():
    base = reference({cell(): (samples(1), samples(2)), cell(batch=4): (samples(3), samples(4))})
    cur = reference({cell(): (samples(5, 1.1), samples(6)), cell(batch=4): (samples(7), samples(8))})
    calls = []

    def fresh(scale):
        def remeasure(cell_ids):
            calls.append(cell_ids)
            return {c: {"samples_ms": samples(9 + len(calls), scale), "ref_samples_ms": samples(2)} for c in cell_ids}
        return remeasure

    doc = compare(cur, base, CompareOptions(remeasure=2), remeasure=fresh(1.1))
    assert calls == [["latency[lora-r8-b1-s32]"]] * 2  # only the suspect, each time
    assert doc["summary"]["regression"] == 1
    calls.clear()
    doc = compare(cur, base, CompareOptions(remeasure=2), remeasure=fresh(1.0))
    assert len(calls) == 1  # it did not reproduce: no second try
    entry = doc["cells"][0]
    assert entry["verdict"] == "inconclusive" and abs(entry["change_pct"]) < 2.0  # the re-measurement's numbers
    with pytest.raises(CompareError, match="needs a way to run them"):
        compare(cur, base, CompareOptions(remeasure=1))


def test_bad_samples_are_an_error_never_a_verdict():
    base = reference({cell(): (samples(1), samples(2))})
    cur = reference({cell(): (samples(3), samples(4))})
    cur.cells[cell().id]["samples_ms"][0] = float("nan")
    with pytest.raises(CompareError, match=r"cell latency\[lora-r8-b1-s32\]: cannot compare: current: samples "
                                           "contain NaN"):
        compare(cur, base)


def test_a_cell_without_samples_is_inconclusive_not_skipped():
    base = reference({cell(): (samples(1), samples(2))})
    cur = reference({cell(): (samples(3), samples(4))})
    del cur.cells[cell().id]["samples_ms"]
    entry = compare(cur, base)["cells"][0]
    assert entry["verdict"] == "inconclusive" and entry["p_value"] is None and entry["current"] is not None


def test_options_are_checked():
    with pytest.raises(CompareError, match="unknown metric"):
        CompareOptions(metric="speed")
    with pytest.raises(CompareError, match="alpha"):
        CompareOptions(alpha=1.5)


def test_renderers():
    base = reference({cell(): (samples(1), samples(2)), cell(batch=4): (samples(3), samples(4))})
    cur = reference({cell(): (samples(5, 1.1), samples(6)), cell(batch=4): (samples(7), samples(8))})
    doc = compare(cur, base, CompareOptions(metric="time"))
    text = render_terminal(doc)
    lines = text.splitlines()
    assert lines[0] == "perfsuite compare against ref"
    assert lines[1] == "compared: time (absolute time of the adapted model, ms; same device only)"
    assert lines[2].split() == ["cell", "verdict", "metric", "baseline", "current", "change", "CI", "p"]
    assert lines[4].startswith("latency[lora-r8-b1-s32]  regression  time") and " ms" in lines[4]
    assert lines[-1] == "2 cells: 1 regression, 0 improvement, 1 unchanged, 0 inconclusive, 0 new, 0 missing"
    md = render_markdown(doc)
    assert md.startswith("### perfsuite: **1 regression**\n")
    assert "| `latency[lora-r8-b1-s32]` | **regression** | time |" in md and "<details><summary>All cells" in md


# --- the command line, on committed real runs ----------------------------------------------------------------------

EXPECTED_A_VS_B = """\
perfsuite compare against {a}
compared: slowdown (slow-down % against the r = 0 model, round by round; portable across machines)
"""


def test_cli_compares_two_real_runs(capsys, tmp_path):
    code = main(["compare", str(RUN_B), "--baseline", str(RUN_A), "--json", str(tmp_path / "c.json"),
                 "--markdown", str(tmp_path / "c.md")])
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "c.json").read_text())
    assert out == render_terminal(doc) + "\n"
    assert out.startswith(EXPECTED_A_VS_B.format(a=RUN_A))
    assert code == (1 if doc["summary"]["regression"] else 0)
    assert [e["cell_id"] for e in doc["cells"]] == ["latency[lora-r8-b1-s32]", "latency[lora-r8-b4-s32]",
                                                   "latency[none-r0-b1-s32]", "latency[none-r0-b4-s32]"]
    assert (tmp_path / "c.md").read_text() == render_markdown(doc) + "\n"
    # the statistics are deterministic: the same files always give the same document
    assert main(["compare", str(RUN_B), "--baseline", str(RUN_A), "--format", "json"]) == code
    assert json.loads(capsys.readouterr().out) == doc


def test_cli_finds_the_matching_baseline(capsys, tmp_path):
    update_baseline(load_results([RUN_A]), directory=tmp_path)
    main(["compare", str(RUN_B), "--baselines-dir", str(tmp_path), "--metric", "slowdown", "--format", "markdown"])
    out = capsys.readouterr().out
    assert out.startswith("### perfsuite: ")
    assert "Compared **slowdown**" in out and "smoke_cpu-amd-epyc_torch-2.13.0-cpu_nocuda_float32_tiny.json" in out


def test_cli_without_a_baseline_says_how_to_make_one(capsys, tmp_path):
    assert main(["compare", str(RUN_B), "--baselines-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"perfsuite compare: error: no baseline in {tmp_path} for profile smoke on cpu: AMD EPYC")
    assert "perfsuite baseline update RESULTS.json" in err


def test_cli_gates_on_a_regression(capsys, tmp_path):
    """A run made 50 % slower than its baseline (every sample): exit 1, and a regression row per cell."""
    doc = json.loads(RUN_B.read_text())
    for bench in doc["benchmarks"]:
        extra = bench["extra_info"]
        extra["samples_ms"] = [1.5 * t for t in extra["samples_ms"]]
        for key in ("time_ms", "slowdown_pct", "iqr_pct"):  # recomputed from the samples
            del extra[key]
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(doc))
    assert main(["compare", str(slower), "--baseline", str(RUN_B)]) == 1
    out = capsys.readouterr().out
    assert out.count("  regression  ") == 4 and out.rstrip().endswith("4 cells: 4 regression, 0 improvement, "
                                                                     "0 unchanged, 0 inconclusive, 0 new, 0 missing")


def test_remeasuring_failures_are_errors(tmp_path):
    with pytest.raises(CompareError, match=r"re-measuring 1 cells with pytest failed \(exit 4\)"):
        run_cells(["no_such_test.py::test_x"], {"profile": "smoke", "device": "cpu"}, tmp_path)


def test_recompute_cells_are_compared_against_plain_decoding():
    rc = Cell("recompute", "lora", 8, batch=1, seq_len=16, window=4, gen_len=16)
    records = {}
    for name, scale in (("base", 1.0), ("cur", 1.2)):
        verified, plain = samples(1, scale), samples(2)
        records[name] = reference({})
        records[name].cells[rc.id] = {"cell": rc.to_dict(), "samples_ms": verified, "ref_samples_ms": plain}
    entry = compare(records["cur"], records["base"])["cells"][0]
    assert entry["metric"] == "recompute" and entry["verdict"] == "regression"
    assert entry["change_pct"] == pytest.approx(20.0, abs=2.0)


def test_every_workload_of_a_real_smoke_run(tmp_path):
    """The report's fixture: latency, recompute and subspace cells (5 samples each): stored, compared, no error."""
    source = Path(__file__).parents[1] / "fixtures" / "results" / "smoke_all_workloads.json"
    results = load_results([source])
    path = update_baseline(results, directory=tmp_path).path
    doc = compare(results, load_reference(path))
    metrics = {e["cell_id"].split("[")[0]: e["metric"] for e in doc["cells"]}
    assert metrics == {"latency": "slowdown", "recompute": "recompute", "subspace": "time"}
    assert doc["summary"]["regression"] == 0 and doc["summary"]["improvement"] == 0
    assert all(e["change_pct"] in (0.0, None) for e in doc["cells"])


def test_cli_remeasures_suspects_with_pytest(capsys, tmp_path, monkeypatch):
    """Two cells of a real run doctored 50 % slower: re-run for real, they do not reproduce — inconclusive, exit 0."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the fixture runs were made
    doc = json.loads(RUN_B.read_text())
    for bench in doc["benchmarks"]:
        extra = bench["extra_info"]
        if extra["cell"]["adapter"] == "lora":
            extra["samples_ms"] = [1.5 * t for t in extra["samples_ms"]]
            for key in ("time_ms", "slowdown_pct", "iqr_pct"):
                del extra[key]
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(doc))
    repo = Path(__file__).parents[2]
    code = main(["compare", str(doctored), "--baseline", str(RUN_A), "--remeasure", "1", "--rootdir", str(repo),
                 "--format", "json"])
    captured = capsys.readouterr()
    assert captured.err == "re-measuring 2 suspect cells with pytest ...\n"
    verdicts = {e["cell_id"]: e["verdict"] for e in json.loads(captured.out)["cells"]}
    assert verdicts["latency[lora-r8-b1-s32]"] == verdicts["latency[lora-r8-b4-s32]"] == "inconclusive"
    assert code == 0
