"""Separate runs: a checkout's benchmark tests in a fresh pytest process, each writing its own results file.

Between-process noise (memory layout, clocks, the machine's load) is the noise a verdict must survive, so
everything that needs an independent measurement — a baseline's runs, a suspect's re-measurement, the two
sides of an A/B comparison — goes through :func:`run_benchmarks`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.record import CellRecord
from perfsuite.formats.results import Results, ResultsError, RunInfo, load_results
from perfsuite.options import CELL_OPTIONS, cell_option_args

BENCHMARKS = "tests/benchmarks"  # a checkout's; an installed perfsuite runs those of its package (PACKAGED)
PACKAGED_BENCHMARKS = "perfsuite/benchmarks"
# Run settings (the results' perfsuite section) a fresh run must share with the run it repeats, and the cell option
# each is given as (a checkpoint run is re-measured on its weights, not on random ones under the same cell ids).
# The selection and the shard too: a latency cell is timed in one loop with every selected cell of its shape, so a
# re-measurement of the suspects alone would time them in another loop (fewer models, another machine state).
REPEATED_SETTINGS = {"profile": "profile", "device": "device", "dtype": "dtype", "rounds": "rounds",
                     "warmup": "warmup", "threads": "threads", "weights_path": "weights", "adapters": "adapters",
                     "selection": "cells", "shard": "shard"}
PER_FILE_SETTINGS = ("shard",)  # may differ between the files of one run (its shards): repeated per file


class RunError(PerfsuiteError):
    pass


def run_benchmarks(checkout: str | Path, out_json: str | Path, options: dict, *, node_ids: list[str] | None = None,
                   own_code: bool = False, extra_args: list[str] | None = None) -> Path:
    """Run the benchmark tests of ``checkout`` (or just ``node_ids``) in a new pytest process; its results file.

    ``options``: cell options (see :data:`perfsuite.options.CELL_OPTIONS`). ``own_code``: import
    perfsuite from ``checkout`` itself (an A/B worktree), not from the installed package.
    """
    checkout, out_json = Path(checkout), Path(out_json).resolve()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    if out_json.exists() or out_json.is_symlink():  # a planted link: removed, never written through by pytest-benchmark
        out_json.unlink()
    benchmarks = BENCHMARKS if (checkout / BENCHMARKS).is_dir() else PACKAGED_BENCHMARKS
    cmd = [sys.executable, "-m", "pytest", *(node_ids or [benchmarks]), "-q", "-p", "no:cacheprovider", "--rootdir=.",
           "--benchmark-json", str(out_json), *cell_option_args({k: v for k, v in options.items() if k in CELL_OPTIONS}),
           *(extra_args or [])]
    env = dict(os.environ)
    if options.get("adapters"):  # --adapters MODULE:OBJECT: importable from here, as in this process
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *filter(None, [env.get("PYTHONPATH")])])
    if own_code:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not out_json.exists():
        tail = [line for line in ((proc.stdout or "") + (proc.stderr or "")).strip().splitlines() if line.strip()]
        raise RunError(f"pytest in {checkout} exited with {proc.returncode}: {tail[-1] if tail else 'no output'}")
    return out_json


def load_run(path: Path) -> Results:
    try:
        return load_results([path])
    except ResultsError as e:
        raise RunError(f"the run wrote an unreadable results file: {e}") from None


def _settings(run: RunInfo) -> dict[str, Any]:
    return {option: run.get(key) for key, option in REPEATED_SETTINGS.items()}


def repeat_settings(results: Results) -> dict:
    """The cell options that repeat a run of these results (all their files must share them, but for the shard:
    a run's shards differ in it, and a cell is repeated with its own file's)."""
    settings = [{k: v for k, v in _settings(r).items() if k not in PER_FILE_SETTINGS} for r in results.runs]
    if any(s != settings[0] for s in settings):
        raise RunError("cannot repeat these results: their files were made with different settings")
    if not settings:
        return {}
    shards = {r.get("shard") for r in results.runs}
    return settings[0] | ({"shard": shards.pop()} if len(shards) == 1 else {})


def remeasurer(results: Results, node_ids: dict[str, str], checkout: str | Path, workdir: str | Path):
    """A function re-measuring cells of ``results`` (cell id → pytest node id) in fresh processes, with the
    run's own selection and each cell's own shard, so each suspect is timed in the loop it was timed in."""
    settings = repeat_settings(results)
    shard_of_source = {r.get("source"): r.get("shard") for r in results.runs}
    shard_of = {rec.id: shard_of_source.get(src) for rec, src in zip(results.records, results.sources)}
    calls = [0]

    def remeasure(cell_ids: list[str]) -> dict[str, CellRecord]:
        unknown = [c for c in cell_ids if c not in node_ids]
        if unknown:
            raise RunError(f"cannot re-measure {unknown[0]}: no pytest node id for it in the results")
        calls[0] += 1
        by_shard: dict = {}
        for c in cell_ids:
            by_shard.setdefault(shard_of.get(c, settings.get("shard")), []).append(c)
        fresh: dict[str, CellRecord] = {}
        for k, (shard, cells) in enumerate(sorted(by_shard.items(), key=lambda kv: str(kv[0]))):
            name = f"remeasure-{calls[0]}" + (f"-{k + 1}" if len(by_shard) > 1 else "") + ".json"
            out = run_benchmarks(checkout, Path(workdir) / name, settings | {"shard": shard},
                                 node_ids=[node_ids[c] for c in cells])
            fresh |= load_run(out).by_id()
        return fresh

    return remeasure


def node_ids_of(doc: dict) -> dict[str, str]:
    """cell id → pytest node id, from a results document."""
    ids = {}
    for bench in doc.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        if extra.get("cell_id") and bench.get("fullname"):
            ids[extra["cell_id"]] = bench["fullname"]
    return ids
