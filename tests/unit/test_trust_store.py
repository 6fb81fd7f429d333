"""The trust boundary, the history store (issue 27, probes 3 and 7): a store is a file anyone may have crafted. Only
the schema perfsuite creates is accepted (no trigger, view or table of anyone else's), the file must pass SQLite's
integrity check, every value read is checked; read-only commands open it read-only; an in-memory database or an
SQLite URI is no store. Anything else is one line and exit 2, and the store is left as it was."""

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
import synthetic as syn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfsuite.history.store import HistoryError, add_files, open_store

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
NIGHT = FIXTURES / "latency_smoke.json"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(proc, command: str = "history") -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith(f"perfsuite {command}: error: ") and "Traceback" not in proc.stderr
    return lines[0]


def night(tmp_path: Path, k: int) -> Path:
    doc = json.loads(NIGHT.read_text())
    doc["commit_info"]["id"] = f"{k:02d}" + doc["commit_info"]["id"][2:]
    doc["datetime"] = f"2026-11-{k:02d}T02:30:00+00:00"
    path = tmp_path / f"night-{k}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    """A real store of three nights, as `history add` makes it."""
    path = tmp_path / "h.sqlite"
    for k in (1, 2, 3):
        add_files(path, [night(tmp_path, k)])
    return path


def craft(path: Path, *sql: str) -> None:
    """Change the store behind perfsuite's back, as anyone with the file can."""
    conn = sqlite3.connect(path)
    try:
        for s in sql:
            conn.execute(s)
        conn.commit()
    finally:
        conn.close()


# --- probe 3: a trigger carried night after night ----------------------------------------------------------------

def test_a_store_with_a_trigger_is_refused_before_anything_is_added(tmp_path, store):
    """The issue's reproduction: `CREATE TRIGGER … AFTER INSERT ON measurements BEGIN DELETE …` — `history add`
    printed "40 rows", stored 0, and the trigger stayed for every later night."""
    craft(store, "CREATE TRIGGER eat AFTER INSERT ON measurements BEGIN DELETE FROM measurements; END")
    before = digest(store)
    proc = syn.cli("history", "add", str(night(tmp_path, 4)), "--store", str(store))
    assert "a trigger perfsuite did not create: 'eat'" in one_line(proc)
    assert digest(store) == before


@pytest.mark.parametrize("sql, named", [
    ("CREATE VIEW mine AS SELECT 1", "a view perfsuite did not create: 'mine'"),
    ("CREATE TABLE extra (x)", "a table perfsuite did not create: 'extra'"),
    ("CREATE INDEX idx ON runs (branch)", "an index perfsuite did not create: 'idx'"),
    ("DROP VIEW measurements_v", "no view 'measurements_v'"),
])
def test_any_schema_object_perfsuite_did_not_create_is_refused(store, sql, named):
    craft(store, sql)
    for args in (["show"], ["report", "--out", str(store.parent / "trends")]):
        line = one_line(syn.cli("history", *args, "--store", str(store)))
        assert named.replace("an index", "a index") in line or named in line
    assert not (store.parent / "trends").exists()


def test_a_changed_table_definition_is_refused(tmp_path):
    path = tmp_path / "h.sqlite"
    add_files(path, [night(tmp_path, 1)])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'note TEXT NOT NULL', 'note TEXT') WHERE name = 'acks'")
    conn.commit()
    conn.close()
    assert "table 'acks' changed" in one_line(syn.cli("history", "show", "--store", str(path)))


# --- probe 7: crafted or damaged values -----------------------------------------------------------------------------

CRAFTED = {
    "a text value": "UPDATE measurements SET value = 'fast' WHERE run_id = 1",
    "a blob value": "UPDATE measurements SET value = x'00ff' WHERE run_id = 1",
    "one inf": "UPDATE measurements SET value = 9e999 WHERE run_id = 2",
    "a negative value": "UPDATE measurements SET value = -1 WHERE run_id = 2",
    "a huge run_id": "UPDATE measurements SET run_id = 1e30 WHERE run_id = 3",
    "a run_id no run has": "UPDATE measurements SET run_id = 99 WHERE run_id = 3",
    "bad cells.cell JSON": "UPDATE cells SET cell = '{\"workload\": ' WHERE cell_key = 1",
    "an unknown cell field": "UPDATE cells SET cell = json_set(cell, '$.colour', 'red') WHERE cell_key = 1",
    "a cell that is not its id": "UPDATE cells SET cell = (SELECT cell FROM cells WHERE cell_key = 2) "
                                 "WHERE cell_key = 1",
    "a list as fingerprint": "UPDATE machines SET fingerprint = '[1, 2]'",
    "a non-ISO datetime": "UPDATE runs SET datetime = 'last tuesday' WHERE run_id = 1",
    "a commit with a newline": "UPDATE runs SET commit_sha = 'abc' || char(10) || '::error::forged' WHERE run_id = 1",
    "an unknown metric": "UPDATE metrics SET metric = 'speed' WHERE metric_key = 1",
    "a text ci bound": "UPDATE measurements SET ci_low = 'x' WHERE run_id = 1",
}


@pytest.mark.parametrize("what", CRAFTED)
def test_a_crafted_value_is_one_line_and_exit_2_never_a_traceback(store, what):
    craft(store, CRAFTED[what])
    before = digest(store)
    out = store.parent / "changes.json"
    one_line(syn.cli("history", "show", "--store", str(store), "--json", str(out)))
    one_line(syn.cli("history", "report", "--store", str(store), "--out", str(store.parent / "trends")))
    assert digest(store) == before and not out.exists() and not (store.parent / "trends").exists()


