"""One cell's result, :class:`CellRecord`: what a workload measured, or why the cell did not run.

Written into pytest-benchmark's ``extra_info`` (flat: the record's own fields, then the workload's
metrics), listed under the results' ``perfsuite.not_run`` for cells that did not run, kept per run in
baselines and journals. Every reader goes through :meth:`CellRecord.from_dict`, which migrates older
schemas.

Format history of ``perfsuite_schema`` (bump on any change a reader must know about; add an update step):
  1 — cell, status, reason, env, model_dims and per-workload metrics; the paired reference's samples were
      ``base_samples_ms``/``base_time_ms`` (latency: the r = 0 model) or ``plain_samples_ms``/``plain_time_ms``
      (recompute: plain decoding).
  2 — one name for the paired reference: ``ref_samples_ms`` and ``ref_time_ms``; recompute cells record
      ``slowdown_pct`` against plain decoding like latency cells against r = 0; ``env`` carries the machine
      identity (:mod:`perfsuite.measure.machine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

from perfsuite.cells.grid import Cell
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import Format

STATUS_OK = "ok"
STATUS_OOM = "oom"  # the cell ran out of device memory
STATUS_OUTSIDE_BUDGET = "outside_budget"  # batch × window over the verification token budget
STATUS_NO_DEVICE = "no_device"  # the cell's device is not on this machine
STATUS_MISSING_EXTRA = "missing_extra"  # an optional dependency the cell needs is not installed
STATUS_UNSUPPORTED = "unsupported"  # the cell's mode or model cannot run here (graphs on a CPU, a failed capture)
STATUSES = (STATUS_OK, STATUS_OOM, STATUS_OUTSIDE_BUDGET, STATUS_NO_DEVICE, STATUS_MISSING_EXTRA, STATUS_UNSUPPORTED)

# Bounds of what a record may hold, checked when a file is read (results, journal, baseline, store input): a
# wrongly typed or absurd number is refused with one line there, not met as a crash where it is used.
MAX_TIME_MS = 1e9  # 11.6 days for one timed round: more is not a measurement
MAX_SAMPLES = 1_000_000  # timed rounds per cell (statistics subsample far fewer; see perfsuite.compare.stats)
MAX_ABS_NUMBER = 2.0 ** 63  # any other number: what an int64 or a sum of a few of them holds without overflow
MAX_NAME_CHARS = 200
TIME_FIELDS = ("time_ms", "ref_time_ms")  # positive
SAMPLE_FIELDS = ("samples_ms", "ref_samples_ms", "probe_samples_ms")  # lists of positive times
FINITE_FIELDS = ("slowdown_pct", "iqr_pct")  # any finite number
COUNT_FIELDS = ("rounds", "cycle")  # a non-negative integer
NAME_FIELDS = ("workload", "adapter", "dtype", "device", "model", "impl")  # become parts of file names

_OWN_FIELDS = ("perfsuite_schema", "cell_id", "cell", "status", "reason", "env", "model_dims")
_RENAMED_IN_2 = {"base_samples_ms": "ref_samples_ms", "plain_samples_ms": "ref_samples_ms",
                 "base_time_ms": "ref_time_ms", "plain_time_ms": "ref_time_ms"}


class RecordError(PerfsuiteError):
    pass


def _update_to_2(d: dict) -> dict:
    out = {_RENAMED_IN_2.get(k, k): v for k, v in d.items()}
    samples, ref = out.get("samples_ms"), out.get("ref_samples_ms")
    if "slowdown_pct" not in out and samples and ref and len(samples) == len(ref) and min(ref) > 0:
        from perfsuite.measure.paired import PairedTiming

        out["slowdown_pct"] = PairedTiming(tuple(samples), tuple(ref)).slowdown_pct
    return out


RECORD_FORMAT = Format("cell record", "perfsuite_schema", 2, {2: _update_to_2}, RecordError)
SCHEMA_VERSION = RECORD_FORMAT.current


@dataclass(frozen=True)
class CellRecord:
    """What was run (``cell``), whether it ran (``status``, ``reason``), where (``env``), and what it measured."""

    cell: Cell
    status: str = STATUS_OK
    reason: str | None = None
    env: Mapping[str, Any] = field(default_factory=dict)  # device, software and machine identity
    model_dims: Mapping[str, int] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)  # time_ms, samples_ms, ref_samples_ms, ...
    # The timing core is typed below (samples_ms, ref_samples_ms, probe_samples_ms, cycle, rounds): read from
    # ``metrics``, where the file keeps them (the JSON is unchanged), checked by from_dict (check_metrics).

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(f"{self.cell.id}: unknown status {self.status!r}")
        clash = set(self.metrics) & set(_OWN_FIELDS)
        if clash:
            raise RecordError(f"{self.cell.id}: metric names clash with record fields: {sorted(clash)}")

    @property
    def id(self) -> str:
        return self.cell.id

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def get(self, key: str, default: Any = None) -> Any:
        return self.metrics.get(key, default)

    @cached_property
    def samples_ms(self) -> tuple[float, ...] | None:
        """The cell's raw timed rounds (ms), or None when it has none."""
        return _times(self.metrics.get("samples_ms"))

    @cached_property
    def ref_samples_ms(self) -> tuple[float, ...] | None:
        """The paired reference's rounds (r = 0 model, or plain decoding), one per timed round, or None."""
        ref, own = _times(self.metrics.get("ref_samples_ms")), self.samples_ms
        return ref if ref and own and len(ref) == len(own) and min(ref) > 0 else None

    @cached_property
    def probe_samples_ms(self) -> tuple[float, ...] | None:
        """The fixed torch probe's rounds of the cell's loop (:mod:`perfsuite.measure.probe`), or None (none timed)."""
        return _times(self.metrics.get("probe_samples_ms"))

    @property
    def cycle(self) -> int | None:
        """How many functions the loop rotated through per round (older records: None, read as pairs)."""
        return _count(self.metrics.get("cycle"))

    @property
    def rounds(self) -> int | None:
        """Timed rounds the cell recorded, or None."""
        return _count(self.metrics.get("rounds"))

    def to_dict(self) -> dict[str, Any]:
        return {"perfsuite_schema": SCHEMA_VERSION, "cell_id": self.cell.id, "cell": self.cell.to_dict(),
                "status": self.status, "reason": self.reason, "env": dict(self.env),
                "model_dims": dict(self.model_dims), **self.metrics}

    @classmethod
    def from_dict(cls, d: Any, where: str = "record") -> "CellRecord":
        """A record read back (any known schema), checked; RecordError (one line) when it is malformed."""
        d = RECORD_FORMAT.upgrade(d, where)
        if not isinstance(d.get("cell"), dict):
            raise RecordError(f"{where}: malformed cell record (no 'cell' object)")
        try:
            cell = Cell.from_dict(d["cell"])
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"{where}: malformed cell record ({e})") from None
        for name in NAME_FIELDS:
            check_name(getattr(cell, name), f"{where}: cell field {name}")
        check_metrics(d, where)
        env, dims = d.get("env") or {}, d.get("model_dims") or {}
        if not isinstance(env, dict):
            raise RecordError(f"{where}: 'env' is {type(env).__name__}, not an object")
        if not isinstance(dims, dict):
            raise RecordError(f"{where}: 'model_dims' is {type(dims).__name__}, not an object")
        status = d.get("status") or STATUS_OK
        if status not in STATUSES:
            raise RecordError(f"{where}: unknown status {status!r}")
        reason = d.get("reason")
        return cls(cell, status, reason if isinstance(reason, str) else None, env, dims,
                   {k: v for k, v in d.items() if k not in _OWN_FIELDS})

    def with_metrics(self, **metrics: Any) -> "CellRecord":
        return CellRecord(self.cell, self.status, self.reason, self.env, self.model_dims, {**self.metrics, **metrics})


