"""Baselines: round trip, merge, migration of committed old files; bad and mismatched files leave disk untouched."""

import json
import shutil
from pathlib import Path

import pytest

from perfsuite.formats.io import write_json_atomic
from perfsuite.formats.baseline import BASELINE_VERSION, BaselineError, cell_stats, default_name, find_baseline, \
    fingerprint_of, load_baseline, load_reference, update_baseline
from perfsuite.cli import main
from perfsuite.formats.results import load_results

FIXTURES = Path(__file__).parents[1] / "fixtures" / "baselines"
REPO = Path(__file__).parents[2]
RUN_A = FIXTURES / "results_smoke_cpu_a.json"
RUN_B = FIXTURES / "results_smoke_cpu_b.json"
DEFAULT = "smoke_cpu-amd-epyc_torch-2.13.0-cpu_nocuda_float32_tiny.json"


def other_device(tmp_path: Path, source: Path = RUN_A, device_name: str = "cpu: Other CPU") -> Path:
    doc = json.loads(source.read_text())
    for bench in doc["benchmarks"]:
        bench["extra_info"]["env"]["device_name"] = device_name
    out = tmp_path / "runs" / "other.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc))
    return out


def test_update_creates_a_baseline_named_by_profile_and_fingerprint(tmp_path):
    results = load_results([RUN_A])
    report = update_baseline(results, directory=tmp_path)
    assert report.created and report.path == tmp_path / DEFAULT
    baseline = load_baseline(report.path)
    assert baseline.fingerprint == fingerprint_of(results) and baseline.profile == "smoke"
    frame = results.frame.set_index("cell_id")
    assert set(baseline.cells) == set(frame.index[frame["status"] == "ok"])
    for cell_id, record in baseline.cells.items():
        assert record["samples_ms"] == frame.loc[cell_id, "samples_ms"]
        assert record["ref_samples_ms"] == frame.loc[cell_id, "ref_samples_ms"]
        assert record["time_ms"] == pytest.approx(frame.loc[cell_id, "time_ms"])
        assert record["slowdown_pct"] == pytest.approx(frame.loc[cell_id, "slowdown_pct"])


def test_round_trip_is_lossless(tmp_path):
    path = update_baseline(load_results([RUN_A]), directory=tmp_path).path
    first = load_baseline(path)
    write_json_atomic(tmp_path / "copy.json", first.to_json())
    second = load_baseline(tmp_path / "copy.json")
    assert second.to_json() == first.to_json()
    assert json.loads(path.read_text())["perfsuite_baseline"] == BASELINE_VERSION


