"""The results file: pytest-benchmark's JSON with a ``perfsuite`` section, read into :class:`Results`.

Reads the files a benchmark run writes (shards of one run, or several runs with different cells),
checks each is a perfsuite results file, migrates its records (:class:`~perfsuite.formats.record.CellRecord`)
and merges them. Cells that did not run (``perfsuite.not_run``) are records too, with their status and
reason, so downstream steps show them as missing instead of losing them. :func:`results_document` is the
one place that builds the document, for the plugin and the journal alike.

The ``perfsuite`` section: ``perfsuite_schema`` (the record schema of :mod:`~perfsuite.formats.record`,
whose format history applies), the run settings (profile, device, dtype, rounds, warmup, selection,
threads, shard), ``sessions`` (journaled runs: pytest sessions that made it) and ``not_run``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from perfsuite.cells.grid import LATER_FIELDS, Cell, compile_selection
from perfsuite.cells.shard import parse_shard
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import read_json
from perfsuite.formats.record import RECORD_FORMAT, SCHEMA_VERSION, CellRecord, RecordError

if TYPE_CHECKING:
    import pandas as pd  # imported where a frame is made: reading results must not cost pandas' import

SECTION = "perfsuite"
# the serving-time fields (LATER_FIELDS) are columns only where a cell has them: earlier frames and CSVs unchanged
CELL_COLUMNS = [f for f in Cell.__dataclass_fields__ if f not in LATER_FIELDS]
# Columns every frame has, in this order; workload metrics follow, then run metadata.
LEADING_COLUMNS = ["cell_id", *CELL_COLUMNS, "status", "reason"]
ENV_COLUMNS = ["device_name", "torch_version", "cuda_version", "threads"]


class ResultsError(PerfsuiteError):
    pass


def perfsuite_section(settings: dict, not_run: Iterable[CellRecord], **extra: Any) -> dict:
    """The document's own section: schema, run settings, the cells that did not run."""
    return {"perfsuite_schema": SCHEMA_VERSION, **settings, **extra, "not_run": [r.to_dict() for r in not_run]}


def results_document(header: dict, benchmarks: list[dict], settings: dict, not_run: Iterable[CellRecord],
                     **extra: Any) -> dict:
    """A results document: pytest-benchmark's fields (``header``: machine_info, commit_info, datetime,
    pytest_benchmark_version) and its benchmark entries, plus the perfsuite section."""
    return {"machine_info": header["machine_info"], "commit_info": header["commit_info"], "benchmarks": benchmarks,
            "datetime": header["datetime"], "version": header.get("pytest_benchmark_version"),
            SECTION: perfsuite_section(settings, not_run, **extra)}


@dataclass(frozen=True)
class RunInfo:
    """What one results file says of its run: where it came from (file, commit, time, host), the run settings
    (the ``perfsuite`` section, checked on reading by :func:`read_document`) and the device of its records.
    ``get(key)`` reads a field or any other setting by name, as the dict this replaces did (None: not recorded)."""

    source: str | None = None
    datetime: str | None = None  # pytest-benchmark's, ISO 8601
    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    machine_node: str | None = None
    profile: str | None = None
    device: str | None = None
    dtype: str | None = None
    rounds: int | None = None  # None: the profile's policy
    warmup: int | None = None
    threads: int | None = None
    selection: str | None = None  # --cells
    shard: str | None = None  # "i/n"
    weights: str | None = None
    weights_path: str | None = None
    adapters: str | None = None  # --adapters MODULE:OBJECT
    sessions: int | None = None  # journaled runs: the pytest sessions that made it
    device_name: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # any other setting, by name

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunInfo":
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"} | dict(self.extra)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key) if key in _RUN_FIELDS else self.extra.get(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        return self.get(key)


_RUN_FIELDS = frozenset(RunInfo.__dataclass_fields__) - {"extra"}


@dataclass
class Results:
    """The records of one or more results files, and what each file says of its run (:class:`RunInfo`)."""

    records: list[CellRecord] = field(default_factory=list)
    runs: list[RunInfo] = field(default_factory=list)  # per file read (a mapping given is read as one)
    errors: list[str] = field(default_factory=list)  # one line per file that could not be read (non-strict)
    sources: list[str] = field(default_factory=list)  # the file each record came from, parallel to records

    def __post_init__(self) -> None:
        self.runs = [r if isinstance(r, RunInfo) else RunInfo.from_dict(r) for r in self.runs]

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """One row per cell, columns with units: the tidy table the report and CSV are made from."""
        return tidy_frame([_row(r, s) for r, s in zip(self.records, self.sources or [None] * len(self.records))])

    def workload(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["workload"] == name]

    def ok(self) -> list[CellRecord]:
        return [r for r in self.records if r.ok]

    def by_id(self) -> dict[str, CellRecord]:
        return {r.id: r for r in self.records}


