"""Re-measuring suspect cells: their benchmark tests run again in a fresh pytest process, with the run's settings.

A fresh process matters: between-process noise (memory layout, clocks, the machine's load) is the noise
a verdict must survive, so a suspect is confirmed by a measurement that shares none of the first one's.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from perfsuite.compare.verdicts import CompareError, RemeasureFn
from perfsuite.formats.baseline import records_from_results
from perfsuite.formats.io import read_json
from perfsuite.formats.results import Results, ResultsError, load_results


def run_cells(node_ids: list[str], run: dict, rootdir: str | Path) -> dict[str, dict]:
    """Run benchmark tests (pytest node ids) again, with the original run's settings; their fresh cell records."""
    with tempfile.TemporaryDirectory(prefix="perfsuite-remeasure-") as tmp:
        out = Path(tmp) / "remeasure.json"
        cmd = [sys.executable, "-m", "pytest", *node_ids, "-q", "-p", "no:cacheprovider", "--benchmark-json", str(out)]
        for flag, key in (("--perfsuite-profile", "profile"), ("--perfsuite-device", "device"),
                          ("--perfsuite-dtype", "dtype"), ("--perfsuite-rounds", "rounds"),
                          ("--perfsuite-warmup", "warmup"), ("--perfsuite-threads", "threads"),
                          ("--perfsuite-weights", "weights_path")):  # a checkpoint run re-measures on its weights
            if run.get(key) is not None:
                cmd += [flag, str(run[key])]
        proc = subprocess.run(cmd, cwd=rootdir, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            last = ((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-1:] or ["no output"]
            raise CompareError(f"re-measuring {len(node_ids)} cells with pytest failed (exit {proc.returncode}): "
                               f"{last[0]}")
        try:
            records, _ = records_from_results(load_results([out]))
        except ResultsError as e:
            raise CompareError(f"re-measurement: {e}") from None
        return records


def node_ids_of(doc: dict) -> dict[str, str]:
    """cell id -> pytest node id, from a pytest-benchmark document."""
    ids = {}
    for bench in doc.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        if extra.get("cell_id") and bench.get("fullname"):
            ids[extra["cell_id"]] = bench["fullname"]
    return ids


def pytest_remeasurer(paths, results: Results, rootdir: str | Path = ".") -> RemeasureFn:
    """Re-measure cells of these result files by running their benchmark tests again from ``rootdir``."""
    node_ids: dict[str, str] = {}
    for path in paths:
        node_ids |= node_ids_of(read_json(path))
    settings = [{k: r.get(k) for k in ("profile", "device", "dtype", "rounds", "warmup", "threads", "weights_path")}
                for r in results.runs]
    if any(s != settings[0] for s in settings):
        raise CompareError("cannot re-measure: the result files were made with different settings")

    def remeasure(cell_ids: list[str]) -> dict[str, dict]:
        unknown = [c for c in cell_ids if c not in node_ids]
        if unknown:
            raise CompareError(f"cannot re-measure {unknown[0]}: no pytest node id for it in the results")
        return run_cells([node_ids[c] for c in cell_ids], settings[0], rootdir)

    return remeasure


