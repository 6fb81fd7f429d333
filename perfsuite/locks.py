"""One writer at a time: an advisory lock per output folder, baseline file and history store.

Two ``perfsuite run`` on one ``--out`` would delete or interleave each other's journal; two ``baseline update``
would each read the file, add their run and write it back, so one run is lost. Every writer therefore takes
the lock of what it writes (an OS lock through the ``filelock`` library: released by the kernel when the
holder dies, so a killed run never leaves a stale lock). A second writer is refused at once with one line
naming the holder (PID and command, from an info file written beside the lock), or waits its turn when
asked to (``--wait``). Readers take no lock: every file is replaced atomically, so a reader sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import write_text_atomic

FOLDER_LOCK_NAME = ".perfsuite.lock"  # inside an output folder
LOCK_SUFFIX = ".lock"  # beside a file (a baseline, a history store)
INFO_SUFFIX = ".info"  # beside the lock: who holds it
WAIT_FOREVER = -1.0  # filelock's "block until acquired"


class LockHeld(PerfsuiteError):
    """Another process writes there now."""


def lock_path(target: str | Path, *, folder: bool) -> Path:
    """Where the lock of ``target`` lives: inside a folder, beside a file."""
    target = Path(target)
    return target / FOLDER_LOCK_NAME if folder else target.with_name(target.name + LOCK_SUFFIX)


def holder(lock: Path) -> str:
    """``PID 123 (perfsuite run --out x) on HOST since TIME``, from the info file, or a plain phrase without one."""
    try:
        info = json.loads(lock.with_name(lock.name + INFO_SUFFIX).read_text(encoding="utf-8"))
        return (f"PID {int(info['pid'])} ({str(info['command'])[:200]}) on {info.get('host', '?')} "
                f"since {info.get('since', '?')}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _write_info(lock: Path) -> None:
    """Best effort: on a full disk the lock still holds, only a refused writer's line says less."""
    info = {"pid": os.getpid(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "?",
            "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with contextlib.suppress(OSError):
        write_text_atomic(lock.with_name(lock.name + INFO_SUFFIX), json.dumps(info))


@contextlib.contextmanager
def writer_lock(target: str | Path, what: str, *, folder: bool, wait: bool | float = False) -> Iterator[Path]:
    """Hold the lock of ``target`` (an output folder, or a file) while the block writes there.

    ``what`` names the target in the refusal (e.g. "output folder perfsuite-out/smoke"). ``wait``: False refuses
    at once when another process holds it; True waits as long as it takes; a number waits that many seconds.
    """
    lock = lock_path(target, folder=folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(str(lock))
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        if wait is False:
            raise LockHeld(f"{what} is in use by {holder(lock)}; pass --wait to wait for it") from None
        print(f"perfsuite: waiting for {what}, in use by {holder(lock)}", file=sys.stderr, flush=True)
        try:
            file_lock.acquire(timeout=WAIT_FOREVER if wait is True else float(wait))
        except Timeout:
            raise LockHeld(f"{what} is still in use by {holder(lock)} after {float(wait):.0f} s") from None
    try:
        _write_info(lock)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.with_name(lock.name + INFO_SUFFIX).unlink()
        file_lock.release()
