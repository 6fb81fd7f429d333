"""The nightly's verdicts on planted runs: a method on every shape, loops as identity, deterministic outcomes, memory,
environment changes, a merge of a shard's re-measures, and what a reader is told instead of "inconclusive"."""

import math

import pytest
import synthetic as syn

from perfsuite.cli import main
from perfsuite.compare.baselines import add_runs, baseline_of, parts_of
from perfsuite.compare.render import render_markdown, render_terminal, verdict_text
from perfsuite.compare.verdicts import CompareOptions, compare_results
from perfsuite.formats.comparison import Comparison, MetricVerdict
from perfsuite.formats.record import CellRecord

ADAPTERS = ("lora", "houlsby", "lin")
SHAPES = [(b, s) for b in (1, 2, 4) for s in (32, 64)]  # six loops


def grid_cells():
    return [syn.cell(a, batch=b, seq_len=s) for b, s in SHAPES for a in ("none", *ADAPTERS)]


def night(seed, *, slow=None, factor=1.0, cells=None, run_sd=0.02, ratio_run_sd=0.02, e=None, **extra):
    """One run of every cell: a process effect on time and on each ratio (3 %-ish), LoRA ``factor`` slower where
    ``slow`` says so."""
    recs = []
    for k, c in enumerate(cells or grid_cells()):
        ratio = 1.0 if c.adapter == "none" else 1.2 * (factor if slow and slow(c) else 1.0)
        rec = syn.record(c, seed=seed * 1000 + k, ratio=ratio, run_sd=run_sd, ratio_run_sd=ratio_run_sd, e=e)
        recs.append(rec.with_metrics(**extra) if extra else rec)
    return syn.results(recs, source=f"n{seed}.json")


def baseline(n=5, **kw):
    return baseline_of([parts_of(night(100 + i, **kw))[0] for i in range(n)], name="base")


def by_id(doc):
    return {c["cell_id"]: c for c in doc["cells"]}


def fresh_runs(**kw):
    calls = []

    def remeasure(cell_ids):
        calls.append(sorted(cell_ids))
        again = night(500 + len(calls), **kw)
        return {r.id: r for r in again.records if r.id in cell_ids}

    return remeasure, calls


def test_a_method_slower_on_every_shape_is_one_confirmed_group_regression():
    """+8 % on LoRA in all six loops, at 2 % between-run noise: the group test calls it (re-measured once), and the
    run fails on it even where no lone LoRA cell reaches the family's level."""
    base = baseline()
    lora = lambda c: c.adapter == "lora"  # noqa: E731
    remeasure, calls = fresh_runs(slow=lora, factor=1.08)
    doc = compare_results(night(1, slow=lora, factor=1.08), [base], CompareOptions(remeasure=2),
                          remeasure=remeasure)
    groups = {g["group"]: g for g in doc.parts[0].groups}
    assert groups["lora"]["verdict"] == "regression" and groups["lora"]["remeasured"] >= 1
    assert groups["lora"]["change_pct"] == pytest.approx(8, abs=3) and len(groups["lora"]["cells"]) == 6
    assert groups["houlsby"]["verdict"] != "regression" and groups["lin"]["verdict"] != "regression"
    assert doc.has_regression and calls
    assert "method-wide lora (6 cells): regression" in render_terminal(doc)


def test_unchanged_nights_raise_no_alarm_and_quote_their_bounds():
    base = baseline()
    for seed in range(8):
        remeasure, _ = fresh_runs()
        doc = compare_results(night(seed), [base], CompareOptions(remeasure=2), remeasure=remeasure)
        assert not doc.has_regression
    unchanged = [m for c in doc.cells for m in c.metrics if m.verdict == "unchanged"]
    assert unchanged and all(m.within_pct is not None and m.within_pct >= abs(m.change_pct) for m in unchanged)
    assert verdict_text(unchanged[0]).startswith("unchanged (within ±")


def test_inconclusive_says_how_many_more_runs_would_decide_it():
    m = MetricVerdict.from_dict({"metric": "time", "unit": "%", "verdict": "inconclusive", "baseline": 1.0,
                                 "current": 1.06, "change": 6.0, "ci_low": -2.0, "ci_high": 14.0, "detectable": 9.0,
                                 "change_pct": 6.0, "ci_low_pct": -2.0, "ci_high_pct": 14.0, "p_value": 0.02,
                                 "df": 30.0, "noise_pct": 3.0, "baseline_runs": 5, "current_runs": 1,
                                 "more_runs": 3})
    assert verdict_text(m) == "inconclusive (could not tell: 3 more runs)"
    none = MetricVerdict.from_dict(m.to_dict() | {"more_runs": None})
    assert verdict_text(none) == "inconclusive (could not tell: needs more baseline runs)"


