"""A GPU on the CPU, for proving perfsuite's CUDA paths without one: nothing here is a measurement.

:class:`FakeGpu` keeps a host clock and a stream's timeline (ms). A kernel launch costs the host its launch time
and runs on the device when both the launch happened and the stream is free, so launch gaps, queued work and a
blocking spin behave as on a GPU; events complete when the stream reaches them. It is the
:class:`perfsuite.measure.device_time.CudaTiming` seam (events, hold, synchronize, clock), a profiler (ranges by host
time, kernels with their device durations) and, with :class:`FakeCudaGraphs`, a capture whose replay is one
launch. :class:`FakeNVML` is pynvml over an idle, busy or throttled GPU.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from types import SimpleNamespace

MIB = 2 ** 20
LAUNCH_MS = 0.005  # host time of a launch that does nothing else (an event, a spin, a graph replay)


class FakeEvent:
    def __init__(self, gpu: "FakeGpu"):
        self.gpu, self.at = gpu, None

    def record(self) -> None:
        self.gpu.host_ms += 0.001
        self.at = max(self.gpu.host_ms, self.gpu.free_at)  # complete when the stream reaches it

    def elapsed_time(self, end: "FakeEvent") -> float:
        assert self.at is not None and end.at is not None, "an event read before it was recorded"
        return end.at - self.at

    def synchronize(self) -> None:
        self.gpu.host_ms = max(self.gpu.host_ms, self.at)


@dataclass
class Op:
    """A host-side op of the fake profiler: when it was launched (µs) and the kernel it put on the device."""

    name: str
    time_range: SimpleNamespace
    kernels: list = field(default_factory=list)


class FakeGpu:
    """A stream's timeline beside a host clock; see the module docstring."""

    def __init__(self):
        self.host_ms = 0.0
        self.free_at = 0.0
        self.events_made = 0
        self.ops: list[Op] = []  # every launch, for the profiler
        self.capturing: list | None = None  # launches recorded by a capture instead of run

    # --- perfsuite.measure.device_time.CudaTiming ---
    def event(self) -> FakeEvent:
        self.events_made += 1
        return FakeEvent(self)

    def synchronize(self) -> None:
        self.host_ms = max(self.host_ms, self.free_at)

    def clock(self) -> float:
        return self.host_ms / 1e3

    def hold(self, ms: float) -> None:
        self.launch(LAUNCH_MS, ms, "spin")

    # --- work ---
    def launch(self, host_ms: float, device_ms: float, name: str = "kernel") -> None:
        if self.capturing is not None:
            self.capturing.append(device_ms)
            return
        self.host_ms += host_ms
        start = max(self.host_ms, self.free_at)
        self.free_at = start + device_ms
        self.ops.append(Op(f"aten::{name}", SimpleNamespace(start=1e3 * self.host_ms, end=1e3 * self.host_ms),
                           [SimpleNamespace(name=name, duration=1e3 * device_ms)]))

    def work(self, launches: int, host_ms: float, device_ms: float):
        """A call of ``launches`` kernels, each costing the host ``host_ms`` and the device ``device_ms``."""
        def call():
            for _ in range(launches):
                self.launch(host_ms, device_ms)
        return call

    # --- torch.profiler ---
    def profile(self):
        gpu = self

        class Session:
            def __enter__(self):
                self.first = len(gpu.ops)
                return self

            def __exit__(self, *exc):
                self.ops = gpu.ops[self.first:]
                return False

            def events(self):
                return self.ops

        return Session()

    @contextlib.contextmanager
    def range(self, label: str):
        op = Op(label, SimpleNamespace(start=1e3 * self.host_ms, end=None))
        self.ops.append(op)
        yield
        op.time_range.end = 1e3 * self.host_ms


class FakeGraph:
    def __init__(self, gpu: FakeGpu | None, log: list):
        self.gpu, self.log, self.replays, self.kernels, self.was_reset = gpu, log, 0, [], False

    def replay(self) -> None:
        assert not self.was_reset, "a graph replayed after it was freed"
        self.replays += 1
        self.log.append("replay")
        if self.gpu is not None:  # one launch, then the captured kernels back to back
            self.gpu.host_ms += LAUNCH_MS
            start = max(self.gpu.host_ms, self.gpu.free_at)
            self.gpu.free_at = start + sum(self.kernels)
            self.gpu.ops.append(Op("cudaGraphLaunch", SimpleNamespace(start=1e3 * self.gpu.host_ms, end=1e3 * self.gpu.host_ms),
                                   [SimpleNamespace(name="graph kernels", duration=1e3 * sum(self.kernels))]))

    def reset(self) -> None:
        self.was_reset = True


class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(f"{self.name} waits for {other.name}")


