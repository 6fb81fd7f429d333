"""The history store: every nightly run's cells, one SQLite row per (run, cell, metric), and the acknowledged steps.

SQLite from the standard library: one file under a path the user chooses, queryable with any SQLite client
(the view ``measurements_v`` joins everything), written in transactions so a failed ``add`` leaves the store
as it was. Results files are read only through :func:`perfsuite.formats.results.load_results`.

Tables: ``runs`` (one per ``add``: commit, date, branch, profile, source files), ``machines`` (the
:class:`~perfsuite.measure.machine.Fingerprint` of each machine + software + setup, with ``series_key``: the
fingerprint without software versions and boot id, so a torch upgrade or a reboot continues a series and
can show up as a step in it), ``cells`` (the cell of each id), ``measurements`` (value, 95 % interval of
the run's median, rounds, IQR) and ``acks``.

The schema and its format history (``PRAGMA user_version``; a newer version is refused, an older one migrated
in ``_MIGRATIONS``) are in :mod:`perfsuite.history.schema`, with the checks every store passes when opened: only
the objects perfsuite creates, SQLite's integrity check; every value read is checked as it is read, so a crafted
or damaged store is one line, never a traceback. Read-only commands open the store read-only.

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
from perfsuite.formats.record import NAME_FIELDS, RecordError, check_name
from perfsuite.formats.results import Results, load_results
from perfsuite.history.rows import metric_rows, series_key, software_line
from perfsuite.history.schema import (METRICS, SCHEMA, STORE_VERSION, StoreProblem, connect, integrity_problems,
                                      iso_problem, key_problem, schema_problems, statements, store_uri, text_problem,
                                      value_problem)
from perfsuite.locks import writer_lock
from perfsuite.measure.machine import Fingerprint
from perfsuite.measure.paired import finite as _finite

_MIGRATIONS: dict[int, str] = {}  # target version -> SQL from the version before (none yet)
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

    def _damaged(self, what: str, problem: str) -> HistoryError:
        return HistoryError(f"{self.path}: {what}: {problem} (a damaged or crafted store: restore it from a backup)")

    def _run(self, row: tuple) -> Run:
        """A runs row, checked: an int key, an ISO date, a commit and branch of printable text."""
        run_id, stamp, commit, branch = row
        problem = (key_problem(run_id) or iso_problem(stamp) or text_problem(commit)
                   or text_problem(branch, optional=True))
        if problem:
            raise self._damaged(f"run {run_id!r:.40}", problem)
        return Run(run_id, stamp, commit, branch)

    def run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT run_id, datetime, commit_sha, branch FROM runs WHERE run_id = ?",
                                (run_id,)).fetchone()
        if row is None:
            raise self._damaged(f"run {run_id!r:.40}", "no such run")
        return self._run(row)

    def runs(self) -> list[Run]:
        rows = self.conn.execute("SELECT run_id, datetime, commit_sha, branch FROM runs")
        return sorted((self._run(r) for r in rows), key=lambda r: (r.datetime, r.run_id))

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
        runs, cells = {r.run_id: r for r in self.runs()}, self._cell_ids()
        out = []
        for cell, run, note, at in self.conn.execute("SELECT cell_key, run_id, note, acked_at FROM acks"):
            problem = (None if cell in cells else f"cell key {cell!r:.40} is not in the store") or \
                (None if run in runs else f"run {run!r:.40} is not in the store") or \
                text_problem(note, max_chars=10_000) or iso_problem(at)
            if problem:
                raise self._damaged("an acknowledgement", problem)
            out.append(Ack(cells[cell], runs[run], note, at))
        return sorted(out, key=lambda a: (a.run.datetime, a.run.run_id, a.cell_id))

    def _cell_ids(self) -> dict[int, str]:
        out = {}
        for key, cell_id in self.conn.execute("SELECT cell_key, cell_id FROM cells"):
            problem = key_problem(key) or text_problem(cell_id, max_chars=1_000)
            if problem:
                raise self._damaged(f"cell {cell_id!r:.60}", problem)
            out[key] = cell_id
        return out

    def _cells(self) -> dict[int, Cell]:
        """Each cell of the store by its key, checked: its JSON a cell whose id is the one stored beside it."""
        out = {}
        ids = self._cell_ids()
        for key, text in self.conn.execute("SELECT cell_key, cell FROM cells"):
            cell = None
            try:
                d = json.loads(text) if isinstance(text, str) else None
                if isinstance(d, dict):
                    cell = Cell.from_dict(d)
                    for name in NAME_FIELDS:
                        check_name(getattr(cell, name), f"cell field {name}")
            except (ValueError, TypeError, KeyError, RecursionError, RecordError) as e:
                raise self._damaged(f"cell {ids.get(key)!r:.60}", f"not a cell ({str(e)[:120]})") from None
            if cell is None or cell.id != ids[key]:
                raise self._damaged(f"cell {ids.get(key)!r:.60}", "its record is not that cell")
            out[key] = cell
        return out

    def cells(self, expr: str | None = None) -> list[Cell]:
        cells = sorted(self._cells().values())
        return [c for c in cells if compile_selection(expr)(c)] if expr else cells

    def _machines(self) -> dict[int, tuple[str, str, str]]:
        """machine key → (series key, software line, description), checked."""
        out = {}
        for key, series, text, description in self.conn.execute(
                "SELECT machine_key, series_key, fingerprint, description FROM machines"):
            try:
                fp = json.loads(text) if isinstance(text, str) else None
            except (ValueError, RecursionError):
                fp = None
            problem = (key_problem(key) or text_problem(series) or text_problem(description, max_chars=2_000)
                       or (None if isinstance(fp, dict) else "its fingerprint is not a JSON object"))
            if problem:
                raise self._damaged(f"machine {key!r:.40}", problem)
            out[key] = (series, software_line(fp), description)
        return out

    def series(self, cells_expr: str | None = None, metric: str = "auto") -> list[Series]:
        """Every series of the selected cells: ``metric`` one of METRICS, "all", or "auto" (the slow-down ratio
        where the cell has one, else time, as `perfsuite compare --metric auto`). Every row is checked as it is
        read (a key the store does not have, a value that is not a positive finite number): HistoryError."""
        if metric not in (*METRICS, "all", "auto"):
            raise HistoryError(f"unknown metric {metric!r}; known: auto, all, {', '.join(METRICS)}")
        every = self._cells()
        chosen = compile_selection(cells_expr) if cells_expr else (lambda c: True)
        wanted = {c.id for c in every.values() if chosen(c)}
        # Small tables into dicts first, so each of the (many) measurement rows is five numbers.
        cells = {k: c for k, c in every.items() if c.id in wanted}
        metrics = dict(self.conn.execute("SELECT metric_key, metric FROM metrics"))
        unknown = [m for m in metrics.values() if m not in METRICS]
        if unknown:
            raise self._damaged("metrics", f"{unknown[0]!r:.60} is not a metric perfsuite keeps")
        machines, runs = self._machines(), {r.run_id: r for r in self.runs()}
        grouped: dict[tuple[int, str, str], list] = {}
        for cell, mk, machine, run, value, lo, hi in self.conn.execute(
                "SELECT cell_key, metric_key, machine_key, run_id, value, ci_low, ci_high FROM measurements"):
            problem = ((None if cell in every else f"cell key {cell!r:.40} is not in the store")
                       or (None if mk in metrics else f"metric key {mk!r:.40} is not in the store")
                       or (None if machine in machines else f"machine key {machine!r:.40} is not in the store")
                       or (None if run in runs else f"run {run!r:.40} is not in the store")
                       or value_problem(value, metric=metrics.get(mk)) or value_problem(lo, optional=True)
                       or value_problem(hi, optional=True))
            if problem:
                raise self._damaged("a measurement", problem)
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
            points = tuple(Point(run, float(value), _float(lo), _float(hi)) for run, value, lo, hi, _ in group)
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


def _float(v) -> float | None:
    return None if v is None else float(v)


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
    commit = commits.pop()
    problem = text_problem(commit) or next(filter(None, map(iso_problem, stamps)), None) or next(
        filter(None, (text_problem(r.branch, optional=True) for r in results.runs)), None)
    if problem:  # what the store keeps is what its readers accept
        raise HistoryError(f"{_files(sources)}: {problem} (the run's commit, branch or datetime)")
    return commit, min(stamps)


def run_key(paths: Sequence[str | Path]) -> str:
    """The identity of a run's files: their bytes, in any order (adding the same files again adds nothing)."""
    digests = sorted(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def checked_store_path(path: str | Path) -> Path:
    """``path`` as a store's file name: refused (one line) when it names no file (``:memory:``, an SQLite URI)."""
    try:
        store_uri(path, "ro")
    except StoreProblem as e:
        raise HistoryError(f"--store {e}") from None
    return Path(path)


def open_store(path: str | Path, *, create: bool = False, write: bool = False) -> HistoryStore:
    """The store at ``path``, read-only unless ``write`` (or ``create``: made when missing), migrated when older
    (writers only), refused when newer, foreign (any schema object perfsuite did not create) or damaged."""
    path = checked_store_path(path)
    mode = "rwc" if create else "rw" if write else "ro"
    if not path.exists() and not create:
        raise HistoryError(f"{path}: no history store here (`perfsuite history add RESULTS.json --store {path}` "
                           "creates one)")
    check_regular_file(path, HistoryError)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = None
    try:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE), never implicitly by the module.
        conn = connect(path, mode, BUSY_TIMEOUT_S)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        _check_version(version, tables, path)  # read-only first: a reader is refused without taking a write lock
        if version != STORE_VERSION:
            if mode == "ro" or (version == 0 and not create):
                raise HistoryError(f"{path}: an empty file, not a history store" if version == 0 else
                                   f"{path}: history store format {version}: `perfsuite history add` brings it to "
                                   f"{STORE_VERSION}")
            _create_or_migrate(conn, path)  # under the write lock, the version read again inside
        problems = schema_problems(conn) or integrity_problems(conn)
        if problems:
            raise HistoryError(f"{path}: not a history store as perfsuite makes it: {'; '.join(problems[:3])}"
                               + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
                               + " (restore it from a backup, or start a new store)")
        conn.execute("PRAGMA foreign_keys = ON")
    except (sqlite3.Error, HistoryError, StoreProblem) as e:
        if conn is not None:
            conn.close()
        if isinstance(e, HistoryError):
            raise
        if isinstance(e, StoreProblem):
            raise HistoryError(str(e)) from None
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
        steps = [(STORE_VERSION, SCHEMA)] if version == 0 else [(v, _MIGRATIONS[v]) for v in
                                                                 range(version + 1, STORE_VERSION + 1)]
        for target, sql in steps:
            for statement in statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def add_files(store_path: str | Path, paths: Sequence[str | Path]) -> Added:
    """Read one run's results files (all of them, or refuse with one line) and add them to the store."""
    checked_store_path(store_path)
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