def _times(v: Any) -> tuple[float, ...] | None:
    return tuple(v) if v else None  # checked by from_dict: positive finite times


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_number(v) and abs(v) <= MAX_ABS_NUMBER and math.isfinite(v)  # abs first: 10**400 has no float


def check_name(value: str, where: str) -> None:
    """A name that becomes part of a file name stays inside its folder: no separator, no '..', no control
    character, bounded length."""
    if (not value or len(value) > MAX_NAME_CHARS or value in (".", "..") or any(c in value for c in "/\\")
            or any(ord(c) < 32 for c in value)):
        raise RecordError(f"{where} = {value[:60]!r} is not a safe name (no '/', '\\', '..', control "
                          f"characters; at most {MAX_NAME_CHARS} characters)")


def check_metrics(d: Mapping[str, Any], where: str) -> None:
    """The numbers a verdict, a baseline or a store uses are of their type, finite and in bounds; any other
    number is finite (NaN aside: a metric a cell could not compute) and fits an int64."""
    for key in TIME_FIELDS:
        v = d.get(key)
        if v is not None and not (_finite(v) and 0 < v <= MAX_TIME_MS):
            raise RecordError(f"{where}: {key} = {v!r:.60} is not a positive time in ms (up to {MAX_TIME_MS:g})")
    for key in FINITE_FIELDS:
        v = d.get(key)
        if v is not None and not _finite(v):
            raise RecordError(f"{where}: {key} = {v!r:.60} is not a finite number")
    for key in COUNT_FIELDS:
        v = d.get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SAMPLES):
            raise RecordError(f"{where}: {key} = {v!r:.60} is not a count from 0 to {MAX_SAMPLES}")
    for key in SAMPLE_FIELDS:
        v = d.get(key)
        if v is None:
            continue
        if not isinstance(v, list):
            raise RecordError(f"{where}: {key} is {type(v).__name__}, not a list of times")
        if len(v) > MAX_SAMPLES:
            raise RecordError(f"{where}: {key} holds {len(v)} samples, more than {MAX_SAMPLES}")
        if not all(_finite(x) and 0 < x <= MAX_TIME_MS for x in v):
            bad = next(x for x in v if not (_finite(x) and 0 < x <= MAX_TIME_MS))
            raise RecordError(f"{where}: {key} holds {bad!r:.60}, not a positive time in ms (up to {MAX_TIME_MS:g})")
    for key, v in d.items():
        if key not in _OWN_FIELDS:
            _check_numbers(v, f"{where}: {key}", depth=0)