def read_document(doc: Any, source: str) -> tuple[list[CellRecord], RunInfo]:
    """The records and the run metadata of one results document."""
    if not isinstance(doc, dict):
        raise ResultsError(f"{source}: expected a JSON object, found {type(doc).__name__}")
    benches, meta = doc.get("benchmarks"), doc.get(SECTION)
    if not isinstance(benches, list) or "machine_info" not in doc:
        raise ResultsError(f"{source}: not a pytest-benchmark JSON file (no 'benchmarks' list / 'machine_info')")
    if not isinstance(meta, dict):
        raise ResultsError(f"{source}: a pytest-benchmark file, but not written by perfsuite (no 'perfsuite' section)")
    try:
        RECORD_FORMAT.version_of(meta, source)
        records = []
        for i, bench in enumerate(benches):
            extra = bench.get("extra_info") if isinstance(bench, dict) else None
            name = bench.get("name", f"#{i}") if isinstance(bench, dict) else f"#{i}"
            if not isinstance(extra, dict) or "perfsuite_schema" not in extra:
                raise ResultsError(f"{source}: benchmark {name} has no perfsuite record in extra_info")
            rec = CellRecord.from_dict(extra, f"{source}: benchmark {name}")
            stats = bench.get("stats")
            rounds = stats.get("rounds") if isinstance(stats, dict) else None
            known = "rounds" in rec.metrics or not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0
            records.append(rec if known else rec.with_metrics(rounds=rounds))
        not_run = meta.get("not_run", [])
        if not isinstance(not_run, list):
            raise ResultsError(f"{source}: perfsuite.not_run is not a list")
        records += [CellRecord.from_dict(e, f"{source}: not_run entry {i}") for i, e in enumerate(not_run)]
    except RecordError as e:
        raise ResultsError(str(e)) from None
    _check_settings(meta, source)
    commit, machine = doc.get("commit_info") or {}, doc.get("machine_info") or {}
    if not isinstance(commit, dict) or not isinstance(machine, dict) or not isinstance(doc.get("datetime"), (str, type(None))):
        raise ResultsError(f"{source}: commit_info and machine_info must be objects, datetime a string")
    run = {"source": source, "datetime": doc.get("datetime"), "commit": commit.get("id"),
           "branch": commit.get("branch"), "dirty": commit.get("dirty"), "machine_node": machine.get("node"),
           **{k: v for k, v in meta.items() if k not in ("not_run", "perfsuite_schema")}}
    env = next((r.env for r in records if r.env.get("device_name")), {})
    run |= {k: env.get(k) for k in ENV_COLUMNS}
    return records, RunInfo.from_dict(run)


_TEXT_SETTINGS = ("profile", "device", "dtype", "selection", "shard", "weights_path")
_COUNT_SETTINGS = ("rounds", "warmup", "threads", "sessions")


def _check_settings(meta: dict, source: str) -> None:
    """The run settings are of their types (a baseline, a store and a resumed run take them as they are)."""
    for key in _TEXT_SETTINGS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ResultsError(f"{source}: perfsuite.{key} = {meta[key]!r:.60} is not a string")
    for key in _COUNT_SETTINGS:
        v = meta.get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10_000_000):
            raise ResultsError(f"{source}: perfsuite.{key} = {v!r:.60} is not a count")
    try:  # what a comparison scopes the baseline by (compare/scope.py): checked where the file is read
        if meta.get("selection") is not None:
            compile_selection(meta["selection"])
        if meta.get("shard") is not None:
            parse_shard(meta["shard"])
    except PerfsuiteError as e:
        raise ResultsError(f"{source}: perfsuite settings: {e}") from None


def load_results(paths, *, strict: bool = True) -> Results:
    """Merge result files. A duplicate cell across files is an error (two runs of one cell cannot both be
    the result). With ``strict=False`` a bad file is reported in ``errors`` and the rest kept."""
    out = Results()
    seen: dict[str, str] = {}
    for path in paths:
        try:
            records, run = read_document(read_json(path, ResultsError), str(path))
            mine: set[str] = set()
            for r in records:
                if r.id in seen:
                    raise ResultsError(f"{path}: duplicate cell {r.id} (also in {seen[r.id]})")
                if r.id in mine:
                    raise ResultsError(f"{path}: duplicate cell {r.id} (twice in this file)")
                mine.add(r.id)
        except ResultsError as e:
            if strict:
                raise
            out.errors.append(str(e))
            continue
        seen |= {r.id: str(path) for r in records}
        out.records += records
        out.sources += [str(path)] * len(records)
        out.runs.append(run)
    return out


def results_from_document(doc: dict, source: str) -> Results:
    records, run = read_document(doc, source)
    return Results(records, [run], [], [source] * len(records))


def _row(rec: CellRecord, source: str | None) -> dict:
    row = {"cell_id": rec.id, **rec.cell.to_dict(), "status": rec.status, "reason": rec.reason, "source": source}
    row |= {k: v for k, v in rec.env.items() if k in ENV_COLUMNS}
    return row | dict(rec.metrics)


def tidy_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows → DataFrame with the leading columns first and cells in a stable order (by cell id fields)."""
    import pandas as pd

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
