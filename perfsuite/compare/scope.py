"""Which of a baseline's cells a run was asked to measure: a selection (``--cells``) or a shard compares with
the baseline's matching cells only, so the cells it left out are not "missing".

A run's settings (the results' perfsuite section) name its profile, selection and shard; the cells they give are
the plugin's own (:meth:`perfsuite.plugin.session.SessionState.all_cells`), so this stays in step with how
cells are selected and sharded.
"""

from __future__ import annotations

from typing import Callable

from perfsuite.cells.grid import Cell, compile_selection
from perfsuite.errors import PerfsuiteError


def run_scope(runs: list[dict]) -> Callable[[Cell], bool] | None:
    """A predicate: was ``cell`` in what any of these runs (one dict of settings per results file) set out to
    measure? None when every run measured its whole profile."""
    if not any(r.get("selection") or r.get("shard") for r in runs):
        return None
    tests = [_one_run(r) for r in runs]
    return lambda cell: any(test(cell) for test in tests)


def _one_run(settings: dict) -> Callable[[Cell], bool]:
    selection, shard = settings.get("selection"), settings.get("shard")
    if not shard:
        return compile_selection(selection) if selection else (lambda cell: True)
    ids = _shard_ids(settings)
    if ids is None:  # a profile this perfsuite does not know: the selection alone (a shard's cells are unknown)
        return compile_selection(selection) if selection else (lambda cell: True)
    return lambda cell: cell.id in ids


def _shard_ids(settings: dict) -> frozenset[str] | None:
    from perfsuite.cells.grid import get_profile
    from perfsuite.cells.shard import parse_shard
    from perfsuite.plugin.session import SessionState

    try:
        profile = get_profile(settings.get("profile") or "")
        state = SessionState(profile=profile, device=settings.get("device") or "cpu", device_missing=None,
                             dtype=settings.get("dtype"), rounds=None, warmup=None,
                             selection=settings.get("selection"), shard=parse_shard(settings["shard"]))
        return frozenset(c.id for c in state.all_cells())
    except PerfsuiteError:
        return None
