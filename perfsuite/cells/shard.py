"""Split a cell list into N disjoint, balanced shards, so a grid can spread over several runners.

Greedy longest-processing-time: cells sorted by estimated cost (ties by id) go one by one to the
lightest shard. Deterministic for a given cell list and cost; the union of all shards is the whole
list; each shard keeps the grid's order so consecutive cells still share an adapted model. The cost
of a cell comes from its workload (:func:`perfsuite.workloads.estimated_cost`).
"""

from __future__ import annotations

import re
from typing import Callable

from perfsuite.cells.grid import Cell, select
from perfsuite.errors import PerfsuiteError


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' → (2, 4): the second of four shards, counted from 1."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise PerfsuiteError(f"shard {text!r} is not of the form I/N (e.g. 1/4)")
    i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= i <= n:
        raise PerfsuiteError(f"shard {text!r}: need 1 <= I <= N")
    return i, n


def shard_cells(cells: list[Cell], index: int, count: int, *, cost: Callable[[Cell], float]) -> list[Cell]:
    """The cells of shard ``index`` (1-based) of ``count``, in their original order."""
    loads = [0.0] * count
    owner: dict[str, int] = {}
    for cell in sorted(cells, key=lambda c: (-cost(c), c.id)):
        k = min(range(count), key=lambda s: (loads[s], s))
        loads[k] += cost(cell)
        owner[cell.id] = k
    return [c for c in cells if owner[c.id] == index - 1]


def run_cells(cells: list[Cell], selection: str | None, shard: tuple[int, int] | None, *,
              cost: Callable[[Cell], float]) -> list[Cell]:
    """The cells a run measures: ``cells`` after its selection (``--cells``), then its shard (index, count), if any.
    The plugin's session and the comparison's scope (:mod:`perfsuite.compare.scope`) both ask this."""
    cells = select(cells, selection)
    return shard_cells(cells, *shard, cost=cost) if shard else cells
