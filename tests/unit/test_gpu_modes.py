"""A latency group captured in CUDA graphs (or eager) and timed with blocked CUDA events: on a GPU (marked ``gpu``,
skipped with a reason where none exists) and on its CPU twin, the fake GPU of tests/fake_gpu.py (a fake capture,
fake events, a fake profiler) — the same loop, the same assertions."""

import pytest
from fake_gpu import FakeCudaGraphs, FakeGpu, on_fake_cuda

from perfsuite.cells.grid import Cell
from perfsuite.measure.device_time import DEVICE_ROUNDS, SOURCE_EVENTS
from perfsuite.measure.timing import RoundPolicy, whole_cycles
from perfsuite.workloads import latency
from perfsuite.workloads.context import CellContext
from synthetic import FakeBenchmark

ON = [pytest.param("cuda", marks=pytest.mark.gpu, id="cuda"), pytest.param("fake-cuda", id="fake-cuda")]
ROUNDS = 6
MODELS = (("none", 0), ("lora", 8), ("houlsby", 8))
# the fake GPU's models: the plain one launch-bound, the adapters more kernels (tests/fake_gpu.py)
FAKE_WORK = {latency.BASE: dict(launches=30, host_ms=0.05, device_ms=0.02),
             ("lora", 8): dict(launches=40, host_ms=0.05, device_ms=0.02),
             ("houlsby", 8): dict(launches=44, host_ms=0.05, device_ms=0.03)}


@pytest.mark.parametrize("mode", ["eager", "graphs"])
@pytest.mark.parametrize("on", ON)
def test_a_latency_group_records_device_time_within_wall_time(on, mode, monkeypatch):
    device = on
    if on == "fake-cuda":
        device = "cpu"  # the real models on the CPU; their time on the fake GPU's clock
        gpu = FakeGpu()
        on_fake_cuda(monkeypatch, gpu, FAKE_WORK, **({"graph_api": FakeCudaGraphs(gpu)} if mode == "graphs" else {}))
    cells = [Cell("latency", a, r, batch=2, seq_len=32, device=device, mode=mode) for a, r in MODELS]
    ctx = CellContext(policy=lambda cell: RoundPolicy.fixed(ROUNDS, 2), cells=cells)
    records = [latency.run_latency_cell(FakeBenchmark(), c, ctx) for c in cells]
    for r in records:
        assert r.ok, r.reason
        assert r.get("cycle") == len(MODELS) + 1  # the models and the probe
        # round_robin runs whole Williams cycles: 6 rounds asked of a loop of 4 are 8
        assert r.get("rounds") == len(r.get("samples_ms")) == whole_cycles(ROUNDS, r.get("cycle")) == 8
        assert r.get("device_time_source") == SOURCE_EVENTS and len(r.get("device_samples_ms")) == DEVICE_ROUNDS
        assert r.get("device_rounds_uncovered") <= 1  # the spin held the stream past the call's launches
        assert 0 < r.get("device_ms") <= r.get("time_ms") * 1.05  # the kernels alone, inside the wall time
        assert -5 <= r.get("host_bound_pct") < 100 and r.get("kernel_sum_ms") > 0
        assert ("compile_s" in r.metrics) == (mode == "graphs")
