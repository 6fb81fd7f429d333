"""Baselines: a device's reference measurements, one file per device fingerprint and profile, under ``baselines/``.

A baseline keeps, per cell, the raw samples (adapted times and the interleaved
r = 0 times) and their summary statistics, so a later run can be tested
against the samples themselves, not against a single number.

Format history of ``perfsuite_baseline`` (bump on any change a reader must know about, and add an
``_update_to_N`` step below; files of a newer format are refused):
  1 — first draft: the fingerprint's fields at the top level; ``cells`` a list of
      ``{cell_id, cell, samples_ms, base_samples_ms}``.
  2 — ``fingerprint`` an object; ``cells`` keyed by cell id, each with its statistics (``time_ms``,
      ``base_time_ms``, ``slowdown_pct``, ``iqr_pct``, ``rounds``) beside the samples; ``source``
      (results files, commit, datetime, torch threads), ``updated`` and a free-text ``note`` added.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import write_json_atomic
from perfsuite.cells.grid import Cell
from perfsuite.formats.record import STATUS_OK
from perfsuite.formats.io import read_json
from perfsuite.formats.results import Results, ResultsError, results_from_document
from perfsuite.timing import PairedTiming, iqr

BASELINE_VERSION = 2
BASELINE_DIR = Path("baselines")
FINGERPRINT_FIELDS = ("device_name", "torch_version", "cuda_version", "dtype", "model")
SAMPLE_FIELDS = ("samples_ms", "ref_samples_ms")
# Per-cell columns a baseline does not keep: the cell's own fields and status live elsewhere, the environment is in
# the fingerprint, and these describe the run rather than the cell.
_NOT_KEPT = {"cell_id", "status", "reason", "source", "threads", "device_name", "torch_version", "cuda_version",
             *Cell.__dataclass_fields__}


class BaselineError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class Fingerprint:
    """What must match for absolute times to be comparable: the device, the software, the dtype, the model."""

    device_name: str
    torch_version: str
    cuda_version: str | None
    dtype: str
    model: str

    def describe(self) -> str:
        cuda = f"CUDA {self.cuda_version}" if self.cuda_version else "no CUDA"
        return f"{self.device_name}, torch {self.torch_version}, {cuda}, {self.dtype}, model {self.model}"

    def differences(self, other: "Fingerprint") -> list[str]:
        return [f"{k}: {getattr(self, k)!r} vs {getattr(other, k)!r}" for k in FINGERPRINT_FIELDS
                if getattr(self, k) != getattr(other, k)]


@dataclass
class Baseline:
    """Reference cells to compare against: a baseline file, or another run's results read as one."""

    name: str
    fingerprint: Fingerprint
    profile: str | None
    cells: dict[str, dict]  # cell id -> {"cell": {...}, statistics, samples_ms, base_samples_ms}
    source: dict = field(default_factory=dict)
    created: str | None = None
    updated: str | None = None
    note: str | None = None  # e.g. the command that made it
    path: Path | None = None

    def to_json(self) -> dict:
        return {"perfsuite_baseline": BASELINE_VERSION, "name": self.name, "profile": self.profile,
                "fingerprint": asdict(self.fingerprint), "created": self.created, "updated": self.updated,
                "note": self.note, "source": self.source, "cells": {k: self.cells[k] for k in sorted(self.cells)}}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean(value):
    """pandas' missing values (NaN) back to None; numpy scalars to Python numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value


_COUNTS = {"rounds", "tokens", "flops", "peak_mem_bytes"}  # integer columns pandas turns into floats beside NaN


def _integral(value):
    """pandas stores an integer column with missing values as floats: 32.0 back to 32."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def cell_stats(samples_ms, base_samples_ms) -> dict:
    """The summary statistics stored beside a cell's samples, computed as a benchmark run computes them."""
    stats: dict = {"rounds": len(samples_ms)}
    if not samples_ms:
        return stats
    if base_samples_ms and len(base_samples_ms) == len(samples_ms) and min(base_samples_ms) > 0:
        timing = PairedTiming(tuple(samples_ms), tuple(base_samples_ms))
        return stats | {"time_ms": timing.time_ms, "ref_time_ms": timing.ref_time_ms,
                        "slowdown_pct": timing.slowdown_pct, "iqr_pct": timing.iqr_pct}
    med = statistics.median(samples_ms)
    return stats | {"time_ms": med, "iqr_pct": 100.0 * iqr(samples_ms) / med}


