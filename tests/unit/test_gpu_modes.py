"""GPU-only checks of the execution modes and device time (skipped with a reason where no GPU exists): a latency
group captured in CUDA graphs and timed with real CUDA events."""

import pytest

from perfsuite.cells.grid import Cell
from perfsuite.device_time import SOURCE_EVENTS
from perfsuite.timing import RoundPolicy
from perfsuite.workloads import latency
from perfsuite.workloads.context import CellContext
from synthetic import FakeBenchmark

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("mode", ["eager", "graphs"])
def test_a_latency_group_on_cuda_records_device_time_within_wall_time(mode):
    cells = [Cell("latency", a, r, batch=2, seq_len=32, device="cuda", mode=mode)
             for a, r in (("none", 0), ("lora", 8), ("houlsby", 8))]
    ctx = CellContext(policy=lambda cell: RoundPolicy.fixed(6, 2), cells=cells)
    records = [latency.run_latency_cell(FakeBenchmark(), c, ctx) for c in cells]
    for r in records:
        assert r.ok, r.reason
        assert r.get("device_time_source") == SOURCE_EVENTS and len(r.get("device_samples_ms")) == 6
        assert 0 < r.get("device_ms") <= r.get("time_ms") * 1.05  # events sit inside the synchronized wall time
        assert -5 <= r.get("host_bound_pct") < 100 and r.get("kernel_sum_ms") > 0
        assert ("compile_s" in r.metrics) == (mode == "graphs")
