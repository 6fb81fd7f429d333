"""Recompute cells: decode–verify–rollback against plain decoding, batch × window (LLM-42 Fig. 13)."""

import pytest

from perfsuite.record import STATUS_OOM, STATUS_OUTSIDE_BUDGET
from perfsuite.timing import is_out_of_memory
from perfsuite.workloads.recompute import run_recompute_cell


@pytest.mark.perfsuite(workload="recompute")
def test_recompute(benchmark, perfsuite_cell, perfsuite_state, perfsuite_models, perfsuite_skip):
    cell = perfsuite_cell
    benchmark.group = f"recompute-s{cell.seq_len}-g{cell.gen_len}-b{cell.batch}-w{cell.window}"
    try:
        record = run_recompute_cell(benchmark, cell, perfsuite_models,
                                    rounds=perfsuite_state.rounds, warmup=perfsuite_state.warmup)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        perfsuite_models.clear()
        perfsuite_skip(cell, STATUS_OOM, str(e).splitlines()[0])
    if record["status"] == STATUS_OUTSIDE_BUDGET:
        perfsuite_skip(cell, record["status"], record["reason"])
    benchmark.extra_info.update(record)
    assert record["status"] == "ok"
    assert record["matches_fixed_schedule"], "verified tokens differ from the fixed-shape reference decode"
    assert record["output_tokens"] == cell.batch * cell.gen_len
    if "time_ms" in record:
        assert record["time_ms"] > 0 and record["plain_time_ms"] > 0
