"""Latency: one inference forward pass of the adapted model against the plain one (LoRA paper, Fig. 5)."""

from __future__ import annotations

import torch

from perfsuite.cells.grid import Cell
from perfsuite.formats.record import CellRecord, model_dims
from perfsuite.machine import machine_env
from perfsuite.timing import count_flops, paired_benchmark, peak_memory_bytes
from perfsuite.workloads.models import ModelCache


def run_latency_cell(benchmark, cell: Cell, models: ModelCache, *, rounds: int, warmup: int) -> CellRecord:
    """Time the cell with pytest-benchmark, r = 0 interleaved (the paired reference); returns its record."""
    base = models.base(cell.model, cell.dtype, cell.device)
    adapted = models.adapted(cell.model, cell.dtype, cell.device, cell.adapter, cell.rank)
    gen = torch.Generator().manual_seed(cell.batch * 100_003 + cell.seq_len)
    tokens = torch.randint(0, base.config.vocab_size, (cell.batch, cell.seq_len), generator=gen).to(cell.device)

    def forward(model):
        return lambda: model(tokens)

    with torch.inference_mode():
        peak = peak_memory_bytes(forward(adapted), cell.device)
        flops = count_flops(forward(adapted))
        timing = paired_benchmark(benchmark, forward(adapted), forward(base), device=cell.device,
                                  rounds=rounds, warmup=warmup)
    metrics = {"flops": flops, "peak_mem_bytes": peak, "tokens": cell.batch * cell.seq_len}
    if timing is not None:
        metrics |= {
            "time_ms": timing.time_ms,
            "ref_time_ms": timing.ref_time_ms,
            "slowdown_pct": timing.slowdown_pct,
            "iqr_pct": timing.iqr_pct,
            "flops_per_s": flops / (timing.time_ms / 1e3),
            "samples_ms": list(timing.adapter_ms),
            "ref_samples_ms": list(timing.ref_ms),
        }
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(base), metrics=metrics)
