"""Device time beside wall time: what a timed call costs the GPU, with the host's launches set aside.

:func:`perfsuite.measure.timing.round_robin` reads the host clock around each synchronized call (wall time). A pair of
CUDA events around the same call would not separate host from device: the start event runs as soon as it is
queued, so the interval holds every idle gap while Python launches kernels, and a launch-bound call (GPT-2 medium
at batch 1: milliseconds of launches for a millisecond of kernels) reads device ≈ wall. So device time is taken
in its own short loop after the wall loop, as nvbench does it: before each call a *blocking kernel*
(``torch.cuda._sleep``, a spin of a calibrated number of GPU cycles) holds the stream for longer than the call's
wall time; the host queues the start event, the call's launches and the end event behind it, and when the spin
ends the device runs them back to back. The start→end interval is then the device's own work.

Each call checks that the hold covered its launches: the host's launch time (its clock, from before the hold to
after the end event is queued) must be shorter than the hold the spin's own events measured; a call that was not
covered is counted (``device_rounds_uncovered``) — its interval may hold launch gaps again. Every event of the
loop is created before it, and recorded once there (torch creates the CUDA event itself on its first ``record``). :data:`DEVICE_ROUNDS` calls per function, in a rotating order.

``host_bound_pct`` = 100·(1 − device / wall) on the medians: the share of a call's wall time the device was idle
(launch overhead, Python, syncs). On the CPU there is no separate device: device time *is* wall time, labelled
``device_time_source = "wall (cpu)"``, and ``host_bound_pct`` is not recorded.

Once per shape group on CUDA, :func:`kernel_sums_ms` runs every model once inside one ``torch.profiler`` session,
a ``record_function`` range per model, and sums the device-side kernels launched inside each range: a cross-check
of the events (they differ by the gaps between kernels). :class:`CudaTiming` is the seam: tests pass a fake GPU
(a host clock, a device timeline, events, a spin) to prove the whole path on a machine without one.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping

SOURCE_EVENTS = "cuda events"  # behind a blocking kernel (see the module docstring)
SOURCE_WALL_CPU = "wall (cpu)"
DEVICE_ROUNDS = 3  # blocked calls per function after the wall loop (the device time of a call barely moves)
HOLD_MARGIN = 1.25  # the spin holds the stream this many times the call's median wall time ...
HOLD_EXTRA_MS = 0.05  # ... plus this (the first launch, a late wake-up)
CALIBRATION_CYCLES = 10_000_000  # the spin timed once per process to learn GPU cycles per millisecond
RANGE_PREFIX = "perfsuite:"  # the profiler range of a model: RANGE_PREFIX + its label


class CudaTiming:
    """The torch.cuda calls device timing makes: events, the spin, synchronize, the host clock (the seam)."""

    _cycles_per_ms: float | None = None  # learnt once per process

    def event(self):
        import torch

        return torch.cuda.Event(enable_timing=True)

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()

    def clock(self) -> float:
        return time.perf_counter()

    def hold(self, ms: float) -> None:
        """Queue a spin kernel that keeps the stream busy for about ``ms``."""
        import torch

        torch.cuda._sleep(max(1, int(ms * self.cycles_per_ms())))

    def cycles_per_ms(self) -> float:
        """GPU cycles of ``torch.cuda._sleep`` per millisecond, timed once by events (a warm-up spin first)."""
        if CudaTiming._cycles_per_ms is None:
            import torch

            torch.cuda._sleep(CALIBRATION_CYCLES // 10)
            start, end = self.event(), self.event()
            start.record()
            torch.cuda._sleep(CALIBRATION_CYCLES)
            end.record()
            end.synchronize()
            CudaTiming._cycles_per_ms = CALIBRATION_CYCLES / max(start.elapsed_time(end), 1e-6)
        return CudaTiming._cycles_per_ms


@dataclass(frozen=True)
class DeviceTime:
    """One function's device time: its blocked calls (ms), how long the spin held the stream before each (median
    ms; None on the CPU) and how many calls the hold did not cover."""

    samples_ms: list[float]
    hold_ms: float | None = None
    uncovered: int = 0


class DeviceTimer:
    """Device time of a group's functions: blocked CUDA events on a CUDA device, the wall time on the CPU.

    ``api`` is the seam (:class:`CudaTiming` by default on CUDA); the wall loop takes its ``clock`` and
    ``synchronize`` from here too, so a fake GPU drives both loops in the tests."""

    def __init__(self, device: str, *, rounds: int = DEVICE_ROUNDS, api: CudaTiming | None = None):
        self.on_device = device.startswith("cuda")
        self.device = device
        self.rounds = rounds
        self.api = api or (CudaTiming() if self.on_device else None)

    @property
    def source(self) -> str:
        return SOURCE_EVENTS if self.on_device else SOURCE_WALL_CPU

    @property
    def clock(self) -> Callable[[], float]:
        return self.api.clock if self.api is not None else time.perf_counter

    def synchronize(self) -> None:
        if self.api is not None:
            self.api.synchronize()

    def measure(self, fns: Mapping[Hashable, Callable[[], object]],
                wall_ms: Mapping[Hashable, list[float]]) -> dict[Hashable, DeviceTime]:
        """Per function its device time: ``rounds`` blocked calls on CUDA, each held by a spin of
        HOLD_MARGIN × its median wall time (``wall_ms``, from the wall loop just run); on the CPU its wall samples."""
        if not self.on_device:
            return {key: DeviceTime(list(wall_ms[key])) for key in fns}
        api, keys = self.api, list(fns)
        if hasattr(api, "cycles_per_ms"):
            api.cycles_per_ms()  # the spin calibrated before the loop, not inside its first call
        hold = {key: HOLD_MARGIN * statistics.median(wall_ms[key]) + HOLD_EXTRA_MS for key in keys}
        events = [[(api.event(), api.event(), api.event()) for _ in keys] for _ in range(self.rounds)]
        for trio in (t for row in events for t in row):  # torch creates a CUDA event on its first record: now
            for event in trio:
                event.record()
        api.synchronize()
        launched: dict[Hashable, list] = {key: [] for key in keys}
        for r in range(self.rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]  # each function in every position in turn
            for key, (held, start, end) in zip(order, events[r]):
                api.synchronize()
                t0 = api.clock()
                held.record()
                api.hold(hold[key])
                start.record()
                fns[key]()
                end.record()
                launched[key].append((held, start, end, 1e3 * (api.clock() - t0)))
        api.synchronize()
        out = {}
        for key, calls in launched.items():
            holds = [float(held.elapsed_time(start)) for held, start, _, _ in calls]
            out[key] = DeviceTime([float(start.elapsed_time(end)) for _, start, end, _ in calls],
                                  statistics.median(holds),
                                  sum(launch > h for (_, _, _, launch), h in zip(calls, holds)))
        return out


def host_bound_pct(wall_ms: list[float], device_ms: list[float]) -> float | None:
    """The share of a call's wall time the device was idle, 100·(1 − device/wall) on the medians; None when empty."""
    if not wall_ms or not device_ms or statistics.median(wall_ms) <= 0:
        return None
    return 100.0 * (1.0 - statistics.median(device_ms) / statistics.median(wall_ms))


