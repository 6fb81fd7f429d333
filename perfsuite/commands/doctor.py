"""``perfsuite doctor``: check the machine and the harness in a few minutes before a night's cells (exit 1: unfit)."""

from __future__ import annotations

import json
import sys

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import write_text_atomic

HELP = ("check the machine and the harness before measuring: timing bracket, host syncs, memory accounting, attention, "
        "NVML, repeatability (exit 1 on a failed check, with what to fix)")


def add_arguments(p) -> None:
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="device to check; auto picks cuda when a GPU is visible (default: auto)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every check's figures as JSON")


def run(args) -> int:
    from perfsuite.doctor import run_doctor
    from perfsuite.measure.device import DeviceUnavailable, resolve_device

    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as e:
        raise PerfsuiteError(str(e)) from None
    report = run_doctor(device, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.table())
    if args.json:
        try:
            write_text_atomic(args.json, json.dumps(report.to_json(), indent=1, default=str) + "\n")
        except OSError as e:
            raise PerfsuiteError(f"cannot write {args.json}: {e.strerror or e}") from None
    print(report.verdict_line(), file=sys.stderr if report.failed else sys.stdout)
    return report.exit_code
