"""Verdicts on planted runs: between-run spread, both metrics, gating vs reference, re-measuring, parts, rendering."""

import json
from pathlib import Path

import pytest
import synthetic as syn

from perfsuite.cli import main
from perfsuite.compare.baselines import add_runs, baseline_of, load_all, parts_of
from perfsuite.compare.render import render_markdown, render_terminal, verdict_tables
from perfsuite.formats.comparison import VERDICTS
from perfsuite.compare.verdicts import CompareError, CompareOptions, compare_results, compare_runs
from perfsuite.formats.comparison import Comparison, check_comparison
from perfsuite.formats.results import Results, ResultsError

LORA, PLAIN, LORA4 = syn.cell("lora"), syn.cell("none"), syn.cell("lora", batch=4)
NOISE = dict(run_sd=0.05, round_sd=0.02, ratio_run_sd=0.01)  # like the 2-core runner: 5 % between processes


def runs(n, *, start=0, ratio=1.2, base_ms=0.3, e=None, cells=(PLAIN, LORA, LORA4), **kw):
    """``n`` separate planted runs of ``cells`` (the plain model at its own ratio 1)."""
    noise = NOISE | kw
    return [syn.results([syn.record(c, seed=1000 * (start + i) + k, ratio=1.0 if c.adapter == "none" else ratio,
                                    base_ms=base_ms, e=e, **noise) for k, c in enumerate(cells)], source=f"r{start + i}")
            for i in range(n)]


def baseline(n=5, **kw):
    return baseline_of([parts_of(r)[0] for r in runs(n, **kw)], name="base")


def by_id(doc):
    return {c["cell_id"]: c for c in doc["cells"]}


def metric(entry, name):
    return next(m for m in entry["metrics"] if m["metric"] == name)


def test_unchanged_code_across_processes_raises_no_alarm():
    """A/A between separate runs, with 5 % process noise on times: 30 new runs against one 5-run baseline, each
    suspect re-measured in a (planted) fresh run as perfsuite run does."""
    base = baseline()
    fresh = iter(range(10_000, 20_000))

    def remeasure(cell_ids):
        again = runs(1, start=next(fresh))[0]
        return {r.id: r for r in again.records if r.id in cell_ids}

    docs = [compare_results(runs(1, start=100 + i)[0], [base], CompareOptions(remeasure=1),
                            remeasure=remeasure).to_dict()
            for i in range(30)]
    metrics = [m["verdict"] for d in docs for c in d["cells"] for m in c["metrics"]]
    assert len(metrics) == 150 and not any(d["summary"]["regression"] > 0 for d in docs)
    assert sum(v in ("regression", "improvement") for v in metrics) <= 3  # ~α/2 a side at the first stage


def test_an_adapter_slowdown_is_caught_on_the_slowdown_and_reported_in_points():
    # LoRA 10 % slower, plain unchanged
    doc = compare_results(runs(1, start=50, ratio=1.2 * 1.10)[0], [baseline()]).to_dict()
    lora = by_id(doc)[LORA.id]
    assert lora["verdict"] == "regression" and "slowdown" in lora["moved"]
    m = metric(lora, "slowdown")
    assert m["unit"] == "pp" and m["baseline"] == pytest.approx(20.0, abs=1.5)
    assert m["current"] == pytest.approx(32.0, abs=1.5) and m["change"] == pytest.approx(12.0, abs=2.0)
    assert m["ci_low"] < m["change"] < m["ci_high"] and m["df"] == 4 and m["baseline_runs"] == 5
    assert by_id(doc)[PLAIN.id]["verdict"] in ("unchanged", "inconclusive") and doc["summary"]["regression"] > 0