def test_more_runs_is_what_would_make_the_change_significant():
    from perfsuite.compare.sequential import more_runs

    m = {"baseline_runs": 5, "current_runs": 1, "change_pct": 6.0, "se_log": 0.03 * math.sqrt(1.2), "df": 40.0}
    n = more_runs(m, 0.01, 3.0)
    from perfsuite.compare.stats import t_quantile

    q = t_quantile(1 - 0.005, 40.0)
    assert q * 0.03 * math.sqrt(0.2 + 1 / (1 + n)) <= math.log(1.06) < q * 0.03 * math.sqrt(0.2 + 1 / n)
    assert more_runs(m | {"change_pct": 0.5}, 1e-6, 0.5) is None  # the baseline's own term is too wide


# --- loops are part of a cell's identity --------------------------------------------------------------------------

def test_a_cell_timed_in_another_loop_is_judged_on_raw_time_with_a_note():
    full = "adapterdrop-r8,houlsby-r8,lin-r8,lora-r8,none-r0,probe"
    small = "lora-r8,none-r0,probe"
    cells = [syn.cell("none"), syn.cell("lora")]
    base = baseline_of([parts_of(night(100 + i, cells=cells, loop_members=full))[0] for i in range(5)], name="b")
    doc = compare_results(night(7, cells=cells, loop_members=small), [base]).to_dict()
    lora = by_id(doc)[syn.cell("lora").id]
    assert [m["metric"] for m in lora["metrics"]] == ["time"]
    assert "another loop" in lora["metrics"][0]["note"]
    same = compare_results(night(7, cells=cells, loop_members=full), [base]).to_dict()
    assert "slowdown" in [m["metric"] for m in by_id(same)[syn.cell("lora").id]["metrics"]]


# --- deterministic outcomes ---------------------------------------------------------------------------------------

def recompute_night(seed, pct, *, matches=True):
    c = syn.cell("lora", window=4, gen_len=16)
    c = type(c)("recompute", "lora", 8, batch=1, seq_len=16, window=4, gen_len=16)
    rec = syn.record(c, seed=seed, run_sd=0.01).with_metrics(recompute_pct=pct, mismatches=int(pct > 0),
                                                             matches_fixed_schedule=matches)
    return syn.results([rec], source=f"r{seed}.json"), c


def test_a_changed_recompute_pct_on_unchanged_timing_is_a_verdict_and_fails():
    base = baseline_of([parts_of(recompute_night(100 + i, 0.0)[0])[0] for i in range(3)], name="b")
    run, c = recompute_night(7, 31.25)
    doc = compare_results(run, [base])
    cell = {x.cell_id: x for x in doc.cells}[c.id]
    changed = cell.metric("recompute_pct")
    assert changed.verdict == "changed" and changed.change == pytest.approx(31.25) and cell.verdict == "changed"
    assert doc.has_regression and "1 behaviour change" in render_markdown(doc)
    accepted = compare_results(run, [base], CompareOptions(accept_behaviour=True))
    assert not accepted.has_regression
    assert {x.cell_id: x for x in accepted.cells}[c.id].metric("recompute_pct").accepted
    same = compare_results(recompute_night(8, 0.0)[0], [base])
    assert {x.cell_id: x for x in same.cells}[c.id].metric("recompute_pct").verdict == "unchanged"


def test_an_outcome_the_baseline_itself_disagrees_on_is_shown_not_judged():
    base = baseline_of([parts_of(recompute_night(100 + i, 6.25 * i)[0])[0] for i in range(3)], name="b")
    run, c = recompute_night(7, 50.0)
    m = {x.cell_id: x for x in compare_results(run, [base]).cells}[c.id].metric("recompute_pct")
    assert m.verdict == "reference" and m.judged is False and "not deterministic here" in m.note


def test_phi_means_are_compared_within_their_tolerance():
    from perfsuite.compare.outcomes import outcome_entries

    c = type(syn.cell())("subspace", "lora", 4, rank_b=8)
    rec = lambda phi: CellRecord(c, metrics={"phi_means": phi})  # noqa: E731
    same = outcome_entries([rec([0.5, 0.25]), rec([0.5, 0.25])], [rec([0.5, 0.2500000001])])
    moved = outcome_entries([rec([0.5, 0.25])], [rec([0.5, 0.26])])
    assert [m["verdict"] for m in same] == ["unchanged"] and [m["verdict"] for m in moved] == ["changed"]


