"""The comparison document as typed records: to_dict(from_dict(doc)) is the document, bytes included; a malformed
document is one line naming what is wrong."""

import copy
import json
from pathlib import Path

import pytest
import synthetic as syn
from hypothesis import given, settings, strategies as st

from perfsuite.compare.baselines import baseline_of, parts_of
from perfsuite.compare.verdicts import compare_results, compare_runs
from perfsuite.formats.comparison import (COMPARISON_FORMAT, CellVerdict, Comparison, ComparisonError,
                                          MetricVerdict, PartEntry, VERDICTS, load_comparison, read_comparison)

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(p for d in ("reports", "tests/fixtures") for p in (ROOT / d).rglob("comparison*.json"))
CELLS = (syn.cell("none"), syn.cell("lora"), syn.cell("lora", batch=4))


def _runs(n, start, ratio=1.2):
    return [syn.results([syn.record(c, seed=1000 * (start + i) + k, ratio=1.0 if c.adapter == "none" else ratio,
                                    run_sd=0.05, round_sd=0.02) for k, c in enumerate(CELLS)], source=f"r{i}")
            for i in range(n)]


def _written(doc: dict) -> str:
    return json.dumps(COMPARISON_FORMAT.stamp(doc), indent=1, allow_nan=False) + "\n"


def fresh_documents() -> list[dict]:
    base = baseline_of([parts_of(r)[0] for r in _runs(5, 0)], name="base")
    return [compare_results(_runs(1, 50, ratio=1.3)[0], [base]).to_dict(),
            compare_runs(_runs(3, 10), _runs(3, 20, ratio=1.4)).to_dict()]


def test_committed_comparisons_are_found():
    assert {p.relative_to(ROOT).as_posix() for p in COMMITTED} >= {"reports/smoke-cpu/comparison.json",
                                                                   "tests/fixtures/results/comparison.json"}


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_committed_comparisons_round_trip(path):
    doc = load_comparison(path)
    typed = read_comparison(path)
    assert typed.to_dict() == doc
    assert _written(typed.to_dict()) == _written(doc)
    assert Comparison.from_dict(typed.to_dict()) == typed


def test_fresh_documents_round_trip_byte_for_byte():
    for doc in fresh_documents():
        text = _written(doc)
        typed = Comparison.from_dict(json.loads(text))
        assert _written(typed.to_dict()) == text
        assert sum(typed.summary.values()) == len(typed.cells) and all(isinstance(c, CellVerdict) for c in typed.cells)
        assert typed.has_regression == (typed.count("regression") > 0)


def test_typed_fields_read_what_the_document_says():
    doc = fresh_documents()[0]
    typed = Comparison.from_dict(copy.deepcopy(doc))
    for c, d in zip(typed.cells, doc["cells"]):
        assert (c.cell_id, c.verdict, list(c.moved)) == (d["cell_id"], d["verdict"], d["moved"])
        for m, dm in zip(c.metrics, d["metrics"]):
            assert (m.metric, m.change, m.p_value, m.is_judged) == (dm["metric"], dm["change"], dm["p_value"],
                                                                    dm.get("judged", True))
    assert typed.parts[0].gates and typed.parts[0].error_control == doc["parts"][0]["error_control"]


def test_records_built_directly_write_a_document_that_reads_back():
    m = MetricVerdict("time", "%", "unchanged", baseline=1.0, current=1.01, change=1.0, baseline_runs=5,
                      current_runs=1)
    c = CellVerdict("latency[lora-r8-b1-s32]", "smoke", "unchanged", metrics=(m,))
    doc = Comparison(True, (PartEntry("smoke", "gating"),), (c,), {"unchanged": 1}).to_dict()
    again = Comparison.from_dict(json.loads(json.dumps(doc)))
    assert again.cells[0].metric("time") == m and again.to_dict() == doc and "note" not in doc["cells"][0]


def _broken(edit):
    doc = copy.deepcopy(fresh_documents()[0])
    edit(doc)
    return doc