def test_a_uniform_slowdown_is_caught_on_time_not_on_the_slowdown():
    """A slower plain model (a torch upgrade, a slower attention) moves every time and no ratio: the move is
    judged once, on the plain model's r = 0 cell; an adapter whose r = 0 twin is not compared keeps its own."""
    base = baseline(run_sd=0.005, round_sd=0.01)
    doc = compare_results(runs(1, start=60, base_ms=0.3 * 1.15, run_sd=0.005, round_sd=0.01)[0], [base]).to_dict()
    plain, lora, lora4 = (by_id(doc)[c.id] for c in (PLAIN, LORA, LORA4))
    assert plain["verdict"] == "regression" and plain["moved"] == ["time"] and doc["summary"]["regression"] > 0
    assert "with_reference" not in metric(plain, "time")  # the plain model has no slow-down to compare
    assert lora["verdict"] == "unchanged" and lora["moved"] == []
    assert metric(lora, "slowdown")["verdict"] == "unchanged" and metric(lora, "time")["verdict"] == "unchanged"
    assert metric(lora, "time")["with_reference"] == PLAIN.id
    assert metric(lora, "time")["change"] == pytest.approx(15.0, abs=2.5)  # the move is still shown
    assert lora4["verdict"] == "regression" and lora4["moved"] == ["time"]  # no b4 plain cell here to judge it on
    text = render_terminal(Comparison.from_dict(doc))
    assert "time (w/ ref)" in text and "1 time move marked 'w/ ref'" in text.splitlines()[-1]


def test_an_adapter_slowdown_that_drags_its_loop_flags_the_adapter_not_its_neighbours():
    """A/B, as measured on a CPU: B's LoRA does its work twice (+12 % on its slow-down) and, through the process
    it shares, its loop's other cells run 6 % slower, plain model included; their slow-downs do not move."""
    houlsby = syn.cell("houlsby")
    cells = (PLAIN, LORA, houlsby)
    a = [syn.results([syn.record(c, seed=100 * i + k, ratio=1.0 if c.adapter == "none" else 1.2, run_sd=0.005,
                                 round_sd=0.01) for k, c in enumerate(cells)]) for i in range(5)]
    b = [syn.results([syn.record(c, seed=100 * i + k + 50, base_ms=0.3 * 1.06, run_sd=0.005, round_sd=0.01,
                                 ratio=1.0 if c.adapter == "none" else 1.2 * (1.12 if c is LORA else 1.0))
                      for k, c in enumerate(cells)]) for i in range(5)]
    doc = compare_runs(a, b).to_dict()
    assert by_id(doc)[LORA.id]["verdict"] == "regression" and "slowdown" in by_id(doc)[LORA.id]["moved"]
    assert metric(by_id(doc)[LORA.id], "time").get("with_reference") is None  # its own move, on both metrics
    assert by_id(doc)[houlsby.id]["verdict"] == "unchanged"
    assert metric(by_id(doc)[houlsby.id], "time")["with_reference"] == PLAIN.id
    assert metric(by_id(doc)[PLAIN.id], "time")["change"] == pytest.approx(6.0, abs=1.5)  # judged here, once


def test_recompute_cells_keep_their_time_verdict():
    """Their paired reference is plain decoding inside the cell, not a cell of the comparison."""
    rec = [syn.Cell("recompute", a, r, batch=1, seq_len=16, window=4, gen_len=16) for a, r in (("none", 0), ("lora", 8))]
    base = baseline_of([parts_of(syn.results([syn.record(c, seed=10 * i + k, run_sd=0.005) for k, c in enumerate(rec)]))[0]
                        for i in range(5)], name="base")
    slow = syn.results([syn.record(c, seed=99 + k, base_ms=0.3 * 1.15, run_sd=0.005) for k, c in enumerate(rec)])
    doc = compare_results(slow, [base]).to_dict()
    assert [by_id(doc)[c.id]["verdict"] for c in rec] == ["regression", "regression"]
    assert not any(m.get("with_reference") for c in doc["cells"] for m in c["metrics"])