# --- memory ---------------------------------------------------------------------------------------------------------

def test_peak_memory_is_judged_like_time():
    cells = [syn.cell("none"), syn.cell("lora")]
    base = baseline_of([parts_of(night(100 + i, cells=cells, peak_mem_bytes=1_000_000))[0] for i in range(3)],
                       name="b")
    doc = compare_results(night(7, cells=cells, peak_mem_bytes=2_000_000), [base], CompareOptions(remeasure=0))
    mem = {c.cell_id: c for c in doc.cells}[syn.cell("lora").id].metric("memory")
    assert mem.verdict == "regression" and mem.change == pytest.approx(100.0) and mem.current == pytest.approx(
        2_000_000 / 2 ** 20)
    same = compare_results(night(7, cells=cells, peak_mem_bytes=1_000_000), [base], CompareOptions(remeasure=0))
    assert {c.cell_id: c for c in same.cells}[syn.cell("lora").id].metric("memory").verdict == "unchanged"


# --- environment changes --------------------------------------------------------------------------------------------

def test_a_baseline_of_this_machine_with_another_torch_still_gates_and_names_the_change():
    old = syn.env(torch="2.12.0+cpu")
    base = baseline_of([parts_of(night(100 + i, e=old))[0] for i in range(5)], name="b")
    lora = lambda c: c.adapter == "lora"  # noqa: E731
    remeasure, _ = fresh_runs(slow=lora, factor=1.3)
    doc = compare_results(night(1, slow=lora, factor=1.3), [base], CompareOptions(remeasure=2),
                          remeasure=remeasure)
    part = doc.parts[0]
    assert part.mode == "environment" and part.gates and doc.has_regression
    assert any("torch_version: '2.12.0+cpu' vs '2.13.0+cpu'" in d for d in part.differences)
    text = render_terminal(doc)
    assert "torch_version: '2.12.0+cpu' vs '2.13.0+cpu'" in text and "other software" in text
    lora_cell = {c.cell_id: c for c in doc.cells}[syn.cell("lora").id]
    assert {m.metric for m in lora_cell.metrics if m.is_judged} >= {"time", "slowdown"}  # raw time judged too
    accepted = compare_results(night(1, slow=lora, factor=1.3), [base],
                               CompareOptions(remeasure=2, accept_environment=True), remeasure=remeasure)
    assert not accepted.has_regression and accepted.parts[0].accepted


def test_another_machine_stays_a_reference():
    other = syn.env(host="elsewhere#boot-0002")
    base = baseline_of([parts_of(night(100 + i, e=other))[0] for i in range(5)], name="b")
    assert compare_results(night(1), [base]).parts[0].mode == "reference"


# --- a merge of a shard's re-measures --------------------------------------------------------------------------------

def test_a_merge_judges_the_shards_re_measures_and_spends_alpha_over_their_looks(tmp_path):
    lora = lambda c: c.adapter == "lora" and c.batch == 1 and c.seq_len == 32  # noqa: E731
    add_runs([night(100 + i) for i in range(5)], directory=tmp_path / "b")
    main_run = syn.write(tmp_path / "results.json", night(1, slow=lora, factor=1.5).records)
    extra = syn.write(tmp_path / "remeasure-1.json",
                      [r for r in night(2, slow=lora, factor=1.5).records if lora(r.cell) or r.cell.adapter == "none"])
    assert main(["compare", str(main_run), "--baselines-dir", str(tmp_path / "b"), "--json",
                 str(tmp_path / "alone.json")]) == 1  # no budget: the first look decides
    assert main(["compare", str(main_run), "--baselines-dir", str(tmp_path / "b"), "--extra-runs", str(extra),
                 "--looks", "2", "--json", str(tmp_path / "merged.json")]) == 1
    merged = Comparison.from_dict(__import__("json").loads((tmp_path / "merged.json").read_text()))
    assert merged.parts[0].looks == 2
    slow_cell = {c.cell_id: c for c in merged.cells}[syn.cell("lora").id]
    assert slow_cell.verdict == "regression" and slow_cell.metric("slowdown").current_runs == 2
    # a cell the shard did not re-measure cannot be called on its one run once a budget is stated
    lone = syn.write(tmp_path / "lone.json", night(3, slow=lambda c: c.adapter == "lin", factor=1.5).records)
    calm = syn.write(tmp_path / "remeasure-2.json", [r for r in night(4).records if lora(r.cell)])
    assert main(["compare", str(lone), "--baselines-dir", str(tmp_path / "b"), "--extra-runs", str(calm),
                 "--looks", "2"]) == 0
    assert main(["compare", str(lone), "--baselines-dir", str(tmp_path / "b")]) == 1  # the merge without a budget


