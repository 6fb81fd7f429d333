"""What a baseline can confirm: its sittings (days, reboots) and the smallest change one new run could be flagged for.

A baseline's runs recorded back to back share the machine's level of that hour and that boot; the next day, or
after a reboot, the same VM was measured 5-7 % faster or slower on every cell (docs/verdicts.md, "Baselines, verdicts and
A/B runs"). Their spread cannot contain that level, so a verdict against a baseline of one sitting cannot tell a
small change of the code from the machine's day: such a baseline says so, with the smallest change it could
confirm (Kalibera & Jones 2013 would add the day as a level of the design; recording runs on several days with
``perfsuite baseline update`` puts it into the spread). A baseline recorded under load, whose runs disagree so
much that only a huge change could be flagged, is flagged when recorded and in every comparison that uses it.

What one night can confirm is quoted at the gate's own level — the part's family of tests (α / N), spent over the
default re-measure budget, on the moderated spread each family's prior gives (:mod:`perfsuite.compare.moderated`),
for a cell confirmed by one re-measure (two current runs) — the very test a nightly makes, not α per test.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from perfsuite.compare.estimates import cell_metrics, judged, loop_key, run_estimate
from perfsuite.compare.family import method_groups
from perfsuite.compare.moderated import family_prior
from perfsuite.compare.stats import ALPHA, t_quantile
from perfsuite.formats.baseline import Baseline, BaselineRun

# A confirmed regression of a nightly has the night's run and one re-measure: what a quote of "one night can confirm"
# assumes, with α spent over the default budget of looks (perfsuite.compare.verdicts.REMEASURE, repeated here: this
# module sits below verdicts).
CONFIRMING_RUNS = 2
DEFAULT_LOOKS = 2

# Runs of one boot this close in time (hours) are one sitting: they share the machine's level of the moment.
SITTING_GAP_H = 6.0
# A baseline whose median detectable change (one night against it, over every judged test of every metric) is above
# this, in %, gates nothing useful: flagged when recorded and in every comparison that uses it.
NOISY_BASELINE_PCT = 20.0
# What one reboot or one day moved every cell of this project's VM by (docs/verdicts.md: 5-7 %): the day-to-day level a
# baseline of one sitting does not contain. Quoted, not used in a test.
DAY_TO_DAY_PCT = 7.0


@dataclass(frozen=True)
class BaselineQuality:
    runs: int
    sittings: int  # groups of runs on one boot, each run within SITTING_GAP_H of the previous
    boots: int  # distinct known boots (0: none recorded)
    first: str | None  # when the first and the last run were made
    last: str | None
    detectable_pct: dict  # metric -> median over cells of the smallest change one night could confirm (gate's level)
    too_noisy: bool
    tests: int = 0  # the family the quote is at: the baseline's judged tests
    level: float | None = None  # the per-test level quoted (α / tests / looks)

    def to_json(self) -> dict:
        return {"runs": self.runs, "sittings": self.sittings, "boots": self.boots, "first": self.first,
                "last": self.last, "detectable_pct": self.detectable_pct, "too_noisy": self.too_noisy,
                "noisy_limit_pct": NOISY_BASELINE_PCT, "tests": self.tests, "level": self.level}

    def lines(self) -> list[str]:
        return quality_lines(self.to_json())


def quality_lines(q: dict, *, reach: bool = True) -> list[str]:
    """What a reader must know about a baseline's reach, from :meth:`BaselineQuality.to_json`; ``reach=False``: without
    the smallest change one run could be flagged for (a report quotes one detectable change, the comparison's)."""
    found = ", ".join(f"{m} {v:.1f} %" for m, v in sorted(q["detectable_pct"].items()))
    level = (f" (the gate's level: p < {q['level']:.2g}, {q['tests']} tests, a re-measure confirming)"
             if q.get("level") else "")
    if not reach:
        what = "its spread is what the comparison's detectable change is made of"
    else:
        what = (f"a lone cell's change one night can confirm: {found}{level}" if found
                else "too few runs to measure its spread")
    span = f"{q['first'] or '?'} .. {q['last'] or '?'}"
    out = []
    if q["sittings"] <= 1:
        out.append(f"  baseline of {q['runs']} run(s) in one sitting ({span}): the machine's day-to-day and reboot "
                   f"shifts (up to {DAY_TO_DAY_PCT:g} % measured here) are not in its spread, so it cannot confirm a "
                   f"time change smaller than that; {what}. Add runs of other days: perfsuite baseline update")
    else:
        out.append(f"  baseline of {q['runs']} runs in {q['sittings']} sittings ({q['boots']} boot(s), {span}): "
                   f"day-to-day shifts are in its spread; {what}")
    if q["too_noisy"]:
        out.append(f"  ! baseline too noisy to gate anything useful (a change must exceed {q['noisy_limit_pct']:g} %): "
                   "recorded under load? re-record it on a quiet machine")
    return out


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def sittings(runs: list[BaselineRun], gap_h: float = SITTING_GAP_H) -> int:
    """How many sittings the runs were made in: a new one at a change of boot or a gap over ``gap_h`` hours.
    Runs without a time count with the run before them."""
    count, prev_time, prev_boot = 0, None, None
    for i, run in enumerate(sorted(runs, key=lambda r: r.when or "")):
        when = _time(run.when)
        new_boot = run.boot is not None and prev_boot is not None and run.boot != prev_boot
        gap = when is not None and prev_time is not None and abs((when - prev_time).total_seconds()) > gap_h * 3600
        if i == 0 or new_boot or gap:
            count += 1
        prev_time, prev_boot = when or prev_time, run.boot or prev_boot
    return count


def detectable_one_run(log_estimates: list[float], alpha: float = ALPHA, *, prior_s2: float = 0.0,
                       prior_df: float = 0.0, current_runs: int = 1) -> float | None:
    """The smallest change (%) ``current_runs`` new runs could be flagged for at level ``alpha`` against these runs'
    estimates: the moderated t's half-width, t(1 − α/2, d0 + d) · s̃ · √(1/M + 1/k), s̃² = (d0·s0² + d·s²)/(d0 + d)
    (no prior: Student's t on the k runs' own spread)."""
    k = len(log_estimates)
    d = k - 1
    if d + prior_df < 1 or k < 1:
        return None
    ss = float(np.var(log_estimates, ddof=0)) * k if k > 1 else 0.0
    var = (prior_df * prior_s2 + ss) / (prior_df + d) if prior_df > 0 else ss / d
    sd = math.sqrt(max(var, 0.0))
    return 100.0 * math.expm1(t_quantile(1.0 - alpha / 2.0, min(prior_df + d, 1e4)) * sd
                              * math.sqrt(1.0 / current_runs + 1.0 / k))


def assess(baseline: Baseline, alpha: float = ALPHA, looks: int = DEFAULT_LOOKS) -> BaselineQuality:
    """What ``baseline`` can confirm: its sittings, and per metric the median over cells of the smallest change one
    night confirms at the gate's level (see the module docstring)."""
    estimates: dict[tuple[str, str], dict[str, list[float]]] = {}
    loops: dict[tuple[str, str], dict[str, str]] = {}
    memory_tests = 0
    methods: dict[str, dict[str, int]] = {}  # workload -> adapter -> slow-down cells: the group tests
    for cid in baseline.cell_ids():
        recs = baseline.cell_runs(cid)
        metrics = cell_metrics(recs[-1])
        cell = recs[-1].cell
        for m in metrics:
            if not judged(m, metrics):
                continue
            if m == "memory":  # in the gate's family, not in the quote (a memory change is exact or absent)
                memory_tests += 1
                continue
            if (m == "slowdown" and cell.workload == "latency" and cell.adapter != "none" and cell.rank > 0
                    and recs[-1].get("timed_as") is None):
                per = methods.setdefault(cell.workload, {})
                per[cell.adapter] = per.get(cell.adapter, 0) + 1
            try:
                est = [e[0] for e in (run_estimate(r, m) for r in recs) if e is not None]
            except ValueError:
                continue  # bad samples are the comparison's error to report, not the assessment's
            family = (m, recs[-1].cell.workload)
            estimates.setdefault(family, {})[cid] = est
            loops.setdefault(family, {})[cid] = loop_key(recs[-1].cell)
    groups = sum(method_groups(per) for per in methods.values())
    tests = sum(len(v) for v in estimates.values()) + memory_tests + groups  # the gate's family (its Holm count)
    level = alpha / max(tests, 1) / max(looks, 1)
    found: dict[str, list[float]] = {}
    for family, cells in estimates.items():
        k = max(len(v) for v in cells.values())
        full = [cid for cid, v in cells.items() if len(v) == k]
        prior = family_prior(np.array([cells[c] for c in full]).reshape(len(full), k), [loops[family][c] for c in full])
        for est in cells.values():
            dd = detectable_one_run(est, level, prior_s2=prior.s2, prior_df=prior.df, current_runs=CONFIRMING_RUNS)
            if dd is not None:
                found.setdefault(family[0], []).append(dd)
    detectable = {m: statistics.median(v) for m, v in found.items()}
    whens = sorted(r.when for r in baseline.runs if r.when)
    return BaselineQuality(len(baseline.runs), sittings(baseline.runs), len({r.boot for r in baseline.runs if r.boot}),
                           whens[0] if whens else None, whens[-1] if whens else None, detectable,
                           _typical(found) > NOISY_BASELINE_PCT, tests, level if tests else None)


def _typical(found: dict[str, list[float]]) -> float:
    """The median detectable change over every test of the baseline, whatever its metric: what a typical cell can
    confirm. A metric of one noisy cell (the subspace analysis' time) must not flag a baseline whose hundred other
    tests gate well: flagged on any metric's median, a quiet 5-run smoke baseline was called 'recorded under load'."""
    pooled = [v for values in found.values() for v in values]
    return statistics.median(pooled) if pooled else 0.0