def records_from_results(results: Results) -> tuple[dict[str, dict], list[str]]:
    """The cells that ran (status ok) as baseline records, and the ids of those that did not."""
    cells, not_ok = {}, []
    for row in results.frame.to_dict("records"):
        if row.get("status") != STATUS_OK:
            not_ok.append(row["cell_id"])
            continue
        record = {"cell": {k: _integral(_clean(row[k])) for k in Cell.__dataclass_fields__}}
        for key, value in row.items():
            value = _clean(value)
            if key in _NOT_KEPT or value is None:
                continue
            if key in _COUNTS:
                value = _integral(value)
            if isinstance(value, (int, float, str, bool)) or (
                    isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)):
                record[key] = value
        cells[row["cell_id"]] = record
    return cells, not_ok


def ran_any(results: Results) -> bool:
    """Whether any cell ran (status ok): only those have a device fingerprint and something to compare."""
    frame = results.frame
    return bool(len(frame)) and bool((frame["status"] == STATUS_OK).any())


def fingerprint_of(results: Results, where: str = "results") -> Fingerprint:
    """The one fingerprint of the cells that ran; an error when there are none or several."""
    frame = results.frame
    ok = frame[frame["status"] == STATUS_OK] if len(frame) else frame
    if not len(ok):
        raise BaselineError(f"{where}: no cell ran (status ok), so there is nothing to fingerprint or compare")
    seen = {tuple(_clean(r.get(k)) for k in FINGERPRINT_FIELDS) for r in ok.to_dict("records")}
    if len(seen) > 1:
        listed = "; ".join(Fingerprint(*s).describe() for s in sorted(seen, key=str))
        raise BaselineError(f"{where}: cells from {len(seen)} different devices/setups ({listed}); "
                            "a baseline holds one device fingerprint")
    fp = Fingerprint(*seen.pop())
    if not fp.device_name or not fp.torch_version:
        raise BaselineError(f"{where}: the cells carry no device name / torch version (env), cannot fingerprint")
    return fp


def profile_of(results: Results) -> str | None:
    profiles = {run.get("profile") for run in results.runs}
    return profiles.pop() if len(profiles) == 1 else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower()


def default_name(fingerprint: Fingerprint, profile: str | None) -> str:
    """E.g. ``smoke_cpu-amd-epyc_torch-2.13.0-cpu_nocuda_float32_tiny``: the profile, then the fingerprint."""
    cuda = f"cuda-{_slug(fingerprint.cuda_version)}" if fingerprint.cuda_version else "nocuda"
    return "_".join([_slug(profile or "any"), _slug(fingerprint.device_name),
                     f"torch-{_slug(fingerprint.torch_version)}", cuda, _slug(fingerprint.dtype),
                     _slug(fingerprint.model)])


def source_of(results: Results) -> dict:
    run = results.runs[0] if results.runs else {}
    return {"results": [r.get("source") for r in results.runs], "commit": run.get("commit"),
            "datetime": run.get("datetime"), "threads": _clean(run.get("threads"))}


def baseline_from_results(results: Results, name: str, path: Path | None = None) -> Baseline:
    cells, _ = records_from_results(results)
    run = results.runs[0] if results.runs else {}
    return Baseline(name=name, fingerprint=fingerprint_of(results, name), profile=profile_of(results), cells=cells,
                    source=source_of(results), created=run.get("datetime"), updated=run.get("datetime"), path=path)


# --- reading: version check, migration chain, validation ---------------------------------------------------------

def _update_to_2(doc: dict) -> dict:
    """v1 → v2: fingerprint object, cells keyed by id with their statistics recomputed from the samples."""
    cells = {}
    for entry in doc.get("cells", []):
        if not isinstance(entry, dict) or "cell_id" not in entry:
            raise ValueError("a v1 cell entry without cell_id")
        samples, base = entry.get("samples_ms") or [], entry.get("base_samples_ms") or []
        cells[entry["cell_id"]] = {"cell": entry.get("cell"), **cell_stats(samples, base),
                                   "samples_ms": samples, "ref_samples_ms": base}
    return {"perfsuite_baseline": 2, "name": doc.get("name"), "profile": doc.get("profile"),
            "fingerprint": {k: doc.get(k) for k in FINGERPRINT_FIELDS}, "created": doc.get("created"),
            "updated": doc.get("created"), "source": {}, "cells": cells}


_MIGRATIONS = {2: _update_to_2}  # target version -> step from the version before


