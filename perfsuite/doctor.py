"""``perfsuite doctor``: a few-minute acceptance check of the machine and the harness before a night's cells.

Each check measures one thing the night's numbers rely on, against what it must be:

timing bracket     a call of known duration (a calibrated ``torch.cuda._sleep`` kernel on a GPU, timed by CUDA
                   events; a ``time.sleep`` on a CPU) timed by :func:`perfsuite.timing.timed_call`: the bracket
                   must cover it — not shorter (a missing synchronize), not much longer (a slow clock, a stall);
latency syncs      host syncs of a real latency forward on the device: 0;
decode syncs       host syncs of a verified decode: 1 per window;
memory             (GPU) with cuBLAS warmed, two peak readings of one forward agree: no workspace in the first;
nvml               (GPU) NVML readable: clocks, power limit, and the GPU not throttled now;
repeatability      one small shape group timed twice: each model's medians within the device's target spread
                   (retried once: one disturbed loop on a shared machine is not the machine).

A check that does not apply to the device (memory and NVML on a CPU) is *skipped* and named. The report is a
table and a JSON; any failed check makes the command exit 1 with one line saying what to fix.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
BRACKET_MS = 20.0  # the known duration the timing bracket is checked against
BRACKET_REPEATS = 5
BRACKET_OVER_PCT = {"cuda": 5.0, "cpu": 25.0}  # how much longer than the known call its bracket may read
BRACKET_SLACK_MS = {"cuda": 0.2, "cpu": 3.0}  # plus this (launch, a sleep's wake-up on a loaded machine)
REPEAT_TARGET_PCT = {"cuda": 2.0, "cpu": 5.0}  # medians of two loops of one group must agree within this
REPEAT_ROUNDS = 100
MEMORY_AGREE_BYTES = 2 ** 20  # two peak readings of one forward agree within 1 MiB
MODEL, ADAPTER, RANK, BATCH, SEQ_LEN = "tiny", "lora", 8, 2, 32  # the small real cell the checks run


@dataclass(frozen=True)
class Check:
    """One check's outcome: its figure as printed, ``ok`` / ``failed`` / ``skipped``, and what to fix."""

    name: str
    figure: str
    status: str
    fix: str | None = None  # for a failed check: what to do; for a skipped one: why it does not apply
    values: dict[str, Any] = field(default_factory=dict)


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


# --- the checks -----------------------------------------------------------------------------------

def check_timing_bracket(device: str, *, known_call: Callable[[], Callable[[], float]] | None = None,
                         timed: Callable[[Callable[[], object]], float] | None = None) -> Check:
    """The bracket (seconds of a synchronized call) against a call of known duration. ``known_call()`` starts the
    call and returns how to read its true duration in seconds once the bracket is over (on a GPU the kernel is
    only launched inside the bracket: the bracket itself must wait for it); ``timed(fn)`` is the bracket (tests
    pass fakes)."""
    from perfsuite.timing import timed_call

    known_call = known_call or _known_call(device)
    timed = timed or (lambda fn: timed_call(fn, device))
    pairs = []
    for _ in range(BRACKET_REPEATS):
        readers: list[Callable[[], float]] = []
        bracket_s = timed(lambda: readers.append(known_call()))
        pairs.append((bracket_s, readers[0]() if readers else 0.0))
    measured_ms = 1e3 * statistics.median(p[0] for p in pairs)
    known_ms = 1e3 * statistics.median(p[1] for p in pairs)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    ceiling_ms = known_ms * (1 + BRACKET_OVER_PCT[kind] / 100) + BRACKET_SLACK_MS[kind]
    figure = f"{measured_ms:.2f} ms for a {known_ms:.2f} ms call"
    values = {"measured_ms": measured_ms, "known_ms": known_ms, "ceiling_ms": ceiling_ms}
    if measured_ms < 0.98 * known_ms:
        return Check("timing bracket", figure, FAILED, "the timed region ends before the device finishes: "
                     "timed_call must synchronize the device before reading the clock", values)
    if measured_ms > ceiling_ms:
        return Check("timing bracket", figure, FAILED, f"the bracket reads {measured_ms - known_ms:.2f} ms more than "
                     "the call: stop what else runs on this machine or check the clock source", values)
    return Check("timing bracket", figure, OK, None, values)


