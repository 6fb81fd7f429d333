import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfsuite.measure.paired import PairedTiming
from perfsuite.measure.bench_bridge import record_rounds
from perfsuite.measure.device import DeviceUnavailable, is_out_of_memory, resolve_device
from perfsuite.measure.timing import RoundPolicy, round_robin, timed_call

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


def test_the_round_robin_balances_the_order_and_runs_whole_cycles():
    order = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    samples = round_robin(fns, device="cpu", policy=RoundPolicy.fixed(4, warmup=1), clock=FakeClock([1.0] * 1000))
    assert "".join(order) == "abc" + "abc" + "bca" + "cab" + "cba" + "acb" + "bac"  # warm-up, then 2 cycles
    assert all(len(v) == 6 for v in samples.values())  # 4 rounds asked for: whole cycles of 3 → 6


def test_the_loop_stops_once_every_median_is_precise_and_never_outside_its_range():
    steady = {"a": lambda: None, "b": lambda: None}
    quiet = round_robin(steady, device="cpu", policy=RoundPolicy(10, 200), clock=FakeClock([0.0, 1e-3] * 10_000))
    assert len(quiet["a"]) == 10  # every round the same: precise at the floor
    noisy = FakeClock([0.0, 1e-3, 0.0, 3e-3] * 10_000)  # two levels, a factor of 3 apart: never within 0.5 %
    assert len(round_robin(steady, device="cpu", policy=RoundPolicy(10, 40), clock=noisy)["a"]) == 40


def test_timed_calls_synchronize_before_reading_the_clock(monkeypatch):
    """The GPU path by construction: the clock is read only after the device has finished (CPU seam)."""
    import perfsuite.measure.timing as timing

    events = []
    monkeypatch.setattr(timing, "synchronize", lambda device: events.append(f"sync {device}"))
    clock = lambda: events.append("clock") or 0.0  # noqa: E731
    timing.timed_call(lambda: events.append("work"), "cuda", clock)
    assert events == ["sync cuda", "clock", "work", "sync cuda", "clock"]


def test_cycles_cancel_the_position_bias_of_a_rotation():
    """Three models in rotation; the one in the last place is 3 % faster. An adapter costing +10 % reads +10 %."""
    factor = {0: 1.0, 1: 1.0, 2: 0.97}
    keys = ["base", "x", "y"]
    base, x = [], []
    for r in range(30):
        order = keys[r % 3:] + keys[:r % 3]
        base.append(1.0 * factor[order.index("base")])
        x.append(1.1 * factor[order.index("x")])
    t = PairedTiming(tuple(x), tuple(base), cycle=3)
    assert t.slowdown_pct == pytest.approx(10.0, abs=1e-9)


class RecordingBenchmark:
    """Enough of pytest-benchmark's fixture for record_rounds: pedantic() and its Metadata/Stats shape."""

    def __init__(self, disabled=False):
        self.disabled, self.stats, self.calls = disabled, None, []

    def pedantic(self, target, rounds, iterations):
        self.calls.append(rounds)
        for _ in range(1 if self.disabled else rounds):
            target()
        if not self.disabled:
            self.stats = type("M", (), {"stats": type("S", (), {"data": [0.0] * rounds})()})()


def test_record_rounds_hands_the_cells_rounds_to_pytest_benchmark():
    bench = RecordingBenchmark()
    assert record_rounds(bench, [2.0, 3.0, 4.0]) and bench.stats.stats.data == [0.002, 0.003, 0.004]
    off = RecordingBenchmark(disabled=True)
    assert not record_rounds(off, [2.0, 3.0]) and off.calls == [1]  # the fixture is used, nothing recorded


def test_tensor_bytes_counts_shared_weights_once_and_no_peak_is_faked_on_the_cpu():
    from perfsuite.models.adapters import adapted_copy, attach
    from perfsuite.models.model import build_model
    from perfsuite.measure.device import peak_memory_above, tensor_bytes

    base = build_model("tiny")
    lora = attach(adapted_copy(base), "lora", 8)
    own = sum(p.numel() * 4 for n, p in lora.named_parameters() if "lora_" in n)
    assert tensor_bytes(lora) == tensor_bytes(base) + own and tensor_bytes(base, lora) == tensor_bytes(lora)
    calls = []
    assert peak_memory_above(lambda: calls.append(1), "cpu") is None and calls == [1]  # called, never faked
