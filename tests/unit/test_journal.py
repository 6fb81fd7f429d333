"""perfsuite.formats.journal: cells kept as they finish, resumed, and assembled into one results document."""

import json

import pytest

from perfsuite.cells.grid import Cell
from perfsuite.formats.io import write_json_atomic
from perfsuite.formats.journal import Journal, JournalError
from perfsuite.formats.record import CellRecord, not_run
from perfsuite.formats.results import results_from_document

HEADER = {"machine_info": {"node": "x"}, "commit_info": {"id": "abc"}, "datetime": "2026-11-23T00:00:00+00:00",
          "pytest_benchmark_version": "5.2.0"}
SETTINGS = {"profile": "smoke", "device": "cpu", "dtype": "float32"}
A, B = Cell("latency", "lora", 8, batch=1, seq_len=32), Cell("latency", "lora", 8, batch=4, seq_len=32)


def bench(cell, median):
    extra = CellRecord(cell, metrics={"time_ms": median}).to_dict()
    return {"name": cell.id, "fullname": f"t.py::test[{cell.param_id}]", "extra_info": extra,
            "stats": {"median": median, "rounds": 3}}


def test_results_from_the_journal_keep_the_last_measurement(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append_header(HEADER, SETTINGS, [A.id, B.id], [])
    j.append_benchmark(bench(A, 1.0))
    j.append_not_run(not_run(B, "oom", "CUDA out of memory"))
    j.append_header(HEADER, SETTINGS, [B.id], [A.id])  # a resumed session
    j.append_benchmark(bench(A, 2.0))
    j.append_benchmark(bench(B, 3.0))
    doc = j.to_results_json()
    assert [b["stats"]["median"] for b in doc["benchmarks"]] == [2.0, 3.0]
    assert doc["perfsuite"]["not_run"] == [] and doc["perfsuite"]["sessions"] == 2
    assert doc["perfsuite"]["profile"] == "smoke" and doc["perfsuite"]["perfsuite_schema"] >= 2
    assert j.done_cell_ids() == {A.id, B.id}
    assert [r.get("time_ms") for r in results_from_document(doc, "j").records] == [2.0, 3.0]


def test_a_journal_is_complete_when_every_collected_cell_is_recorded(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    assert not j.is_complete()
    j.append_header(HEADER, SETTINGS, [A.id, B.id], [])
    j.append_benchmark(bench(A, 1.0))
    assert not j.is_complete()
    j.append_not_run(not_run(B, "no_device", "no GPU"))
    assert j.is_complete()
    assert j.done_cell_ids() == {A.id}  # a cell skipped for want of a device is tried again on resume


def test_a_torn_last_line_is_dropped_a_broken_middle_line_is_an_error(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append_header(HEADER, SETTINGS, [A.id], [])
    j.append_benchmark(bench(A, 1.0))
    path.write_text(path.read_text() + '{"kind": "bench')  # killed mid-write
    assert len(j.read()) == 2
    path.write_text('{"kind": \n' + path.read_text())
    with pytest.raises(JournalError, match="line 1 is not valid JSON"):
        j.read()


def test_no_header_is_not_a_journal(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append_benchmark(bench(A, 1.0))
    with pytest.raises(JournalError, match="no run header"):
        j.to_results_json()


def test_a_malformed_not_run_line_is_one_error_line(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append_header(HEADER, SETTINGS, [A.id], [])
    j.append("not_run", perfsuite_schema=2, cell={"workload": "latency"}, status="oom")
    with pytest.raises(JournalError, match="line 2: malformed cell record"):
        j.to_results_json()


def test_a_journal_of_schema_1_records_migrates(tmp_path):
    """A journal left by an older perfsuite (records of schema 1) still resumes and assembles."""
    j = Journal(tmp_path / "j.jsonl")
    j.append_header(HEADER, SETTINGS, [A.id, B.id], [])
    old = {"perfsuite_schema": 1, "cell_id": A.id, "cell": A.to_dict(), "status": "ok", "reason": None, "env": {},
           "model_dims": {}, "samples_ms": [1.2, 1.2, 1.2], "base_samples_ms": [1.0, 1.0, 1.0]}
    j.append_benchmark({"name": A.id, "extra_info": old, "stats": {"rounds": 3}})
    j.append("not_run", perfsuite_schema=1, cell_id=B.id, cell=B.to_dict(), status="oom", reason="OOM")
    (rec, skipped) = results_from_document(j.to_results_json(), "j").records
    assert rec.ref_samples_ms == (1.0, 1.0, 1.0) and rec.get("slowdown_pct") == pytest.approx(20.0)
    assert skipped.status == "oom"


def test_atomic_write_replaces_whole_files(tmp_path):
    p = write_json_atomic(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    write_json_atomic(p, {"b": 2})
    assert json.loads(p.read_text()) == {"b": 2} and [x.name for x in p.parent.iterdir()] == ["r.json"]
