"""The doctor's checks of the harness itself: the timing bracket, host syncs, and repeatability."""

from __future__ import annotations

import statistics
import time
from typing import Callable

from perfsuite.doctor.check import ADAPTER, BATCH, FAILED, MODEL, OK, PAPER_MODEL, RANK, SEQ_LEN, Check, small_model

BRACKET_MS = 20.0  # the known duration the timing bracket is checked against
BRACKET_REPEATS = 5
BRACKET_OVER_PCT = {"cuda": 5.0, "cpu": 25.0}  # how much longer than the known call its bracket may read
BRACKET_SLACK_MS = {"cuda": 0.2, "cpu": 3.0}  # plus this (launch, a sleep's wake-up on a loaded machine)
REPEAT_TARGET_PCT = {"cuda": 2.0, "cpu": 5.0}  # medians of two loops of one group must agree within this
REPEAT_ROUNDS = 100


def check_timing_bracket(device: str, *, known_call: Callable[[], Callable[[], float]] | None = None,
                         timed: Callable[[Callable[[], object]], float] | None = None) -> Check:
    """The bracket (seconds of a synchronized call) against a call of known duration. ``known_call()`` starts the
    call and returns how to read its true duration in seconds once the bracket is over (on a GPU the kernel is
    only launched inside the bracket: the bracket itself must wait for it); ``timed(fn)`` is the bracket (tests
    pass fakes)."""
    from perfsuite.measure.timing import timed_call

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
    from perfsuite.measure.device_time import CudaTiming

    api = CudaTiming()
    api.cycles_per_ms()  # calibrated here, not inside the first bracket

    def launch() -> Callable[[], float]:
        start, end = api.event(), api.event()
        start.record()
        api.hold(BRACKET_MS)  # the spin the device timer holds its stream with, calibrated once per process
        end.record()

        def read() -> float:
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return read

    return launch


def check_latency_syncs(device: str, model=None, tokens=None) -> Check:
    """Host syncs of one real latency forward (a LoRA model) on the device: must be 0."""
    import torch

    from perfsuite.measure.syncs import count_host_syncs

    if model is None:
        model, tokens = small_model(device)
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

    from perfsuite.models.decoding import Schedule, decode_verified
    from perfsuite.measure.syncs import count_host_syncs
    from perfsuite.workloads.recompute import untied_head

    if model is None:
        model, _ = small_model(device)
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
                     "(perfsuite/models/decoding.py)", values)
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


def check_repeatability(device: str, loop: Callable[[], dict[str, list[float]]] | None = None,
                        retries: int = 1) -> Check:
    """A loop timed twice, every median agreeing within the device's target spread (a failed pair is timed once
    more before the check fails): on a GPU device-bound calls (:func:`_device_bound_loop`), on a CPU one small
    shape group (the plain model and a LoRA of one shape)."""
    loop = loop or (_device_bound_loop(device) if device.startswith("cuda") else _small_group_loop(device))
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


def _small_group_loop(device: str):
    import torch

    from perfsuite.measure.timing import RoundPolicy, round_robin
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


DEVICE_BOUND_SHAPE = (8, 512)  # batch × tokens of the paper grid: the probe's work is ~1.6 TFLOP there


def _device_bound_loop(device: str):
    """The probe (perfsuite.measure.probe: MLP-shaped matmuls) at the paper model's widths and a b8 × s512 forward's tokens,
    in fp16 and bf16: calls whose time is the device's, not the host's launches (the tiny model's 0.4 ms forward
    on a GPU times Python)."""
    import torch

    from perfsuite.models.model import get_config
    from perfsuite.measure.probe import ProbeShape, make_probe
    from perfsuite.measure.timing import RoundPolicy, round_robin

    shape = ProbeShape.of_forward(get_config(PAPER_MODEL), *DEVICE_BOUND_SHAPE)
    fns = {str(dtype).removeprefix("torch."): make_probe(shape, dtype=dtype, device=device)
           for dtype in (torch.float16, torch.bfloat16)}

    def loop() -> dict[str, list[float]]:
        return round_robin(fns, device=device, policy=RoundPolicy.fixed(REPEAT_ROUNDS, warmup=10))

    return loop
