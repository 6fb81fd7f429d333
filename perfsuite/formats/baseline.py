"""The baseline file: one machine's reference measurements of one profile part, as several separate runs.

A baseline keeps, per run (one pytest process each), every cell's raw samples and summary numbers, so a
later run is tested against the spread *between* runs, not only within one (pyperf's lesson). It is
keyed by the full machine :class:`~perfsuite.measure.machine.Fingerprint`: only a run of the same fingerprint can
be failed by it; other machines get a reference comparison. What is stored, where and when is
:mod:`perfsuite.compare.baselines`' job; this module reads and writes the file.

Format history of ``perfsuite_baseline`` (bump on any change a reader must know about; add an update step):
  1 — the fingerprint's fields at the top level; ``cells`` a list of ``{cell_id, cell, samples_ms,
      base_samples_ms}``.
  2 — ``fingerprint`` an object (device_name, torch/cuda versions, dtype, model); ``cells`` keyed by cell
      id, each with its statistics beside the samples; ``source``, ``updated`` and ``note`` added.
  3 — ``fingerprint`` is the machine identity of :mod:`perfsuite.measure.machine` (host, CPU, ISA, cores, GPU, driver,
      software, device, dtype, model, threads); ``runs``: a list of separate runs, each ``{source, cells}``
      with cells keyed by id (the paired reference's samples named ``ref_samples_ms``); ``keep``: how many
      runs an update keeps. A v2 file becomes one run whose fingerprint lacks the machine fields, so it
      never gates a run (it serves as a reference).
  4 — each run carries ``recorded``: ``{datetime, boot}``, when the run was made and on which boot of the machine
      (Linux's boot id, or None where unknown), so a baseline tells runs of one sitting from runs of several
      days or reboots (:mod:`perfsuite.compare.quality`). Older runs: the datetime of their source, the boot
      from the fingerprint's host (``host#boot-…``) where it has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import Format, write_json_atomic
from perfsuite.formats.record import MAX_TIME_MS, RECORD_FORMAT, CellRecord, RecordError
from perfsuite.measure.machine import Fingerprint

KEEP_RUNS = 5  # runs a baseline keeps by default: enough for a between-run spread (t test, 4 df with one new run)
SAMPLE_FIELDS = ("samples_ms", "ref_samples_ms")


class BaselineError(PerfsuiteError):
    pass


def boot_of(env_or_host: Any) -> str | None:
    """The boot a run was made on: a record env's ``boot``, else the ``#boot-…`` part of its host name (perfsuite
    adds it unless PERFSUITE_MACHINE_ID names the machine), else None."""
    if isinstance(env_or_host, dict):
        if env_or_host.get("boot"):
            return str(env_or_host["boot"])
        env_or_host = env_or_host.get("host")
    if isinstance(env_or_host, str) and "#boot-" in env_or_host:
        return env_or_host.split("#boot-", 1)[1] or None
    return None


@dataclass(frozen=True)
class BaselineRun:
    """One separate run (one pytest process) of the baseline's cells."""

    cells: dict[str, CellRecord]
    source: dict = field(default_factory=dict)  # results files, commit, datetime, threads
    recorded: dict = field(default_factory=dict)  # {"datetime": when the run was made (ISO), "boot": boot id or None}

    @property
    def when(self) -> str | None:
        return self.recorded.get("datetime") or self.source.get("datetime")

    @property
    def boot(self) -> str | None:
        return self.recorded.get("boot")


@dataclass
class Baseline:
    """A machine's reference runs of one profile part."""

    name: str
    profile: str | None
    fingerprint: Fingerprint
    runs: list[BaselineRun]
    created: str | None = None
    updated: str | None = None
    note: str | None = None
    keep: int = KEEP_RUNS
    path: Path | None = None

    def cell_ids(self) -> list[str]:
        return sorted({cid for run in self.runs for cid in run.cells})

    def cell_runs(self, cell_id: str) -> list[CellRecord]:
        """The cell's record in every run that has it, oldest first."""
        return [run.cells[cell_id] for run in self.runs if cell_id in run.cells]

    def to_json(self) -> dict:
        return BASELINE_FORMAT.stamp({
            "name": self.name, "profile": self.profile, "fingerprint": self.fingerprint.to_dict(),
            "created": self.created, "updated": self.updated, "note": self.note, "keep": self.keep,
            "runs": [{"source": run.source, "recorded": {"datetime": run.when, "boot": run.boot},
                      "cells": {cid: _stored(run.cells[cid]) for cid in sorted(run.cells)}} for run in self.runs]})


def _stored(rec: CellRecord) -> dict:
    """A cell as a baseline keeps it: the cell and its numbers (numeric metrics, numeric lists); the machine is in
    the fingerprint, so no env."""
    keep = {k: v for k, v in rec.metrics.items()
            if (isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and not math.isfinite(v)))
            or (isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))}
    return {"cell": rec.cell.to_dict(), **keep}


# --- migrations ---------------------------------------------------------------------------------------------------

def _update_to_2(doc: dict) -> dict:
    """v1 → v2: fingerprint object, cells keyed by id."""
    cells = {}
    for entry in doc.get("cells", []):
        if not isinstance(entry, dict) or "cell_id" not in entry:
            raise ValueError("a v1 cell entry without cell_id")
        cells[entry["cell_id"]] = {"cell": entry.get("cell"), "samples_ms": entry.get("samples_ms") or [],
                                   "base_samples_ms": entry.get("base_samples_ms") or []}
    return {"name": doc.get("name"), "profile": doc.get("profile"),
            "fingerprint": {k: doc.get(k) for k in ("device_name", "torch_version", "cuda_version", "dtype", "model")},
            "created": doc.get("created"), "updated": doc.get("created"), "source": {}, "cells": cells}


