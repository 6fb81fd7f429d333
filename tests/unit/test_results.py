"""perfsuite.formats.results: pytest-benchmark JSON files → one tidy frame, against the committed fixtures."""

import json
import math
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfsuite.formats.results import ResultsError, load_results

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
SMOKE = FIXTURES / "latency_smoke.json"
RECOMPUTE = FIXTURES / "recompute_fig13.json"
SUBSPACE = FIXTURES / "subspace_small.json"
GOOD = (SMOKE, RECOMPUTE, SUBSPACE)


def doc(path: Path) -> dict:
    return json.loads(path.read_text())


def row(frame: pd.DataFrame, cell_id: str) -> dict:
    rows = frame[frame["cell_id"] == cell_id].to_dict("records")
    assert len(rows) == 1, cell_id
    return rows[0]


def test_smoke_run_is_one_row_per_cell_with_its_numbers():
    res = load_results([SMOKE])
    frame = res.frame
    raw = {b["extra_info"]["cell_id"]: b["extra_info"] for b in doc(SMOKE)["benchmarks"]}
    assert sorted(frame["cell_id"]) == sorted(raw)
    assert len(frame) == 18
    houlsby = row(frame, "latency[houlsby-r8-b1-s32]")
    assert houlsby["slowdown_pct"] == pytest.approx(29.697487796306454)
    assert houlsby["time_ms"] == pytest.approx(raw["latency[houlsby-r8-b1-s32]"]["time_ms"])
    assert houlsby["ref_time_ms"] == pytest.approx(0.2509594999935416)
    assert (houlsby["adapter"], houlsby["rank"], houlsby["batch"], houlsby["seq_len"]) == ("houlsby", 8, 1, 32)
    assert houlsby["status"] == "ok" and houlsby["device_name"] == "cpu: AMD EPYC"
    assert pd.isna(houlsby["peak_mem_bytes"])  # None on the CPU stays missing, never 0
    assert houlsby["rounds"] == 30
    assert list(frame.columns[:16]) == ["cell_id", "workload", "adapter", "rank", "batch", "seq_len", "window",
                                        "gen_len", "rank_b", "dtype", "device", "model", "impl", "mode", "status",
                                        "reason"]
    assert set(frame["impl"]) == {"ref"}  # records written before cells had an implementation
    assert set(frame["mode"]) == {"eager"}  # ... or a mode


def test_run_metadata_is_kept():
    (run,) = load_results([SMOKE]).runs
    assert run["profile"] == "smoke" and run["device"] == "cpu" and run["dtype"] == "float32"
    assert run["commit"].startswith("f493f28") and run["datetime"].startswith("2026-11-23")
    assert run["torch_version"] == "2.13.0+cpu" and run["source"] == str(SMOKE)


def test_cells_that_did_not_run_are_rows_with_their_status():
    frame = load_results([RECOMPUTE]).frame
    over = row(frame, "recompute[none-r0-b32-s128-w32-g512]")
    assert over["status"] == "outside_budget" and "budget" in over["reason"]
    assert math.isnan(over["recompute_pct"])
    assert row(frame, "recompute[none-r0-b1-s128-w256-g512]")["recompute_pct"] == pytest.approx(46.41)
    assert frame["status"].value_counts().to_dict() == {"ok": 42, "outside_budget": 30}


def test_partial_file_keeps_oom_and_lacks_the_lost_cell():
    frame = load_results([FIXTURES / "latency_partial.json"]).frame
    assert row(frame, "latency[houlsby-r8-b4-s32]")["status"] == "oom"
    assert "latency[lin-r8-b4-s32]" not in set(frame["cell_id"])
    assert set(frame["adapter"]) == {"none", "houlsby", "lin"}


def test_workloads_merge_into_one_frame():
    res = load_results(GOOD)
    assert set(res.frame["workload"]) == {"latency", "recompute", "subspace"}
    assert len(res.runs) == 3 and not res.errors
    (sub,) = res.workload("subspace").to_dict("records")
    assert len(sub["subspace"]) == 10 and sub["subspace"][0]["matrix"] == "q"