def migrate(doc: dict, where: str) -> dict:
    """Bring a baseline document of any known version to BASELINE_VERSION (without touching the file)."""
    version = doc.get("perfsuite_baseline")
    if version is None:
        raise BaselineError(f"{where}: not a perfsuite baseline (no 'perfsuite_baseline' format version)")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BaselineError(f"{where}: unknown baseline format {version!r}")
    if version > BASELINE_VERSION:
        raise BaselineError(f"{where}: baseline format {version} is newer than this perfsuite reads "
                            f"({BASELINE_VERSION}); upgrade perfsuite")
    for target in range(version + 1, BASELINE_VERSION + 1):
        try:
            doc = _MIGRATIONS[target](doc)
        except (TypeError, ValueError, AttributeError) as e:
            raise BaselineError(f"{where}: cannot migrate baseline format {target - 1} to {target}: {e}") from None
    return doc


def _check_samples(values, where: str) -> None:
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values):
        raise BaselineError(f"{where}: samples must be a list of positive finite numbers")


def baseline_from_json(doc, where: str, path: Path | None = None) -> Baseline:
    if not isinstance(doc, dict):
        raise BaselineError(f"{where}: expected a JSON object, found {type(doc).__name__}")
    doc = migrate(doc, where)
    fp = doc.get("fingerprint")
    if not isinstance(fp, dict) or any(k not in fp for k in FINGERPRINT_FIELDS):
        raise BaselineError(f"{where}: the fingerprint needs {', '.join(FINGERPRINT_FIELDS)}")
    cells = doc.get("cells")
    if not isinstance(cells, dict):
        raise BaselineError(f"{where}: 'cells' must be an object keyed by cell id")
    cells = {k: {{"base_samples_ms": "ref_samples_ms", "base_time_ms": "ref_time_ms"}.get(f, f): v for f, v in r.items()}
             if isinstance(r, dict) else r for k, r in cells.items()}
    for cell_id, record in cells.items():
        here = f"{where}: cell {cell_id}"
        if not isinstance(record, dict):
            raise BaselineError(f"{here}: expected an object")
        try:
            cell = Cell.from_dict(record.get("cell"))
        except (TypeError, ValueError) as e:
            raise BaselineError(f"{here}: malformed cell record ({e})") from None
        if cell.id != cell_id:
            raise BaselineError(f"{here}: the record describes {cell.id}")
        for key in SAMPLE_FIELDS:
            if key in record:
                _check_samples(record[key], f"{here}: {key}")
    return Baseline(name=doc.get("name") or (path.stem if path else where), fingerprint=Fingerprint(**{
        k: fp[k] for k in FINGERPRINT_FIELDS}), profile=doc.get("profile"), cells=cells, source=doc.get("source") or {},
                    created=doc.get("created"), updated=doc.get("updated"), note=doc.get("note"), path=path)


def _read_doc(path: Path) -> dict:
    try:
        return read_json(path, ResultsError)
    except ResultsError as e:
        raise BaselineError(str(e)) from None


def load_baseline(path: str | Path) -> Baseline:
    """A baseline file, migrated to the current format in memory; BaselineError (one line) if it is not one."""
    path = Path(path)
    return baseline_from_json(_read_doc(path), str(path), path)


def load_reference(path: str | Path) -> Baseline:
    """What to compare against: a baseline file, or another run's pytest-benchmark results JSON."""
    path = Path(path)
    doc = _read_doc(path)
    if isinstance(doc, dict) and "benchmarks" in doc and "perfsuite_baseline" not in doc:
        return baseline_from_results(results_from_document(doc, str(path)), name=str(path), path=path)
    return baseline_from_json(doc, str(path), path)


def find_baseline(results: Results, directory: str | Path = BASELINE_DIR, *, portable: bool = False) -> Path | None:
    """The baseline in ``directory`` for these results' device fingerprint and profile, or None if there is none.

    With ``portable`` (the comparison tests the slow-down, not absolute times) and no exact match, a baseline of
    the same profile, dtype, model and kind of device (CPU or GPU) from another machine serves: that is how a
    hosted CI runner, whose CPU is not the baseline's, still gets a verdict. A file there that is not a readable
    baseline is an error, not something to skip. When several match, the one with the default name wins;
    otherwise the choice is ambiguous and an error.
    """
    directory = Path(directory)
    if not directory.is_dir() or not ran_any(results):
        return None
    fp, profile = fingerprint_of(results), profile_of(results)
    baselines = {p: load_baseline(p) for p in sorted(directory.glob("*.json"))}
    matches = [p for p, b in baselines.items() if b.fingerprint == fp and b.profile == profile]
    if not matches and portable:
        matches = [p for p, b in baselines.items() if b.profile == profile and _same_setup(b.fingerprint, fp)]
    if len(matches) <= 1:
        return matches[0] if matches else None
    preferred = [p for p in matches if p.stem == default_name(fp, profile)]
    if preferred:
        return preferred[0]
    raise BaselineError(f"several baselines in {directory} match these results: "
                        f"{', '.join(p.name for p in matches)}; pass one with --baseline")