def _update_to_3(doc: dict) -> dict:
    """v2 → v3: the one stored run becomes ``runs[0]``; the old fingerprint keeps what it knew (no host, so it
    never equals a live machine's)."""
    old = doc.get("fingerprint")
    if not isinstance(old, dict):
        raise ValueError("'fingerprint' is not an object")
    source = doc.get("source") or {}
    fingerprint = {"host": None, "cpu": old.get("device_name"), "torch_version": old.get("torch_version"),
                   "cuda_version": old.get("cuda_version"), "device": "cuda" if old.get("cuda_version") else "cpu",
                   "dtype": old.get("dtype"), "model": old.get("model"), "threads": source.get("threads")}
    cells = doc.get("cells")
    if not isinstance(cells, dict):
        raise ValueError("'cells' must be an object keyed by cell id")
    renamed = {cid: {{"base_samples_ms": "ref_samples_ms", "base_time_ms": "ref_time_ms"}.get(k, k): v
                     for k, v in rec.items()} if isinstance(rec, dict) else rec for cid, rec in cells.items()}
    return {"name": doc.get("name"), "profile": doc.get("profile"), "fingerprint": fingerprint,
            "created": doc.get("created"), "updated": doc.get("updated"), "note": doc.get("note"), "keep": KEEP_RUNS,
            "runs": [{"source": source, "cells": renamed}]}


def _update_to_4(doc: dict) -> dict:
    """v3 → v4: when and on which boot each run was made, from what the file knew."""
    runs = doc.get("runs")
    if not isinstance(runs, list):
        raise ValueError("'runs' must be a list of runs")
    boot = boot_of((doc.get("fingerprint") or {}).get("host"))
    doc["runs"] = [run | {"recorded": {"datetime": (run.get("source") or {}).get("datetime"), "boot": boot}}
                   if isinstance(run, dict) else run for run in runs]
    return doc


BASELINE_FORMAT = Format("baseline", "perfsuite_baseline", 4, {2: _update_to_2, 3: _update_to_3, 4: _update_to_4},
                         BaselineError)


# --- reading ------------------------------------------------------------------------------------------------------

def _check_samples(values: Any, where: str) -> None:
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_TIME_MS and math.isfinite(v)
            for v in values):  # bounds first: 10**400 has no float
        raise BaselineError(f"{where}: samples must be a list of positive finite numbers")


def _read_cell(cell_id: str, rec: Any, where: str) -> CellRecord:
    here = f"{where}: cell {cell_id}"
    if not isinstance(rec, dict):
        raise BaselineError(f"{here}: expected an object")
    for key in SAMPLE_FIELDS:
        if key in rec:
            _check_samples(rec[key], f"{here}: {key}")
    try:
        record = CellRecord.from_dict({RECORD_FORMAT.key: RECORD_FORMAT.current, **rec}, here)
    except RecordError as e:
        raise BaselineError(str(e)) from None
    if record.id != cell_id:
        raise BaselineError(f"{here}: the record describes {record.id}")
    return record


def baseline_from_json(doc: Any, where: str, path: Path | None = None) -> Baseline:
    doc = BASELINE_FORMAT.upgrade(doc, where)
    try:
        fingerprint = Fingerprint.from_dict(doc.get("fingerprint") or {})
    except (TypeError, ValueError) as e:
        raise BaselineError(f"{where}: malformed fingerprint ({e})") from None
    runs = doc.get("runs")
    if not isinstance(runs, list) or not runs:
        raise BaselineError(f"{where}: 'runs' must be a non-empty list of runs")
    parsed = []
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("cells"), dict):
            raise BaselineError(f"{where}: run {i} has no 'cells' object")
        cells = {cid: _read_cell(cid, rec, f"{where}: run {i}") for cid, rec in run["cells"].items()}
        source = run.get("source") or {}
        if not isinstance(source, dict):
            raise BaselineError(f"{where}: run {i}: 'source' is {type(source).__name__}, not an object")
        recorded = run.get("recorded") or {}
        if not isinstance(recorded, dict):
            raise BaselineError(f"{where}: run {i}: 'recorded' is not an object")
        parsed.append(BaselineRun(cells, source, {"datetime": recorded.get("datetime"), "boot": recorded.get("boot")}))
    keep = doc.get("keep", KEEP_RUNS)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise BaselineError(f"{where}: 'keep' must be a positive integer, not {keep!r}")
    return Baseline(name=doc.get("name") or (path.stem if path else where), profile=doc.get("profile"),
                    fingerprint=fingerprint, runs=parsed, created=doc.get("created"), updated=doc.get("updated"),
                    note=doc.get("note"), keep=keep, path=path)


def load_baseline(path: str | Path) -> Baseline:
    """A baseline file, migrated to the current format in memory; BaselineError (one line) if it is not one."""
    path = Path(path)
    return baseline_from_json(BASELINE_FORMAT.load(path), str(path), path)


def save_baseline(baseline: Baseline, path: str | Path) -> Path:
    """Write atomically, after checking that what is written reads back."""
    doc = baseline.to_json()
    baseline_from_json(doc, str(path), Path(path))
    return write_json_atomic(path, doc)


def is_baseline_document(doc: Any) -> bool:
    return isinstance(doc, dict) and BASELINE_FORMAT.key in doc