def test_an_adapter_of_its_own_is_not_marked_as_moving_with_its_reference():
    doc = compare_results(runs(1, start=70, ratio=1.2 * 1.15, run_sd=0.005, round_sd=0.01)[0],
                          [baseline(run_sd=0.005, round_sd=0.01)]).to_dict()
    lora = by_id(doc)[LORA.id]
    assert metric(lora, "slowdown")["verdict"] == "regression"
    assert not any(m.get("with_reference") for c in doc["cells"] for m in c["metrics"])
    assert "w/ ref" not in render_terminal(Comparison.from_dict(doc))


def test_another_machine_is_a_reference_that_never_fails_the_run():
    other = baseline(e=syn.env(host="the-baseline-machine", cpu="AuthenticAMD family 25 model 1 stepping 1: EPYC"))
    doc = compare_results(runs(1, start=70, ratio=2.0)[0], [other]).to_dict()  # LoRA twice as slow: still not a verdict
    (part,) = doc["parts"]
    assert part["mode"] == "reference" and not doc["gating"] and doc["summary"]["regression"] == 0
    assert any(d.startswith("host: 'the-baseline-machine' vs 'host-a#boot-0001'") for d in part["differences"])
    assert any(d.startswith("cpu: ") for d in part["differences"])
    lora = by_id(doc)[LORA.id]
    assert lora["verdict"] == "reference" and [m["metric"] for m in lora["metrics"]] == ["slowdown"]  # no times
    assert metric(lora, "slowdown")["change"] > 50  # the change is shown all the same
    assert "REFERENCE ONLY" in render_terminal(Comparison.from_dict(doc)) and "perfsuite baseline record" in render_terminal(Comparison.from_dict(doc))


def test_no_baseline_at_all_is_a_part_with_mode_none():
    doc = compare_results(runs(1)[0], [],
                          record_hint="record one with: perfsuite baseline record --profile smoke").to_dict()
    assert doc["parts"][0]["mode"] == "none" and doc["cells"] == [] and doc["summary"]["regression"] == 0
    assert "record one with: perfsuite baseline record --profile smoke" in render_terminal(Comparison.from_dict(doc))


def test_one_run_a_side_is_never_a_verdict():
    """Without a between-run spread a 30 % change is described, not judged."""
    base = baseline(n=1)
    doc = compare_results(runs(1, start=80, ratio=1.2 * 1.3)[0], [base]).to_dict()
    m = metric(by_id(doc)[LORA.id], "slowdown")
    assert m["verdict"] == "inconclusive" and "one run a side" in m["note"] and m["change"] > 20
    assert doc["summary"]["regression"] == 0


def test_a_suspect_is_remeasured_in_a_fresh_run_and_must_stay_a_regression():
    base = baseline(run_sd=0.01)
    slow = runs(1, start=90, ratio=1.2 * 1.25, run_sd=0.01)[0]
    calls = []

    def fresh(ratio):
        def remeasure(cell_ids):
            calls.append(sorted(cell_ids))
            again = runs(1, start=95 + len(calls), ratio=ratio, run_sd=0.01)[0]
            return {r.id: r for r in again.records if r.id in cell_ids}
        return remeasure

    confirmed = compare_results(slow, [base], CompareOptions(remeasure=1), remeasure=fresh(1.2 * 1.25)).to_dict()
    assert by_id(confirmed)[LORA.id]["verdict"] == "regression" and by_id(confirmed)[LORA.id]["remeasured"] == 1
    assert calls == [[LORA.id, LORA4.id]] and metric(by_id(confirmed)[LORA.id], "slowdown")["current_runs"] == 2
    gone = compare_results(slow, [base], CompareOptions(remeasure=1), remeasure=fresh(1.2)).to_dict()
    assert by_id(gone)[LORA.id]["verdict"] != "regression" and gone["summary"]["regression"] == 0
    with pytest.raises(CompareError, match="needs a way to run them"):
        compare_results(slow, [base], CompareOptions(remeasure=1)).to_dict()