def _known_call(device: str) -> Callable[[], Callable[[], float]]:
    """A call of known duration: on a GPU a spin kernel calibrated to BRACKET_MS, launched (not waited for), its
    duration read afterwards from CUDA events; on a CPU a sleep, its duration from the clock inside it."""
    if not device.startswith("cuda"):
        def sleep() -> Callable[[], float]:
            t0 = time.perf_counter()
            time.sleep(BRACKET_MS / 1e3)
            elapsed = time.perf_counter() - t0
            return lambda: elapsed
        return sleep
    import torch

    def launch(cycles: int) -> Callable[[], float]:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()

        def read() -> float:
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return read

    launch(1_000_000)()
    per_cycle = launch(10_000_000)() / 10_000_000
    cycles = max(1, int(BRACKET_MS / 1e3 / per_cycle))
    return lambda: launch(cycles)


def check_latency_syncs(device: str, model=None, tokens=None) -> Check:
    """Host syncs of one real latency forward (a LoRA model) on the device: must be 0."""
    import torch

    from perfsuite.syncs import count_host_syncs

    if model is None:
        model, tokens = _small_model(device)
    with torch.inference_mode():
        model(tokens)
        counts = count_host_syncs(lambda: model(tokens))
        warned = _cuda_sync_warnings(device, lambda: model(tokens))
    n = sum(counts.values())
    figure = f"{n} host sync{'s' if n != 1 else ''} per forward" + (f", {warned} by CUDA" if warned is not None else "")
    values = {"counts": dict(counts), "cuda_sync_warnings": warned}
    if n or warned:
        return Check("latency syncs", figure, FAILED, f"a latency forward makes the host wait ({dict(counts)}, CUDA "
                     f"saw {warned}): find the read-back or host copy in the forward (tests/unit/test_syncs.py)",
                     values)
    return Check("latency syncs", figure, OK, None, values)


def check_decode_syncs(device: str, model=None) -> Check:
    """Host syncs of a verified decode: one read-back per window, nothing else."""
    import torch

    from perfsuite.decoding import Schedule, decode_verified
    from perfsuite.syncs import count_host_syncs
    from perfsuite.workloads.recompute import untied_head

    if model is None:
        model, _ = _small_model(device)
    head = untied_head(model)
    gen = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=gen).to(device) for n in (12, 9)]
    schedule = Schedule(window=4, context=12 + 16, token_budget=64)
    result: list = []
    decode_verified(model, prompts, 16, schedule, head=head)  # warm
    counts = count_host_syncs(lambda: result.append(decode_verified(model, prompts, 16, schedule, head=head)))
    warned = _cuda_sync_warnings(device, lambda: decode_verified(model, prompts, 16, schedule, head=head))
    windows = result[0].windows
    n = sum(counts.values())
    per_window = n / max(1, windows)
    figure = f"{per_window:g} host syncs per window ({n} in {windows} windows" + (
        f"; CUDA saw {warned})" if warned is not None else ")")
    values = {"counts": dict(counts), "windows": windows, "per_window": per_window, "cuda_sync_warnings": warned}
    if counts.get("tolist", 0) != n or n > windows or (warned or 0) > windows:
        return Check("decode syncs", figure, FAILED, f"verified decoding syncs beyond its one read-back per window "
                     f"({dict(counts)}, CUDA saw {warned}): keep the window's data on the device "
                     "(perfsuite/decoding.py)", values)
    return Check("decode syncs", figure, OK, None, values)


def _cuda_sync_warnings(device: str, fn) -> int | None:
    """On CUDA, the syncs torch itself reports for one call of ``fn`` (``set_sync_debug_mode("warn")``): a second
    witness beside the counter. None on a CPU."""
    if not device.startswith("cuda"):
        return None
    import warnings

    import torch

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with torch.inference_mode():
                fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def check_memory(device: str, model=None, tokens=None) -> Check:
    """With cuBLAS warmed, two peak readings of one forward agree (the first carries no workspace)."""
    if not device.startswith("cuda"):
        return Check("memory", "-", SKIPPED, "the CPU has no device memory accounting")
    import torch

    from perfsuite.device import peak_memory_above

    if model is None:
        model, tokens = _small_model(device)
    with torch.inference_mode():
        first = peak_memory_above(lambda: model(tokens), device)
        second = peak_memory_above(lambda: model(tokens), device)
    figure = f"peak {first / 2 ** 20:.2f} MiB then {second / 2 ** 20:.2f} MiB above the weights"
    values = {"first_bytes": first, "second_bytes": second}
    if abs(first - second) > MEMORY_AGREE_BYTES:
        return Check("memory", figure, FAILED, "the first peak reading differs from the second: something allocates "
                     "on first use inside peak_memory_above (warm it in perfsuite.device.warm_cublas)", values)
    return Check("memory", figure, OK, None, values)


