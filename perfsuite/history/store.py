"""The history store: every nightly run's cells, one SQLite row per (run, cell, metric), and the acknowledged steps.

SQLite from the standard library: one file under a path the user chooses, queryable with any SQLite client
(the view ``measurements_v`` joins everything), written in transactions so a failed ``add`` leaves the store
as it was. Results files are read only through :func:`perfsuite.formats.results.load_results`.

Tables: ``runs`` (one per ``add``: commit, date, branch, profile, source files), ``machines`` (the
:class:`~perfsuite.machine.Fingerprint` of each machine + software + setup, with ``series_key``: the
fingerprint without software versions and boot id, so a torch upgrade or a reboot continues a series and
can show up as a step in it), ``cells`` (the cell of each id), ``measurements`` (value, 95 % interval of
the run's median, rounds, IQR) and ``acks``.

Format history (``PRAGMA user_version``; a newer version is refused, an older one migrated in
``_MIGRATIONS``):
  1 — runs, machines, cells, metrics, measurements, acks; view measurements_v.

Over 350 lines on purpose: the SQLite schema, its migrations and every transaction that writes it are one
unit of concurrency (BEGIN IMMEDIATE, the busy timeout, idempotent creation), reviewed together.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from perfsuite.cells.grid import Cell, compile_selection
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import check_regular_file
from perfsuite.formats.io import utc_now as _now
from perfsuite.formats.results import Results, load_results
from perfsuite.history.rows import METRICS, metric_rows, series_key, software_line
from perfsuite.locks import writer_lock
from perfsuite.machine import Fingerprint
from perfsuite.paired import finite as _finite

STORE_VERSION = 1

# Rows refer to cells, metrics and machines by small integers, and measurements are clustered by series
# (WITHOUT ROWID, keyed cell → metric → run): a year of the full grid is ~350 000 rows.
_SCHEMA = """
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
_MIGRATIONS: dict[int, str] = {}  # target version -> SQL from the version before (none yet)
TABLES = ("runs", "machines", "cells", "metrics", "measurements", "acks")
BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another's transaction (an add takes about a second)


class HistoryError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class Run:
    run_id: int
    datetime: str
    commit: str
    branch: str | None

    @property
    def short(self) -> str:
        """A commit hash abbreviated as git does; a label that is not a hash (a run outside git) stays whole."""
        return self.commit[:7] if re.fullmatch(r"[0-9a-f]{8,64}", self.commit) else self.commit


@dataclass(frozen=True)
class Point:
    """One night of a series."""

    run: Run
    value: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class Series:
    """One cell's metric on one machine setup, in run order, with the software of each night."""

    cell: Cell
    metric: str
    series_key: str
    machine: str  # Fingerprint.describe() of the latest night
    points: tuple[Point, ...]
    software: tuple[str, ...]  # per point: "torch 2.13.0, cuda None, ..." (changes name a step's suspects)


@dataclass(frozen=True)
class Ack:
    cell_id: str
    run: Run
    note: str
    acked_at: str


@dataclass(frozen=True)
class Added:
    """What one ``add`` did."""

    run: Run | None  # None: these files were already in the store
    rows: int
    cells: int
    not_measured: int  # cells in the files that did not run (oom, no device, ...)