def _same_setup(a: Fingerprint, b: Fingerprint) -> bool:
    """Same dtype, model and kind of device: what the portable slow-down needs to be comparable."""
    return a.dtype == b.dtype and a.model == b.model and (a.cuda_version is None) == (b.cuda_version is None)


# --- writing -----------------------------------------------------------------------------------------------------

@dataclass
class UpdateReport:
    path: Path
    created: bool
    added: list[str] = field(default_factory=list)
    replaced: list[tuple[str, float | None, float | None]] = field(default_factory=list)  # id, old, new time_ms
    kept: list[str] = field(default_factory=list)  # in the baseline, not in these results: left as they were
    removed: list[str] = field(default_factory=list)  # dropped by prune
    skipped: list[str] = field(default_factory=list)  # did not run in these results (oom, no device, ...)
    replaced_other: str | None = None  # with force: the fingerprint/profile that was overwritten

    def lines(self) -> list[str]:
        out = [f"{'created' if self.created else 'updated'} {self.path}"]
        if self.replaced_other:
            out.append(f"  replaced a baseline of another setup: {self.replaced_other}")
        out.append(f"  {len(self.added)} cells added, {len(self.replaced)} replaced, {len(self.kept)} kept as they "
                   f"were, {len(self.removed)} removed, {len(self.skipped)} not run (not stored)")
        for cell_id in self.added:
            out.append(f"  + {cell_id}")
        for cell_id, old, new in self.replaced:
            if old and new:
                out.append(f"  ~ {cell_id}: {old:.4g} -> {new:.4g} ms ({100 * (new / old - 1):+.1f}%)")
            else:
                out.append(f"  ~ {cell_id}")
        for cell_id in self.removed:
            out.append(f"  - {cell_id}")
        for cell_id in self.skipped:
            out.append(f"  ! {cell_id}: did not run, not stored")
        return out


def update_baseline(results: Results, *, directory: str | Path = BASELINE_DIR, name: str | None = None,
                    force: bool = False, prune: bool = False, note: str | None = None) -> UpdateReport:
    """Write these results into their baseline file (created, or merged cell by cell), atomically.

    Refuses, leaving the file untouched, when the existing file is unreadable, or holds a baseline of another device
    fingerprint or profile (unless ``force``). Cells the results lack are kept unless ``prune``.
    """
    fp, profile = fingerprint_of(results), profile_of(results)
    if profile is None:
        raise BaselineError("these results mix profiles (or name none); a baseline holds one profile")
    name = name or default_name(fp, profile)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise BaselineError(f"baseline name {name!r}: use letters, digits, '.', '_', '+', '-'")
    path = Path(directory) / f"{name}.json"
    new_cells, not_run = records_from_results(results)
    report = UpdateReport(path=path, created=not path.exists(), skipped=sorted(not_run))
    cells: dict[str, dict] = {}
    created = _now()
    old_note = None
    if path.exists():
        old = load_baseline(path)  # an unreadable file stops here, untouched
        other = old.fingerprint != fp or old.profile != profile
        if other and not force:
            diffs = old.fingerprint.differences(fp) + ([f"profile: {old.profile!r} vs {profile!r}"]
                                                       if old.profile != profile else [])
            raise BaselineError(f"{path} is the baseline of another setup ({'; '.join(diffs)}); refusing to "
                                "replace it: pass another --name, or --force to overwrite it")
        if other:
            report.replaced_other = f"{old.fingerprint.describe()}, profile {old.profile}"
        else:
            cells = dict(old.cells)
            created = old.created or created
            old_note = old.note
    for cell_id, record in new_cells.items():
        if cell_id in cells:
            report.replaced.append((cell_id, cells[cell_id].get("time_ms"), record.get("time_ms")))
        else:
            report.added.append(cell_id)
        cells[cell_id] = record
    for cell_id in sorted(set(cells) - set(new_cells)):
        if prune:
            del cells[cell_id]
            report.removed.append(cell_id)
        else:
            report.kept.append(cell_id)
    baseline = Baseline(name=name, fingerprint=fp, profile=profile, cells=cells, created=created, updated=_now(),
                        source=source_of(results), note=note if note is not None else old_note, path=path)
    doc = baseline.to_json()
    baseline_from_json(doc, str(path), path)  # what is written must read back: check before replacing anything
    write_json_atomic(path, doc)
    return report