def kernel_sums_ms(fns: Mapping[Hashable, Callable[[], object]], *, profile_factory: Callable[[], object] | None = None,
                   range_factory: Callable[[str], object] | None = None,
                   synchronize: Callable[[], None] | None = None) -> dict[Hashable, float]:
    """Per function, the device time of one call as the profiler counts it: the kernels launched inside its range,
    each kernel once (device-side only: no CPU op, no range annotation is added). One profiler session for all of
    ``fns`` (a session per model accumulates state: pytorch#192021). ``profile_factory`` is a seam: a context
    manager whose ``events()`` lists events with ``name``, ``time_range`` (µs) and ``kernels`` (each with
    ``name`` and ``duration`` in µs), ``range_factory(label)`` the range (``record_function``). A cross-check
    only: where the profiler cannot run it is empty."""
    sync = synchronize or _cuda_synchronize
    in_range = range_factory or _range
    if profile_factory is None:
        from torch.profiler import ProfilerActivity, profile

        def profile_factory():
            return profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])

    labels = {key: f"{RANGE_PREFIX}{i}" for i, key in enumerate(fns)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sync()
            with profile_factory() as prof:
                for key, fn in fns.items():
                    with in_range(labels[key]):
                        fn()
                        sync()  # its kernels done inside its range
            events = list(prof.events())
    except RuntimeError as e:
        if type(e).__module__.startswith("torch._dynamo"):  # a compiled forward recompiling: not the profiler's
            raise
        return {}
    return _sum_by_range(events, labels)


def _sum_by_range(events: list, labels: Mapping[Hashable, str]) -> dict[Hashable, float]:
    """Kernel µs launched by the ops inside each range (by host time), as ms per key."""
    by_label = {label: key for key, label in labels.items()}
    ranges = [(e.time_range.start, e.time_range.end, by_label[e.name]) for e in events if e.name in by_label]
    totals = {key: 0.0 for key in labels}
    for e in events:
        # no range annotation, and no legacy stand-in (a CPU op's own device time, named as the op)
        kernels = [k for k in getattr(e, "kernels", ()) or () if k.name not in by_label and k.name != e.name]
        if not kernels or e.name in by_label:
            continue
        owner = next((key for lo, hi, key in ranges if lo <= e.time_range.start <= hi), None)
        if owner is not None:
            totals[owner] += sum(float(k.duration) for k in kernels)
    return {key: us / 1e3 for key, us in totals.items()}


def _range(label: str):
    from torch.profiler import record_function

    return record_function(label)


def _cuda_synchronize() -> None:
    import torch

    torch.cuda.synchronize()
