"""Device time beside wall time: what a timed call costs the GPU, once the host's launch overhead is set aside.

:func:`perfsuite.timing.round_robin` reads the host clock around each synchronized call (wall time). On CUDA,
:class:`DeviceTimer` wraps every timed function so each call is also bracketed by a pair of CUDA events recorded
on the current stream; after the loop, one synchronize and ``elapsed_time`` per pair give the device time of
each call (triton's ``do_bench`` and torch.utils.benchmark time GPU work the same way). The pairs of the warm-up
calls are dropped: a function's last ``len(samples)`` pairs are its timed rounds, in order. Events are created
before the loop, so the timed region adds only two ``record`` calls.

``host_bound_pct`` is the share of a call's wall time the device was idle (launch overhead, Python, syncs):
100·(1 − device/wall), the median over rounds. On the CPU there is no separate device: device time *is* wall
time, labelled ``device_time_source = "wall (cpu)"`` and ``host_bound_pct`` is not recorded.

Once per model on CUDA, :func:`kernel_sum_ms` sums the kernels' own device time from ``torch.profiler`` as a
cross-check of the events (they differ by the gaps between kernels).
"""

from __future__ import annotations

import statistics
import warnings
from collections import defaultdict
from typing import Callable, Hashable, Mapping

SOURCE_EVENTS = "cuda events"
SOURCE_WALL_CPU = "wall (cpu)"
SPARE_EVENTS = 8  # pairs made beyond the loop's ceiling of calls per function (a partial last cycle)


def _cuda_event():
    import torch

    return torch.cuda.Event(enable_timing=True)


def _cuda_synchronize() -> None:
    import torch

    torch.cuda.synchronize()


class DeviceTimer:
    """Device time of every call of the functions it wraps: CUDA events on a CUDA device, the wall time on the CPU.

    ``event_factory`` and ``synchronize`` are seams: tests pass fake events (with ``record`` and
    ``elapsed_time``) to prove the event path on a machine without a GPU.
    """

    def __init__(self, device: str, *, calls_per_fn: int = 0, event_factory: Callable[[], object] | None = None,
                 synchronize: Callable[[], None] | None = None):
        self.on_device = device.startswith("cuda")
        self._event = event_factory or _cuda_event
        self._synchronize = synchronize or _cuda_synchronize
        self._calls_per_fn = calls_per_fn + SPARE_EVENTS
        self._pairs: dict[Hashable, list[tuple[object, object]]] = defaultdict(list)

    @property
    def source(self) -> str:
        return SOURCE_EVENTS if self.on_device else SOURCE_WALL_CPU

    def wrap(self, fns: Mapping[Hashable, Callable[[], object]]) -> dict[Hashable, Callable[[], object]]:
        """``fns`` with each call bracketed by events (on CUDA); on the CPU, ``fns`` unchanged."""
        if not self.on_device:
            return dict(fns)
        return {key: self._bracketed(key, fn) for key, fn in fns.items()}

    def _bracketed(self, key: Hashable, fn: Callable[[], object]) -> Callable[[], object]:
        pool = [(self._event(), self._event()) for _ in range(self._calls_per_fn)]  # made before the loop
        pairs = self._pairs[key]

        def call():
            start, end = pool.pop() if pool else (self._event(), self._event())
            start.record()
            out = fn()
            end.record()
            pairs.append((start, end))
            return out

        return call

    def device_ms(self, wall_ms: Mapping[Hashable, list[float]]) -> dict[Hashable, list[float]]:
        """Per function, the device time (ms) of its timed rounds, one per wall sample and in the same order."""
        if not self.on_device:
            return {key: list(samples) for key, samples in wall_ms.items()}
        self._synchronize()
        out = {}
        for key, samples in wall_ms.items():
            pairs = self._pairs.get(key, [])
            if len(pairs) < len(samples):
                raise RuntimeError(f"device timer: {len(pairs)} event pairs for {len(samples)} timed rounds of {key}")
            out[key] = [float(start.elapsed_time(end)) for start, end in pairs[len(pairs) - len(samples):]]
        return out


def host_bound_pct(wall_ms: list[float], device_ms: list[float]) -> float | None:
    """Median over rounds of the share of wall time the device was idle, 100·(1 − device/wall); None when empty."""
    shares = [100.0 * (1.0 - d / w) for w, d in zip(wall_ms, device_ms) if w > 0]
    return statistics.median(shares) if shares else None


def kernel_sum_ms(fn: Callable[[], object], *, profile_factory: Callable[[], object] | None = None,
                  synchronize: Callable[[], None] | None = None) -> float | None:
    """The device time of one call of ``fn`` as ``torch.profiler`` counts it: the sum of every kernel's own time
    (CUDA only). ``profile_factory`` is a seam: a context manager whose ``key_averages()`` lists events with
    ``self_device_time_total`` (µs). A cross-check only: where the profiler cannot run (no CUPTI, another profiler
    active) it is None, and the cell keeps its event times; the profiler's own warnings are not the cell's."""
    if profile_factory is None:
        from torch.profiler import ProfilerActivity, profile

        def profile_factory():
            return profile(activities=[ProfilerActivity.CUDA])

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile_factory() as prof:
                fn()
                (synchronize or _cuda_synchronize)()  # every kernel done before the profiler stops
            events = prof.key_averages()
    except RuntimeError:
        return None
    total_us = sum(float(getattr(e, "self_device_time_total", 0.0) or 0.0) for e in events)
    return total_us / 1e3