def test_new_and_missing_cells():
    doc = compare_results(runs(1, cells=(PLAIN, LORA, syn.cell("lora", rank=16)))[0], [baseline()]).to_dict()
    assert by_id(doc)[syn.cell("lora", rank=16).id]["verdict"] == "new"
    missing = by_id(doc)[LORA4.id]
    assert missing["verdict"] == "missing" and missing["metrics"] == [] and missing["note"] == "not in this run"
    lost = syn.results([*runs(1)[0].records[:2], syn.skipped(LORA4)])
    lost_doc = compare_results(lost, [baseline()]).to_dict()
    assert by_id(lost_doc)[LORA4.id]["note"] == "did not run (oom: CUDA out of memory)"


def test_composite_results_compare_part_by_part(tmp_path):
    """`full`-shaped results (fp16 latency, bf16 recompute, fp32 subspace): each part against its own baseline."""
    lat = syn.cell("lora", seq_len=128, dtype="float16", model="gpt2-medium")
    rec = syn.Cell("recompute", "none", 0, batch=1, seq_len=128, window=16, gen_len=512, dtype="bfloat16",
                   model="gpt2-medium")
    sub = syn.Cell("subspace", "lora", 8, rank_b=64, model="gpt2-medium")

    def full(seed, slow=1.0):
        return syn.results([syn.record(lat, seed=seed, ratio=1.3, **NOISE),
                            syn.record(rec, seed=seed + 1, ratio=1.8 * slow, **NOISE),
                            syn.timed_only(sub, seed=seed + 2, run_sd=0.02)], "full")

    add_runs([full(10 * i) for i in range(5)], directory=tmp_path)
    doc = compare_results(full(99, slow=1.25), load_all(tmp_path)).to_dict()
    assert [(p["profile"], p["mode"]) for p in doc["parts"]] == [("paper", "gating"), ("recompute", "gating"),
                                                                 ("subspace", "gating")]
    assert by_id(doc)[rec.id]["verdict"] == "regression" and by_id(doc)[rec.id]["part"] == "recompute"
    assert by_id(doc)[lat.id]["verdict"] != "regression" and doc["summary"]["regression"] > 0
    assert [m["metric"] for m in by_id(doc)[sub.id]["metrics"]] == ["time"]


def test_ab_compares_runs_with_runs():
    a = runs(5, start=200)
    b = runs(5, start=300, ratio=1.2 * 1.08)
    doc = compare_runs(a, b, labels=("A: main", "B: working tree")).to_dict()
    assert doc["parts"][0]["mode"] == "ab" and doc["parts"][0]["baseline"] == "A: main" and doc["gating"]
    m = metric(by_id(doc)[LORA.id], "slowdown")
    assert m["verdict"] == "regression" and m["df"] == 8 and "paired" not in m and m["current_runs"] == 5
    same = compare_runs(runs(5, start=400), runs(5, start=500)).to_dict()
    assert same["summary"]["regression"] == 0 and "improvement" not in [c["verdict"] for c in same["cells"]]
    with pytest.raises(CompareError, match="ran only on B"):
        compare_runs(runs(2), runs(2, cells=(syn.cell("lora", dtype="float16"),))).to_dict()
    # the hf twins of the cells are a part of their own, each with its own runs
    both = (LORA, syn.cell("lora", impl="hf"))
    doc = compare_runs(runs(3, start=600, cells=both), runs(3, start=700, cells=both)).to_dict()
    assert [(p["profile"], p["current_runs"]) for p in doc["parts"]] == [("smoke", 3), ("smoke/hf", 3)]


def test_the_document_keeps_its_contract_and_is_strict_json():
    doc = compare_results(runs(1, ratio=1.5)[0], [baseline()]).to_dict()
    assert list(doc) == ["perfsuite_comparison", "gating", "parts", "cells", "summary", "allow_missing"]
    assert doc["perfsuite_comparison"] == 5 and check_comparison(json.loads(json.dumps(doc))) == doc
    json.dumps(doc, allow_nan=False)
    assert set(doc["summary"]) == set(VERDICTS) and sum(doc["summary"].values()) == len(doc["cells"])
    for c in doc["cells"]:
        assert list(c)[:6] == ["cell_id", "part", "verdict", "moved", "remeasured", "metrics"]


