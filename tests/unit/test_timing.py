import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfsuite.timing import DeviceUnavailable, PairedTiming, is_out_of_memory, resolve_device, timed_call

times = st.lists(st.floats(0.01, 100.0), min_size=1, max_size=40)


class FakeClock:
    """A seeded stand-in for perf_counter: each call advances by the next scripted step."""

    def __init__(self, steps):
        self.now, self.steps = 0.0, iter(steps)

    def __call__(self):
        self.now += next(self.steps)
        return self.now


def test_timed_call_reads_the_clock_around_the_call():
    calls = []
    assert timed_call(lambda: calls.append(1), "cpu", FakeClock([5.0, 0.25])) == pytest.approx(0.25)
    assert calls == [1]


def test_paired_timing_statistics():
    t = PairedTiming(adapter_ms=(1.2, 1.1, 1.3, 1.25, 1.2), ref_ms=(1.0, 1.0, 1.0, 1.0, 1.0))
    assert t.time_ms == pytest.approx(1.2) and t.ref_time_ms == pytest.approx(1.0)
    # pairs (1.2, 1.1), (1.3, 1.25) and the odd one out 1.2: geometric means 1.1489, 1.2748, 1.2 → median 1.2
    assert t.pair_ratios == pytest.approx((math.sqrt(1.32), math.sqrt(1.625), 1.2))
    assert t.slowdown_pct == pytest.approx(20.0)


def test_paired_ratios_cancel_drift():
    """The machine slows down 2x half-way; the adapter costs +10% throughout: pairing still says +10%."""
    base = [1.0] * 10 + [2.0] * 10
    adapter = [1.1 * b for b in base]
    assert PairedTiming(tuple(adapter), tuple(base)).slowdown_pct == pytest.approx(10.0)


@given(times)
def test_identical_runs_have_zero_slowdown(xs):
    assert PairedTiming(tuple(xs), tuple(xs)).slowdown_pct == pytest.approx(0.0, abs=1e-9)


@given(times, st.floats(0.5, 3.0))
def test_slowdown_of_a_scaled_copy_is_the_scale(xs, k):
    t = PairedTiming(tuple(k * x for x in xs), tuple(xs))
    assert t.slowdown_pct == pytest.approx(100 * (k - 1), rel=1e-6, abs=1e-6)
    assert t.time_ms == pytest.approx(k * statistics.median(xs))


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_asking_for_a_missing_gpu_says_so(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailable, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_order_bias_cancels_within_a_pair_of_rounds():
    """Whichever runs second in a round is 3 % faster; the base runs first in even rounds, second in odd ones.
    An adapter that truly costs +10 % must still measure +10 %."""
    base, adapter = [], []
    for i in range(20):
        first, second = (1.0, 0.97) if i % 2 == 0 else (0.97, 1.0)  # (base, adapter) position factors
        base.append(1.0 * first)
        adapter.append(1.1 * second)
    t = PairedTiming(tuple(adapter), tuple(base))
    assert t.slowdown_pct == pytest.approx(10.0, abs=1e-9)
    assert statistics.median(t.ratios) != pytest.approx(1.1)  # the unpaired per-round median is biased


class FakeBenchmark:
    """Enough of pytest-benchmark's fixture to drive paired_benchmark: pedantic() with setup/teardown."""

    def __init__(self):
        self.calls, self.disabled = [], False

    def pedantic(self, target, setup, teardown, rounds, warmup_rounds, iterations):
        data = []
        for k in range(warmup_rounds + rounds):
            setup()
            target()
            teardown()
            if k >= warmup_rounds:
                data.append(0.002)
        self.stats = type("M", (), {"stats": type("S", (), {"data": data})()})()


def test_paired_benchmark_interleaves_base_before_and_after():
    from perfsuite.timing import paired_benchmark

    order = []
    bench = FakeBenchmark()
    timing = paired_benchmark(bench, lambda: order.append("A"), lambda: order.append("b"), device="cpu",
                              rounds=4, warmup=2)
    assert "".join(order) == "bAAbbAAbbAAb"  # warm-up rounds first, then the same alternation
    assert len(timing.ref_ms) == len(timing.adapter_ms) == 4


def test_the_local_runner_times_like_pytest_benchmark_with_a_fake_clock():
    """LocalBenchmark (the selftest's runner) and paired_benchmark, the one timing loop, on a fake clock: the
    adapted call costs 3 ticks, the plain one 2; setup and teardown are not timed as the adapted call."""
    from perfsuite.timing import LocalBenchmark, paired_benchmark

    now = [0.0]

    def tick(n):
        return lambda: now.__setitem__(0, now[0] + n)

    bench = LocalBenchmark(clock=lambda: now[0])
    timing = paired_benchmark(bench, tick(3e-3), tick(2e-3), device="cpu", rounds=6, warmup=2)
    assert timing.adapter_ms == pytest.approx((3.0,) * 6) and timing.ref_ms == pytest.approx((2.0,) * 6)
    assert timing.slowdown_pct == pytest.approx(50.0)
    with pytest.raises(ValueError, match="one call per round"):
        bench.pedantic(tick(1), iterations=2)
