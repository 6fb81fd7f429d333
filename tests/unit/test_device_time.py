"""Device time beside wall time: the CUDA event path proven with fake events, the CPU's label, host-bound share."""

import pytest

from perfsuite.cells.grid import Cell
from perfsuite.device_time import (SOURCE_EVENTS, SOURCE_WALL_CPU, SPARE_EVENTS, DeviceTimer, host_bound_pct,
                                   kernel_sum_ms)
from perfsuite.timing import RoundPolicy, round_robin
from perfsuite.workloads import latency
from perfsuite.workloads.context import CellContext
from synthetic import FakeBenchmark


class FakeDevice:
    """A GPU's clock: a call's kernels take ``work_ms`` of device time; events read the clock when recorded."""

    def __init__(self):
        self.now_ms, self.made = 0.0, 0

    def event(self):
        self.made += 1
        device = self

        class Event:
            at = None

            def record(self):
                self.at = device.now_ms

            def elapsed_time(self, end):
                return end.at - self.at

        return Event()

    def run(self, work_ms):
        self.now_ms += work_ms


def test_each_timed_round_gets_the_device_time_between_its_events_and_warmup_pairs_are_dropped():
    gpu = FakeDevice()
    work = {"plain": iter([9.0] + [1.0, 1.1, 1.2, 1.3]), "lora": iter([9.0] + [2.0, 2.1, 2.2, 2.3])}
    timer = DeviceTimer("cuda:0", calls_per_fn=5, event_factory=gpu.event, synchronize=lambda: None)
    fns = timer.wrap({k: (lambda k=k: gpu.run(next(work[k]))) for k in work})
    assert gpu.made == 2 * 2 * (5 + SPARE_EVENTS)  # every event made before the loop
    wall = round_robin(fns, device="cpu", policy=RoundPolicy.fixed(4, warmup=1))
    device = timer.device_ms(wall)
    assert device["plain"] == pytest.approx([1.0, 1.1, 1.2, 1.3])  # the 9 ms warm-up call is not a round
    assert device["lora"] == pytest.approx([2.0, 2.1, 2.2, 2.3])
    assert timer.source == SOURCE_EVENTS


def test_a_loop_longer_than_the_pool_makes_more_events():
    gpu = FakeDevice()
    timer = DeviceTimer("cuda", calls_per_fn=0, event_factory=gpu.event, synchronize=lambda: None)
    fns = timer.wrap({"plain": lambda: gpu.run(1.0)})
    wall = round_robin(fns, device="cpu", policy=RoundPolicy.fixed(SPARE_EVENTS + 3))
    assert timer.device_ms(wall)["plain"] == [1.0] * (SPARE_EVENTS + 3)


def test_on_the_cpu_device_time_is_the_wall_time_and_says_so():
    timer = DeviceTimer("cpu")
    fn = lambda: None  # noqa: E731
    assert timer.wrap({"plain": fn}) == {"plain": fn}
    assert timer.device_ms({"plain": [1.0, 2.0]}) == {"plain": [1.0, 2.0]}
    assert timer.source == SOURCE_WALL_CPU


def test_host_bound_share_is_the_median_idle_share_of_wall_time():
    assert host_bound_pct([4.0, 4.0, 2.0], [1.0, 2.0, 2.0]) == pytest.approx(50.0)
    assert host_bound_pct([], []) is None


def test_kernel_sum_adds_every_kernels_own_device_time():
    class Avg:
        def __init__(self, us):
            self.self_device_time_total = us

    class Prof:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def key_averages(self):
            return [Avg(250.0), Avg(750.0), Avg(0.0)]

    calls = []
    assert kernel_sum_ms(lambda: calls.append(1), profile_factory=Prof, synchronize=lambda: calls.append(2)) == 1.0
    assert calls == [1, 2]

    class Broken(Prof):
        def __enter__(self):
            raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    assert kernel_sum_ms(lambda: None, profile_factory=Broken, synchronize=lambda: None) is None  # a cross-check only


def test_every_latency_cell_on_cuda_records_device_time_and_host_bound_share(monkeypatch):
    """The latency loop with CUDA events (fake: each call costs 0.5 ms of device time, plus 0.25 ms for the adapter):
    every cell records device_ms and host_bound_pct, and the adapter its slow-down on device time."""
    gpu = FakeDevice()
    cost = {}

    class FakeCudaTimer(DeviceTimer):
        def __init__(self, device, **kw):
            super().__init__("cuda", event_factory=gpu.event, synchronize=lambda: None, **kw)

        def wrap(self, fns):
            return super().wrap({k: (lambda k=k, f=f: (gpu.run(cost[k]), f())) for k, f in fns.items()})

    monkeypatch.setattr(latency, "DeviceTimer", FakeCudaTimer)
    monkeypatch.setattr(latency, "kernel_sum_ms", lambda fn: 0.4)
    cost[latency.BASE], cost[("lora", 4)], cost[latency.PROBE] = 0.5, 0.75, 0.5  # the probe: one more member
    cells = [Cell("latency", a, r, batch=1, seq_len=8) for a, r in (("none", 0), ("lora", 4))]
    ctx = CellContext(policy=lambda cell: RoundPolicy.fixed(4, 1), cells=cells)
    plain, lora = (latency.run_latency_cell(FakeBenchmark(), c, ctx) for c in cells)
    assert plain.get("device_ms") == pytest.approx(0.5) and lora.get("device_ms") == pytest.approx(0.75)
    assert lora.get("device_slowdown_pct") == pytest.approx(50.0)
    assert lora.get("device_time_source") == SOURCE_EVENTS and lora.get("kernel_sum_ms") == 0.4
    for r in (plain, lora):
        assert r.get("host_bound_pct") is not None and r.get("device_samples_ms")


def test_a_latency_cell_on_the_cpu_labels_device_time_as_wall():
    cells = [Cell("latency", a, r, batch=1, seq_len=8) for a, r in (("none", 0), ("lora", 4))]
    ctx = CellContext(policy=lambda cell: RoundPolicy.fixed(4, 1), cells=cells)
    lora = latency.run_latency_cell(FakeBenchmark(), cells[1], ctx)
    assert lora.get("device_time_source") == SOURCE_WALL_CPU and lora.get("host_bound_pct") is None
    assert lora.get("device_samples_ms") == lora.get("samples_ms")
    assert lora.get("device_slowdown_pct") == pytest.approx(lora.get("slowdown_pct"))