class HistoryStore:
    """An open store. Use :func:`open_store`; every write is one transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn, self.path = conn, path

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------

    def transaction(self):
        """``with store.transaction():`` one write transaction, opened with BEGIN IMMEDIATE: the write lock is taken
        at the start (waiting up to BUSY_TIMEOUT_S for another writer), so two writers never both read, then
        collide on their first write; committed at the end, rolled back on any error."""
        return _Transaction(self.conn)

    def add(self, results: Results, sources: Sequence[str], run_key: str) -> Added:
        """Store one run (the records of one or more shard files of one commit) in one transaction; a run
        already in the store (the same files' bytes) is a no-op, also when two processes add it at once."""
        commit, stamp = check_one_run(results, sources)
        meta = results.runs[0]
        rows = 0
        with self.transaction():
            found = self.conn.execute("SELECT run_id FROM runs WHERE run_key = ?", (run_key,)).fetchone()
            if found:
                return Added(None, 0, 0, 0)
            cur = self.conn.execute(
                "INSERT INTO runs (run_key, datetime, commit_sha, branch, dirty, profile, sources, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_key, stamp, commit, meta.branch, _bool(meta.dirty), meta.profile, json.dumps(list(sources)),
                 _now()))
            run_id = cur.lastrowid
            for rec in results.ok():
                fp = Fingerprint.of(rec.env, rec.cell)
                machine = self._key("machines", "machine_key", "machine_id", fp.short_id(),
                                    series_key=series_key(fp), fingerprint=json.dumps(fp.to_dict(), sort_keys=True),
                                    description=fp.describe())
                cell = self._key("cells", "cell_key", "cell_id", rec.id,
                                 cell=json.dumps(rec.cell.to_dict(), sort_keys=True))
                for metric, value, lo, hi in metric_rows(rec):
                    self.conn.execute("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                      (cell, self._key("metrics", "metric_key", "metric", metric), run_id, machine,
                                       value, lo, hi, rec.get("rounds"), _finite(rec.get("iqr_pct"))))
                    rows += 1
        return Added(self.run(run_id), rows, len(results.ok()), len(results.records) - len(results.ok()))

    def _key(self, table: str, key: str, name: str, value: str, **columns) -> int:
        """The integer key of ``value`` in ``table``, inserted (with ``columns``) the first time."""
        row = self.conn.execute(f"SELECT {key} FROM {table} WHERE {name} = ?", (value,)).fetchone()
        if row:
            return row[0]
        cols = [name, *columns]
        cur = self.conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                (value, *columns.values()))
        return cur.lastrowid

    def ack(self, cell_ids: Iterable[str], commit: str, note: str) -> list[Ack]:
        """Mark the step at ``commit`` (a run's commit, or a unique prefix of one) as intended for these cells:
        later detections measure from that run on."""
        if not note.strip():
            raise HistoryError("--note must say why the step is expected")
        cell_ids = list(dict.fromkeys(cell_ids))
        known = {row[0] for row in self.conn.execute("SELECT cell_id FROM cells")}
        unknown = [c for c in cell_ids if c not in known]
        if unknown:
            raise HistoryError(f"not in the store: {', '.join(unknown)} (`perfsuite history show` lists the cells)")
        run = self.run_of_commit(commit)
        stamp = _now()
        with self.transaction():
            for c in cell_ids:
                self.conn.execute("INSERT OR REPLACE INTO acks SELECT cell_key, ?, ?, ? FROM cells WHERE cell_id = ?",
                                  (run.run_id, note, stamp, c))
        return [Ack(c, run, note, stamp) for c in cell_ids]

    # --- reading ---------------------------------------------------------------------------------

    def run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT run_id, datetime, commit_sha, branch FROM runs WHERE run_id = ?",
                                (run_id,)).fetchone()
        return Run(*row)

    def runs(self) -> list[Run]:
        return [Run(*r) for r in self.conn.execute(
            "SELECT run_id, datetime, commit_sha, branch FROM runs ORDER BY datetime, run_id")]

    def run_of_commit(self, commit: str) -> Run:
        """The first run of the commit that ``commit`` (at least 7 hex digits) names."""
        commit = commit.strip().lower()
        if len(commit) < 7:
            raise HistoryError(f"--commit {commit!r}: give at least 7 hex digits of a commit")
        runs = [r for r in self.runs() if r.commit.lower().startswith(commit)]
        if not runs:
            raise HistoryError(f"--commit {commit}: no run in the store is of this commit; acknowledge a run's "
                               "commit, e.g. the end of the change point's range in `perfsuite history show`")
        if len({r.commit for r in runs}) > 1:
            raise HistoryError(f"--commit {commit}: names {len({r.commit for r in runs})} commits; give more digits")
        return runs[0]

    def acks(self) -> list[Ack]:
        rows = self.conn.execute("SELECT c.cell_id, r.run_id, r.datetime, r.commit_sha, r.branch, a.note, a.acked_at "
                                 "FROM acks a JOIN runs r USING (run_id) JOIN cells c USING (cell_key) "
                                 "ORDER BY r.datetime, r.run_id, c.cell_id")
        return [Ack(c, Run(rid, dt, sha, br), note, at) for c, rid, dt, sha, br, note, at in rows]

    def cells(self, expr: str | None = None) -> list[Cell]:
        cells = sorted(Cell.from_dict(json.loads(t)) for (t,) in self.conn.execute("SELECT cell FROM cells"))
        return [c for c in cells if compile_selection(expr)(c)] if expr else cells

    def series(self, cells_expr: str | None = None, metric: str = "auto") -> list[Series]:
        """Every series of the selected cells: ``metric`` one of METRICS, "all", or "auto" (the slow-down ratio
        where the cell has one, else time, as `perfsuite compare --metric auto`)."""
        if metric not in (*METRICS, "all", "auto"):
            raise HistoryError(f"unknown metric {metric!r}; known: auto, all, {', '.join(METRICS)}")
        wanted = {c.id: c for c in self.cells(cells_expr)}
        # Small tables into dicts first, so each of the (many) measurement rows is five numbers.
        cells = {k: wanted[cid] for k, cid in self.conn.execute("SELECT cell_key, cell_id FROM cells") if cid in wanted}
        metrics = dict(self.conn.execute("SELECT metric_key, metric FROM metrics"))
        machines = {k: (key, software_line(json.loads(fp)), desc) for k, key, fp, desc in
                    self.conn.execute("SELECT machine_key, series_key, fingerprint, description FROM machines")}
        runs = {r.run_id: r for r in self.runs()}
        grouped: dict[tuple[int, str, str], list] = {}
        for cell, mk, machine, run, value, lo, hi in self.conn.execute(
                "SELECT cell_key, metric_key, machine_key, run_id, value, ci_low, ci_high FROM measurements"):
            if cell in cells:
                grouped.setdefault((cell, metrics[mk], machines[machine][0]), []).append((runs[run], value, lo, hi,
                                                                                          machine))
        with_ratio = {k[0] for k in grouped if k[1] == "slowdown_ratio"}
        out = []
        for (cell, m, key), group in grouped.items():
            if metric == "auto" and m != ("slowdown_ratio" if cell in with_ratio else "time_ms"):
                continue
            if metric not in ("auto", "all") and m != metric:
                continue
            group.sort(key=lambda g: (g[0].datetime, g[0].run_id))
            points = tuple(Point(run, value, lo, hi) for run, value, lo, hi, _ in group)
            software = tuple(machines[g[4]][1] for g in group)
            out.append(Series(cells[cell], m, key, machines[group[-1][4]][2], points, software))
        return sorted(out, key=lambda s: (s.cell, s.metric, s.series_key))


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
            self.conn.execute("ROLLBACK")


