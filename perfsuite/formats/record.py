"""What one cell writes into pytest-benchmark's ``extra_info`` — the suite's result schema.

Format history of ``extra_info["perfsuite_schema"]`` (bump on any change a reader must know about):
  1 — first version: cell, status, reason, env, model_dims, and per-workload metrics
      (latency: time_ms, base_time_ms, slowdown_pct, samples, peak memory, FLOP/s).

Cells that did not run (out of memory, over the token budget, no GPU) have no
pytest-benchmark entry; the plugin lists them under the JSON's top-level
``perfsuite.not_run`` with the same ``cell``/``status``/``reason`` fields, so a
report can draw them as missing rather than lose them.
"""

from __future__ import annotations

from typing import Any

from perfsuite.cells.grid import Cell

SCHEMA_VERSION = 1

STATUS_OK = "ok"
STATUS_OOM = "oom"  # the cell ran out of device memory
STATUS_OUTSIDE_BUDGET = "outside_budget"  # batch × window over the verification token budget
STATUS_NO_DEVICE = "no_device"  # the cell's device is not on this machine
STATUSES = (STATUS_OK, STATUS_OOM, STATUS_OUTSIDE_BUDGET, STATUS_NO_DEVICE)


def model_dims(model) -> dict[str, int]:
    cfg = model.config
    return {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head, "n_inner": cfg.n_inner,
            "vocab_size": cfg.vocab_size}


def cell_record(cell: Cell, *, status: str = STATUS_OK, reason: str | None = None, env: dict | None = None,
                dims: dict | None = None, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return {
        "perfsuite_schema": SCHEMA_VERSION,
        "cell_id": cell.id,
        "cell": cell.to_dict(),
        "status": status,
        "reason": reason,
        "env": env or {},
        "model_dims": dims or {},
        **(metrics or {}),
    }
