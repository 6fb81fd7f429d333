"""The workloads, one module each, turning a :class:`~perfsuite.cells.grid.Cell` into timed work and a record:
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
            # fast path: one step per output token (per-step overhead ~32 tokens); a fixed-shape verify pass
            # of `budget` tokens per window; the check against the fixed-schedule decode, one pass per token
            work = gen * (batch + 32) + (gen // window + 1) * budget + gen * budget
    else:
        work = 64 * ((cell.rank or 1) + (cell.rank_b or 1))
    return float(work + CELL_OVERHEAD_TOKENS)
