"""The history store's schema, and what a store must be before anything reads or writes it — standard library only.

A store is a file that travels (a branch, an artifact, a colleague's copy), so anyone may have crafted it: a
trigger that deletes each night's rows as they are added, a view or table of its own, a text where a number
belongs, an ``inf``, a date that is not one. Only the objects :data:`SCHEMA` creates are accepted (triggers,
views, indexes and tables compared by their SQL, whitespace aside), the file must pass SQLite's
``integrity_check``, and each value read is checked (:func:`value_problem`, :func:`iso_problem`).

The nightly's write job, which installs nothing, loads this file by its path
(``.github/scripts/verify_store.py``) and checks the store it is about to push with these same definitions.

Format history (``PRAGMA user_version``): 1 — runs, machines, cells, metrics, measurements, acks; view
measurements_v.
"""

from __future__ import annotations

import math
import re
import sqlite3
import urllib.request
from datetime import datetime
from pathlib import Path

STORE_VERSION = 1

# Rows refer to cells, metrics and machines by small integers, and measurements are clustered by series
# (WITHOUT ROWID, keyed cell → metric → run): a year of the full grid is ~350 000 rows.
SCHEMA = """
CREATE TABLE runs (run_id INTEGER PRIMARY KEY, run_key TEXT NOT NULL UNIQUE, datetime TEXT NOT NULL,
                   commit_sha TEXT NOT NULL, branch TEXT, dirty INTEGER, profile TEXT, sources TEXT NOT NULL,
                   added_at TEXT NOT NULL);
CREATE TABLE machines (machine_key INTEGER PRIMARY KEY, machine_id TEXT NOT NULL UNIQUE, series_key TEXT NOT NULL,
                       fingerprint TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE cells (cell_key INTEGER PRIMARY KEY, cell_id TEXT NOT NULL UNIQUE, cell TEXT NOT NULL);
CREATE TABLE metrics (metric_key INTEGER PRIMARY KEY, metric TEXT NOT NULL UNIQUE);
CREATE TABLE measurements (cell_key INTEGER NOT NULL REFERENCES cells, metric_key INTEGER NOT NULL REFERENCES metrics,
                           run_id INTEGER NOT NULL REFERENCES runs, machine_key INTEGER NOT NULL REFERENCES machines,
                           value REAL NOT NULL, ci_low REAL, ci_high REAL, rounds INTEGER, iqr_pct REAL,
                           PRIMARY KEY (cell_key, metric_key, run_id)) WITHOUT ROWID;
CREATE TABLE acks (cell_key INTEGER NOT NULL REFERENCES cells, run_id INTEGER NOT NULL REFERENCES runs,
                   note TEXT NOT NULL, acked_at TEXT NOT NULL, PRIMARY KEY (cell_key, run_id));
CREATE VIEW measurements_v AS
  SELECT r.datetime, r.commit_sha, r.branch, c.cell_id, k.metric, m.value, m.ci_low, m.ci_high, m.rounds,
         m.iqr_pct, mc.machine_id, mc.description AS machine, mc.series_key, m.run_id
  FROM measurements m JOIN runs r USING (run_id) JOIN cells c USING (cell_key) JOIN metrics k USING (metric_key)
  JOIN machines mc USING (machine_key);
"""
TABLES = ("runs", "machines", "cells", "metrics", "measurements", "acks")
# Metrics kept per cell. Searched for change points (noisy, lower-is-better, positive): absolute time (every cell,
# so an environment-wide slow-down shows even where the slow-down ratio cancels it), the slow-down against the
# paired reference as a ratio (1 + slowdown_pct / 100: a step in it is a relative change, like one in time), peak
# memory. Compared exactly night to night (deterministic on fixed seeds: any change is a behaviour change, see
# perfsuite.history.looks): the recompute workload's recompute_pct, mismatches and matches_fixed_schedule (1 or 0),
# which may be 0.
STEP_METRICS = ("time_ms", "slowdown_ratio", "peak_mem_bytes")
EXACT_METRICS = ("recompute_pct", "mismatches", "matches_fixed_schedule")
METRICS = STEP_METRICS + EXACT_METRICS
MAX_VALUE = 2.0 ** 63  # peak memory in bytes is the largest metric; an int64 holds it
MIN_VALUE = 1e-12  # a positive time in ms or ratio below this is not a measurement
MAX_TEXT_CHARS = 200  # a commit, branch, date or key: no more
_HEX = re.compile(r"[0-9a-f]{7,64}")


