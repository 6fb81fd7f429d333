"""Serving cells: batches whose requests use K different LoRAs (gathered, loop, peft), each checked against its
per-request reference, then timed with the plain model and the single-adapter batch in one loop."""

import pytest

from perfsuite.workloads.serving import run_serving_cell


@pytest.mark.perfsuite(workload="serving")
def test_serving(benchmark, perfsuite_cell, perfsuite_measure):
    cell = perfsuite_cell
    shape = f"L{cell.kv_len}" if cell.phase == "decode" else f"s{cell.seq_len}"
    benchmark.group = f"serving-{shape}-b{cell.batch}" + (f"-{cell.impl}" if cell.impl != "ref" else "")
    record = perfsuite_measure(run_serving_cell)
    assert record.get("flops") > 0 and record.get("requests") == cell.batch
    plain = cell.adapter == "none"
    if not plain:  # checked before it was timed (a mismatch fails the cell in the workload)
        assert record.get("matches_per_request") and record.get("checked_rows") == cell.batch
        assert record.get("max_abs_err") <= record.get("check_tolerance")
    if cell.method == "gathered":  # one batched matmul whatever the adapters: nothing makes the host wait
        assert record.get("host_syncs") == 0, "the gathered mixed batch must not make the host wait for the device"
    if record.get("time_ms") is not None:  # absent under --benchmark-disable
        assert record.get("time_ms") > 0
        assert (record.get("ref_time_ms") is None) == plain, "only adapters are timed against the plain model"
