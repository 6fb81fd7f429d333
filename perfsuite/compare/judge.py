"""One part judged: every test of a run part (as :class:`~perfsuite.compare.family.Test` records) → verdicts.

The order of the work: each family's prior (:mod:`perfsuite.compare.moderated`), each test's moderated t and each
group's (:mod:`perfsuite.compare.family`), the part's error control over all of them with α spent across the looks
(:mod:`perfsuite.compare.sequential`), the shared-move rule, then — where a suspect can be re-measured — the looks
again, until every suspect is decided or the budget is spent. :mod:`perfsuite.compare.verdicts` calls it with the
tests of real records; :mod:`perfsuite.selftest.grid` with simulated ones, so what the grid self-test measures is this.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from perfsuite.cells.grid import Cell
from perfsuite.compare.family import Test, group_entries, metric_entry, priors
from perfsuite.compare.moderated import Prior
from perfsuite.compare.sequential import control, suspects
from perfsuite.compare.stats import ALPHA, ERROR_CONTROL, ERROR_CONTROLS, MIN_EFFECT_PCT
from perfsuite.errors import PerfsuiteError

TIME_METRICS = ("norm_time", "time")  # the metrics that judge a cell's own speed: whichever it has, first first
# Suspect regressions are re-measured up to this many times (in fresh processes) by default: the budget of looks.
REMEASURE = 2
# What a cell's verdict is when its metrics disagree: the first of these that any metric has.
CELL_VERDICT_ORDER = ("regression", "changed", "improvement", "inconclusive", "unchanged", "reference")


class CompareError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class CompareOptions:
    alpha: float = ALPHA  # two-sided significance level of a run part's family of tests
    min_effect_pct: float = MIN_EFFECT_PCT  # smallest change called a regression or an improvement
    remeasure: int = 0  # the budget of looks: a suspect re-measured up to this many times (fresh processes)
    error_control: str = ERROR_CONTROL  # how one part's tests share α: see perfsuite.compare.stats.ERROR_CONTROLS
    accept_environment: bool = False  # a baseline of this machine with other software compares without failing
    accept_behaviour: bool = False  # a changed deterministic outcome is shown without failing (an intended change)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise CompareError(f"alpha must be between 0 and 1, not {self.alpha}")
        if not self.min_effect_pct >= 0:
            raise CompareError(f"the minimum effect must be >= 0 %, not {self.min_effect_pct}")
        if self.remeasure < 0:
            raise CompareError(f"remeasure must be >= 0, not {self.remeasure}")
        if self.error_control not in ERROR_CONTROLS:
            raise CompareError(f"unknown error control {self.error_control!r}; use {', '.join(ERROR_CONTROLS)}")


def cell_verdict(metric_verdicts: list[str]) -> str:
    for v in CELL_VERDICT_ORDER:
        if v in metric_verdicts:
            return v
    return "inconclusive"


def _time_entry(entry: dict) -> dict | None:
    """The judged time-like metric entry of a cell (probe-normalised time where there is one, else raw time)."""
    metrics = {m["metric"]: m for m in entry.get("metrics", [])}
    return next((metrics[m] for m in TIME_METRICS if m in metrics and metrics[m].get("judged", True)), None)


def _refresh(entry: dict) -> None:
    judged_verdicts = [m["verdict"] for m in entry["metrics"] if m.get("judged", True)]
    entry["verdict"] = cell_verdict(judged_verdicts) if entry["metrics"] else entry["verdict"]
    entry["moved"] = [m["metric"] for m in entry["metrics"]
                      if m.get("judged", True) and m["verdict"] in ("regression", "improvement", "changed")]


def attribute_shared_moves(entries: dict[str, dict], cells: dict[str, Cell],
                           runs_of: dict[str, frozenset[int]] | None = None) -> None:
    """Judge a move of the plain model once, on its own r = 0 cell, not again on every adapter of its loop.

    A latency cell whose time moved while its slow-down against the plain model of the same loop did not has
    moved *with* that plain model: the cause is shared by the loop — the plain model, the framework, the machine,
    or, on a CPU, another cell of the loop through process-wide state (measured: a LoRA change moved its loop's
    other cells by 5-7 %; docs/verdicts.md, "Cells of one loop share a process"). The adapter's time entry becomes
    ``unchanged`` with ``with_reference`` naming the r = 0 cell only when that cell carries the verdict instead:
    it was measured in the same loop of the same runs (``runs_of``: cell id → the current runs that have it; an
    adapter's runs must all have it) and its own time was judged a move in the same direction. Otherwise — r = 0
    not selected (``--cells``), out of memory, unmoved or inconclusive — the adapter keeps its own verdict: a
    regression is never hidden behind a cell that did not report it. Recompute cells keep theirs: their
    reference, plain decoding, is not a cell.
    """
    for cid, entry in entries.items():
        cell = cells.get(cid)
        if cell is None or cell.workload != "latency" or cell.adapter == "none" or cell.rank == 0:
            continue
        ref_id = replace(cell, adapter="none", rank=0).id
        ref_entry = entries.get(ref_id)
        metrics = {m["metric"]: m for m in entry["metrics"]}
        time, slowdown = _time_entry(entry), metrics.get("slowdown")
        if not (ref_entry and ref_id in cells and time and slowdown and slowdown["verdict"] == "unchanged"
                and time["verdict"] in ("regression", "improvement")):
            continue
        if runs_of is not None and not runs_of.get(cid, frozenset()) <= runs_of.get(ref_id, frozenset()):
            continue  # the r = 0 cell was not timed in every loop this adapter was
        ref_time = _time_entry(ref_entry)
        if ref_time is None or ref_time["verdict"] != time["verdict"]:
            continue  # the plain model did not report the move: the adapter must
        time["verdict"], time["with_reference"] = "unchanged", ref_id
        _refresh(entry)


def control_errors(entries: dict[str, dict], options: CompareOptions) -> dict:
    """One look's per-run error control over a part's cell entries (no groups, no re-measure budget): every judged
    test adjusted together and decided again (:func:`perfsuite.compare.sequential.control`)."""
    done = control(entries, [], alpha=options.alpha, min_effect_pct=options.min_effect_pct,
                   method=options.error_control, looks=0)
    for e in entries.values():
        if e.get("metrics"):
            _refresh(e)
    return done


def judge(tests: list[Test], cells: dict[str, Cell], options: CompareOptions, *, base_runs: int, gating: bool = True,
          paired: bool = False, runs_of: dict[str, frozenset[int]] | None = None,
          more: Callable[[list[str]], tuple[dict, dict | None]] | None = None,
          extra: dict[str, list[dict]] | None = None, looks: int | None = None,
          fresh: set[tuple[str, str]] | None = None) -> tuple[dict[str, dict], list[dict], dict]:
    """Every test of one part → (cell entries by id, group entries, what the error control did).

    ``base_runs``: the baseline's runs (its matrix's columns); ``more``: re-measures the suspects' cells once more,
    returning for each cell its metrics' fresh log estimates and their within-run errors (``{metric: (est, se)}``)
    of the current side, and of the baseline side too (A/B: one more block) or None; called at most ``looks``
    times; ``extra``: entries that are not tests between runs (a cell's deterministic outcomes), added to its
    metrics; ``looks``: the budget α is spent over (default: the options' ``remeasure`` where ``more`` can
    re-measure, else 0); ``fresh``: (cell, metric) tests whose current runs already include a re-measure (a merge of a
    shard's).
    Records and simulations both come here."""
    by_cell: dict[str, list[Test]] = {}
    for t in tests:
        by_cell.setdefault(t.cell_id, []).append(t)
        if t.initial is None:
            t.initial = len(t.current)  # the night's own runs; what a look adds are re-measures
    family_priors = priors(tests, base_runs)
    runs_of = {cid: frozenset(v) for cid, v in (runs_of or {}).items()}
    if looks is None:
        looks = options.remeasure if more is not None else 0
    looks = looks if gating else 0
    fresh = set(fresh or ())
    lost: set[str] = set()

    def entries_of(cids) -> dict[str, dict]:
        out = {}
        for cid in cids:
            ms = []
            for t in by_cell[cid]:
                m = metric_entry(t, family_priors.get(t.family, Prior.none()), alpha=options.alpha,
                                 min_effect_pct=options.min_effect_pct, paired=paired)
                if not t.judged:
                    m["judged"], m["verdict"] = False, "reference"
                elif not gating:
                    m["verdict"] = "reference"
                ms.append(m)
            ms += (extra or {}).get(cid, [])
            verdicts = [m["verdict"] for m in ms if m.get("judged", True)]
            out[cid] = {"verdict": cell_verdict(verdicts) if ms else "reference",
                        "moved": [m["metric"] for m in ms
                                  if m.get("judged", True) and m["verdict"] in ("regression", "improvement", "changed")],
                        "metrics": ms}
        return out

    entries = entries_of(by_cell)
    groups = group_entries(tests, family_priors, alpha=options.alpha, min_effect_pct=options.min_effect_pct) \
        if gating and not paired else []
    done: dict = {}

    def decide_all() -> None:
        if gating:
            done.update(control(entries, groups, alpha=options.alpha, min_effect_pct=options.min_effect_pct,
                                method=options.error_control, looks=looks, fresh=fresh))
            for e in entries.values():
                if e.get("metrics"):
                    _refresh(e)
        attribute_shared_moves(entries, cells, runs_of)

    decide_all()
    members = {g["group"]: g["cells"] for g in groups}
    for look in range(looks if more is not None else 0):
        todo = [c for c in suspects(entries, groups, lambda g: members[g["group"]]) if c not in lost]
        if not todo:
            break
        new, new_base = more(todo)
        new_run = max((max(v, default=-1) for v in runs_of.values()), default=-1) + 1
        for cid in todo:
            if cid not in new or (new_base is not None and cid not in new_base):
                lost.add(cid)  # the re-measure did not produce it (crashed, out of memory): it stays unconfirmed
                continue
            for t in by_cell[cid]:
                if t.metric in new[cid] and (new_base is None or t.metric in new_base[cid]):
                    est, se = new[cid][t.metric]
                    t.current.append(est)
                    t.errors.append(se)
                    if new_base is not None:
                        est, se = new_base[cid][t.metric]
                        t.base[base_runs + look] = est
                        t.errors.append(se)
                    fresh.add((cid, t.metric))  # only a test that got its fresh run can be confirmed
            runs_of[cid] = runs_of.get(cid, frozenset()) | {new_run}
        kept = {g["group"]: g for g in groups}
        entries.update(entries_of(todo))
        for cid in todo:
            entries[cid]["remeasured"] = look + 1
            if cid in lost:
                entries[cid]["note"] = "a re-measure did not produce it (see the re-measure's log): unconfirmed"
        groups[:] = [g | {"remeasured": kept[g["group"]].get("remeasured", 0)} for g in
                     group_entries(tests, family_priors, alpha=options.alpha, min_effect_pct=options.min_effect_pct)]
        for g in groups:
            if set(g["cells"]) & set(todo):
                g["remeasured"] = look + 1
        decide_all()
    if gating:
        done["priors"] = {f"{m}/{w}": p.to_json() for (m, w), p in sorted(family_priors.items())}
    return entries, groups, done