def test_a_malformed_sample_is_an_error_not_a_verdict():
    cur = runs(1)[0]
    bad = cur.records[1].with_metrics(samples_ms=[0.3] * 29 + [float("nan")])
    with pytest.raises(ResultsError, match="samples_ms holds nan"):  # refused where a file is read ...
        syn.results([cur.records[0], bad])
    with pytest.raises(CompareError, match=r"cell latency\[lora-r8-b1-s32\]: cannot compare"):  # ... and here too
        compare_results(Results([cur.records[0], bad], cur.runs, [], cur.sources[:2]), [baseline()]).to_dict()


# --- rendering -----------------------------------------------------------------------------------------------------


def test_every_table_line_starts_with_the_cell_id_then_its_verdict():
    doc = compare_results(runs(1, start=50, ratio=1.2 * 1.10)[0], [baseline()]).to_dict()
    text = render_terminal(Comparison.from_dict(doc))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("cell "))
    body = [line for line in lines[header + 2:] if line.startswith("latency[")]
    assert len(body) == 5  # plain: time; LoRA b1, b4: time and slow-down
    for line in body:
        cell_id, verdict = line.split()[:2]
        assert cell_id in by_id(doc) and verdict in VERDICTS
    slow = next(line for line in body if line.split()[2] == "slowdown")
    assert slow.split()[0] in (LORA.id, LORA4.id) and slow.split()[1] == "regression"
    assert " pp " in slow and "pp" in slow.split("[")[1]  # the change and its interval in percentage points
    assert lines[-1].startswith("3 cells: 2 regression")
    assert any(line.startswith("  detects changes above (median over cells): slowdown ") for line in lines)


def test_markdown_and_report_tables_are_the_same_rows():
    doc = compare_results(runs(1, start=50, ratio=1.2 * 1.10)[0], [baseline()]).to_dict()
    md = render_markdown(Comparison.from_dict(doc))
    assert md.startswith("### perfsuite: **2 regressions**") and "this machine's baseline" in md
    main_table = verdict_tables(Comparison.from_dict(doc))[0]
    for row in main_table.rows:
        assert "| " + " | ".join(f"**{c}**" if c and row[1] == "regression" else c for c in row) + " |" in md


# --- the command line, on files ------------------------------------------------------------------------------------


def test_cli_compare_gates_only_on_this_machine(tmp_path, capsys):
    add_runs(runs(5), directory=tmp_path / "b")
    slow = syn.write(tmp_path / "slow.json", runs(1, start=50, ratio=1.2 * 1.15)[0].records)
    assert main(["compare", str(slow), "--baselines-dir", str(tmp_path / "b"), "--json", str(tmp_path / "c.json"),
                 "--markdown", str(tmp_path / "c.md")]) == 1
    out = capsys.readouterr().out
    assert "this machine's baseline: a confirmed regression fails the run" in out
    assert json.loads((tmp_path / "c.json").read_text())["summary"]["regression"] == 2
    assert (tmp_path / "c.md").read_text().startswith("### perfsuite: **2 regressions**")
    elsewhere = syn.write(tmp_path / "other.json", runs(1, ratio=2.0, e=syn.env(host="another-vm"))[0].records)
    assert main(["compare", str(elsewhere), "--baselines-dir", str(tmp_path / "b")]) == 0
    assert "REFERENCE ONLY" in capsys.readouterr().out


