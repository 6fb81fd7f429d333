"""The history store and `perfsuite history add/show/ack`: the issue's synthetic 60-nightly history, refusals
that leave the store unchanged, acknowledgements, format versions."""

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsuite.cells.grid import get_profile
from perfsuite.cli import main
from perfsuite.history.rows import median_interval, metric_rows, series_key
from perfsuite.history.store import STORE_VERSION, HistoryError, add_files, open_store
from perfsuite.history.synthetic import build_store, commit_of, night_document, night_records
from perfsuite.measure.machine import Fingerprint

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
CELLS = get_profile("smoke").cells(device="cpu")
STEPPED = ("latency[houlsby-r8-b1-s32]", "latency[lora-r8-b4-s32]", "recompute[lora-r8-b8-s16-w4-g16]")
STEP_NIGHT = 40


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def issue_store(tmp_path_factory):
    """The issue's history: 60 nightlies of the smoke grid, +5 % from night 40 in three cells, noise at the
    measured between-run level (time 3 %, slow-down ratio 1.5 %)."""
    pytest.importorskip("ruptures", reason="ruptures does not install on this Python")
    path = tmp_path_factory.mktemp("history") / "store.sqlite"
    assert set(STEPPED) <= {c.id for c in CELLS}
    build_store(path, CELLS, 60, steps={c: (STEP_NIGHT, 5.0) for c in STEPPED}, seed=13)
    return path