@pytest.mark.parametrize("name, message", [
    ("broken.json", "not valid JSON (line"),
    ("foreign_pytest_benchmark.json", "not written by perfsuite (no 'perfsuite' section)"),
    ("not_a_benchmark.json", "not a pytest-benchmark JSON file"),
    ("newer_schema.json", "cell record format 99 is newer than this perfsuite reads (2); upgrade perfsuite"),
])
def test_bad_files_are_one_line_naming_file_and_problem(name, message):
    with pytest.raises(ResultsError) as info:
        load_results([FIXTURES / name])
    text = str(info.value)
    assert text.startswith(str(FIXTURES / name) + ": ") and message in text and "\n" not in text


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ResultsError, match="nope.json: cannot read"):
        load_results([tmp_path / "nope.json"])
    (tmp_path / "results.json.gz").write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")
    with pytest.raises(ResultsError, match=r"results.json.gz: not a text file"):
        load_results([tmp_path / "results.json.gz"])


def test_duplicate_cells_across_and_within_files(tmp_path):
    with pytest.raises(ResultsError, match=r"latency_partial.json: duplicate cell latency\[none-r0-b1-s32\] "
                                           r"\(also in .*latency_smoke.json\)"):
        load_results([SMOKE, FIXTURES / "latency_partial.json"])
    twice = doc(SMOKE)
    twice["benchmarks"].append(twice["benchmarks"][3])
    (tmp_path / "twice.json").write_text(json.dumps(twice))
    with pytest.raises(ResultsError, match=r"twice.json: duplicate cell .* \(twice in this file\)"):
        load_results([tmp_path / "twice.json"])


def test_malformed_not_run_is_an_error_not_a_crash(tmp_path):
    bad = doc(FIXTURES / "latency_partial.json")
    bad["perfsuite"]["not_run"] = ["latency[houlsby-r8-b4-s32]"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ResultsError, match="bad.json: not_run entry 0: expected a JSON object, found str"):
        load_results([tmp_path / "bad.json"])


def test_non_strict_keeps_what_loaded_and_lists_each_bad_file():
    res = load_results([SMOKE, FIXTURES / "broken.json", RECOMPUTE, FIXTURES / "newer_schema.json",
                        FIXTURES / "latency_partial.json"], strict=False)
    assert [r["source"] for r in res.runs] == [str(SMOKE), str(RECOMPUTE)]
    assert len(res.frame) == 18 + 72
    assert len(res.errors) == 3
    assert all("\n" not in e for e in res.errors)
    assert res.errors[0].startswith(str(FIXTURES / "broken.json"))
    assert "duplicate cell" in res.errors[2]


# --- reordering or splitting the benchmarks across files does not change the frame ---------------------


def _entries(path: Path) -> tuple[dict, list[tuple[str, dict]]]:
    d = doc(path)
    entries = [("benchmarks", b) for b in d["benchmarks"]] + [("not_run", e) for e in d["perfsuite"]["not_run"]]
    return d, entries


def _write_shards(d: dict, entries: list, cuts: list[int], out: Path, stem: str) -> list[Path]:
    paths = []
    bounds = [0, *sorted(set(cuts)), len(entries)]
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        if lo == hi:
            continue
        shard = {key: value for key, value in d.items() if key not in ("benchmarks", "perfsuite")}
        shard["perfsuite"] = dict(d["perfsuite"], not_run=[e for kind, e in entries[lo:hi] if kind == "not_run"])
        shard["benchmarks"] = [e for kind, e in entries[lo:hi] if kind == "benchmarks"]
        paths.append(out / f"{stem}-{k}.json")
        paths[-1].write_text(json.dumps(shard))
    return paths


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["source"])


WHOLE = _comparable(load_results(GOOD).frame)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reordering_or_splitting_does_not_change_the_frame(data):
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in GOOD:
            d, entries = _entries(path)
            entries = data.draw(st.permutations(entries), label=f"order of {path.name}")
            cuts = data.draw(st.lists(st.integers(0, len(entries)), max_size=3), label=f"cuts of {path.name}")
            paths += _write_shards(d, entries, cuts, Path(tmp), path.stem)
        paths = data.draw(st.permutations(paths), label="file order")
        frame = _comparable(load_results(paths).frame)
    pd.testing.assert_frame_equal(frame, WHOLE)