def test_a_cell_of_one_baseline_run_in_a_machine_dominated_family_is_described_not_a_crash():
    """The prior of a family whose spread is all the machine's lends less than one degree of freedom; a cell present
    in one baseline run only (added since, or failed in the others) then has none to test with: it is described (one
    run a side), not an error out of the judge."""
    import numpy as np

    from perfsuite.cells.grid import get_profile
    from perfsuite.compare.estimates import loop_key
    from perfsuite.compare.family import Test
    from perfsuite.compare.judge import judge

    rng = np.random.default_rng(0)
    cells = [c for c in get_profile("paper").cells(device="cpu") if c.workload == "latency"][:25]
    machine = rng.normal(0, 0.03, 5)
    tests = []
    for i, c in enumerate(cells):
        base = {j: float(machine[j] + rng.normal(0, 0.001)) for j in range(5)}
        tests.append(Test(c.id, "norm_time", c.workload, loop_key(c), {4: base[4]} if i == 0 else base,
                          [float(rng.normal(0, 0.03))], [0.001] * 6))
    entries, _, _ = judge(tests, {c.id: c for c in cells}, CompareOptions(), base_runs=5)
    (lone,) = entries[cells[0].id]["metrics"]
    assert lone["verdict"] == "inconclusive" and lone.get("note", "").startswith("one run a side")


def _hammered_memory_tests(rng, loops, target, k=5):
    """Memory tests of the paper grid's cells; ``target``'s screening run hit by a neighbour (+50 %)."""
    import numpy as np

    from perfsuite.compare.estimates import loop_key
    from perfsuite.compare.family import Test

    out = []
    for lp in loops:
        for c in lp:
            v = rng.normal(0, 0.02, k + 1)
            if c.id == target:
                v[k] += np.log(1.5)
            out.append(Test(c.id, "memory", c.workload, loop_key(c), {j: float(v[j]) for j in range(k)},
                            [float(v[k])], [0.0] * (k + 1)))
    return out


def test_a_re_measure_that_lacks_the_metric_or_the_cell_confirms_nothing():
    """The screening run alone is never confirmed: a fresh record without the suspect's metric does not make that
    test fresh, and a suspect the re-measure could not run (crashed, out of memory) stays unconfirmed with a note,
    instead of an error for the whole comparison (review)."""
    import numpy as np

    from perfsuite.compare.judge import judge
    from perfsuite.selftest.grid import grid_loops

    loops = grid_loops("paper")
    cells = {c.id: c for lp in loops for c in lp}
    target = loops[3][5].id
    asked = []

    def without_metric(cids):
        asked.append(list(cids))
        return {c: {} for c in cids}, None

    entries, _, _ = judge(_hammered_memory_tests(np.random.default_rng(3), loops, target), cells,
                          CompareOptions(remeasure=2), base_runs=5, looks=2, more=without_metric)
    assert target in asked[0] and entries[target]["verdict"] != "regression"
    entries, _, _ = judge(_hammered_memory_tests(np.random.default_rng(3), loops, target), cells,
                          CompareOptions(remeasure=2), base_runs=5, looks=2, more=lambda cids: ({}, None))
    assert entries[target]["verdict"] != "regression" and "did not produce it" in entries[target]["note"]


def test_merged_loras_ranks_are_one_timing_not_three_cells():
    """Merged LoRA is timed once per shape and its other ranks' records are that timing (timed_as): they neither feed
    the family's prior nor count three times in their group (its null calibration read 2.5 % at 1 %: review)."""
    from perfsuite.compare.family import Test, group_entries, priors

    def test(cid, shared, v):
        return Test(cid, "slowdown", "latency", "loop", {j: v + 0.01 * j for j in range(3)}, [v], [0.0] * 4,
                    group="lora-merged", shared=shared)

    tests = [test(f"c{i}", i % 3 != 0, 0.001 * i) for i in range(9)]
    prior_of = priors(tests, 3)[("slowdown", "latency")]
    assert prior_of.components is not None and sum(prior_of.components.loop_sizes) == 3
    groups = group_entries(tests + [Test("x", "slowdown", "latency", "loop2", {0: 0.0, 1: 0.01, 2: 0.02}, [0.0],
                                         [0.0] * 4, group="lora")], priors(tests, 3), alpha=0.01, min_effect_pct=3)
    merged = next(g for g in groups if g["group"] == "lora-merged")
    assert merged["cells"] == ["c0", "c3", "c6"]
