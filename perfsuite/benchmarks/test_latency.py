"""Latency cells: one forward pass per adapter, each shape's adapters and plain model in one shared loop
(LoRA paper Fig. 5 / Table 1)."""

import pytest

from perfsuite.workloads.latency import run_latency_cell


@pytest.mark.perfsuite(workload="latency")
def test_latency(benchmark, perfsuite_cell, perfsuite_measure):
    cell = perfsuite_cell
    shape = f"L{cell.kv_len}" if cell.phase == "decode" else f"s{cell.seq_len}"
    benchmark.group = f"latency-{shape}-b{cell.batch}" + (f"-{cell.quant}" if cell.quant != "none" else "")
    record = perfsuite_measure(run_latency_cell)
    tokens = cell.batch * (1 if cell.phase == "decode" else cell.seq_len)  # a decode step: one token a request
    assert record.get("flops") > 0 and record.get("tokens") == tokens
    if cell.impl == "ref":  # perfsuite's own model: a forward pass must never make the host wait
        assert record.get("host_syncs") == 0, "a forward pass must not make the host wait for the device"
    else:  # transformers' code is measured as shipped: its read-backs are recorded (docs/timing.md, "host_syncs"), not failed
        assert isinstance(record.get("host_syncs"), int) and record.get("host_syncs") >= 0
    if record.get("time_ms") is not None:  # absent under --benchmark-disable
        assert record.get("time_ms") > 0
        plain = cell.adapter == "none"
        assert (record.get("ref_time_ms") is None) == plain, "only adapters are timed against the plain model"
