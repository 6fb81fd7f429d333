"""Results written as they are measured: one JSON line per finished cell.

A run that is interrupted keeps every cell it finished; a resumed run skips
them; the final pytest-benchmark JSON is assembled from the journal, so the
journal is the single source of truth for ``perfsuite run``.

Line kinds: ``header`` (machine and run settings, one per session),
``benchmark`` (a pytest-benchmark entry, stats and extra_info included),
``not_run`` (a cell recorded as not run, with status and reason).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.record import SCHEMA_VERSION


class JournalError(PerfsuiteError):
    pass


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, kind: str, **payload) -> None:
        line = json.dumps({"kind": kind, **payload}, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        """Every complete line; a torn last line (the run was killed mid-write) is dropped, others must parse."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        entries = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                if n == len(lines):
                    break  # interrupted while writing the last line
                raise JournalError(f"{self.path}: line {n} is not valid JSON") from None
        return entries

    def done_cell_ids(self) -> set[str]:
        done = set()
        for e in self.read():
            if e.get("kind") == "benchmark":
                done.add(e["benchmark"]["extra_info"]["cell_id"])
            elif e.get("kind") == "not_run" and e.get("status") != "no_device":
                done.add(e["cell_id"])
        return done

    def is_complete(self) -> bool:
        """Whether every cell the first session collected has a result or a not-run record."""
        entries = self.read()
        headers = [e for e in entries if e.get("kind") == "header"]
        if not headers:
            return False
        recorded = {e["benchmark"]["extra_info"]["cell_id"] for e in entries if e.get("kind") == "benchmark"}
        recorded |= {e["cell_id"] for e in entries if e.get("kind") == "not_run"}
        return set(headers[0].get("cells", [])) <= recorded

    def to_results_json(self) -> dict:
        """A pytest-benchmark JSON document (plus the ``perfsuite`` section) from the journal.

        A cell measured twice (a resumed run that re-ran it) keeps its last measurement.
        """
        entries = self.read()
        headers = [e for e in entries if e.get("kind") == "header"]
        if not headers:
            raise JournalError(f"{self.path}: no run header; not a perfsuite journal")
        benches: dict[str, dict] = {}
        not_run: dict[str, dict] = {}
        for e in entries:
            if e.get("kind") == "benchmark":
                cid = e["benchmark"]["extra_info"]["cell_id"]
                benches[cid] = e["benchmark"]
                not_run.pop(cid, None)
            elif e.get("kind") == "not_run":
                entry = {k: v for k, v in e.items() if k != "kind"}
                not_run[entry["cell_id"]] = entry
                benches.pop(entry["cell_id"], None)
        last = headers[-1]
        return {
            "machine_info": last["machine_info"],
            "commit_info": last["commit_info"],
            "benchmarks": list(benches.values()),
            "datetime": last.get("datetime") or _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "version": last.get("pytest_benchmark_version"),
            "perfsuite": {**last["perfsuite"], "perfsuite_schema": SCHEMA_VERSION, "sessions": len(headers),
                          "not_run": list(not_run.values())},
        }


def write_json_atomic(path: str | Path, doc: dict) -> Path:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
