"""Looking again: a suspect re-measured until decided, with α spent across the looks.

A nightly's first look (its one new run) screens; it does not decide. A test whose change points to a regression
and whose own p-value is below the trigger :data:`TRIGGER` is a *suspect*: its loop is re-measured in a
fresh process (on the machine that measured it), the new run joins the current side, and the test is made again —
up to the re-measure budget R, stopping once every suspect is decided. A regression is only ever called at a look
with a fresh run (look 1 … R), and only when the fresh runs on their own point the same way (:func:`confirmed`), so
one process hammered by a neighbour cannot fail a night by itself however far it is off.

**Error control across looks.** Each test ends at some look τ (a data-dependent stopping time), and may be called
a regression at any of the R looks it could reach. By the union bound, P(p at the look it ended ≤ c) ≤ Σᵢ P(pᵢ ≤ c)
≤ R·c, so R·p is a valid p-value whatever the stopping rule (Bonferroni spending, α/R per look — the simplest
group-sequential plan, and one that needs no assumption about how the looks are correlated). The part's Holm
step-down then runs over these "sequential" p-values: the chance that an unchanged run raises any false alarm
stays below α over every look together. Without a budget (R = 0: a merge job with no device, ``perfsuite compare``)
the first look decides, at α.

An improvement is reported at any look at the part's level (it never fails a run; it is not re-measured).
"""

from __future__ import annotations

import math

from perfsuite.compare.stats import adjust_p_values, decide, family_alpha, pct_of_log, t_quantile
from perfsuite.measure.paired import finite as _finite

# A test becomes a suspect when its change is a slow-down and its own (unadjusted) p-value is below this: wide enough
# that a real +35 % cell or +5 % method reaches a second look, narrow enough that an unchanged paper night
# re-measures little (about 1 % of a run's ~900 tests point the wrong way by chance: a few loops; measured by
# ``perfsuite selftest --grid paper --simulate``, docs/verdicts.md). The trigger decides only what is looked at again: a
# regression is still called at the part's level with α spent across the looks, whatever the trigger.
TRIGGER = 0.01
# How many more runs "could not tell" may say are needed before it says the baseline itself needs more runs.
MAX_MORE_RUNS = 20


def judged_tests(entries: dict[str, dict]) -> list[dict]:
    """Every metric entry that takes part in a part's error control: judged, tested between runs, a verdict."""
    return [m for e in entries.values() for m in e.get("metrics", []) if _tested(m)]


def _tested(m: dict) -> bool:
    """A test between runs: judged, with degrees of freedom (a cell of one run a side, described from its samples,
    has none) — whatever note it carries (a raw-time fallback's note must not take it out of the family)."""
    return (m.get("judged", True) and bool(m.get("df")) and m.get("p_value") is not None
            and m["verdict"] not in ("reference", "changed"))


def control(entries: dict[str, dict], groups: list[dict], *, alpha: float, min_effect_pct: float, method: str,
            looks: int, fresh: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()) -> dict:
    """Adjust every test of a part together and decide again: cells' metrics and groups, each p-value multiplied by
    the looks it may be called at (``looks``: the re-measure budget R, or 1 without one). With a budget, a regression
    is only called on a test whose cell was re-measured with that metric at least once (``fresh``: (cell, metric);
    a group: all its cells' tests): one run is a screen, and a suspect not yet re-measured stays ``inconclusive``.
    What was done, for the part's entry."""
    confirmable = [(m, cid) for cid, e in entries.items() for m in e.get("metrics", []) if _tested(m)]
    confirmable += [(g, None) for g in groups]
    family = [m for m, _ in confirmable]
    spend = max(1, looks)
    adjusted = adjust_p_values([min(1.0, spend * m["p_value"]) for m in family], method)
    level = family_alpha(alpha, len(family), method) / spend
    for (m, cid), p_adj in zip(confirmable, adjusted):
        m.pop("with_reference", None)
        m["p_adjusted"] = p_adj
        low = -math.inf if m["ci_low_pct"] is None else m["ci_low_pct"]
        high = math.inf if m["ci_high_pct"] is None else m["ci_high_pct"]
        verdict = decide(m["change_pct"], low, high, p_adj, alpha=alpha, min_effect_pct=min_effect_pct)
        members = [(cid, m["metric"])] if cid is not None else [(c, m["metric"]) for c in m.get("cells", [])]
        if verdict == "regression" and looks > 0 and not (all(t in fresh for t in members) and confirmed(m)):
            verdict = "inconclusive"
        m["verdict"] = verdict
        if m.get("se_log") is not None:
            scale = _scale(m)
            m["detectable"] = _finite(scale * pct_of_log(t_quantile(1.0 - level / 2.0, m["df"]) * m["se_log"]))
        _explain(m, level, min_effect_pct)
    return {"error_control": method, "tests": len(family), "alpha": alpha, "per_test_alpha": level,
            "looks": spend}