@pytest.mark.parametrize("edit, says", [
    (lambda d: d["cells"][0].update(verdict="slower"), "'verdict' is 'slower'"),
    (lambda d: d["cells"][0]["metrics"][0].update(change="big"), "'change' is 'big', not a number"),
    (lambda d: d["cells"][0]["metrics"][0].update(verdict=None), "'verdict' is None"),
    (lambda d: d["cells"][0]["metrics"][0].update(unit="s"), "'unit' is 's'"),
    (lambda d: d["cells"][0]["metrics"][0].update(baseline_runs=True), "'baseline_runs' is True"),
    (lambda d: d["cells"][0]["metrics"][0].pop("metric"), "no 'metric'"),
    (lambda d: d["cells"][0].update(moved="time"), "'moved' is 'time'"),
    (lambda d: d["cells"][0].update(metrics={}), "'metrics' is {}"),
    (lambda d: d["parts"][0].update(mode="gate"), "'mode' is 'gate'"),
    (lambda d: d["parts"].append(3), "part 1: expected an object"),
    (lambda d: d.update(summary={"regression": "1"}), "'summary' is not an object of counts"),
    (lambda d: d.update(gating="yes"), "'gating' is 'yes'"),
    (lambda d: d.update(cells=[1]), "'cells' is not a list"),
    (lambda d: d.update(perfsuite_comparison=99), "newer than this perfsuite"),
])
def test_a_malformed_document_is_one_line(edit, says):
    with pytest.raises(ComparisonError) as e:
        Comparison.from_dict(_broken(edit))
    assert says in str(e.value) and "\n" not in str(e.value)


_number = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False))
_text = st.text(max_size=8)
_metric = st.fixed_dictionaries(
    {"metric": _text, "unit": st.sampled_from(["%", "pp"]), "verdict": st.sampled_from(VERDICTS),
     **{k: _number for k in ("baseline", "current", "change", "ci_low", "ci_high", "detectable", "change_pct",
                             "ci_low_pct", "ci_high_pct", "p_value", "df", "noise_pct", "se_log", "p_adjusted")},
     "baseline_runs": st.integers(0, 50), "current_runs": st.integers(0, 50)},
    optional={"note": _text, "with_reference": _text, "judged": st.booleans(), "paired": st.booleans(),
              "outlier_runs": st.integers(0, 2), "future_key": st.integers()})
_cell = st.fixed_dictionaries(
    {"cell_id": _text, "part": st.one_of(st.none(), _text), "verdict": st.sampled_from(VERDICTS),
     "moved": st.lists(_text, max_size=2), "remeasured": st.integers(0, 3), "metrics": st.lists(_metric, max_size=3)},
    optional={"note": _text, "not_run": st.sampled_from(["oom", "no_device", "outside_budget"])})
_part = st.fixed_dictionaries(
    {"profile": st.one_of(st.none(), _text), "mode": st.sampled_from(["gating", "reference", "ab", "none"]),
     "baseline": st.one_of(st.none(), _text), "baseline_runs": st.integers(0, 9), "current_runs": st.integers(0, 9),
     "machine": st.one_of(st.none(), _text), "baseline_machine": st.one_of(st.none(), _text),
     "differences": st.lists(_text, max_size=2), "hint": st.one_of(st.none(), _text)},
    optional={"error_control": st.sampled_from(["holm", "bh", "none"]), "tests": st.integers(0, 99),
              "alpha": st.floats(0.001, 0.5), "per_test_alpha": st.floats(0.0001, 0.5),
              "baseline_quality": st.fixed_dictionaries({"runs": st.integers(1, 9)})})
_document = st.fixed_dictionaries(
    {"perfsuite_comparison": st.just(5), "gating": st.booleans(), "parts": st.lists(_part, max_size=2),
     "cells": st.lists(_cell, max_size=3), "summary": st.dictionaries(st.sampled_from(VERDICTS), st.integers(0, 9)),
     "allow_missing": st.booleans()})


@settings(max_examples=60, deadline=None)
@given(_document)
def test_generated_documents_round_trip(doc):
    text = _written(doc)  # as a writer writes it: the format version first
    assert _written(Comparison.from_dict(json.loads(text)).to_dict()) == text