def test_cli_compare_without_any_baseline_is_one_error_line(tmp_path, capsys):
    res = syn.write(tmp_path / "r.json", runs(1)[0].records)
    assert main(["compare", str(res), "--baselines-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perfsuite compare: error: no baseline in ")
    assert "perfsuite baseline record" in err[0]


@pytest.mark.parametrize("option, message", [("--alpha=1.5", "alpha must be between 0 and 1"),
                                             ("--min-effect=-1", "the minimum effect must be >= 0")])
def test_cli_bad_options(tmp_path, capsys, option, message):
    res = syn.write(tmp_path / "r.json", runs(1)[0].records)
    assert main(["compare", str(res), option, "--baseline", str(res)]) == 2
    assert message in capsys.readouterr().err


def test_cli_remeasures_suspects_with_pytest(tmp_path, monkeypatch, capsys):
    """--remeasure runs the suspects' benchmark tests again through the fresh-process runner (planted here)."""
    import perfsuite.processes as runs_module

    add_runs(runs(5), directory=tmp_path / "b")
    slow = syn.write(tmp_path / "slow.json", runs(1, start=50, ratio=1.2 * 1.15)[0].records)
    seen = []

    def fake_run(checkout, out_json, options, *, node_ids=None, **kw):
        seen.append((Path(checkout), options, node_ids))
        return syn.write(Path(out_json), runs(1, start=60, ratio=1.2)[0].records)  # did not reproduce

    monkeypatch.setattr(runs_module, "run_benchmarks", fake_run)
    assert main(["compare", str(slow), "--baselines-dir", str(tmp_path / "b"), "--remeasure", "1",
                 "--rootdir", str(tmp_path)]) == 0
    (checkout, options, node_ids), = seen
    assert checkout == tmp_path and options["profile"] == "smoke"
    assert node_ids == ["tests/benchmarks/test_latency.py::test_latency[lora-r8-b1-s32]",
                        "tests/benchmarks/test_latency.py::test_latency[lora-r8-b4-s32]"]
    assert "re-measuring 2 suspect cells in a fresh pytest process" in capsys.readouterr().err


def test_a_run_hammered_by_a_neighbour_cannot_fail_a_night_by_itself():
    """One process slowed 3x on LoRA (a neighbour on the runner): with a re-measure budget the first look only
    screens; the fresh run does not confirm it, so nothing is called. Without a budget (a merge job) the first look
    decides at the part's level, as before."""
    base = baseline()
    hammered_records = runs(1, start=40)[0].records
    hammered = [r.with_metrics(samples_ms=[3 * t for t in r.samples_ms]) if r.id == LORA.id else r
                for r in hammered_records]
    night = syn.results(hammered, source="hammered")
    calls = []

    def remeasure(cell_ids):
        calls.append(sorted(cell_ids))
        again = runs(1, start=41 + len(calls))[0]
        return {r.id: r for r in again.records if r.id in cell_ids}

    doc = compare_results(night, [base], CompareOptions(remeasure=2), remeasure=remeasure).to_dict()
    assert calls and LORA.id in calls[0]
    assert by_id(doc)[LORA.id]["verdict"] != "regression" and by_id(doc)[LORA.id]["remeasured"] >= 1
    merged = compare_results(night, [base], CompareOptions(remeasure=0)).to_dict()
    assert by_id(merged)[LORA.id]["verdict"] == "regression"


def test_a_budget_means_a_regression_needs_a_fresh_run():
    """A 50 % slow-down: the first look makes it a suspect, never a verdict; the re-measure confirms it."""
    base = baseline()
    slow = runs(1, start=70, ratio=1.2 * 1.5)[0]
    seen = []

    def remeasure(cell_ids):
        seen.append(sorted(cell_ids))
        again = runs(1, start=80 + len(seen), ratio=1.2 * 1.5)[0]
        return {r.id: r for r in again.records if r.id in cell_ids}

    doc = compare_results(slow, [base], CompareOptions(remeasure=2), remeasure=remeasure).to_dict()
    assert len(seen) == 1 and by_id(doc)[LORA.id]["verdict"] == "regression"
    assert by_id(doc)[LORA.id]["remeasured"] == 1 and metric(by_id(doc)[LORA.id], "slowdown")["current_runs"] == 2
    part = doc["parts"][0]
    assert part["looks"] == 2 and part["per_test_alpha"] == pytest.approx(0.01 / part["tests"] / 2)
