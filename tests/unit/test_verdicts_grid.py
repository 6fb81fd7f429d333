"""Verdicts at grid scale, on planted data: per-run error control, the safe attribution rule, the probe-normalised
time."""

import numpy as np
import pytest
import synthetic as syn

from perfsuite.compare.render import render_terminal
from perfsuite.formats.comparison import Comparison
from perfsuite.compare.stats import ERROR_CONTROL, adjust_p_values, family_alpha
from perfsuite.compare.verdicts import CompareOptions, attribute_shared_moves, cell_metrics, compare_runs, \
    control_errors

PLAIN, LORA, HOULSBY = syn.cell("none"), syn.cell("lora"), syn.cell("houlsby")
PLAIN4, LORA4, HOULSBY4 = (syn.cell(a, batch=4) for a in ("none", "lora", "houlsby"))


# --- the error control itself -------------------------------------------------------------------------------------

def test_the_default_is_holm_family_wise():
    assert ERROR_CONTROL == "holm"


def test_holm_adjusts_step_down_and_keeps_order():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → monotone 0.02, 0.03, 0.06, 0.06
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_benjamini_hochberg_adjusts_step_up():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4/1, ×4/2, ×4/3, ×4/4 = 0.02, 0.02, 0.04, 0.04
    assert adjust_p_values(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_p_values(p, "none") == p


def test_adjusted_p_values_are_capped_and_checked():
    assert adjust_p_values([0.5, 0.9], "holm") == [1.0, 1.0]
    assert adjust_p_values([], "holm") == []
    with pytest.raises(ValueError):
        adjust_p_values([1.5], "holm")
    with pytest.raises(ValueError):
        adjust_p_values([0.1], "sidak")
    assert family_alpha(0.01, 100) == pytest.approx(1e-4) and family_alpha(0.01, 100, "none") == 0.01


def _entry(metric, p, change_pct=10.0, df=8, verdict="regression"):
    return {"metric": metric, "unit": "%", "verdict": verdict, "baseline": 1.0, "current": 1.1, "change": change_pct,
            "ci_low_pct": change_pct - 5, "ci_high_pct": change_pct + 5, "change_pct": change_pct, "p_value": p,
            "df": df, "se_log": 0.02, "detectable": None}


def test_a_run_of_many_tests_each_at_alpha_raises_no_alarm_under_holm():
    """900 tests of which some reach p = 0.005 by chance: each at α = 1 % would fail the run; the family does not."""
    entries = {f"c{i}": {"verdict": "regression", "metrics": [_entry("time", 0.005 if i % 100 == 0 else 0.5)]}
               for i in range(900)}
    control = control_errors(entries, CompareOptions())
    assert control == {"error_control": "holm", "tests": 900, "alpha": 0.01, "per_test_alpha": pytest.approx(0.01 / 900),
                       "looks": 1}
    assert not any(e["verdict"] == "regression" for e in entries.values())
    assert entries["c0"]["metrics"][0]["p_adjusted"] == pytest.approx(1.0)


def test_a_strong_move_survives_the_family():
    entries = {f"c{i}": {"verdict": "unchanged", "metrics": [_entry("time", 0.5, change_pct=0.1, verdict="unchanged")]}
               for i in range(99)}
    entries["moved"] = {"verdict": "regression", "metrics": [_entry("time", 1e-7)]}
    control_errors(entries, CompareOptions())
    assert entries["moved"]["verdict"] == "regression" and entries["moved"]["moved"] == ["time"]
    assert entries["moved"]["metrics"][0]["p_adjusted"] == pytest.approx(1e-5)


def test_without_control_each_test_stands_alone():
    entries = {"a": {"verdict": "regression", "metrics": [_entry("time", 0.005)]},
               "b": {"verdict": "unchanged", "metrics": [_entry("time", 0.5, change_pct=0.1, verdict="unchanged")]}}
    control_errors(entries, CompareOptions(error_control="none"))
    assert entries["a"]["verdict"] == "regression"


def test_one_run_a_side_and_unjudged_entries_are_not_in_the_family():
    one = _entry("time", 0.001) | {"note": "one run a side", "verdict": "inconclusive"}
    raw = _entry("time", 0.001) | {"judged": False, "verdict": "reference"}
    entries = {"a": {"verdict": "inconclusive", "metrics": [one]}, "b": {"verdict": "unchanged", "metrics": [raw]}}
    assert control_errors(entries, CompareOptions())["tests"] == 0
    assert one["verdict"] == "inconclusive" and raw["verdict"] == "reference"


# --- the attribution rule, made safe ------------------------------------------------------------------------------

def _cell_entry(time_verdict, slowdown_verdict=None, metric="norm_time"):
    metrics = [{"metric": metric, "verdict": time_verdict}]
    if slowdown_verdict:
        metrics.append({"metric": "slowdown", "verdict": slowdown_verdict})
    order = ("regression", "improvement", "inconclusive", "unchanged")
    verdict = next((v for v in order if v in [m["verdict"] for m in metrics]), "unchanged")
    return {"verdict": verdict, "metrics": metrics, "moved": []}


@pytest.mark.parametrize("ref_time", [None, "unchanged", "inconclusive", "improvement"])
def test_an_adapter_keeps_its_regression_unless_its_r0_cell_reported_it(ref_time):
    """r = 0 missing (--cells, out of memory), unmoved, inconclusive or moved the other way: the adapter keeps it."""
    entries = {LORA4.id: _cell_entry("regression", "unchanged")}
    cells = {LORA4.id: LORA4}
    if ref_time:
        entries[PLAIN4.id], cells[PLAIN4.id] = _cell_entry(ref_time), PLAIN4
    attribute_shared_moves(entries, cells, {LORA4.id: frozenset({0}), PLAIN4.id: frozenset({0})})
    assert entries[LORA4.id]["verdict"] == "regression"
    assert "with_reference" not in entries[LORA4.id]["metrics"][0]


def test_a_move_the_r0_cell_reported_alike_is_folded_into_it():
    entries = {LORA4.id: _cell_entry("regression", "unchanged"), PLAIN4.id: _cell_entry("regression")}
    attribute_shared_moves(entries, {LORA4.id: LORA4, PLAIN4.id: PLAIN4},
                           {LORA4.id: frozenset({0, 1}), PLAIN4.id: frozenset({0, 1})})
    assert entries[LORA4.id]["verdict"] == "unchanged" and entries[LORA4.id]["metrics"][0]["with_reference"] == PLAIN4.id
    assert entries[PLAIN4.id]["verdict"] == "regression"


def test_an_r0_cell_of_other_runs_or_only_in_the_baseline_does_not_absorb_a_move():
    entries = {LORA4.id: _cell_entry("regression", "unchanged"), PLAIN4.id: _cell_entry("regression")}
    attribute_shared_moves(entries, {LORA4.id: LORA4, PLAIN4.id: PLAIN4},
                           {LORA4.id: frozenset({0, 1}), PLAIN4.id: frozenset({1})})
    assert entries[LORA4.id]["verdict"] == "regression"
    missing = {LORA4.id: _cell_entry("regression", "unchanged"),
               PLAIN4.id: {"verdict": "missing", "metrics": [], "moved": []}}
    attribute_shared_moves(missing, {LORA4.id: LORA4}, {LORA4.id: frozenset({0})})
    assert missing[LORA4.id]["verdict"] == "regression"


def _runs(n, *, seed0, base_ms=0.3, cells=(PLAIN, LORA, HOULSBY, LORA4, HOULSBY4), slower_b4=1.0, **noise):
    return [syn.results([syn.record(c, seed=seed0 + 100 * i + k, base_ms=base_ms * (slower_b4 if c.batch == 4 else 1.0),
                                    ratio=1.0 if c.adapter == "none" else 1.2, **(dict(run_sd=0.005, round_sd=0.01) | noise))
                         for k, c in enumerate(cells)]) for i in range(n)]


def test_a_slower_loop_without_its_r0_cell_fails_the_run():
    """The reviewed case: b4 loop 15 % slower, its r = 0 cell not selected — the adapters carry the regression."""
    doc = compare_runs(_runs(5, seed0=0), _runs(5, seed0=7, slower_b4=1.15)).to_dict()
    verdicts = {c["cell_id"]: c["verdict"] for c in doc["cells"]}
    assert verdicts[LORA4.id] == "regression" and verdicts[HOULSBY4.id] == "regression"
    assert doc["summary"]["regression"] == 2
    assert verdicts[LORA.id] == "unchanged"


# --- the probe-normalised time ------------------------------------------------------------------------------------

def _probed(rec, *, machine, seed, probe_ms=0.2, recompute=False):
    """The record with probe rounds that follow the machine's speed of the moment (``machine``: the process's
    factor, which the planted record's own rounds also carry)."""
    rng = np.random.default_rng(seed)
    own = rec.ref_samples_ms if recompute else rec.samples_ms
    probe = [probe_ms * machine * float(x) for x in rng.lognormal(0.0, 0.01, len(own))]
    return rec.with_metrics(probe_samples_ms=probe)


def _noisy_runs(n, *, seed0, code=1.0, cells=(PLAIN, LORA)):
    """Runs on a noisy machine: each process 0.7-1.3x as fast, the same for the probe; ``code``: the project's own
    code slower by this factor (the probe is not)."""
    out = []
    for i in range(n):
        machine = float(np.random.default_rng(seed0 + i).uniform(0.7, 1.3))
        recs = [_probed(syn.record(c, seed=seed0 + 100 * i + k, base_ms=0.3 * machine * code,
                                   ratio=1.0 if c.adapter == "none" else 1.2, run_sd=0.0, round_sd=0.01),
                        machine=machine, seed=seed0 + 1000 * i + k) for k, c in enumerate(cells)]
        out.append(syn.results(recs))
    return out


def test_a_probed_cell_is_judged_on_its_normalised_time_and_shows_its_raw_time():
    rec = _noisy_runs(1, seed0=1)[0].records[1]
    assert cell_metrics(rec) == ("norm_time", "time", "slowdown")
    assert cell_metrics(_noisy_runs(1, seed0=1)[0].records[0]) == ("norm_time", "time")
    doc = compare_runs(_noisy_runs(5, seed0=10), _noisy_runs(5, seed0=20)).to_dict()
    for c in doc["cells"]:
        raw = next(m for m in c["metrics"] if m["metric"] == "time")
        assert raw["judged"] is False and raw["verdict"] == "reference" and raw["current"] is not None
    assert "time (raw, shown)" in render_terminal(Comparison.from_dict(doc))


def test_a_uniform_code_slowdown_is_caught_on_a_noisy_machine_through_the_probe():
    """Processes 0.7-1.3x as fast hide a +15 % slower model from raw time; the probe-normalised time sees it."""
    doc = compare_runs(_noisy_runs(5, seed0=30), _noisy_runs(5, seed0=40, code=1.15)).to_dict()
    plain = next(c for c in doc["cells"] if c["cell_id"] == PLAIN.id)
    norm = next(m for m in plain["metrics"] if m["metric"] == "norm_time")
    raw = next(m for m in plain["metrics"] if m["metric"] == "time")
    assert plain["verdict"] == "regression" and norm["verdict"] == "regression"
    assert norm["change"] == pytest.approx(15.0, abs=2.0) and raw["detectable"] > 3 * norm["detectable"]


def test_an_unchanged_code_on_a_noisy_machine_is_unchanged_on_normalised_time():
    doc = compare_runs(_noisy_runs(5, seed0=50), _noisy_runs(5, seed0=60)).to_dict()
    assert doc["summary"]["regression"] == 0
    assert all(m["verdict"] in ("unchanged", "reference") for c in doc["cells"] for m in c["metrics"])


def test_recompute_normalises_plain_decoding():
    rc = syn.Cell("recompute", "lora", 8, batch=1, seq_len=16, window=4, gen_len=16)
    rec = _probed(syn.record(rc, seed=3), machine=1.0, seed=4, recompute=True)
    assert cell_metrics(rec) == ("norm_time", "time", "slowdown")


def test_a_baseline_from_before_the_probe_is_judged_on_raw_time():
    old = [syn.results([syn.record(PLAIN, seed=i, run_sd=0.005)]) for i in range(5)]
    doc = compare_runs(old, _noisy_runs(5, seed0=70, cells=(PLAIN,))).to_dict()
    (plain,) = doc["cells"]
    assert [m["metric"] for m in plain["metrics"]] == ["time"] and plain["metrics"][0].get("judged", True)


# --- paired A/B blocks --------------------------------------------------------------------------------------------

def _drifting_blocks(n, *, seed0, slower=1.0):
    """n blocks of (A run, B run) on a machine whose speed drifts ±20 % between blocks but not within one."""
    a, b = [], []
    for i in range(n):
        drift = float(np.random.default_rng(seed0 + i).uniform(0.8, 1.2))
        for side, factor, out in (("a", 1.0, a), ("b", slower, b)):
            out.append(syn.results([syn.record(PLAIN, seed=seed0 + 10 * i + (side == "b"), base_ms=0.3 * drift * factor,
                                               run_sd=0.003, round_sd=0.01)]))
    return a, b


def test_paired_blocks_remove_the_drift_between_blocks():
    a, b = _drifting_blocks(10, seed0=100, slower=1.06)
    paired = compare_runs(a, b).to_dict()  # 10 blocks: paired by default
    unpaired = compare_runs(a, b, paired=False).to_dict()
    (p,), (u,) = paired["cells"], unpaired["cells"]
    assert p["metrics"][0]["paired"] and p["metrics"][0]["df"] == 9 and p["verdict"] == "regression"
    assert u["verdict"] != "regression" and u["metrics"][0]["detectable"] > 3 * p["metrics"][0]["detectable"]


def test_few_blocks_are_not_paired_by_default():
    a, b = _drifting_blocks(5, seed0=200)
    (c,) = compare_runs(a, b).to_dict()["cells"]
    assert "paired" not in c["metrics"][0] and c["metrics"][0]["df"] == 8
