"""``perfsuite doctor``: a few-minute acceptance check of the machine and the harness before a night's cells.

Each check measures one thing the night's numbers rely on, against what it must be:

timing bracket     a call of known duration (a calibrated ``torch.cuda._sleep`` kernel on a GPU, timed by CUDA
                   events; a ``time.sleep`` on a CPU) timed by :func:`perfsuite.measure.timing.timed_call`: the bracket
                   must cover it — not shorter (a missing synchronize), not much longer (a slow clock, a stall);
latency syncs      host syncs of a real latency forward on the device: 0;
decode syncs       host syncs of a verified decode: 1 per window;
memory             (GPU) with cuBLAS warmed, two peak readings of one forward agree: no workspace in the first;
nvml               (GPU) NVML readable: clocks, power limit, and the GPU not throttled — read while a known kernel
                   runs (an idle GPU parks its clock and says ``gpu_idle``: that is not throttling);
attention          fp16 and bf16 attention at the paper model's shapes — the latency forward's causal call and the
                   decoder's masked call under its pinned backends — close to fp32, each backend named;
repeatability      timed twice: on a GPU a device-bound call (the probe at the paper's shapes, fp16 and bf16: a
                   launch-bound call would time the host's jitter), on a CPU one small shape group; each median
                   within the device's target spread (retried once: one disturbed loop on a shared machine is not
                   the machine).

A check that does not apply to the device (memory and NVML on a CPU) is *skipped* and named. The report is a
table and a JSON; any failed check makes the command exit 1 with one line saying what to fix. The checks live in
:mod:`~perfsuite.doctor.harness` (bracket, syncs, repeatability) and :mod:`~perfsuite.doctor.gpu` (memory, NVML,
attention); :mod:`~perfsuite.doctor.check` holds what a check reports.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from perfsuite.doctor.check import FAILED, OK, SKIPPED, Check
from perfsuite.doctor.gpu import check_attention, check_memory, check_nvml
from perfsuite.doctor.harness import (BRACKET_MS, REPEAT_TARGET_PCT, check_decode_syncs, check_latency_syncs,
                                      check_repeatability, check_timing_bracket)

__all__ = ["BRACKET_MS", "CHECKS", "FAILED", "OK", "REPEAT_TARGET_PCT", "SKIPPED", "Check", "DoctorReport",
           "check_attention", "check_decode_syncs", "check_latency_syncs", "check_memory", "check_nvml",
           "check_repeatability", "check_timing_bracket", "run_doctor"]


@dataclass(frozen=True)
class DoctorReport:
    device: str
    checks: tuple[Check, ...]
    seconds: float

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAILED]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def table(self) -> str:
        rows = [("check", "figure", "status")] + [(c.name, c.figure, c.status) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        skipped = [c for c in self.checks if c.status == SKIPPED]
        if skipped:
            lines.append("skipped: " + "; ".join(f"{c.name} ({c.fix})" for c in skipped))
        return "\n".join(lines)

    def verdict_line(self) -> str:
        """One line: what to fix first, or that the machine and harness are fit."""
        if self.failed:
            first = self.failed[0]
            more = f" (and {len(self.failed) - 1} more failed check(s))" if len(self.failed) > 1 else ""
            return f"perfsuite doctor: {first.name} failed: {first.fix}{more}"
        return f"perfsuite doctor: all {sum(c.status == OK for c in self.checks)} checks passed on {self.device}"

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "seconds": round(self.seconds, 3), "ok": not self.failed,
                "checks": [asdict(c) for c in self.checks]}


# --- the whole check --------------------------------------------------------------------------------

CHECKS: tuple[tuple[str, Callable[[str], Check]], ...] = (
    ("timing bracket", check_timing_bracket),
    ("latency syncs", check_latency_syncs),
    ("decode syncs", check_decode_syncs),
    ("memory", check_memory),
    ("nvml", check_nvml),
    ("attention", check_attention),
    ("repeatability", check_repeatability),
)


def run_doctor(device: str, checks=None, progress: Callable[[str], None] = lambda line: None) -> DoctorReport:
    """Every check (default :data:`CHECKS`) on ``device`` ('cpu' or 'cuda'), one after another; a check that raises
    is a failed check."""
    from perfsuite.measure.machine import pin_precision
    from perfsuite.measure.device import cpu_threads

    t0 = time.perf_counter()
    pin_precision()
    results = []
    with cpu_threads(1 if device == "cpu" else None):  # as perfsuite run times CPU cells
        for name, check in checks or CHECKS:
            progress(f"perfsuite doctor: {name} ...")
            try:
                results.append(check(device))
            except Exception as e:  # the harness itself broke: that is what the doctor is for
                line = str(e).splitlines()[0] if str(e) else type(e).__name__
                results.append(Check(name, "error", FAILED, f"the check raised {type(e).__name__}: {line}"))
    return DoctorReport(device, tuple(results), time.perf_counter() - t0)