def check_nvml(device: str, monitor=None) -> Check:
    """NVML readable: clocks, power limit, and not throttled now."""
    if not device.startswith("cuda"):
        return Check("nvml", "-", SKIPPED, "no GPU: nothing for NVML to read")
    from perfsuite.gpu_state import monitor_for, throttled

    monitor = monitor or monitor_for(device)
    if monitor is None:
        return Check("nvml", "unreadable", FAILED, "NVML cannot be read: install nvidia-ml-py (pip install -e "
                     "'.[gpu]') and check the driver, or cells record no clocks and no throttling")
    try:
        state = monitor.read()
        limit_w = monitor.power_limit_w()
    except Exception as e:  # a driver that answers nothing: the nightly would record nothing either
        return Check("nvml", "unreadable", FAILED, f"NVML read failed ({e}): check the driver and permissions")
    why = throttled(state)
    figure = (f"SM {state['sm_clock_mhz']}/{state['max_sm_clock_mhz']} MHz, {state['power_w']:.0f} W of "
              f"{limit_w if limit_w is None else f'{limit_w:.0f}'} W limit, {state['temperature_c']} °C, "
              f"{'throttled: ' + why if why else 'not throttled'}")
    values = {"state": state, "power_limit_w": limit_w}
    if why:
        return Check("nvml", figure, FAILED, f"the GPU is throttled before any work ({why}): let it cool, check its "
                     "fans and power limit, or use another runner", values)
    return Check("nvml", figure, OK, None, values)


def check_repeatability(device: str, loop: Callable[[], dict[str, list[float]]] | None = None,
                        retries: int = 1) -> Check:
    """One small shape group (the plain model and a LoRA of one shape) timed twice: every model's medians agree
    within the device's target spread; a failed pair is timed once more before the check fails."""
    loop = loop or _small_group_loop(device)
    target = REPEAT_TARGET_PCT["cuda" if device.startswith("cuda") else "cpu"]
    for attempt in range(retries + 1):
        a, b = loop(), loop()
        spread = {k: 100 * abs(statistics.median(b[k]) - statistics.median(a[k])) / statistics.median(a[k]) for k in a}
        worst = max(spread.values())
        if worst <= target:
            break
    figure = f"medians {worst:.2f} % apart (target {target:g} %)" + (f", attempt {attempt + 1}" if attempt else "")
    values = {"spread_pct": spread, "target_pct": target, "attempts": attempt + 1}
    if worst > target:
        return Check("repeatability", figure, FAILED, f"two loops of one shape group differ by {worst:.1f} % "
                     f"(> {target:g} %): the machine is busy or its clocks move — stop other work, pin clocks "
                     "or use a dedicated runner", values)
    return Check("repeatability", figure, OK, None, values)


def _small_model(device: str):
    import torch

    from perfsuite.workloads.context import ModelCache

    model = ModelCache().build_adapted(MODEL, "float32", device, ADAPTER, RANK)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.config.vocab_size, (BATCH, SEQ_LEN), generator=gen).to(device)
    return model, tokens


def _small_group_loop(device: str):
    import torch

    from perfsuite.timing import RoundPolicy, round_robin
    from perfsuite.workloads.context import ModelCache

    cache = ModelCache()
    models = {"none": cache.base(MODEL, "float32", device),
              ADAPTER: cache.build_adapted(MODEL, "float32", device, ADAPTER, RANK)}
    tokens = torch.randint(0, 512, (BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(2)).to(device)
    fns = {k: (lambda m=m: m(tokens)) for k, m in models.items()}

    def loop() -> dict[str, list[float]]:
        with torch.inference_mode():
            return round_robin(fns, device=device, policy=RoundPolicy.fixed(REPEAT_ROUNDS, warmup=10))

    return loop


# --- the whole check --------------------------------------------------------------------------------

CHECKS: tuple[tuple[str, Callable[[str], Check]], ...] = (
    ("timing bracket", check_timing_bracket),
    ("latency syncs", check_latency_syncs),
    ("decode syncs", check_decode_syncs),
    ("memory", check_memory),
    ("nvml", check_nvml),
    ("repeatability", check_repeatability),
)


def run_doctor(device: str, checks=None, progress: Callable[[str], None] = lambda line: None) -> DoctorReport:
    """Every check (default :data:`CHECKS`) on ``device`` ('cpu' or 'cuda'), one after another; a check that raises
    is a failed check."""
    from perfsuite.machine import pin_precision
    from perfsuite.device import cpu_threads

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
