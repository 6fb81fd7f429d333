"""What a baseline can confirm: sittings (days, reboots), its detectable change, a baseline too noisy to gate."""

from dataclasses import replace
import math

import numpy as np
import pytest
import synthetic as syn

from perfsuite.compare.baselines import add_runs, baseline_of, parts_of
from perfsuite.compare.quality import NOISY_BASELINE_PCT, assess, detectable_one_run, sittings
from perfsuite.compare.render import render_terminal
from perfsuite.formats.comparison import Comparison
from perfsuite.compare.verdicts import compare_results
from perfsuite.formats.baseline import BASELINE_FORMAT, BaselineRun, boot_of, load_baseline

CELLS = (syn.cell("none"), syn.cell("lora"))


def _run(i, *, boot="0001", when="2026-12-01T10:00:00+00:00", run_sd=0.005):
    """A run on a machine named by PERFSUITE_MACHINE_ID (one fingerprint across reboots), its boot in the env."""
    recs = [syn.record(c, seed=10 * i + k, ratio=1.0 if c.adapter == "none" else 1.2, run_sd=run_sd,
                       e=syn.env(host="named-runner", boot=boot)) for k, c in enumerate(CELLS)]
    doc = syn.document(recs)
    doc["datetime"] = when
    from perfsuite.formats.results import results_from_document

    return results_from_document(doc, f"r{i}.json")


def test_boot_of_reads_the_env_or_the_host():
    assert boot_of({"host": "vm#boot-1a2b3c4d"}) == "1a2b3c4d" and boot_of({"boot": "x", "host": "vm"}) == "x"
    assert boot_of("named-machine") is None and boot_of(None) is None


def test_runs_of_one_boot_back_to_back_are_one_sitting_a_reboot_or_a_day_another():
    def run(when, boot):
        return BaselineRun({}, {}, {"datetime": when, "boot": boot})

    same = [run(f"2026-12-01T10:0{i}:00+00:00", "b1") for i in range(5)]
    assert sittings(same) == 1
    assert sittings(same + [run("2026-12-01T10:30:00+00:00", "b2")]) == 2  # a reboot
    assert sittings(same + [run("2026-12-02T10:00:00+00:00", "b1")]) == 2  # the next day
    assert sittings([run(None, None), run(None, None)]) == 1


def test_a_baseline_records_when_and_on_which_boot_each_run_was_made(tmp_path):
    (r,) = add_runs([_run(0, boot="aaaa1111"), _run(1, boot="aaaa1111", when="2026-12-01T10:02:00+00:00")],
                    directory=tmp_path)
    b = load_baseline(r.path)
    assert [run.boot for run in b.runs] == ["aaaa1111", "aaaa1111"]
    assert b.runs[1].when == "2026-12-01T10:02:00+00:00"
    assert any("one sitting" in line and "cannot confirm" in line for line in r.lines())


def test_a_v3_baseline_migrates_with_its_runs_dated():
    doc = {"perfsuite_baseline": 3, "fingerprint": {"host": "vm#boot-deadbeef"},
           "runs": [{"source": {"datetime": "2026-11-01T00:00:00+00:00"}, "cells": {}}]}
    new = BASELINE_FORMAT.upgrade(doc, "v3")
    assert new["runs"][0]["recorded"] == {"datetime": "2026-11-01T00:00:00+00:00", "boot": "deadbeef"}


def test_detectable_change_of_one_run_against_k():
    assert detectable_one_run([0.0]) is None
    # t(0.995, 4) = 4.604; s = 0.01; √(1 + 1/5) = 1.0954 → 5.04 % (expm1)
    est = [0.0, 0.01, -0.01, 0.0141421356, -0.0141421356]
    s = float(np.std(est, ddof=1))
    assert detectable_one_run(est) == pytest.approx(100 * math.expm1(4.604 * s * 1.0954), rel=1e-3)
    # a prior worth 40 df of the same spread: t(0.995, 44) = 2.692, and two current runs: √(1/2 + 1/5)
    helped = detectable_one_run(est, prior_s2=s * s, prior_df=40.0, current_runs=2)
    assert helped == pytest.approx(100 * math.expm1(2.692 * s * math.sqrt(0.7)), rel=2e-3)


