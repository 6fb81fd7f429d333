"""The ``subspace.json`` file of ``perfsuite subspace``, with its tidy CSVs (the φ heatmaps are the report's).

Format history of ``perfsuite_subspace_format`` (bump on any change a reader must know about; add an update step):
  1 — a, b (checkpoint path and peft config summary), factor, control_seed, and ``subspace``, the list of φ grids
      of :meth:`perfsuite.subspace.phi.PhiGrid.to_dict` (the benchmark's extra_info shape).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import Format, write_json_atomic, write_text_atomic
from perfsuite.subspace.peft_io import LoraCheckpoint
from perfsuite.subspace.phi import PhiGrid

JSON_FILE = "subspace.json"
GRID_CSV = "subspace.csv"  # tidy: one row per (comparison, i, j)
SUMMARY_CSV = "subspace_summary.csv"  # one row per comparison
CONFIG_SUMMARY_KEYS = ("r", "lora_alpha", "target_modules", "base_model_name_or_path", "rank_pattern")


class SubspaceFormatError(PerfsuiteError):
    pass


SUBSPACE_FORMAT = Format("subspace file", "perfsuite_subspace_format", 1, {}, SubspaceFormatError)
FORMAT_VERSION = SUBSPACE_FORMAT.current


def results_json(a: LoraCheckpoint, b: LoraCheckpoint, comparisons: list[PhiGrid], *, factor: str,
                 control_seed: int | None) -> dict[str, Any]:
    def side(c: LoraCheckpoint) -> dict[str, Any]:
        return {"path": str(c.path), "peft_config": {k: c.config.get(k) for k in CONFIG_SUMMARY_KEYS}}

    return SUBSPACE_FORMAT.stamp({"a": side(a), "b": side(b), "factor": factor, "control_seed": control_seed,
                                  "subspace": [c.to_dict() for c in comparisons]})


def read_results_json(path: str | Path) -> dict[str, Any]:
    """A ``subspace.json`` written by ``perfsuite subspace``; refuses unknown format versions (one line)."""
    return SUBSPACE_FORMAT.load(path)


def write_outputs(out: Path, results: dict[str, Any]) -> list[Path]:
    """subspace.json, the tidy grid CSV and the summary CSV; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / JSON_FILE, results)
    keys = ("layer", "matrix", "comparison", "label", "r_a", "r_b")
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(keys + ("i", "j", "phi"))
    for c in results["subspace"]:
        for i, row in enumerate(c["phi"], start=1):
            for j, value in enumerate(row, start=1):
                w.writerow([c[k] for k in keys] + [i, j, value])
    write_text_atomic(out / GRID_CSV, f.getvalue())
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(keys + ("phi_11", "top_agree"))
    for c in results["subspace"]:
        w.writerow([c[k] for k in keys] + [f"{c['phi_11']:.6f}", c["top_agree"]])
    write_text_atomic(out / SUMMARY_CSV, f.getvalue())
    return [out / JSON_FILE, out / GRID_CSV, out / SUMMARY_CSV]  # the φ heatmaps: perfsuite.report (the command)


