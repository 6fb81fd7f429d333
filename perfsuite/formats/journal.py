"""The journal: results written as they are measured, one JSON line per finished cell.

A run that is interrupted keeps every cell it finished; a resumed run skips them; the final results
document is assembled from the journal, so the journal is the single source of truth for ``perfsuite run``.

Format history (one line per event; the ``kind`` field says which):
  1 — ``header`` (pytest-benchmark's machine_info/commit_info/datetime/version, the run settings under
      ``perfsuite``, the collected ``cells`` and the ``resumed`` ones; one per pytest session),
      ``benchmark`` (a pytest-benchmark entry with its perfsuite record in ``extra_info``) and ``not_run``
      (a :class:`~perfsuite.formats.record.CellRecord` of a cell that did not run, its fields inline).
      Records carry their own schema and migrate as in :mod:`perfsuite.formats.record`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.record import STATUS_NO_DEVICE, CellRecord, RecordError
from perfsuite.formats.results import results_document


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

    def append_header(self, header: dict, settings: dict, cells: list[str], resumed: list[str]) -> None:
        self.append("header", **header, perfsuite=settings, cells=cells, resumed=resumed)

    def append_benchmark(self, entry: dict) -> None:
        self.append("benchmark", benchmark=entry)

    def append_not_run(self, record: CellRecord) -> None:
        self.append("not_run", **record.to_dict())

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

    def headers(self) -> list[dict]:
        return [e for e in self.read() if e.get("kind") == "header"]

    def _cells(self) -> tuple[list[dict], dict[str, dict], dict[str, CellRecord]]:
        """(headers, benchmark entries by cell id, not-run records by cell id); a later line about a cell
        replaces an earlier one (a resumed run that measured it again)."""
        headers, benches, not_run = [], {}, {}
        for n, e in enumerate(self.read(), 1):
            kind = e.get("kind")
            if kind == "header":
                headers.append(e)
            elif kind == "benchmark":
                cid = ((e.get("benchmark") or {}).get("extra_info") or {}).get("cell_id")
                if not cid:
                    raise JournalError(f"{self.path}: line {n}: a benchmark without a perfsuite cell id")
                benches[cid] = e["benchmark"]
                not_run.pop(cid, None)
            elif kind == "not_run":
                try:
                    rec = CellRecord.from_dict({k: v for k, v in e.items() if k != "kind"}, f"{self.path}: line {n}")
                except RecordError as err:
                    raise JournalError(str(err)) from None
                not_run[rec.id] = rec
                benches.pop(rec.id, None)
        return headers, benches, not_run

    def done_cell_ids(self) -> set[str]:
        """Cells a resumed run need not measure again (a cell skipped for want of a device is tried again)."""
        _, benches, not_run = self._cells()
        return set(benches) | {cid for cid, r in not_run.items() if r.status != STATUS_NO_DEVICE}

    def is_complete(self) -> bool:
        """Whether every cell the first session collected has a result or a not-run record."""
        headers, benches, not_run = self._cells()
        return bool(headers) and set(headers[0].get("cells", [])) <= set(benches) | set(not_run)

    def settings(self) -> dict:
        """The run settings of the last session (what a resumed run must reuse)."""
        headers = self.headers()
        if not headers:
            raise JournalError(f"{self.path}: no run header; not a perfsuite journal")
        return {k: v for k, v in headers[-1]["perfsuite"].items() if k != "perfsuite_schema"}

    def to_results_json(self) -> dict:
        """The results document (:func:`~perfsuite.formats.results.results_document`) of the journal."""
        headers, benches, not_run = self._cells()
        if not headers:
            raise JournalError(f"{self.path}: no run header; not a perfsuite journal")
        return results_document(headers[-1], list(benches.values()), self.settings(), not_run.values(),
                                 sessions=len(headers))
