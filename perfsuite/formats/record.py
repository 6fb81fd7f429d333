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
      identity (:mod:`perfsuite.machine`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from perfsuite.cells.grid import Cell
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import Format

STATUS_OK = "ok"
STATUS_OOM = "oom"  # the cell ran out of device memory
STATUS_OUTSIDE_BUDGET = "outside_budget"  # batch × window over the verification token budget
STATUS_NO_DEVICE = "no_device"  # the cell's device is not on this machine
STATUS_MISSING_EXTRA = "missing_extra"  # an optional dependency the cell needs is not installed
STATUSES = (STATUS_OK, STATUS_OOM, STATUS_OUTSIDE_BUDGET, STATUS_NO_DEVICE, STATUS_MISSING_EXTRA)

_OWN_FIELDS = ("perfsuite_schema", "cell_id", "cell", "status", "reason", "env", "model_dims")
_RENAMED_IN_2 = {"base_samples_ms": "ref_samples_ms", "plain_samples_ms": "ref_samples_ms",
                 "base_time_ms": "ref_time_ms", "plain_time_ms": "ref_time_ms"}


class RecordError(PerfsuiteError):
    pass


def _update_to_2(d: dict) -> dict:
    out = {_RENAMED_IN_2.get(k, k): v for k, v in d.items()}
    samples, ref = out.get("samples_ms"), out.get("ref_samples_ms")
    if "slowdown_pct" not in out and samples and ref and len(samples) == len(ref) and min(ref) > 0:
        from perfsuite.paired import PairedTiming

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

    @property
    def samples_ms(self) -> list[float] | None:
        """The cell's raw timed rounds (ms), or None when it has none."""
        return self.metrics.get("samples_ms") or None

    @property
    def ref_samples_ms(self) -> list[float] | None:
        """The paired reference's rounds (r = 0 model, or plain decoding), one per timed round, or None."""
        ref, own = self.metrics.get("ref_samples_ms"), self.samples_ms
        return ref if ref and own and len(ref) == len(own) and min(ref) > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"perfsuite_schema": SCHEMA_VERSION, "cell_id": self.cell.id, "cell": self.cell.to_dict(),
                "status": self.status, "reason": self.reason, "env": dict(self.env),
                "model_dims": dict(self.model_dims), **self.metrics}

    @classmethod
    def from_dict(cls, d: Any, where: str = "record") -> "CellRecord":
        """A record read back (any known schema), checked; RecordError (one line) when it is malformed."""
        d = RECORD_FORMAT.upgrade(d, where)
        try:
            cell = Cell.from_dict(d["cell"])
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"{where}: malformed cell record ({e})") from None
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


def not_run(cell: Cell, status: str, reason: str, **metrics: Any) -> CellRecord:
    """The record of a cell that did not run: why, and nothing measured."""
    return CellRecord(cell, status=status, reason=reason, metrics=metrics)


def model_dims(model) -> dict[str, int]:
    cfg = model.config
    return {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head, "n_inner": cfg.n_inner,
            "vocab_size": cfg.vocab_size}