def _bool(v) -> int | None:
    return None if v is None else int(bool(v))


def _files(sources: Sequence[str]) -> str:
    return sources[0] if len(sources) == 1 else f"{sources[0]} (+{len(sources) - 1} more)"


def check_one_run(results: Results, sources: Sequence[str]) -> tuple[str, str]:
    """(commit, earliest datetime) of files that are one run, or HistoryError saying why they are not."""
    commits = {r.commit for r in results.runs}
    if None in commits or "" in commits:
        raise HistoryError(f"{_files(sources)}: no commit recorded (run the benchmarks inside a git checkout)")
    if len(commits) > 1:
        raise HistoryError(f"{_files(sources)}: files from {len(commits)} commits; `history add` takes the "
                           "shards of one run at a time")
    stamps = [r.datetime for r in results.runs]
    if not all(isinstance(s, str) and s for s in stamps):
        raise HistoryError(f"{_files(sources)}: a file has no datetime")
    return commits.pop(), min(stamps)


def run_key(paths: Sequence[str | Path]) -> str:
    """The identity of a run's files: their bytes, in any order (adding the same files again adds nothing)."""
    digests = sorted(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def open_store(path: str | Path, *, create: bool = False) -> HistoryStore:
    """The store at ``path``: created (with ``create``) when missing, migrated when older, refused when newer."""
    path = Path(path)
    if not path.exists() and not create:
        raise HistoryError(f"{path}: no history store here (`perfsuite history add RESULTS.json --store {path}` "
                           "creates one)")
    check_regular_file(path, HistoryError)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = None
    try:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE), never implicitly by the module.
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        _check_version(version, tables, path)  # read-only first: a reader is refused without taking a write lock
        if version != STORE_VERSION:  # create or migrate: under the write lock, the version read again inside
            _create_or_migrate(conn, path)
        _check_schema(conn, path)
        conn.execute("PRAGMA foreign_keys = ON")
    except (sqlite3.Error, HistoryError) as e:
        if conn is not None:
            conn.close()
        if isinstance(e, HistoryError):
            raise
        raise HistoryError(f"{path}: not a perfsuite history store ({e})") from None
    return HistoryStore(conn, path)


