"""The workloads: a cell turned into timed work and a record, one module each, and what a cell costs.

A :class:`~perfsuite.cells.grid.Cell` becomes timed work in one module per workload:
:mod:`~perfsuite.workloads.latency`, :mod:`~perfsuite.workloads.recompute`, :mod:`~perfsuite.workloads.subspace`;
:mod:`~perfsuite.workloads.context` keeps the models cells share. This module knows what a cell costs, without
importing torch, so sharding and progress estimates are free.
"""

from __future__ import annotations

from perfsuite.cells.grid import Cell, budget_violation, token_budget

CELL_OVERHEAD_TOKENS = 256  # fixed cost of a cell (model copy, warm-up), in token-equivalents


def estimated_cost(cell: Cell) -> float:
    """Rough relative cost of a cell: tokens pushed through the model, plus a fixed overhead."""
    if cell.workload in ("latency", "serving"):  # a decode step: one token a request
        work = (cell.batch or 1) * (cell.seq_len or 1)
    elif cell.workload == "recompute":
        batch, window, gen = cell.batch or 1, cell.window or 1, cell.gen_len or 1
        budget = token_budget(cell)
        if budget_violation(batch, window, budget):
            work = 0  # recorded as outside the budget, never run
        else:
            from perfsuite.workloads.rollbacks import DEFAULT_MISMATCH_RATE, expected_decode

            # the verified decode with its expected rollbacks (perfsuite.workloads.rollbacks): its fast-path steps
            # (per-step overhead ~32 tokens) and one fixed-shape pass of `budget` tokens per window and per prompt
            # chunk; plain decoding, one step per token; the fixed-schedule reference, one pass per token
            decode = expected_decode(window, gen, batch, DEFAULT_MISMATCH_RATE)
            prompt_chunks = -(-(cell.seq_len or 1) // window)
            work = ((decode.steps + gen - 1) * (batch + 32) + (decode.windows + prompt_chunks) * budget
                    + gen * budget)
    else:
        work = 64 * ((cell.rank or 1) + (cell.rank_b or 1))
    return float(work + CELL_OVERHEAD_TOKENS)
