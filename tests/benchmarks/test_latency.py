"""Latency cells: one forward pass, adapted vs plain model, interleaved (LoRA paper Fig. 5 / Table 1)."""

import pytest

from perfsuite.record import STATUS_OOM
from perfsuite.timing import is_out_of_memory
from perfsuite.workloads.latency import run_latency_cell


@pytest.mark.perfsuite(workload="latency")
def test_latency(benchmark, perfsuite_cell, perfsuite_state, perfsuite_models, perfsuite_skip):
    benchmark.group = f"latency-s{perfsuite_cell.seq_len}-b{perfsuite_cell.batch}"
    try:
        record = run_latency_cell(benchmark, perfsuite_cell, perfsuite_models,
                                  rounds=perfsuite_state.rounds, warmup=perfsuite_state.warmup)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        perfsuite_models.clear()
        perfsuite_skip(perfsuite_cell, STATUS_OOM, str(e).splitlines()[0])
    benchmark.extra_info.update(record)
    assert record["status"] == "ok"
    if "time_ms" in record:
        assert record["time_ms"] > 0 and record["base_time_ms"] > 0
