"""The journal: results written as they are measured, one JSON line per finished cell.

A run that is interrupted keeps every cell it finished; a resumed run skips them; the final results
document is assembled from the journal, so the journal is the single source of truth for ``perfsuite run``.
Every line ends with a newline and an fsync; a line torn by a crash or a full disk is cut off (and reported)
before the next append, so it never glues onto the next line; each line is checked when it is read.

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
import sys
from pathlib import Path

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import NOFOLLOW, check_regular_file
from perfsuite.formats.record import STATUS_NO_DEVICE, CellRecord, RecordError
from perfsuite.formats.results import results_document

KINDS = ("header", "benchmark", "not_run")
MAX_JOURNAL_BYTES = 1 << 30  # 1 GiB: a journal of the full grid is a few MB; more is not a journal


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class JournalError(PerfsuiteError):
    pass


class JournalWriteError(JournalError):
    """A line could not be written (disk full, no permission): the lines before it are kept, whole."""


def _parse_line(text: str) -> dict:
    """One journal line: a JSON object with a known ``kind`` and no NaN/Infinity (ValueError otherwise)."""
    try:
        entry = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(entry, dict):
        raise ValueError(f"a JSON {type(entry).__name__}, not an object")
    if entry.get("kind") not in KINDS:
        raise ValueError(f"unknown kind {entry.get('kind')!r}")
    if entry["kind"] == "header" and not (isinstance(entry.get("perfsuite"), dict)
                                          and all(k in entry for k in ("machine_info", "commit_info", "datetime"))):
        raise ValueError("a header without its settings, machine_info, commit_info or datetime")
    if entry["kind"] == "benchmark" and not (isinstance(entry.get("benchmark"), dict)
                                             and isinstance(entry["benchmark"].get("extra_info"), dict)):
        raise ValueError("a benchmark line without its 'benchmark' object and its extra_info")
    return entry




class Journal:
    """The journal file. Appends heal a torn last line first; every append ends with a newline and an fsync."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._healed = False

    def heal(self) -> int:
        """Cut off a torn last line (a write the run did not finish: killed, disk full) so the next line does not
        glue onto it; a complete last line that only lacks its newline gets one. Returns the bytes cut off."""
        self._healed = True
        if self.path.is_symlink():  # planted to make the run append to another file
            raise JournalWriteError(f"{self.path}: is a symbolic link; a journal is never written through one")
        if not self.path.exists():
            return 0
        check_regular_file(self.path, JournalError)
        with open(os.open(self.path, os.O_RDWR | NOFOLLOW), "rb+") as f:  # a planted symlink: ELOOP
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            tail_start = max(0, size - (1 << 20))  # a line is far below 1 MiB; look back at most that far
            f.seek(tail_start)
            tail = f.read()
            cut = tail.rfind(b"\n") + 1  # 0: the torn line is the whole file (or its last MiB)
            last = tail[cut:]
            try:
                _parse_line(last.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                f.truncate(tail_start + cut)
                f.flush()
                os.fsync(f.fileno())
                print(f"perfsuite: {self.path}: cut off a torn last line ({len(last)} bytes) left by an "
                      "interrupted write; its cell is measured again", file=sys.stderr)
                return len(last)
            f.write(b"\n")  # the line is whole: only its newline was lost
            f.flush()
            os.fsync(f.fileno())
            return 0

    def append(self, kind: str, **payload) -> None:
        line = json.dumps({"kind": kind, **payload}, default=str)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._healed:
                self.heal()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o666)  # never through a link
            with open(fd, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a torn line may be left: the next append cuts it off
            self._healed = False
            raise JournalWriteError(f"{self.path}: cannot write: {e.strerror or e}") from None

    def append_header(self, header: dict, settings: dict, cells: list[str], resumed: list[str]) -> None:
        self.append("header", **header, perfsuite=settings, cells=cells, resumed=resumed)

    def append_benchmark(self, entry: dict) -> None:
        self.append("benchmark", benchmark=entry)

    def append_not_run(self, record: CellRecord) -> None:
        self.append("not_run", **record.to_dict())

    def read(self) -> list[dict]:
        """Every complete line, checked; a torn last line (the run was killed mid-write) is dropped, others must
        parse as a journal entry (JournalError, one line, when one does not)."""
        if not self.path.exists():
            return []
        check_regular_file(self.path, JournalError)
        try:
            if self.path.stat().st_size > MAX_JOURNAL_BYTES:
                raise JournalError(f"{self.path}: over {MAX_JOURNAL_BYTES >> 20} MiB; not a perfsuite journal")
            raw = self.path.read_bytes()
        except OSError as e:
            raise JournalError(f"{self.path}: cannot read: {e.strerror or e}") from None
        lines = raw.split(b"\n")
        torn_allowed = not raw.endswith(b"\n")  # the last piece has no newline: it may be a torn write
        entries = []
        for n, chunk in enumerate(lines, 1):
            if not chunk.strip():
                continue
            try:
                entry = _parse_line(chunk.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                if torn_allowed and n == len(lines):
                    break  # interrupted while writing the last line
                what = ("not UTF-8" if isinstance(e, UnicodeDecodeError) else "not valid JSON"
                        if isinstance(e, json.JSONDecodeError) else f"not a journal entry ({e})")
                raise JournalError(f"{self.path}: line {n} is {what}") from None
            entries.append(entry)
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
