"""The implementation overhead report: hf time / ref time per latency cell, only where both implementations ran."""

import pandas as pd
import pytest

from perfsuite.report.overhead import has_numbers, overhead_data, overhead_figure, overhead_tables
from perfsuite.report.data import latency_data


def row(adapter, rank, batch, impl, time_ms=None, status="ok"):
    return {"workload": "latency", "adapter": adapter, "rank": rank, "batch": batch, "seq_len": 32, "model": "tiny",
            "dtype": "float32", "device": "cpu", "impl": impl, "status": status, "time_ms": time_ms,
            "slowdown_pct": 1.0 if time_ms else None}


FRAME = pd.DataFrame([
    row("none", 0, 1, "ref", 0.5), row("none", 0, 4, "ref", 1.0), row("lora", 8, 1, "ref", 0.6),
    row("lora", 8, 4, "ref", 1.2), row("houlsby", 8, 1, "ref", 0.7), row("houlsby", 8, 4, "ref", 1.4),
    row("none", 0, 1, "hf", 1.0), row("none", 0, 4, "hf", 1.5), row("lora", 8, 1, "hf", 1.5),
    row("lora", 8, 4, "hf", 1.8), row("dora", 8, 1, "hf", 2.0), row("dora", 8, 4, "hf", 2.5),
    row("houlsby", 8, 1, "hf", status="missing_extra"), row("houlsby", 8, 4, "hf", status="missing_extra"),
])


def test_the_ratio_is_hf_time_over_ref_time_per_cell():
    (data,) = overhead_data(FRAME)
    assert data.adapters == ("none", "houlsby", "lora") and data.seq_lens == (32,)  # dora has no ref twin
    lora, plain = data.grid("lora", 32), data.grid("none", 32)
    assert lora.rows == (8,) and plain.rows == (0,) and lora.cols == (1, 4)
    assert plain.values.ravel().tolist() + lora.values.ravel().tolist() == pytest.approx([2.0, 1.5, 2.5, 1.5])
    assert data.grid("houlsby", 32).status[0] == ("missing_extra", "missing_extra")
    (table,) = overhead_tables(data)
    assert table.rows[0] == ("none", "32", "0", "2.00", "1.50") and ("AdapterH", "32", "8", "not installed",
                                                                   "not installed") in table.rows
    assert has_numbers(data) and overhead_figure(data).axes


def test_nothing_to_compare_with_one_implementation():
    assert overhead_data(FRAME[FRAME["impl"] == "hf"]) == []


def test_latency_figures_keep_implementations_apart():
    by_impl = {d.setup.get("impl", "ref"): d for d in latency_data(FRAME)}
    assert set(by_impl) == {"ref", "hf"} and by_impl["hf"].stem == "latency-tiny-float32-cpu-hf"
    assert "dora" in by_impl["hf"].adapters and "dora" not in by_impl["ref"].adapters
    assert "latency[lora-r8-b1-s32-hf]" in by_impl["hf"].cell_statuses()
