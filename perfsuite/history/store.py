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
  1 — runs, machines, cells, measurements, acks; view measurements_v.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from perfsuite.cells.grid import Cell, compile_selection
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.record import CellRecord
from perfsuite.formats.results import Results, load_results
from perfsuite.machine import Fingerprint

STORE_VERSION = 1
# Metrics kept per cell, each lower-is-better and positive: absolute time, the slow-down against the paired
# reference as a ratio (1 + slowdown_pct / 100: a step in it is a relative change, like one in time), peak memory.
METRICS = ("time_ms", "slowdown_ratio", "peak_mem_bytes")
CI_CONFIDENCE_Z = 1.96  # the band of a night: the 95 % order-statistic interval of its median
SOFTWARE_FIELDS = ("torch_version", "cuda_version", "cudnn_version", "gpu_driver", "libraries")

_SCHEMA = """
CREATE TABLE runs (run_id INTEGER PRIMARY KEY, run_key TEXT NOT NULL UNIQUE, datetime TEXT NOT NULL,
                   commit_sha TEXT NOT NULL, branch TEXT, dirty INTEGER, profile TEXT, sources TEXT NOT NULL,
                   added_at TEXT NOT NULL);
CREATE TABLE machines (machine_id TEXT PRIMARY KEY, series_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
                       description TEXT NOT NULL);
CREATE TABLE cells (cell_id TEXT PRIMARY KEY, cell TEXT NOT NULL);
CREATE TABLE measurements (run_id INTEGER NOT NULL REFERENCES runs, cell_id TEXT NOT NULL REFERENCES cells,
                           metric TEXT NOT NULL, machine_id TEXT NOT NULL REFERENCES machines,
                           value REAL NOT NULL, ci_low REAL, ci_high REAL, rounds INTEGER, iqr_pct REAL,
                           PRIMARY KEY (run_id, cell_id, metric));
CREATE TABLE acks (cell_id TEXT NOT NULL REFERENCES cells, run_id INTEGER NOT NULL REFERENCES runs,
                   note TEXT NOT NULL, acked_at TEXT NOT NULL, PRIMARY KEY (cell_id, run_id));
CREATE VIEW measurements_v AS
  SELECT r.datetime, r.commit_sha, r.branch, m.cell_id, m.metric, m.value, m.ci_low, m.ci_high, m.rounds,
         m.iqr_pct, mc.description AS machine, mc.series_key, m.run_id
  FROM measurements m JOIN runs r USING (run_id) JOIN machines mc USING (machine_id);
"""
_MIGRATIONS: dict[int, str] = {}  # target version -> SQL from the version before (none yet)


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
        return self.commit[:7]


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def median_interval(samples) -> tuple[float | None, float | None]:
    """Distribution-free 95 % interval of a median from order statistics (normal approximation of the binomial)."""
    try:
        s = np.sort(np.asarray(samples if samples is not None else (), dtype=float))
    except (TypeError, ValueError):  # malformed samples: the night keeps its value, without a band
        return None, None
    n = s.size
    if s.ndim != 1 or n < 3 or not np.all(np.isfinite(s)):
        return None, None
    half = CI_CONFIDENCE_Z * math.sqrt(n) / 2.0
    lo, hi = int(max(0, math.floor(n / 2.0 - half))), int(min(n - 1, math.ceil(n / 2.0 + half) - 1))
    return float(s[lo]), float(s[hi])


