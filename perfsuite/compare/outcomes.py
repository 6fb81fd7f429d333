"""Deterministic outcomes: what a cell computes, not how fast — compared exactly, a change its own verdict.

The seeds' measurements are not all times. A recompute cell's ``recompute_pct`` (LLM-42's Figure 13 quantity),
its ``mismatches`` and whether its tokens equal the fixed schedule's (``matches_fixed_schedule``), and a subspace
cell's φ on fixed seeds (``phi_means``, the mean of each φ grid) are functions of the code, the weights and the
machine's arithmetic: on one machine they repeat run to run. A change in them is a change of behaviour, whatever
the time did: verdict ``changed``, which fails a run like a regression unless accepted (``--accept-behaviour``, or a
baseline recorded after the intended change). Where the baseline's own runs disagree, the outcome is not
deterministic on that machine (a GPU's reductions, say): it is shown, with that note, and not judged.
"""

from __future__ import annotations

import math
from typing import Any

from perfsuite.formats.record import CellRecord

# Each outcome and the absolute tolerance two of its values may differ by and still be equal: integer counts and
# ratios of them exactly; φ (in [0, 1], float64 from fixed seeds) to what its stored rounding keeps.
OUTCOMES: dict[str, float] = {"recompute_pct": 1e-9, "mismatches": 0.0, "matches_fixed_schedule": 0.0,
                              "phi_means": 1e-6}


def _values(rec: CellRecord, name: str) -> list[float] | None:
    """The outcome as numbers (a bool as 0/1, a list as its items), or None where the record lacks it."""
    v: Any = rec.get(name)
    if isinstance(v, bool):
        return [float(v)]
    if isinstance(v, (int, float)) and math.isfinite(v):
        return [float(v)]
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                         and math.isfinite(x) for x in v):
        return [float(x) for x in v]
    return None


def _distance(a: list[float], b: list[float]) -> float:
    return math.inf if len(a) != len(b) else max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def outcome_entries(base: list[CellRecord], cur: list[CellRecord], *, gating: bool = True) -> list[dict]:
    """One metric entry per deterministic outcome both sides recorded: ``unchanged`` or ``changed`` (the current
    runs against the baseline's agreed value); not judged where the baseline's runs disagree; ``reference`` across
    machines (their arithmetic differs)."""
    out = []
    for name, tolerance in OUTCOMES.items():
        was = [v for v in (_values(r, name) for r in base) if v is not None]
        now = [v for v in (_values(r, name) for r in cur) if v is not None]
        if not was or not now:
            continue
        spread = max(_distance(was[0], v) for v in was)
        moved = max(_distance(was[0], v) for v in now)
        entry = {"metric": name, "unit": "=", "verdict": "changed" if moved > tolerance else "unchanged",
                 "baseline": was[0][0] if len(was[0]) == 1 else None,
                 "current": now[-1][0] if len(now[-1]) == 1 else None,
                 "change": moved if math.isfinite(moved) else None, "ci_low": None, "ci_high": None,
                 "detectable": None, "change_pct": None, "ci_low_pct": None, "ci_high_pct": None, "p_value": None,
                 "df": None, "noise_pct": None, "baseline_runs": len(was), "current_runs": len(now),
                 "tolerance": tolerance}
        if spread > tolerance:
            entry |= {"verdict": "reference", "judged": False,
                      "note": f"not deterministic here: the baseline's own runs differ by {spread:.3g}"}
        elif not gating:
            entry["verdict"] = "reference"
        out.append(entry)
    return out