MAX_DEPTH = 32  # nesting of a metric (subspace records nest three levels)


def _check_numbers(v: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise RecordError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, int) and abs(v) > MAX_ABS_NUMBER or isinstance(v, float) and math.isinf(v):
            raise RecordError(f"{where}: {v!r:.60} is out of range")
    elif isinstance(v, list):
        for x in v:
            _check_numbers(x, where, depth + 1)
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_numbers(x, f"{where}.{k}", depth + 1)


def not_run(cell: Cell, status: str, reason: str, **metrics: Any) -> CellRecord:
    """The record of a cell that did not run: why, and nothing measured."""
    return CellRecord(cell, status=status, reason=reason, metrics=metrics)


def missing_extra_reasons(records) -> dict[str, int]:
    """Distinct reasons of ``missing_extra`` records (CellRecords or their dicts) → how many cells gave each."""
    out: dict[str, int] = {}
    for r in records:
        status, reason = (r.get("status"), r.get("reason")) if isinstance(r, dict) else (r.status, r.reason)
        if status == STATUS_MISSING_EXTRA:
            out[reason or ""] = out.get(reason or "", 0) + 1
    return out


def model_dims(model) -> dict[str, int]:
    cfg = model.config
    return {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head, "n_inner": cfg.n_inner,
            "vocab_size": cfg.vocab_size}
