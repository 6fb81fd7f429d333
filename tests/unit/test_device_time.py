"""Device time beside wall time, proven on a fake GPU (tests/fake_gpu.py: a host clock, a stream's timeline, launch
gaps, a blocking spin): the blocked events separate host from device, the CPU's label, the kernel sums per range."""

import pytest
from fake_gpu import FakeGpu, on_fake_cuda

from perfsuite.cells.grid import Cell
from perfsuite.measure.device_time import (DEVICE_ROUNDS, HOLD_EXTRA_MS, SOURCE_EVENTS, SOURCE_WALL_CPU, DeviceTimer,
                                   host_bound_pct, kernel_sums_ms)
from perfsuite.measure.timing import RoundPolicy, round_robin
from perfsuite.workloads import latency
from perfsuite.workloads.context import CellContext
from synthetic import FakeBenchmark

# GPT-2 medium at batch 1 as the issue describes it: ~3 ms of launches for ~1 ms of kernels; and a heavy call whose
# kernels dwarf their launches.
LAUNCH_BOUND = dict(launches=30, host_ms=0.1, device_ms=1 / 30)
DEVICE_BOUND = dict(launches=10, host_ms=0.005, device_ms=1.0)


def measured(gpu: FakeGpu, work: dict, timer: DeviceTimer, rounds: int = 6):
    """The wall loop then the blocked device loop, on the fake GPU's clock and synchronize."""
    fns = {k: gpu.work(**w) for k, w in work.items()}
    wall = round_robin(fns, device="cpu", policy=RoundPolicy.fixed(rounds, warmup=1), clock=timer.clock,
                       sync=timer.synchronize)
    return wall, timer.measure(fns, wall)


def test_a_launch_bound_call_reads_host_bound_and_a_device_bound_one_does_not():
    gpu = FakeGpu()
    timer = DeviceTimer("cuda", api=gpu)
    wall, device = measured(gpu, {"launch-bound": LAUNCH_BOUND, "device-bound": DEVICE_BOUND}, timer)
    assert statistics_median(wall["launch-bound"]) == pytest.approx(3.0, abs=0.1)  # the host's launches
    assert device["launch-bound"].samples_ms == pytest.approx([1.0] * DEVICE_ROUNDS)  # the kernels alone
    assert device["device-bound"].samples_ms == pytest.approx([10.0] * DEVICE_ROUNDS)
    assert host_bound_pct(wall["launch-bound"], device["launch-bound"].samples_ms) >= 50  # ~67 %
    assert host_bound_pct(wall["device-bound"], device["device-bound"].samples_ms) <= 10
    assert all(d.uncovered == 0 for d in device.values())  # every hold outlasted its call's launches
    assert device["launch-bound"].hold_ms == pytest.approx(1.25 * 3.0 + HOLD_EXTRA_MS, rel=0.05)


def test_without_the_blocking_kernel_the_events_hold_the_launch_gaps():
    """What the old bracket read (events right after a synchronize, nothing holding the stream): a launch-bound call
    shows device ≈ wall, host-bound ≈ 0 %; the calls are flagged as not covered."""
    gpu = FakeGpu()
    timer = DeviceTimer("cuda", api=gpu)
    gpu.hold = lambda ms: None  # no spin: the start event runs as soon as it is queued
    wall, device = measured(gpu, {"launch-bound": LAUNCH_BOUND}, timer)
    assert host_bound_pct(wall["launch-bound"], device["launch-bound"].samples_ms) < 10
    assert device["launch-bound"].uncovered == DEVICE_ROUNDS


def test_every_event_is_made_and_recorded_once_before_the_device_loop_and_each_round_visits_every_position():
    """torch creates a CUDA event on its first record: made and recorded before the loop, none is created inside."""
    gpu = FakeGpu()
    made, order, seen = [], [], []
    make = gpu.event
    gpu.event = lambda: made.append(make()) or made[-1]

    def call(key):
        order.append(key)
        seen.append((len(made), sum(e.at is not None for e in made)))  # events made, and recorded, by now

    DeviceTimer("cuda", api=gpu, rounds=3).measure({k: (lambda k=k: call(k)) for k in "abc"}, {k: [1.0] for k in "abc"})
    assert seen[0] == (27, 27) and {n for n, _ in seen} == {27}  # three a call, all made and recorded first
    assert "".join(order) == "abc" + "bca" + "cab"


def test_the_spin_is_calibrated_before_the_first_event():
    """CudaTiming learns cycles per ms from a spin of its own, with a synchronize: inside the loop that would land
    in the first call's interval."""
    log = []

    class Calibrated(FakeGpu):
        def cycles_per_ms(self):
            log.append(("calibrated", self.events_made))
            return 1.0

    gpu = Calibrated()
    DeviceTimer("cuda", api=gpu, rounds=1).measure({"a": gpu.work(1, 0.1, 0.1)}, {"a": [1.0]})
    assert log == [("calibrated", 0)]