class StoreProblem(Exception):
    """A store that is not one this perfsuite made (one line: what is wrong)."""


def statements(sql: str = SCHEMA) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def store_uri(path: str | Path, mode: str) -> str:
    """An SQLite URI of the store's absolute path (``mode``: ro, rw or rwc). ``:memory:`` and names that are
    URIs already are refused: a store is a file, or a run "stored" there would be lost when the command ends."""
    text = str(path)
    if not text or text.strip() != text or text == ":memory:" or text.lower().startswith("file:") \
            or any(ord(c) < 32 for c in text):
        raise StoreProblem(f"{text!r} is not a file name for a history store (an in-memory database or an SQLite "
                           "URI would keep nothing)")
    if mode not in ("ro", "rw", "rwc"):
        raise ValueError(f"unknown mode {mode!r}")
    return f"file:{urllib.request.pathname2url(str(Path(text).absolute()))}?mode={mode}"


def connect(path: str | Path, mode: str, timeout_s: float = 5.0) -> sqlite3.Connection:
    """The store opened by its absolute path, in ``mode``; no SQL in the file's schema may call a function with
    side effects (``trusted_schema`` off), whatever :func:`schema_problems` later finds."""
    conn = sqlite3.connect(store_uri(path, mode), uri=True, timeout=timeout_s, isolation_level=None)
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _normal(sql: str | None) -> str | None:
    return None if sql is None else " ".join(sql.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split())


def _objects(conn: sqlite3.Connection) -> set[tuple]:
    return {(t, n, tbl, _normal(sql)) for t, n, tbl, sql in
            conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")}


def expected_objects() -> set[tuple]:
    """What :data:`SCHEMA` creates (tables, their automatic indexes, the view): the whole of a store's schema."""
    conn = sqlite3.connect(":memory:")
    try:
        for s in statements():
            conn.execute(s)
        return _objects(conn)
    finally:
        conn.close()


def schema_problems(conn: sqlite3.Connection) -> list[str]:
    """What differs from the schema perfsuite creates: objects it did not create (a trigger, a view, a table,
    an index), objects missing or changed; [] for a store as made."""
    want, have = expected_objects(), _objects(conn)
    extra = sorted(have - want, key=str)
    missing = sorted(want - have, key=str)
    changed = {o[1] for o in extra} & {o[1] for o in missing}
    out = [f"{t} {n!r} changed" for t, n, _, _ in missing if n in changed]
    out += [f"a {t} perfsuite did not create: {n!r}" for t, n, _, _ in extra if n not in changed]
    out += [f"no {t} {n!r}" for t, n, _, _ in missing if n not in changed]
    return out


def integrity_problems(conn: sqlite3.Connection, limit: int = 3) -> list[str]:
    """SQLite's own check of the file (pages, indexes, NOT NULL): [] when it reads "ok"."""
    rows = [r[0] for r in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    return [] if rows == ["ok"] else [" ".join(str(r).split()) for r in rows]


def iso_problem(value: object) -> str | None:
    """None for an ISO 8601 date-time text (as perfsuite writes them), else what is wrong."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return f"{value!r:.60} is not an ISO date-time"
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return f"{value!r:.60} is not an ISO date-time"
    return None


def value_problem(value: object, *, optional: bool = False, metric: str | None = None) -> str | None:
    """None for a measured value (a positive finite number within bounds; an exact outcome may be 0), else what is
    wrong."""
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{value!r:.60} is not a number"
    low = 0.0 if metric in EXACT_METRICS else MIN_VALUE
    if not (math.isfinite(value) and low <= value <= MAX_VALUE):
        return f"{value!r:.60} is not a positive finite measurement"
    return None


def text_problem(value: object, *, optional: bool = False, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """None for a short text without control characters (what a commit, branch or key is), else what is wrong."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > max_chars or any(ord(c) < 32 or ord(c) == 127
                                                                                 for c in value):
        return f"{value!r:.60} is not a text of up to {max_chars} printable characters"
    return None


def key_problem(value: object) -> str | None:
    """None for a row key (a positive int64), else what is wrong."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2 ** 63:
        return f"{value!r:.60} is not a row key"
    return None


def is_commit(value: object) -> bool:
    """A git commit hash (7 to 64 lowercase hex digits): what may be written into an issue or a comment."""
    return isinstance(value, str) and _HEX.fullmatch(value) is not None
