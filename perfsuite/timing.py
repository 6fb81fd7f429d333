"""Device-correct timing of a cell against its r = 0 model, measured close in time.

GPU work is asynchronous, so every timed call ends with a device synchronize
(pytest-benchmark reads a host clock around it). The plain model is timed in
pytest-benchmark's ``setup`` hook before even rounds of the adapted one and in
its ``teardown`` hook after odd rounds, so the two interleave (drift hits both
alike) and each takes the first and the second place equally often (the order
bias cancels within a pair of rounds). The slow-down is the median over pairs
of rounds of the geometric mean of their two ratios.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import torch

NOISY_IQR_PCT = 10.0  # warn when IQR / median of a cell exceeds this (torch.utils.benchmark's threshold)


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(requested: str) -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'. Asking for a missing device raises."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("no CUDA device is visible to torch on this machine")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}; use cpu, cuda or auto")
    return requested


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """torch's CPU thread count set to ``n`` for the block (None or 0: left as it is), then restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def timed_call(fn: Callable[[], object], device: str, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds for one synchronized call of ``fn``."""
    synchronize(device)
    t0 = clock()
    fn()
    synchronize(device)
    return clock() - t0


@dataclass(frozen=True)
class PairedTiming:
    """Raw per-round times (ms) of the adapted cell and of its r = 0 model, rounds paired in order."""

    adapter_ms: tuple[float, ...]
    ref_ms: tuple[float, ...]  # the paired reference: the r = 0 model, or plain decoding
    ratios: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(a / b for a, b in zip(self.adapter_ms, self.ref_ms) if b > 0))

    @property
    def time_ms(self) -> float:
        return statistics.median(self.adapter_ms)

    @property
    def ref_time_ms(self) -> float:
        return statistics.median(self.ref_ms)

    @property
    def pair_ratios(self) -> tuple[float, ...]:
        """Geometric means of the ratios of rounds (0, 1), (2, 3), …: the base ran first in one, second in the other."""
        r = self.ratios
        pairs = [math.sqrt(r[i] * r[i + 1]) for i in range(0, len(r) - 1, 2)]
        return tuple(pairs + ([r[-1]] if len(r) % 2 else []))

    @property
    def slowdown_pct(self) -> float:
        """100·(t_adapter − t_base)/t_base, from the median of paired ratios (robust to drift and order)."""
        return 100.0 * (statistics.median(self.pair_ratios) - 1.0)

    @property
    def iqr_pct(self) -> float:
        """Interquartile range of the adapted times, as % of their median."""
        return 100.0 * iqr(self.adapter_ms) / self.time_ms


def iqr(xs) -> float:
    if len(xs) < 2:
        return 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[2] - q[0]


class LocalBenchmark:
    """pytest-benchmark's ``pedantic`` without pytest: the same rounds, ``setup`` before and ``teardown`` after
    each (warm-up included), only the target timed, with ``clock``. So :func:`paired_benchmark`, the one timing
    loop, also serves the selftest's worker processes and tests with fake clocks."""

    disabled = False

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.stats = None

    def pedantic(self, target, *, setup=None, teardown=None, rounds: int = 1, warmup_rounds: int = 0,
                 iterations: int = 1) -> None:
        if iterations != 1:
            raise ValueError("LocalBenchmark times one call per round")
        data = []
        for i in range(warmup_rounds + rounds):
            if setup is not None:
                setup()
            t0 = self.clock()
            target()
            t1 = self.clock()
            if teardown is not None:
                teardown()
            if i >= warmup_rounds:
                data.append(t1 - t0)
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=data))


def paired_benchmark(benchmark, adapter_fn: Callable[[], object], base_fn: Callable[[], object], *, device: str,
                     rounds: int, warmup: int) -> PairedTiming | None:
    """Time ``adapter_fn`` with ``benchmark`` (pytest-benchmark's fixture, or a :class:`LocalBenchmark`) and
    ``base_fn`` right before or after each of its rounds, with the same clock (pytest-benchmark's default timer,
    ``time.perf_counter``, or the LocalBenchmark's).

    Returns None when pytest-benchmark is disabled (``--benchmark-disable``): the function then ran once, untimed.
    """
    base_s: list[float] = []
    clock = benchmark.clock if isinstance(benchmark, LocalBenchmark) else time.perf_counter
    round_no = [0]  # rounds started, warm-up included

    def before() -> None:
        if round_no[0] % 2 == 0:
            base_s.append(timed_call(base_fn, device, clock))
        round_no[0] += 1
        synchronize(device)

    def after() -> None:
        if round_no[0] % 2 == 0:
            base_s.append(timed_call(base_fn, device, clock))

    def run_adapter() -> None:
        adapter_fn()
        synchronize(device)

    benchmark.pedantic(run_adapter, setup=before, teardown=after, rounds=rounds, warmup_rounds=warmup, iterations=1)
    if getattr(benchmark, "disabled", False) or benchmark.stats is None:
        return None
    adapter_s = benchmark.stats.stats.data
    base_s = base_s[warmup:]  # setup also ran before each warm-up round
    return PairedTiming(tuple(1e3 * t for t in adapter_s), tuple(1e3 * t for t in base_s))


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call, counted by torch's FlopCounterMode (matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_memory_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Peak device memory allocated during one call; None on the CPU, where torch tracks none."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())