def test_on_the_cpu_device_time_is_the_wall_time_and_says_so():
    timer = DeviceTimer("cpu")
    fn = lambda: None  # noqa: E731
    assert timer.measure({"plain": fn}, {"plain": [1.0, 2.0]})["plain"].samples_ms == [1.0, 2.0]
    assert timer.source == SOURCE_WALL_CPU and timer.api is None


def test_host_bound_share_compares_the_medians():
    assert host_bound_pct([4.0, 4.0, 2.0], [1.0, 2.0, 2.0]) == pytest.approx(50.0)
    assert host_bound_pct([], []) is None


def test_kernel_sums_count_each_models_kernels_once_in_one_session():
    gpu = FakeGpu()
    sessions = []

    def profile():
        sessions.append(1)
        return gpu.profile()

    fns = {"plain": gpu.work(3, 0.01, 0.25), "lora": gpu.work(4, 0.01, 0.25)}
    sums = kernel_sums_ms(fns, profile_factory=profile, range_factory=gpu.range, synchronize=gpu.synchronize)
    assert sums == pytest.approx({"plain": 0.75, "lora": 1.0}) and len(sessions) == 1


def test_kernel_sums_leave_out_cpu_ops_and_range_annotations():
    """The profiler lists the range itself on the device (a gpu_user_annotation, named as the range) and CPU ops
    that launched nothing: neither is a kernel."""
    from types import SimpleNamespace as NS

    from perfsuite.measure.device_time import _sum_by_range

    span = lambda a, b: NS(start=a, end=b)  # noqa: E731
    events = [NS(name="perfsuite:0", time_range=span(0, 100), kernels=[NS(name="perfsuite:0", duration=90.0)]),
              NS(name="aten::linear", time_range=span(10, 20), kernels=[]),
              NS(name="aten::mm", time_range=span(12, 14), kernels=[NS(name="gemm", duration=40.0)]),
              NS(name="aten::add", time_range=span(150, 151), kernels=[NS(name="add", duration=5.0)]),  # outside
              NS(name="aten::gelu", time_range=span(30, 31), kernels=[NS(name="aten::gelu", duration=7.0)])]  # legacy
    assert _sum_by_range(events, {"plain": "perfsuite:0"}) == {"plain": pytest.approx(0.04)}


def test_a_profiler_that_cannot_run_gives_no_cross_check():
    class Broken:
        def __enter__(self):
            raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

        def __exit__(self, *exc):
            return False

    assert kernel_sums_ms({"a": lambda: None}, profile_factory=Broken, synchronize=lambda: None) == {}


def test_through_the_latency_loop_a_launch_bound_group_reads_host_bound(monkeypatch):
    """The real latency loop (the tiny model on the CPU, its time on the fake GPU's clock): the plain model
    launch-bound, the adapter device-bound; every cell records device_ms and host_bound_pct, the adapter its
    slow-down on device time, both their kernel sums from one profiler session."""
    gpu = FakeGpu()
    work = {latency.BASE: LAUNCH_BOUND, ("lora", 4): DEVICE_BOUND}
    on_fake_cuda(monkeypatch, gpu, work)
    cells = [Cell("latency", a, r, batch=1, seq_len=8) for a, r in (("none", 0), ("lora", 4))]
    ctx = CellContext(policy=lambda cell: RoundPolicy.fixed(4, 1), cells=cells)
    plain, lora = (latency.run_latency_cell(FakeBenchmark(), c, ctx) for c in cells)
    assert plain.get("host_bound_pct") >= 50 and lora.get("host_bound_pct") <= 10
    assert plain.get("device_ms") == pytest.approx(1.0) and lora.get("device_ms") == pytest.approx(10.0)
    assert lora.get("device_slowdown_pct") == pytest.approx(900.0)
    assert plain.get("kernel_sum_ms") == pytest.approx(1.0) and lora.get("kernel_sum_ms") == pytest.approx(10.0)
    for r in (plain, lora):
        assert r.get("device_time_source") == SOURCE_EVENTS and len(r.get("device_samples_ms")) == DEVICE_ROUNDS
        assert r.get("device_rounds_uncovered") == 0 and r.get("device_hold_ms") > 0


def test_a_latency_cell_on_the_cpu_labels_device_time_as_wall():
    cells = [Cell("latency", a, r, batch=1, seq_len=8) for a, r in (("none", 0), ("lora", 4))]
    ctx = CellContext(policy=lambda cell: RoundPolicy.fixed(4, 1), cells=cells)
    lora = latency.run_latency_cell(FakeBenchmark(), cells[1], ctx)
    assert lora.get("device_time_source") == SOURCE_WALL_CPU and lora.get("host_bound_pct") is None
    assert lora.get("device_samples_ms") == lora.get("samples_ms")
    assert lora.get("device_slowdown_pct") == pytest.approx(lora.get("slowdown_pct"))


def statistics_median(xs):
    import statistics

    return statistics.median(xs)
