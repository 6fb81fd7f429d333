"""Recompute cells: decode–verify–rollback against plain decoding, batch × window (LLM-42 Fig. 13)."""

import pytest

from perfsuite.workloads.recompute import run_recompute_cell


@pytest.mark.perfsuite(workload="recompute")
def test_recompute(benchmark, perfsuite_cell, perfsuite_measure):
    cell = perfsuite_cell
    benchmark.group = f"recompute-s{cell.seq_len}-g{cell.gen_len}-b{cell.batch}-w{cell.window}"
    record = perfsuite_measure(run_recompute_cell)
    assert record["matches_fixed_schedule"], "verified tokens differ from the fixed-shape reference decode"
    assert record["output_tokens"] == cell.batch * cell.gen_len
    if "time_ms" in record:
        assert record["time_ms"] > 0 and record["plain_time_ms"] > 0
