"""Which of a baseline's cells a run was asked to measure: a selection (``--cells``) or a shard compares with
the baseline's matching cells only, so the cells it left out are not "missing".

A run's settings (the results' perfsuite section) name its profile, selection and shard; the cells they give are
the plugin's own (:func:`perfsuite.cells.shard.run_cells`, which the session's ``all_cells`` asks too), so this
stays in step with how cells are selected and sharded.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from perfsuite.cells.grid import Cell, compile_selection
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.results import RunInfo


def run_scope(runs: Sequence[RunInfo | Mapping[str, Any]]) -> Callable[[Cell], bool] | None:
    """A predicate: was ``cell`` in what any of these runs (the settings of each results file) set out to
    measure? None when every run measured its whole profile."""
    runs = [r if isinstance(r, RunInfo) else RunInfo.from_dict(r) for r in runs]
    if not any(r.selection or r.shard for r in runs):
        return None
    tests = [_one_run(r) for r in runs]
    return lambda cell: any(test(cell) for test in tests)


def _one_run(settings: RunInfo) -> Callable[[Cell], bool]:
    selection, shard = settings.selection, settings.shard
    if not shard:
        return compile_selection(selection) if selection else (lambda cell: True)
    ids = _shard_ids(settings)
    if ids is None:  # a profile this perfsuite does not know: the selection alone (a shard's cells are unknown)
        return compile_selection(selection) if selection else (lambda cell: True)
    return lambda cell: cell.id in ids


def _shard_ids(settings: RunInfo) -> frozenset[str] | None:
    from perfsuite.cells.grid import get_profile, names_field
    from perfsuite.cells.shard import parse_shard, run_cells
    from perfsuite.workloads import estimated_cost

    try:
        profile = get_profile(settings.profile or "")
        cells = profile.cells(device=settings.device or "cpu", dtype=settings.dtype,
                              all_modes=names_field(settings.selection, "mode"))  # opt-in modes, when named
        chosen = run_cells(cells, settings.selection, parse_shard(settings.shard or ""), cost=estimated_cost)
        return frozenset(c.id for c in chosen)
    except PerfsuiteError:
        return None