def _check_version(version: int, tables: int, path: Path) -> None:
    if version > STORE_VERSION:
        raise HistoryError(f"{path}: history store format {version} is newer than this perfsuite reads "
                           f"({STORE_VERSION}); upgrade perfsuite")
    if version < 0:
        raise HistoryError(f"{path}: history store format {version} is not a format (damaged store?)")
    if version == 0 and tables:
        raise HistoryError(f"{path}: an SQLite file, but not a perfsuite history store (no format version)")


def _create_or_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the store to STORE_VERSION in one IMMEDIATE transaction. Two processes creating one store at once
    both get here; the second waits for the first's lock, then finds the version current and does nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        _check_version(version, conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0], path)
        steps = [(STORE_VERSION, _SCHEMA)] if version == 0 else [(v, _MIGRATIONS[v]) for v in
                                                                  range(version + 1, STORE_VERSION + 1)]
        for target, sql in steps:
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Every table the store needs is there (one line naming what is missing, not a traceback on first use)."""
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    missing = [t for t in (*TABLES, "measurements_v") if t not in names]
    if missing:
        raise HistoryError(f"{path}: a damaged history store: no {', '.join(missing)} "
                           "(restore it from a backup, or start a new store)")


def add_files(store_path: str | Path, paths: Sequence[str | Path]) -> Added:
    """Read one run's results files (all of them, or refuse with one line) and add them to the store."""
    sources = [str(p) for p in paths]
    try:
        results = load_results(sources)  # strict: a malformed file is refused before the store is touched
    except PerfsuiteError as e:
        msg = str(e)
        if "duplicate cell" in msg:
            msg += "; `history add` takes the shards of one run at a time"
        raise HistoryError(msg) from None
    if not results.records:
        raise HistoryError(f"{_files(sources)}: no cells")
    check_one_run(results, sources)  # before the store is created: a refused run leaves no file behind
    key = run_key(sources)
    # One writer at a time (perfsuite.locks), waiting its turn: adds are short, and two nightlies adding at once
    # must both land. SQLite's own lock (BEGIN IMMEDIATE) backs this up for writers that bypass perfsuite.
    with writer_lock(store_path, f"history store {store_path}", folder=False, wait=BUSY_TIMEOUT_S):
        with open_store(store_path, create=True) as store:
            try:
                return store.add(results, sources, key)
            except sqlite3.Error as e:  # e.g. "database or disk is full": the transaction left the store as it was
                raise HistoryError(f"{store_path}: {e}; nothing was added") from None