def test_update_merges_cells_and_says_what_changed(tmp_path, capsys):
    assert main(["baseline", "update", str(RUN_A), "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"created {tmp_path / DEFAULT}\n")
    assert "4 cells added, 0 replaced, 0 kept as they were, 0 removed" in out
    assert main(["baseline", "update", str(RUN_B), "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"updated {tmp_path / DEFAULT}\n")
    assert "0 cells added, 4 replaced" in out
    assert "  ~ latency[lora-r8-b1-s32]: " in out and " ms (" in out
    b_cells = load_results([RUN_B]).frame.set_index("cell_id")
    stored = load_baseline(tmp_path / DEFAULT).cells
    assert stored["latency[lora-r8-b1-s32]"]["samples_ms"] == b_cells.loc["latency[lora-r8-b1-s32]", "samples_ms"]


def test_cells_missing_from_a_run_are_kept_unless_pruned(tmp_path):
    path = update_baseline(load_results([RUN_A]), directory=tmp_path).path
    doc = json.loads(RUN_B.read_text())
    doc["benchmarks"] = [b for b in doc["benchmarks"] if "lora" in b["name"]]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(doc))
    report = update_baseline(load_results([partial]), directory=tmp_path)
    assert sorted(report.kept) == ["latency[none-r0-b1-s32]", "latency[none-r0-b4-s32]"]
    assert len(load_baseline(path).cells) == 4
    report = update_baseline(load_results([partial]), directory=tmp_path, prune=True)
    assert sorted(report.removed) == ["latency[none-r0-b1-s32]", "latency[none-r0-b4-s32]"]
    assert sorted(load_baseline(path).cells) == ["latency[lora-r8-b1-s32]", "latency[lora-r8-b4-s32]"]


def test_a_baseline_of_another_device_is_never_silently_replaced(tmp_path, capsys):
    path = update_baseline(load_results([RUN_A]), directory=tmp_path).path
    before = path.read_bytes()
    other = other_device(tmp_path)
    code = main(["baseline", "update", str(other), "--dir", str(tmp_path), "--name", path.stem])
    err = capsys.readouterr().err
    assert code == 2 and path.read_bytes() == before
    assert err.count("\n") == 1 and "is the baseline of another setup (device_name: 'cpu: AMD EPYC' vs " \
                                    "'cpu: Other CPU'); refusing to replace it" in err
    report = update_baseline(load_results([other]), directory=tmp_path, name=path.stem, force=True)
    assert report.replaced_other.startswith("cpu: AMD EPYC") and len(report.added) == 4
    assert load_baseline(path).fingerprint.device_name == "cpu: Other CPU"


@pytest.mark.parametrize("fixture,message", [
    ("corrupt_truncated.json", "not valid JSON (line"),
    ("corrupt_samples.json", "cell latency[lora-r8-b1-s32]: samples_ms: samples must be a list of positive finite"),
    ("corrupt_cell.json", "cell latency[lora-r8-b1-s32]: the record describes latency[lora-r16-b1-s32]"),
    ("future_v99.json", "baseline format 99 is newer than this perfsuite reads (2); upgrade perfsuite"),
    ("not_a_baseline.json", "not a perfsuite baseline (no 'perfsuite_baseline' format version)"),
])
def test_bad_baselines_give_one_clear_line_and_stay_untouched(tmp_path, capsys, fixture, message):
    target = tmp_path / DEFAULT
    shutil.copy(FIXTURES / fixture, target)
    before = target.read_bytes()
    with pytest.raises(BaselineError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        load_baseline(target)
    assert main(["baseline", "update", str(RUN_A), "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfsuite baseline: error: ") and err.count("\n") == 1 and message in err
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEFAULT]  # no temporary file left behind


def test_v1_baseline_migrates_in_memory_and_on_update(tmp_path):
    v1 = FIXTURES / "v1_smoke_cpu.json"
    raw = json.loads(v1.read_text())
    assert raw["perfsuite_baseline"] == 1
    baseline = load_baseline(v1)
    assert baseline.profile == "smoke" and baseline.fingerprint.device_name == "cpu: AMD EPYC"
    assert sorted(baseline.cells) == sorted(c["cell_id"] for c in raw["cells"])
    for entry in raw["cells"]:
        record = baseline.cells[entry["cell_id"]]
        assert record["samples_ms"] == entry["samples_ms"]
        expected = cell_stats(entry["samples_ms"], entry["base_samples_ms"])
        assert record["time_ms"] == expected["time_ms"] and record["slowdown_pct"] == expected["slowdown_pct"]
    assert json.loads(v1.read_text()) == raw  # reading never rewrites the file
    target = tmp_path / DEFAULT
    shutil.copy(v1, target)
    report = update_baseline(load_results([RUN_B]), directory=tmp_path)
    assert json.loads(target.read_text())["perfsuite_baseline"] == BASELINE_VERSION
    assert len(report.replaced) == 2 and len(report.added) == 2  # v1 held the two lora cells


def test_find_baseline_by_fingerprint_and_profile(tmp_path):
    results = load_results([RUN_A])
    assert find_baseline(results, tmp_path / "absent") is None
    assert find_baseline(results, tmp_path) is None
    update_baseline(load_results([other_device(tmp_path)]), directory=tmp_path)
    assert find_baseline(results, tmp_path) is None  # only another device's baseline there
    other = find_baseline(results, tmp_path, portable=True)  # ... which serves the portable slow-down
    assert other is not None and load_baseline(other).fingerprint.device_name == "cpu: Other CPU"
    path = update_baseline(results, directory=tmp_path).path
    assert find_baseline(results, tmp_path) == path
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(BaselineError, match="broken.json: not valid JSON"):
        find_baseline(results, tmp_path)


def test_a_results_file_serves_as_a_reference():
    reference = load_reference(RUN_B)
    assert reference.fingerprint == fingerprint_of(load_results([RUN_B]))
    assert reference.name == str(RUN_B) and len(reference.cells) == 4


def test_default_name_shows_profile_and_fingerprint():
    fp = fingerprint_of(load_results([RUN_A]))
    assert default_name(fp, "smoke") + ".json" == DEFAULT


def test_committed_cpu_smoke_baseline_is_current_and_complete():
    files = sorted((REPO / "baselines").glob("smoke_*.json"))
    assert files, "the CPU smoke baseline is committed under baselines/"
    for path in files:
        assert json.loads(path.read_text())["perfsuite_baseline"] == BASELINE_VERSION
        baseline = load_baseline(path)
        assert path.stem == default_name(baseline.fingerprint, baseline.profile)
        latency = [r for r in baseline.cells.values() if r["cell"]["workload"] == "latency"]
        assert latency and all(len(r["samples_ms"]) == len(r["ref_samples_ms"]) >= 10 for r in latency)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "b.json"
    path.write_text('{"old": true}\n')
    with pytest.raises(TypeError):
        write_json_atomic(path, {"not json": object()})
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_no_baseline_matches_a_run_where_no_cell_ran(tmp_path):
    update_baseline(load_results([RUN_A]), directory=tmp_path)
    doc = json.loads(RUN_A.read_text())
    doc["perfsuite"]["not_run"] = [{**b["extra_info"], "status": "no_device", "reason": "no GPU"}
                                   for b in doc["benchmarks"]]
    doc["benchmarks"] = []
    nothing = tmp_path / "runs" / "nothing.json"
    nothing.parent.mkdir()
    nothing.write_text(json.dumps(doc))
    assert find_baseline(load_results([nothing]), tmp_path) is None


def test_a_baseline_that_would_not_read_back_is_not_written(tmp_path):
    results = load_results([RUN_A])
    row = results.frame.index[results.frame["samples_ms"].notna()][0]
    results.frame.at[row, "samples_ms"] = "abc"
    with pytest.raises(BaselineError, match="samples"):
        update_baseline(results, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []
