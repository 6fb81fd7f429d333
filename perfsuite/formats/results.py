"""pytest-benchmark JSON → one tidy DataFrame: a row per cell, columns with units.

Reads the files a benchmark run writes (shards of one run, or several runs with
different cells), checks each is a perfsuite results file of a schema this
version knows, and merges them. Cells that did not run (listed under
``perfsuite.not_run``) become rows too, with their status and reason and no
metrics, so downstream steps can show them as missing instead of losing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from perfsuite.errors import PerfsuiteError
from perfsuite.cells.grid import Cell
from perfsuite.formats.record import SCHEMA_VERSION, STATUS_OK

CELL_COLUMNS = [f for f in Cell.__dataclass_fields__]
# Columns every frame has, in this order; workload metrics follow, then run metadata.
LEADING_COLUMNS = ["cell_id", *CELL_COLUMNS, "status", "reason"]
ENV_COLUMNS = ["device_name", "torch_version", "cuda_version", "threads"]


class ResultsError(PerfsuiteError):
    pass


@dataclass
class Results:
    frame: pd.DataFrame  # one row per cell
    runs: list[dict] = field(default_factory=list)  # per file: source, datetime, commit, profile, device, ...
    errors: list[str] = field(default_factory=list)  # one line per file that could not be read (non-strict)

    def workload(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["workload"] == name]


def read_json(path: str | Path) -> dict:
    """The parsed file, or a one-line ResultsError naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file (not UTF-8), so not a results JSON") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict):
        raise ResultsError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def _check_schema(version, where: str) -> None:
    if not isinstance(version, int):
        raise ResultsError(f"{where}: perfsuite_schema is {version!r}, not a version number")
    if version > SCHEMA_VERSION:
        raise ResultsError(f"{where}: perfsuite schema {version} is newer than this perfsuite reads "
                           f"({SCHEMA_VERSION}); upgrade perfsuite")
    if version < 1:
        raise ResultsError(f"{where}: unknown perfsuite schema {version}")


def rows_from_doc(doc: dict, source: str) -> tuple[list[dict], dict]:
    """The cell rows and the run metadata of one pytest-benchmark JSON document."""
    benches = doc.get("benchmarks")
    meta = doc.get("perfsuite")
    if not isinstance(benches, list) or "machine_info" not in doc:
        raise ResultsError(f"{source}: not a pytest-benchmark JSON file (no 'benchmarks' list / 'machine_info')")
    if not isinstance(meta, dict):
        raise ResultsError(f"{source}: a pytest-benchmark file, but not written by perfsuite (no 'perfsuite' section)")
    _check_schema(meta.get("perfsuite_schema"), source)
    rows = []
    for i, bench in enumerate(benches):
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        name = bench.get("name", f"#{i}") if isinstance(bench, dict) else f"#{i}"
        if not isinstance(extra, dict) or "perfsuite_schema" not in extra:
            raise ResultsError(f"{source}: benchmark {name} has no perfsuite record in extra_info")
        rows.append(_row(extra, f"{source}: benchmark {name}", source, bench))
    not_run = meta.get("not_run", [])
    if not isinstance(not_run, list):
        raise ResultsError(f"{source}: perfsuite.not_run is not a list")
    for i, entry in enumerate(not_run):
        if not isinstance(entry, dict):
            raise ResultsError(f"{source}: not_run entry {i} is not a record")
        rows.append(_row(entry, f"{source}: not_run entry {i}", source, None))
    run = {
        "source": source,
        "datetime": doc.get("datetime"),
        "commit": (doc.get("commit_info") or {}).get("id"),
        "branch": (doc.get("commit_info") or {}).get("branch"),
        "machine_node": (doc.get("machine_info") or {}).get("node"),
        **{k: v for k, v in meta.items() if k not in ("not_run",)},
    }
    env = next((r for r in rows if r.get("device_name")), {})
    run |= {k: env.get(k) for k in ENV_COLUMNS}
    return rows, run


def _row(extra: dict, where: str, source: str, bench: dict | None) -> dict:
    _check_schema(extra.get("perfsuite_schema"), where)
    try:
        cell = Cell.from_dict(extra["cell"])
    except (KeyError, TypeError, ValueError) as e:
        raise ResultsError(f"{where}: malformed cell record ({e})") from None
    row = {"cell_id": cell.id, **cell.to_dict(), "status": extra.get("status", STATUS_OK),
           "reason": extra.get("reason"), "source": source}
    env = extra.get("env") or {}
    if not isinstance(env, dict):
        raise ResultsError(f"{where}: 'env' is {type(env).__name__}, not an object")
    row |= {k: v for k, v in env.items() if k in ENV_COLUMNS}
    for key, value in extra.items():
        if key in ("cell", "env", "model_dims", "perfsuite_schema", "cell_id", "status", "reason"):
            continue
        row[key] = value
    if bench is not None:
        stats = bench.get("stats") or {}
        row["rounds"] = stats.get("rounds")
    return row


def load_results(paths, *, strict: bool = True) -> Results:
    """Merge result files into one frame. A duplicate cell across files is an error (two runs of one cell
    cannot both be the result). With ``strict=False`` a bad file is reported in ``errors`` and the rest kept."""
    all_rows: list[dict] = []
    runs: list[dict] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            doc = read_json(path)
            rows, run = rows_from_doc(doc, str(path))
            mine: set[str] = set()
            for r in rows:
                if r["cell_id"] in seen:
                    raise ResultsError(f"{path}: duplicate cell {r['cell_id']} (also in {seen[r['cell_id']]})")
                if r["cell_id"] in mine:
                    raise ResultsError(f"{path}: duplicate cell {r['cell_id']} (twice in this file)")
                mine.add(r["cell_id"])
            for r in rows:
                seen[r["cell_id"]] = str(path)
        except ResultsError as e:
            if strict:
                raise
            errors.append(str(e))
            continue
        all_rows += rows
        runs.append(run)
    return Results(frame=tidy_frame(all_rows), runs=runs, errors=errors)


def tidy_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows → DataFrame with the leading columns first and cells in a stable order (by cell id fields)."""
    frame = pd.DataFrame(rows)
    for col in LEADING_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=object)
    rest = sorted(c for c in frame.columns if c not in LEADING_COLUMNS)
    frame = frame[LEADING_COLUMNS + rest]
    if len(frame):
        order = sorted(range(len(frame)), key=lambda i: _sort_key(frame.iloc[i]))
        frame = frame.iloc[order].reset_index(drop=True)
    return frame


def _sort_key(row) -> tuple:
    def k(v):
        return (1, 0) if v is None or (isinstance(v, float) and v != v) else (0, v)

    return tuple(k(row[c]) for c in ("workload", "adapter", "rank", "rank_b", "seq_len", "batch", "window", "gen_len"))
