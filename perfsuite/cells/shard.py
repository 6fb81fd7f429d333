"""Split a cell list into N disjoint, balanced shards, so a grid can spread over several runners.

Greedy longest-processing-time: cells sorted by estimated cost (ties by id) go
one by one to the lightest shard. Deterministic for a given cell list; the
union of all shards is the whole list; each shard keeps the grid's order so
consecutive cells still share an adapted model.
"""

from __future__ import annotations

import re

from perfsuite.errors import PerfsuiteError
from perfsuite.cells.grid import Cell

CELL_OVERHEAD_TOKENS = 256  # fixed cost of a cell (model copy, warm-up), in token-equivalents


def estimated_cost(cell: Cell) -> float:
    """Rough relative cost of a cell: tokens pushed through the model, plus a fixed overhead."""
    if cell.workload == "latency":
        work = (cell.batch or 1) * (cell.seq_len or 1)
    elif cell.workload == "recompute":
        from perfsuite.workloads.recompute import budget_violation, token_budget

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


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' → (2, 4): the second of four shards, counted from 1."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise PerfsuiteError(f"shard {text!r} is not of the form I/N (e.g. 1/4)")
    i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= i <= n:
        raise PerfsuiteError(f"shard {text!r}: need 1 <= I <= N")
    return i, n


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` (1-based) of ``count``, in their original order."""
    loads = [0.0] * count
    owner: dict[str, int] = {}
    for cell in sorted(cells, key=lambda c: (-estimated_cost(c), c.id)):
        k = min(range(count), key=lambda s: (loads[s], s))
        loads[k] += estimated_cost(cell)
        owner[cell.id] = k
    return [c for c in cells if owner[c.id] == index - 1]
