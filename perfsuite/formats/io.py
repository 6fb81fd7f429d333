"""How every perfsuite file is read and written: parse, check the format version, migrate, write atomically.

Each file format (results records, journal, baseline, comparison, subspace) declares one :class:`Format`:
the key that holds its version, the current version, and a chain of small ``update_to_N`` steps (asv's
idea) that bring an older document forward one version at a time. A newer version than this perfsuite
knows is refused with one line; a broken file is one line naming the file and the problem, never a
traceback. Writers replace a file by renaming a finished temporary file over it, so a reader never sees
half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from perfsuite.errors import PerfsuiteError


class FormatError(PerfsuiteError):
    """A file that is not what it should be: unreadable, not JSON, the wrong format, or a newer version."""


MAX_JSON_BYTES = 256 << 20  # 256 MiB: a results file of the full grid is a few MB; more is not one of ours


def check_regular_file(path: str | Path, error: type[PerfsuiteError] = FormatError) -> None:
    """Refuse, before opening, anything but a regular file: a FIFO would block the read forever, a folder or a
    device is not a perfsuite file. A missing file passes (the caller's open says so)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
        raise error(f"{path}: is {kind}, not a regular file")


def utc_now() -> str:
    """The time stamp perfsuite writes into its files and its history: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: str | Path, error: type[PerfsuiteError] = FormatError) -> Any:
    """The parsed file, or ``error`` with one line naming the file and the problem."""
    path = Path(path)
    check_regular_file(path, error)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{path}: over {MAX_JSON_BYTES >> 20} MiB; not a perfsuite file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (not UTF-8), so not JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply") from None


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 where the OS has none (Windows)


def _temporary_beside(path: Path) -> Path:
    """A new, empty file beside ``path`` that this call created: O_CREAT | O_EXCL | O_NOFOLLOW under a random
    name, so a symlink or file planted in the folder is never written through (and, unlike ``mkstemp``'s 0600,
    the file gets the mode the umask gives any other file)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name[:100]}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(17, "no free temporary name", str(path))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | NOFOLLOW)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


class atomic_path:
    """``with atomic_path(target) as tmp: <write tmp>``: on success ``tmp`` replaces ``target`` in one rename; on
    any error (disk full, ...) ``tmp`` is removed and ``target`` left as it was. For writers that want a path
    (matplotlib's savefig, pandas' to_csv). ``tmp`` is a fresh file of a random name (never a planted symlink);
    the rename replaces ``target`` itself, so a symlink at ``target`` is replaced, never written through."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir() and not self.path.is_symlink():
            raise IsADirectoryError(21, "Is a directory", str(self.path))
        self.tmp = _temporary_beside(self.path)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        try:
            if isinstance(exc, OSError) and exc.filename is None:  # a write error names the file it was for
                raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from None
            if exc_type is None:
                fd = os.open(self.tmp, os.O_RDONLY | NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(self.tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)  # removes the name (a link, if one was put there since), never its target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, doc: Any) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


Step = Callable[[dict], dict]


@dataclass(frozen=True)
class Format:
    """One versioned JSON format: where its version lives, which version is current, how to migrate."""

    what: str  # e.g. "baseline", for messages
    key: str  # the field holding the version, e.g. "perfsuite_baseline"
    current: int
    steps: Mapping[int, Step] = field(default_factory=dict)  # target version -> step from the version before
    error: type[PerfsuiteError] = FormatError

    def __post_init__(self) -> None:
        missing = [v for v in range(2, self.current + 1) if v not in self.steps]
        if missing:  # a programming error: every older version must have a way forward
            raise ValueError(f"{self.what} format: no update_to_{missing[0]} step")

    def version_of(self, doc: Any, where: str) -> int:
        if not isinstance(doc, dict):
            raise self.error(f"{where}: expected a JSON object, found {type(doc).__name__}")
        if self.key not in doc:
            raise self.error(f"{where}: not a perfsuite {self.what} (no {self.key!r} format version)")
        version = doc[self.key]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.error(f"{where}: unknown {self.what} format {version!r}")
        if version > self.current:
            raise self.error(f"{where}: {self.what} format {version} is newer than this perfsuite reads "
                             f"({self.current}); upgrade perfsuite")
        return version

    def upgrade(self, doc: Any, where: str) -> dict:
        """``doc`` brought to the current version in memory (the file is left as it is)."""
        version = self.version_of(doc, where)
        for target in range(version + 1, self.current + 1):
            try:
                doc = self.steps[target](dict(doc))
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                raise self.error(f"{where}: cannot migrate {self.what} format {target - 1} to {target}: "
                                 f"{e}") from None
            doc[self.key] = target
        return doc

    def load(self, path: str | Path) -> dict:
        return self.upgrade(read_json(path, self.error), str(path))

    def stamp(self, doc: dict) -> dict:
        """``doc`` with the current version first (the key readers look for)."""
        return {self.key: self.current, **{k: v for k, v in doc.items() if k != self.key}}

    def save(self, path: str | Path, doc: dict) -> Path:
        return write_json_atomic(path, self.stamp(doc))