def show(store, capsys, *args):
    assert main(["history", "show", "--store", str(store), *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_issue_history_steps_are_found_in_exactly_those_cells_at_the_right_commit_range(issue_store, capsys):
    lines = show(issue_store, capsys, "--metric", "slowdown_ratio")
    found = [line for line in lines if "commits " in line]
    assert sorted(line.split()[0] for line in found) == sorted(STEPPED)
    order = [commit_of(n)[:7] for n in range(60)]
    for line in found:
        good, bad = line.split("commits ")[1].split()[0].split("..")
        assert order.index(good) < STEP_NIGHT <= order.index(bad), line
        assert order.index(bad) - order.index(good) <= 6, f"a narrow range: {line}"
        step = float(line.split()[2])
        assert 3.0 < step < 7.0, line
        assert line.endswith("FILED"), "20 nights at +5 %, 1.5 % noise: filed"
    assert lines[-1].startswith("3 change points (3 filed) in 26 series of 26 cells, 60 runs")


def test_every_metric_is_searched_by_default_and_only_the_stepped_cells_move(issue_store, capsys):
    lines = show(issue_store, capsys)
    found = [line for line in lines if "commits " in line]
    assert {line.split()[0] for line in found} == set(STEPPED)
    assert {line.split()[1] for line in found} == {"slowdown_ratio", "time_ms"}, "raw time too, not only r = 0"
    series = int(lines[-1].split(" in ")[1].split()[0])
    # time for 33 cells (the smoke grid with its 9 decode-step cells), the slow-down ratio for 26 (18, and the 8
    # decode-step adapters), the recompute cells' three deterministic outcomes (5 cells)
    assert series == 33 + 26 + 3 * 5


def test_show_selects_cells_and_writes_json(issue_store, capsys, tmp_path):
    lines = show(issue_store, capsys, "--cells", "workload == 'recompute'", "--metric", "slowdown_ratio",
                 "--json", str(tmp_path / "c.json"))
    assert [line.split()[0] for line in lines if "commits " in line] == ["recompute[lora-r8-b8-s16-w4-g16]"]
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["perfsuite_history_changes"] == 2 and doc["filed"] == 1
    (point,) = doc["change_points"]
    assert point["filed"] and point["kind"] == "step" and point["filing"].startswith("filing p = ")
    (group,) = doc["by_commit_range"]
    assert group["cells"] == ["recompute[lora-r8-b8-s16-w4-g16]"] and 3.0 < group["max_step_pct"] < 7.0


def test_ack_marks_the_step_and_later_searches_start_there(issue_store, tmp_path, capsys):
    store = tmp_path / "acked.sqlite"
    store.write_bytes(issue_store.read_bytes())
    cell = STEPPED[0]
    bad = next(line for line in show(store, capsys) if line.startswith(cell)).split("commits ")[1].split()[0]
    assert main(["history", "ack", cell, "--store", str(store), "--commit", bad.split("..")[1],
                 "--note", "houlsby adapters now also on attention"]) == 0
    assert "acknowledged" in capsys.readouterr().out
    lines = show(store, capsys)
    assert sorted({line.split()[0] for line in lines if "commits " in line}) == sorted(STEPPED[1:])
    assert any(line.startswith(f"acknowledged: {cell}") and "houlsby adapters" in line for line in lines)


@pytest.mark.parametrize("argv, message", [
    (["latency[nope-r1]", "--commit", commit_of(3)[:8], "--note", "x"], "not in the store"),
    ([STEPPED[0], "--commit", "abcdef0123", "--note", "x"], "no run in the store is of this commit"),
    ([STEPPED[0], "--commit", "abc", "--note", "x"], "at least 7 hex digits"),
    ([STEPPED[0], "--commit", commit_of(3)[:8], "--note", " "], "--note"),
])
def test_a_bad_ack_is_one_line_and_changes_nothing(issue_store, tmp_path, capsys, argv, message):
    store = tmp_path / "s.sqlite"
    store.write_bytes(issue_store.read_bytes())
    assert main(["history", "ack", "--store", str(store), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("perfsuite history: error:")
    assert digest(store) == digest(issue_store)


@pytest.mark.parametrize("name", ["broken.json", "not_a_benchmark.json", "foreign_pytest_benchmark.json",
                                  "newer_schema.json"])
def test_a_malformed_results_file_is_refused_with_one_line_and_the_store_is_unchanged(tmp_path, capsys, name):
    store = tmp_path / "s.sqlite"
    add_files(store, [FIXTURES / "smoke_all_workloads.json"])
    before = digest(store)
    assert main(["history", "add", str(FIXTURES / name), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err
    assert digest(store) == before


def test_a_malformed_file_among_good_ones_adds_nothing_and_creates_no_store(tmp_path, capsys):
    store = tmp_path / "new.sqlite"
    assert main(["history", "add", str(FIXTURES / "latency_smoke.json"), str(FIXTURES / "broken.json"),
                 "--store", str(store)]) == 2
    assert not store.exists()
    assert capsys.readouterr().err.count("\n") == 1


def test_files_of_two_commits_are_two_runs_and_refused_together(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    two = [FIXTURES / "smoke_all_workloads.json", Path(__file__).parents[2] / "reports/smoke-cpu/results.json"]
    assert main(["history", "add", *map(str, two), "--store", str(store)]) == 2
    assert "shards of one run" in capsys.readouterr().err
    assert not store.exists()


def test_adding_the_same_run_twice_adds_it_once(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    first = add_files(store, [FIXTURES / "smoke_all_workloads.json"])
    assert first.run is not None and (first.cells, first.not_measured) == (23, 1) and first.rows > 23
    before = digest(store)
    assert main(["history", "add", str(FIXTURES / "smoke_all_workloads.json"), "--store", str(store)]) == 0
    assert "already in" in capsys.readouterr().out and digest(store) == before


def test_a_store_of_a_newer_format_or_no_store_at_all_is_refused(tmp_path):
    store = tmp_path / "s.sqlite"
    add_files(store, [FIXTURES / "latency_smoke.json"])
    with sqlite3.connect(store) as conn:
        conn.execute(f"PRAGMA user_version = {STORE_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer than this perfsuite reads"):
        open_store(store)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(HistoryError, match="not a perfsuite history store"):
        open_store(other)
    (tmp_path / "text.sqlite").write_text("hello, not a database\n" * 100)
    with pytest.raises(HistoryError, match="not a perfsuite history store"):
        open_store(tmp_path / "text.sqlite")
    with pytest.raises(HistoryError, match="no history store here"):
        open_store(tmp_path / "missing.sqlite")


def test_rows_carry_the_metrics_a_cell_has():
    recs = night_records(CELLS, 0, np.random.default_rng(0), steps={}, time_noise=0.03, ratio_noise=0.01)
    by_id = {r.id: r for r in recs}
    assert [m for m, *_ in metric_rows(by_id["latency[none-r0-b1-s32]"])] == ["time_ms"]
    rows = {m: (v, lo, hi) for m, v, lo, hi in metric_rows(by_id["latency[lora-r8-b1-s32]"])}
    assert set(rows) == {"time_ms", "slowdown_ratio"}
    assert all(lo <= v * 1.05 and hi >= v * 0.95 for v, lo, hi in rows.values())


def test_a_torch_upgrade_or_a_reboot_continues_a_series_and_is_named(tmp_path):
    store = tmp_path / "s.sqlite"
    cells = [c for c in CELLS if c.id == "latency[lora-r8-b1-s32]"]
    for night in range(3):
        env = {"host": f"runner-1#boot-{night:08d}", "cpu": "x", "torch_version": f"2.1{night}.0", "threads": 1}
        recs = night_records(cells, night, np.random.default_rng(night), steps={}, time_noise=0.03,
                             ratio_noise=0.01, env=env)
        path = tmp_path / f"n{night}.json"
        path.write_text(json.dumps(night_document(recs, night)))
        add_files(store, [path])
    with open_store(store) as s:
        (series,) = s.series(metric="time_ms")
    assert len(series.points) == 3
    assert [sw for sw in series.software] == ["torch 2.10.0", "torch 2.11.0", "torch 2.12.0"]
    a = Fingerprint.of({"host": "h#boot-1", "torch_version": "1"}, cells[0])
    b = Fingerprint.of({"host": "h#boot-2", "torch_version": "2"}, cells[0])
    c = Fingerprint.of({"host": "other#boot-1", "torch_version": "1"}, cells[0])
    assert series_key(a) == series_key(b) != series_key(c)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=3, max_size=200))
def test_the_band_of_a_night_holds_its_median(samples):
    lo, hi = median_interval(samples)
    assert lo <= float(np.median(samples)) <= hi
    assert min(samples) <= lo and hi <= max(samples)


def test_a_night_without_enough_samples_has_no_band():
    assert median_interval([1.0, 2.0]) == (None, None)
    assert median_interval(None) == (None, None)
    assert median_interval(["a", "b", "c"]) == (None, None)


def test_a_commit_is_abbreviated_only_when_it_is_a_hash():
    from perfsuite.history.store import Run

    assert Run(1, "2026-12-05T00:00:00", "4cb5f03a1b2c3d4e5f60718293a4b5c6d7e8f901", None).short == "4cb5f03"
    assert Run(1, "2026-12-05T00:00:00", "unversioned", None).short == "unversioned"
