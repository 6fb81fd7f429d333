"""Latency cells: one forward pass, adapted vs plain model, interleaved (LoRA paper Fig. 5 / Table 1)."""

import pytest

from perfsuite.workloads.latency import run_latency_cell


@pytest.mark.perfsuite(workload="latency")
def test_latency(benchmark, perfsuite_cell, perfsuite_measure):
    benchmark.group = f"latency-s{perfsuite_cell.seq_len}-b{perfsuite_cell.batch}"
    record = perfsuite_measure(run_latency_cell)
    assert record.get("flops") > 0 and record.get("tokens") == perfsuite_cell.batch * perfsuite_cell.seq_len
    if record.get("time_ms") is not None:  # absent under --benchmark-disable
        assert record.get("time_ms") > 0 and record.get("ref_time_ms") > 0
