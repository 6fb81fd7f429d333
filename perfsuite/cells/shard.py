"""Split a cell list into N disjoint, balanced shards, so a grid can spread over several runners.

The unit of sharding is a *shape group* (:func:`shard_group`): the cells that share one
timing loop — every latency cell of one (implementation, model, dtype, device, batch, sequence length) —
stay on one shard, so a runner times the plain model of a shape once, builds its models once, and an
adapter's cell and the r = 0 cell its verdict leans on come from the same loop. Other cells are groups of
one. Greedy longest-processing-time over groups: groups sorted by estimated cost (ties by their first
cell's id) go one by one to the lightest shard. Deterministic for a given cell list and cost; the union of
all shards is the whole list; each shard keeps the grid's order. The cost of a cell comes from its workload
(:func:`perfsuite.workloads.estimated_cost`), a group's is the sum of its cells'.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
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


def shard_group(cell: Cell) -> tuple:
    """The cells that share one timing loop, hence one shard: a latency shape group (the same key as
    :func:`perfsuite.workloads.latency.group_key`, without importing torch); any other cell alone."""
    if cell.workload == "latency":
        return ("latency", cell.impl, cell.model, cell.dtype, cell.device, cell.batch, cell.seq_len, cell.mode,
                cell.phase, cell.kv_len, cell.quant)
    if cell.workload == "serving":  # perfsuite.workloads.serving.group_key: one loop per shape
        return ("serving", cell.impl, cell.model, cell.dtype, cell.device, cell.batch, cell.seq_len, cell.mode,
                cell.phase, cell.kv_len, cell.quant)
    return ("cell", cell.id)


def shard_cells(cells: list[Cell], index: int, count: int, *, cost: Callable[[Cell], float],
                group: Callable[[Cell], Hashable] | None = None) -> list[Cell]:
    """The cells of shard ``index`` (1-based) of ``count``, in their original order; the cells of one ``group``
    (default: :func:`shard_group`) always on one shard."""
    if group is None:
        group = shard_group
    groups: dict[Hashable, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(group(cell), []).append(cell)
    weighed = sorted(groups.values(), key=lambda members: (-sum(map(cost, members)), min(c.id for c in members)))
    loads = [0.0] * count
    owner: dict[str, int] = {}
    for members in weighed:
        k = min(range(count), key=lambda s: (loads[s], s))
        loads[k] += sum(map(cost, members))
        owner.update((c.id, k) for c in members)
    return [c for c in cells if owner[c.id] == index - 1]


def run_cells(cells: list[Cell], selection: str | None, shard: tuple[int, int] | None, *,
              cost: Callable[[Cell], float]) -> list[Cell]:
    """The cells a run measures: ``cells`` after its selection (``--cells``), then its shard (index, count), if any.
    The plugin's session and the comparison's scope (:mod:`perfsuite.compare.scope`) both ask this."""
    cells = select(cells, selection)
    return shard_cells(cells, *shard, cost=cost) if shard else cells