def test_a_store_that_fails_the_integrity_check_is_refused(store):
    conn = sqlite3.connect(store)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_runs_1'").fetchone()[0]
    conn.close()
    data = bytearray(store.read_bytes())
    data[(root - 1) * page_size:root * page_size] = b"\xa5" * page_size  # an index page scribbled over
    store.write_bytes(bytes(data))
    line = one_line(syn.cli("history", "show", "--store", str(store)))
    assert "not a history store as perfsuite makes it" in line or "not a perfsuite history store" in line


@pytest.mark.parametrize("name", [":memory:", "file:x?mode=memory", "file:h.sqlite"])
def test_an_in_memory_database_or_a_uri_is_no_store(tmp_path, name):
    """`--store :memory:` reported "run 1 … 40 rows" and exit 0, and kept nothing."""
    proc = syn.cli("history", "add", str(NIGHT), "--store", name, cwd=tmp_path)
    assert "is not a file name for a history store" in one_line(proc)
    assert list(tmp_path.iterdir()) == [], "no lock file, no store"


def test_show_on_an_empty_file_writes_nothing_into_it(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert "an empty file, not a history store" in one_line(syn.cli("history", "show", "--store", str(empty)))
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]


def test_readers_open_the_store_read_only(store):
    with open_store(store) as opened:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            opened.conn.execute("DELETE FROM runs")
    with open_store(store, write=True) as opened:
        assert opened.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 3


# --- the fuzzer: mutated real stores ------------------------------------------------------------------------------

HOSTILE_SQL_VALUES = st.sampled_from(["NULL", "'text'", "x'00ff'", "9e999", "-9e999", "1e30", "-1", "0", "''",
                                      "'[1, 2]'", "'{}'", "'{\"a\": 1}'", "'2026-13-45'", "char(10) || '::error::x'",
                                      "99999", "9223372036854775807", "'null'", "4.5"])
COLUMNS = {"runs": ["run_id", "datetime", "commit_sha", "branch"], "cells": ["cell_key", "cell_id", "cell"],
           "machines": ["machine_key", "series_key", "fingerprint", "description"],
           "metrics": ["metric_key", "metric"],
           "measurements": ["cell_key", "metric_key", "run_id", "machine_key", "value", "ci_low", "ci_high"],
           "acks": ["cell_key", "run_id", "note", "acked_at"]}
SCHEMA_JUNK = st.sampled_from(["CREATE TRIGGER t AFTER INSERT ON runs BEGIN DELETE FROM runs; END",
                               "CREATE VIEW v AS SELECT 1", "CREATE TABLE t (x)", "DROP VIEW measurements_v",
                               "CREATE INDEX i ON cells (cell)", "PRAGMA user_version = 7",
                               "PRAGMA user_version = -1", "DELETE FROM metrics"])


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("store")
    path = tmp / "h.sqlite"
    for k in (1, 2, 3):
        add_files(path, [night(tmp, k)])
    craft(path, "INSERT INTO acks SELECT cell_key, 2, 'intended', '2026-11-03T00:00:00+00:00' FROM cells LIMIT 1")
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_stores_are_read_or_refused_in_one_line(tmp_path_factory, real_store, data):
    """Mutated real stores: a hostile value in any column read, a schema object added or dropped, a version
    changed, bytes cut off or overwritten. Each is read (and its series usable) or one line and exit 2, across
    `history show`, `history report` and `history add`; a reader never changes the store, nor does a refused add."""
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "h.sqlite"
    path.write_bytes(real_store)
    kind = data.draw(st.sampled_from(["value", "schema", "bytes"]))
    if kind in ("value", "schema"):
        table = data.draw(st.sampled_from(sorted(COLUMNS)))
        column, value = data.draw(st.sampled_from(COLUMNS[table])), data.draw(HOSTILE_SQL_VALUES)
        run = data.draw(st.integers(1, 3))
        where = f"run_id = {run}" if table == "measurements" else f"rowid IN (SELECT rowid FROM {table} LIMIT 1)"
        sql = f"UPDATE {table} SET {column} = {value} WHERE {where}" if kind == "value" else data.draw(SCHEMA_JUNK)
        try:
            craft(path, sql)
        except sqlite3.Error:  # a constraint the column keeps (NOT NULL, an integer key): not a store anyone has
            return
    else:
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw = raw[:at]
        else:
            raw[at:at + 64] = data.draw(st.binary(min_size=64, max_size=64))
        path.write_bytes(bytes(raw))
    before = digest(path)
    for args in (["show", "--json", str(tmp / "changes.json")], ["report", "--out", str(tmp / "trends")]):
        proc = syn.cli("history", *args, "--store", str(path))
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        if proc.returncode != 0:
            one_line(proc)
            assert not (tmp / "changes.json").exists() and not (tmp / "trends").exists()
        else:
            assert "\x1b" not in proc.stdout and "\n::error::" not in proc.stdout
    assert digest(path) == before, "a reader changed the store"
    added = syn.cli("history", "add", str(night(tmp, 4)), "--store", str(path))  # the writer: added, or one line
    assert "Traceback" not in added.stderr, added.stderr[-3000:]
    if added.returncode != 0:
        one_line(added)
        assert digest(path) == before, "a refused add changed the store"
