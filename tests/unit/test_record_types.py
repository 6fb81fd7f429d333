"""The typed timing core of a record and the typed run header: read from the same JSON, checked on reading."""

import pytest
import synthetic as syn

from perfsuite.formats.record import CellRecord, RecordError


def _doc(**metrics):
    return syn.record(syn.cell("lora"), seed=1).to_dict() | metrics


def test_the_timing_core_is_typed_and_the_json_unchanged():
    d = _doc(probe_samples_ms=[0.5, 0.6], samples_ms=[1.0, 2.0], ref_samples_ms=[0.9, 1.8], cycle=3, rounds=2)
    rec = CellRecord.from_dict(d)
    assert rec.samples_ms == (1.0, 2.0) and rec.ref_samples_ms == (0.9, 1.8) and rec.probe_samples_ms == (0.5, 0.6)
    assert (rec.cycle, rec.rounds) == (3, 2)
    assert rec.to_dict() == d


def test_an_absent_timing_core_reads_as_none():
    d = {k: v for k, v in _doc().items() if k not in ("samples_ms", "ref_samples_ms", "cycle", "rounds",
                                                      "probe_samples_ms")}
    rec = CellRecord.from_dict(d)
    assert (rec.samples_ms, rec.ref_samples_ms, rec.probe_samples_ms, rec.cycle, rec.rounds) == (None,) * 5


@pytest.mark.parametrize("bad, says", [({"probe_samples_ms": [1.0, -1.0]}, "probe_samples_ms holds -1.0"),
                                       ({"probe_samples_ms": "fast"}, "probe_samples_ms is str"),
                                       ({"cycle": 2.5}, "cycle = 2.5 is not a count"),
                                       ({"cycle": True}, "cycle = True is not a count")])
def test_a_malformed_timing_core_is_one_line(bad, says):
    with pytest.raises(RecordError) as e:
        CellRecord.from_dict(_doc(**bad))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_run_reads_as_runinfo_with_attributes_and_get():
    from perfsuite.formats.results import Results, RunInfo, results_from_document

    doc = syn.document([syn.record(syn.cell("lora"), seed=1)], selection="adapter == 'lora'", shard="1/2")
    (run,) = results_from_document(doc, "run.json").runs
    assert isinstance(run, RunInfo) and (run.source, run.profile, run.selection, run.shard) == (
        "run.json", "smoke", "adapter == 'lora'", "1/2")
    assert run.get("profile") == run["profile"] == "smoke" and run.get("not a setting", 7) == 7
    again = Results(runs=[run.to_dict()]).runs[0]  # a mapping given is read as a RunInfo
    assert again == run and RunInfo.from_dict({"profile": "smoke", "future": 1}).get("future") == 1