def metric_rows(rec: CellRecord) -> list[tuple[str, float, float | None, float | None]]:
    """(metric, value, ci_low, ci_high) for each of METRICS the record has as a positive number."""
    rows = []
    time_ms = rec.get("time_ms")
    if _positive(time_ms):
        rows.append(("time_ms", float(time_ms), *median_interval(rec.samples_ms)))
    slowdown, ref = rec.get("slowdown_pct"), rec.ref_samples_ms
    if rec.cell.adapter != "none" and isinstance(slowdown, (int, float)) and _positive(1 + slowdown / 100.0):
        try:
            ratios = np.asarray(rec.samples_ms, dtype=float) / np.asarray(ref, dtype=float) if ref else None
        except (TypeError, ValueError):
            ratios = None
        rows.append(("slowdown_ratio", 1 + slowdown / 100.0, *median_interval(ratios)))
    if _positive(rec.get("peak_mem_bytes")):
        rows.append(("peak_mem_bytes", float(rec.get("peak_mem_bytes")), None, None))
    return rows


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def series_key(fp: Fingerprint) -> str:
    """The fingerprint without software versions and without the boot id: what one series continues on."""
    d = {k: v for k, v in fp.to_dict().items() if k not in SOFTWARE_FIELDS}
    d["host"] = str(d["host"]).split("#boot-")[0] if d.get("host") else None
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def _software(fp: dict) -> str:
    return ", ".join(f"{k.removesuffix('_version')} {fp.get(k)}" for k in SOFTWARE_FIELDS if fp.get(k))


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

    def add(self, results: Results, sources: Sequence[str], run_key: str) -> Added:
        """Store one run (the records of one or more shard files of one commit) in one transaction."""
        commits = {r.get("commit") for r in results.runs}
        if None in commits or "" in commits:
            raise HistoryError(f"{_files(sources)}: no commit recorded (run the benchmarks inside a git checkout)")
        if len(commits) > 1:
            raise HistoryError(f"{_files(sources)}: files from {len(commits)} commits; `history add` takes the "
                               "shards of one run at a time")
        stamps = [r.get("datetime") for r in results.runs]
        if not all(isinstance(s, str) and s for s in stamps):
            raise HistoryError(f"{_files(sources)}: a file has no datetime")
        meta = results.runs[0]
        found = self.conn.execute("SELECT run_id FROM runs WHERE run_key = ?", (run_key,)).fetchone()
        if found:
            return Added(None, 0, 0, 0)
        rows = 0
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO runs (run_key, datetime, commit_sha, branch, dirty, profile, sources, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_key, min(stamps), commits.pop(), meta.get("branch"), _bool(meta.get("dirty")),
                 meta.get("profile"), json.dumps(list(sources)), _now()))
            run_id = cur.lastrowid
            for rec in results.ok():
                fp = Fingerprint.of(rec.env, rec.cell)
                self.conn.execute("INSERT OR IGNORE INTO machines VALUES (?, ?, ?, ?)",
                                  (fp.short_id(), series_key(fp), json.dumps(fp.to_dict(), sort_keys=True),
                                   fp.describe()))
                self.conn.execute("INSERT OR IGNORE INTO cells VALUES (?, ?)",
                                  (rec.id, json.dumps(rec.cell.to_dict(), sort_keys=True)))
                for metric, value, lo, hi in metric_rows(rec):
                    self.conn.execute("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                      (run_id, rec.id, metric, fp.short_id(), value, lo, hi, rec.get("rounds"),
                                       _finite(rec.get("iqr_pct"))))
                    rows += 1
        return Added(self.run(run_id), rows, len(results.ok()), len(results.records) - len(results.ok()))

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
        with self.conn:
            for c in cell_ids:
                self.conn.execute("INSERT OR REPLACE INTO acks VALUES (?, ?, ?, ?)", (c, run.run_id, note, stamp))
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
        rows = self.conn.execute("SELECT a.cell_id, r.run_id, r.datetime, r.commit_sha, r.branch, a.note, a.acked_at "
                                 "FROM acks a JOIN runs r USING (run_id) ORDER BY r.datetime, r.run_id, a.cell_id")
        return [Ack(c, Run(rid, dt, sha, br), note, at) for c, rid, dt, sha, br, note, at in rows]

    def cells(self, expr: str | None = None) -> list[Cell]:
        cells = sorted(Cell.from_dict(json.loads(t)) for (t,) in self.conn.execute("SELECT cell FROM cells"))
        return [c for c in cells if compile_selection(expr)(c)] if expr else cells

    def series(self, cells_expr: str | None = None, metric: str = "auto") -> list[Series]:
        """Every series of the selected cells: ``metric`` one of METRICS, "all", or "auto" (the slow-down ratio
        where the cell has one, else time, as `perfsuite compare --metric auto`)."""
        if metric not in (*METRICS, "all", "auto"):
            raise HistoryError(f"unknown metric {metric!r}; known: auto, all, {', '.join(METRICS)}")
        cells = {c.id: c for c in self.cells(cells_expr)}
        rows = self.conn.execute(
            "SELECT m.cell_id, m.metric, mc.series_key, mc.fingerprint, mc.description, r.run_id, r.datetime, "
            "r.commit_sha, r.branch, m.value, m.ci_low, m.ci_high FROM measurements m JOIN runs r USING (run_id) "
            "JOIN machines mc USING (machine_id) ORDER BY m.cell_id, m.metric, mc.series_key, r.datetime, r.run_id")
        grouped: dict[tuple[str, str, str], list] = {}
        for row in rows:
            if row[0] in cells:
                grouped.setdefault(row[:3], []).append(row)
        with_ratio = {k[0] for k in grouped if k[1] == "slowdown_ratio"}
        out = []
        for (cell_id, m, key), group in grouped.items():
            if metric == "auto" and m != ("slowdown_ratio" if cell_id in with_ratio else "time_ms"):
                continue
            if metric not in ("auto", "all") and m != metric:
                continue
            points = tuple(Point(Run(g[5], g[6], g[7], g[8]), g[9], g[10], g[11]) for g in group)
            software = tuple(_software(json.loads(g[3])) for g in group)
            out.append(Series(cells[cell_id], m, key, group[-1][4], points, software))
        return sorted(out, key=lambda s: (s.cell, s.metric, s.series_key))


def _bool(v) -> int | None:
    return None if v is None else int(bool(v))


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _files(sources: Sequence[str]) -> str:
    return sources[0] if len(sources) == 1 else f"{sources[0]} (+{len(sources) - 1} more)"


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
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except (sqlite3.DatabaseError, OSError) as e:
        raise HistoryError(f"{path}: not a perfsuite history store ({e})") from None
    if version > STORE_VERSION:
        conn.close()
        raise HistoryError(f"{path}: history store format {version} is newer than this perfsuite reads "
                           f"({STORE_VERSION}); upgrade perfsuite")
    if version == 0 and tables:
        conn.close()
        raise HistoryError(f"{path}: an SQLite file, but not a perfsuite history store (no format version)")
    conn.execute("PRAGMA foreign_keys = ON")
    steps = [(STORE_VERSION, _SCHEMA)] if version == 0 else [(v, _MIGRATIONS[v]) for v in
                                                              range(version + 1, STORE_VERSION + 1)]
    for target, sql in steps:  # each step one transaction: a failed step leaves the version before
        conn.executescript(f"BEGIN; {sql} PRAGMA user_version = {target}; COMMIT;")
    return HistoryStore(conn, path)


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
    key = run_key(sources)
    with open_store(store_path, create=True) as store:
        return store.add(results, sources, key)