def confirmed(m: dict, trigger: float = TRIGGER) -> bool:
    """Whether the re-measured runs on their own point the same way (a slow-down, p < ``trigger``): the night's own
    run can be one process hammered by a neighbour (+60-165 % on one cell, seen), and averaged with clean re-measures
    it would still pass the part's level where the prior keeps the spread small. Asking this too only takes
    regressions away, so the error bound stands."""
    return m.get("p_fresh") is not None and m["p_fresh"] < trigger and (m.get("change_fresh_pct") or 0.0) > 0


def _scale(m: dict) -> float:
    return 1.0 + m["baseline"] / 100.0 if m.get("metric") == "slowdown" and m.get("baseline") is not None else 1.0


def _explain(m: dict, level: float, min_effect_pct: float) -> None:
    """What a reader is told instead of a bare "inconclusive": the change is bounded (``within_pct``: unchanged
    within ± that, the 1 − α interval's farthest end) or could not be told (``more_runs``: fresh runs of this cell
    that would make its change, if real, significant at the gate's level; None when no number of current runs would,
    and the baseline needs more runs)."""
    m.pop("more_runs", None)
    m.pop("within_pct", None)
    if m["verdict"] == "unchanged" and m["ci_low_pct"] is not None and m["ci_high_pct"] is not None:
        m["within_pct"] = max(abs(m["ci_low_pct"]), abs(m["ci_high_pct"]))
    elif m["verdict"] == "inconclusive" and m.get("se_log") and m.get("change_pct") is not None:
        m["more_runs"] = more_runs(m, level, min_effect_pct)


def more_runs(m: dict, level: float, min_effect_pct: float) -> int | None:
    """Fresh current runs needed (beyond the ones already made) before the observed change, or the minimum effect if
    it is larger, would reach the gate's level — from the test's own spread: se² = s²·(1/N + 1/M). None: the
    baseline's term alone is too wide (record more baseline runs)."""
    n, m_runs = m.get("baseline_runs") or 0, m.get("current_runs") or 0
    if n < 1 or m_runs < 1:
        return None
    target = math.log1p(max(abs(m["change_pct"]), min_effect_pct) / 100.0)
    sd = m["se_log"] / math.sqrt(1.0 / n + 1.0 / m_runs)
    q = t_quantile(1.0 - level / 2.0, m["df"])
    for extra in range(0, MAX_MORE_RUNS + 1):
        if q * sd * math.sqrt(1.0 / n + 1.0 / (m_runs + extra)) <= target:
            return max(extra, 1)
    return None


def suspects(entries: dict[str, dict], groups: list[dict], cells_of_group, trigger: float = TRIGGER) -> list[str]:
    """Cells to re-measure: a judged metric or a group they belong to moved toward a regression with a p-value below
    ``trigger`` and is not yet decided (a regression called, or cleared)."""
    out = set()
    for cid, e in entries.items():
        for m in e.get("metrics", []):
            if _open(m, trigger):
                out.add(cid)
    for g in groups:
        if _open(g, trigger):
            out.update(cells_of_group(g))
    return sorted(out)


def _open(m: dict, trigger: float) -> bool:
    return (m.get("judged", True) and m.get("p_adjusted") is not None and m["p_value"] < trigger
            and (m.get("change_pct") or 0.0) > 0 and m["verdict"] != "regression")