def test_the_quote_is_at_the_gates_level():
    """What a comparison says one night can confirm is at α / tests / looks, the level its verdicts need."""
    runs = [_run(i, when=f"2026-12-01T10:0{i}:00+00:00") for i in range(5)]
    q = assess(baseline_of([parts_of(r)[0] for r in runs], name="b"))
    assert q.tests == 3 and q.level == pytest.approx(0.01 / 3 / 2)  # r = 0: time; LoRA: time and slow-down
    assert "the gate's level: p < 0.0017, 3 tests" in q.lines()[0]


def test_several_sittings_put_the_day_into_the_spread():
    runs = [_run(i, boot="b1" if i < 3 else "b2", when=f"2026-12-0{1 + i // 3}T10:0{i}:00+00:00") for i in range(5)]
    q = assess(baseline_of([parts_of(r)[0] for r in runs], name="b"))
    assert q.sittings == 2 and q.boots == 2 and not q.too_noisy
    assert "2 sittings" in q.lines()[0]


def test_a_baseline_recorded_under_load_is_flagged_when_recorded_and_in_every_comparison(tmp_path):
    noisy = [_run(i, run_sd=0.5, when=f"2026-12-01T10:0{i}:00+00:00") for i in range(5)]
    (r,) = add_runs(noisy, directory=tmp_path)
    assert any("too noisy to gate" in line for line in r.lines())
    q = assess(load_baseline(r.path))
    assert q.too_noisy and max(q.detectable_pct.values()) > NOISY_BASELINE_PCT
    doc = compare_results(_run(9), [load_baseline(r.path)]).to_dict()
    assert doc["parts"][0]["baseline_quality"]["too_noisy"] and "too noisy to gate" in render_terminal(Comparison.from_dict(doc))


# Two methods of two shapes each and the plain model: enough for method-wide groups and every adapter's.
GRID = [syn.cell("none", batch=b) for b in (1, 4)] + [syn.cell(a, batch=b) for a in ("lora", "houlsby") for b in (1, 4)]


def _grid_records(i):
    """Run i of GRID on one named machine: quiet, LoRA and Houlsby 1.2 × the plain model."""
    return [syn.record(c, seed=10 * i + k, ratio=1.0 if c.adapter == "none" else 1.2, run_sd=0.005,
                       e=syn.env(host="named-runner")) for k, c in enumerate(GRID)]


def _results(records, i):
    from perfsuite.formats.results import results_from_document

    return results_from_document(syn.document(records), f"r{i}.json")


def test_the_quote_counts_the_gates_family_memory_and_groups_included():
    """The quote's level is the gate's own: a comparison of one of the baseline's runs against it adjusts over the
    same number of tests — cells' time and slow-down, their peak memory, and the method-wide groups (two methods of
    two cells each: one group each, and one of every adapter). It counted 10 of the gate's 19 before (no memory,
    no groups): a looser level than the gate's, so it quoted a smaller change than one night can confirm."""
    def run(i):
        return _results([replace(r, metrics={**r.metrics, "peak_mem_bytes": 1 << 20}) for r in _grid_records(i)], i)

    runs = [run(i) for i in range(5)]
    base = baseline_of([parts_of(r)[0] for r in runs], name="b")
    gate = compare_results(run(9), [base]).to_dict()["parts"][0]["tests"]
    q = assess(base)
    assert q.tests == gate == 6 + 4 + 6 + 3  # time 6, slow-down 4, peak memory 6, groups 3


def test_one_noisy_cell_does_not_flag_a_baseline_whose_other_tests_gate_well():
    """The subspace analysis' time is one cell of its own metric: however it spreads, a baseline whose other tests
    confirm small changes is not 'too noisy' (flagged on any metric's median, a quiet smoke baseline was)."""
    sub = syn.Cell("subspace", "lora", 8, rank_b=64)  # in the smoke part, on the tiny model
    def run(i):
        # a probe in every loop: the latency cells are judged on norm_time, the subspace cell alone on time
        recs = [replace(r, metrics={**r.metrics, "probe_samples_ms": [x / 3 for x in r.metrics["ref_samples_ms"]]})
                for r in _grid_records(i)]
        return _results([*recs, syn.timed_only(sub, seed=100 + i, run_sd=0.8, e=syn.env(host="named-runner"))], i)

    q = assess(baseline_of([parts_of(run(i))[0] for i in range(5)], name="b"))
    assert q.detectable_pct["time"] > NOISY_BASELINE_PCT  # the one noisy cell's metric
    assert max(v for m, v in q.detectable_pct.items() if m != "time") < NOISY_BASELINE_PCT
    assert not q.too_noisy
