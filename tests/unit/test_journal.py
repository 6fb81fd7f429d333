import json

import pytest

from perfsuite.formats.journal import Journal, JournalError, write_json_atomic

HEADER = {"machine_info": {"node": "x"}, "commit_info": {"id": "abc"}, "perfsuite": {"profile": "smoke"}}


def bench(cell_id, median):
    return {"name": cell_id, "extra_info": {"cell_id": cell_id}, "stats": {"median": median}}


def test_results_from_the_journal_keep_the_last_measurement(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append("header", **HEADER)
    j.append("benchmark", benchmark=bench("latency[a]", 1.0))
    j.append("not_run", cell_id="latency[b]", status="oom", reason="CUDA out of memory")
    j.append("header", **HEADER)  # a resumed session
    j.append("benchmark", benchmark=bench("latency[a]", 2.0))
    j.append("benchmark", benchmark=bench("latency[b]", 3.0))
    doc = j.to_results_json()
    assert [b["stats"]["median"] for b in doc["benchmarks"]] == [2.0, 3.0]
    assert doc["perfsuite"]["not_run"] == [] and doc["perfsuite"]["sessions"] == 2
    assert j.done_cell_ids() == {"latency[a]", "latency[b]"}


def test_a_journal_is_complete_when_every_collected_cell_is_recorded(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    assert not j.is_complete()
    j.append("header", **HEADER, cells=["latency[a]", "latency[b]"])
    j.append("benchmark", benchmark=bench("latency[a]", 1.0))
    assert not j.is_complete()
    j.append("not_run", cell_id="latency[b]", status="no_device", reason="no GPU")
    assert j.is_complete()


def test_a_torn_last_line_is_dropped_a_broken_middle_line_is_an_error(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append("header", **HEADER)
    j.append("benchmark", benchmark=bench("latency[a]", 1.0))
    path.write_text(path.read_text() + '{"kind": "bench')  # killed mid-write
    assert len(j.read()) == 2
    path.write_text('{"kind": \n' + path.read_text())
    with pytest.raises(JournalError, match="line 1 is not valid JSON"):
        j.read()


def test_no_header_is_not_a_journal(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append("benchmark", benchmark=bench("latency[a]", 1.0))
    with pytest.raises(JournalError, match="no run header"):
        j.to_results_json()


def test_atomic_write_replaces_whole_files(tmp_path):
    p = write_json_atomic(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    write_json_atomic(p, {"b": 2})
    assert json.loads(p.read_text()) == {"b": 2} and [x.name for x in p.parent.iterdir()] == ["r.json"]