class FakeCudaGraphs:
    """torch.cuda's streams, pools and graphs (perfsuite.workloads.modes.CudaGraphApi) as a log: which stream each
    call ran on, which pool each capture used, what was captured (with a FakeGpu: the kernels, replayed as one
    launch)."""

    def __init__(self, gpu: FakeGpu | None = None):
        self.gpu, self.log, self.stream, self.graphs, self.pools = gpu, [], "main", [], []
        self.main = FakeStream("main", self.log)

    def side_stream(self):
        return FakeStream("side", self.log)

    def current_stream(self):
        return self.main

    class _On:
        def __init__(self, api, name, graph=None):
            self.api, self.name, self.graph = api, name, graph

        def __enter__(self):
            self.before, self.api.stream = self.api.stream, self.name
            if self.graph is not None and self.api.gpu is not None:
                self.api.gpu.capturing = self.graph.kernels

        def __exit__(self, *exc):
            self.api.stream = self.before
            if self.graph is not None and self.api.gpu is not None:
                self.api.gpu.capturing = None

    def on_stream(self, stream):
        return self._On(self, stream.name)

    def new_graph(self):
        self.graphs.append(FakeGraph(self.gpu, self.log))
        return self.graphs[-1]

    def new_pool(self):
        self.pools.append(object())
        return self.pools[-1]

    def capturing(self, graph, pool):
        self.log.append(f"capture in pool {self.pools.index(pool)}")
        return self._On(self, "capture", graph)

    def synchronize(self):
        self.log.append("synchronize")
        if self.gpu is not None:
            self.gpu.synchronize()


class FakeNVML:
    """pynvml's functions over a GPU that is idle until ``busy`` (a context: a kernel runs), throttled or not.

    Idle: NVML's gpu_idle reason and the idle clock (an H100 parks near 345 MHz). Busy: the boost clock, or with
    ``throttled`` a thermal slowdown and a clock far below it."""

    MAX_MHZ = 1980

    def __init__(self, *, throttled: bool = False, idle_mhz: int = 345):
        self.throttled, self.idle_mhz, self.running = throttled, idle_mhz, 0

    @contextlib.contextmanager
    def busy(self):
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return self.MAX_MHZ

    def nvmlDeviceGetClockInfo(self, handle, kind):
        if kind != 1:  # memory clock
            return 2619
        if not self.running:
            return self.idle_mhz
        return 1100 if self.throttled else 1980

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        if not self.running:
            return 0x1  # gpu_idle
        return 0x40 if self.throttled else 0x0  # hw_thermal_slowdown

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 88 if self.throttled and self.running else 41

    def nvmlDeviceGetPowerUsage(self, handle):
        return 650_000 if self.running else 70_000

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000


class FakeCudaMemory:
    """torch.cuda's memory counters over a fake caching allocator; the first matmul allocates cuBLAS's workspace
    (32 MiB, kept for the process), as it does on an H100."""

    WORKSPACE = 32 * MIB

    def __init__(self):
        self.allocated = self.peak = 0
        self.workspace = False

    def alloc(self, n):
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def free(self, n):
        self.allocated -= n

    def matmul(self, device="cuda"):
        if not self.workspace:
            self.workspace = True
            self.alloc(self.WORKSPACE)

    def install(self, monkeypatch):
        import torch

        import perfsuite.measure.device as device_module

        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: self.peak)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: setattr(self, "peak", self.allocated))
        monkeypatch.setattr(device_module, "_device_matmuls", self.matmul)
        monkeypatch.setattr(device_module, "_CUBLAS_WARM", set())


def on_fake_cuda(monkeypatch, gpu: FakeGpu, work: dict, **prepare_kw):
    """The latency workload on a fake GPU: its device timer and profiler are the fake's, and each model's forward
    also launches its fake kernels (``work[key]``: launches, host and device ms each; the probe's, or a small
    device-bound call, instead of the real probe); ``prepare_kw`` reach
    perfsuite.workloads.modes.prepare (a fake capture)."""
    from perfsuite.measure.device_time import DeviceTimer, kernel_sums_ms
    from perfsuite.workloads import latency, modes

    monkeypatch.setattr(latency, "DeviceTimer", lambda device: DeviceTimer("cuda", api=gpu))
    monkeypatch.setattr(latency, "kernel_sums_ms", functools.partial(
        kernel_sums_ms, profile_factory=gpu.profile, range_factory=gpu.range, synchronize=gpu.synchronize))

    def on_fake_gpu(forwards, mode, device):
        launched = {k: (lambda k=k, f=f: (gpu.work(**work[k])(), f())[1]) for k, f in forwards.items()}
        device = "cuda" if prepare_kw else device  # a fake capture stands for CUDA's
        return modes.prepare(launched, mode, device, synchronize=lambda d: gpu.synchronize(), **prepare_kw)

    monkeypatch.setattr(latency, "prepare", on_fake_gpu)
    probe = work.get(latency.PROBE, dict(launches=3, host_ms=0.01, device_ms=0.5))  # the probe: device-bound matmuls
    monkeypatch.setattr(latency, "make_probe", lambda shape, dtype, device: gpu.work(**probe))
