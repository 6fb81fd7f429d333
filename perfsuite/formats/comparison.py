"""The comparison document: verdicts per cell and per metric, written by ``perfsuite compare``, ``run`` and ``ab``.

Format history of ``perfsuite_comparison`` (bump on any change a reader must know about; add an update step):
  1 — {baseline, compared (the one metric), cells: [{cell_id, verdict, metric, baseline, current, change_pct,
      ci_low_pct, ci_high_pct, p_value}], summary: {verdict: count}}.
  2 — several parts and metrics: {gating (whether any verdict here can fail the run), parts: [{profile, mode
      (gating | reference | ab | none), baseline, baseline_runs, current_runs, machine, baseline_machine,
      differences, hint}], cells: [{cell_id, part, verdict, moved (the metrics that changed), remeasured,
      metrics: [{metric, unit (% or pp), verdict, baseline, current, change, ci_low, ci_high, detectable,
      change_pct, ci_low_pct, ci_high_pct, p_value, df, noise_pct, baseline_runs, current_runs, [note],
      [outlier_runs], [with_reference: the r = 0 cell a time move shared with the plain model of its loop is judged on]}]}],
      summary}. ``change``, its interval ``ci_low``/``ci_high`` and ``detectable`` (the smallest change that
      would have been significant) are in the metric's unit: % of time, or percentage points of slow-down;
      the ``*_pct`` fields are the relative change of the compared quantity the gates test.
  3 — per-run error control: a gating or A/B part carries ``error_control`` (holm | bh | none), ``tests`` (the
      family size), ``alpha`` and ``per_test_alpha``; a metric entry carries ``p_adjusted`` (its p-value adjusted
      over the part's family: the verdict's gate) and ``se_log``; the metric ``norm_time`` (time over the loop's
      fixed torch probe) judges a cell's speed where recorded, the raw ``time`` then ``judged: false`` with
      verdict ``reference``. Older documents: each test stood alone (``error_control: none``).
  4 — the nightly that borrows strength: a metric entry may carry ``prior_df`` (degrees of freedom its family's
      prior lent: the moderated t), ``within_pct`` (unchanged: the change lies within ± that, the 1 − α interval's
      farthest end), ``more_runs`` (inconclusive: fresh runs that would decide it; null: the baseline needs more
      runs) and ``tolerance`` (deterministic outcomes, unit ``=``); verdict ``changed`` (a deterministic outcome —
      recompute %, mismatches, φ — differs: behaviour changed); metric ``memory`` (peak memory, %); a cell
      ``accepted`` (its changes acknowledged: they do not fail the run); a part mode ``environment`` (this machine's
      baseline with other software) with ``accepted``, ``looks`` (the re-measure budget α was spent over),
      ``groups`` (one adapter's slow-downs on every shape, each one test: {group, workload, metric, unit, cells,
      verdict, change_pct, ci_low_pct, ci_high_pct, p_value, p_adjusted, df, se_log, detectable, baseline_runs,
      current_runs, [remeasured]}) and ``priors`` (each family's prior and variance components). Nothing of
      version 3 changes meaning; ``outlier_runs`` (Dixon's screen, dropped) is no longer written.
  5 — missing cells that fail the run: a missing cell carries ``not_run`` (the status the run recorded for it: oom,
      no_device, outside_budget, ...; absent when the run has no record of the cell at all), and the document
      ``allow_missing`` (whether the caller let missing cells pass). Older documents: ``not_run`` read back from the
      note ("did not run (oom: ...)"), ``allow_missing`` false. Also optional from here: a re-measured metric (and
      group) carries ``p_fresh`` and ``change_fresh_pct`` — the re-measured runs on their own, the confirmation a
      regression needs (perfsuite.compare.sequential.confirmed).

Readers take the document as typed records (:class:`Comparison` of :class:`PartEntry` and :class:`CellVerdict`
of :class:`MetricVerdict`), checked on reading. Over 350 lines on purpose: the version history, its migrations
and the records that read the current version are one format, changed together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import Format


class ComparisonError(PerfsuiteError):
    pass


def _update_to_2(doc: dict) -> dict:
    """v1 → v2: one part (the baseline), each cell's one metric as a metric entry."""
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise ValueError("'cells' is not a list of verdicts")
    new_cells = []
    for c in cells:
        if not isinstance(c, dict):
            raise ValueError("a cell entry is not an object")
        metric = c.get("metric") or doc.get("compared") or "time"
        metric = {"time_ms": "time", "slowdown_pct": "slowdown", "recompute": "slowdown"}.get(metric, metric)
        base, cur = c.get("baseline"), c.get("current")
        change = (cur - base if metric == "slowdown" and base is not None and cur is not None else c.get("change_pct"))
        scale = 1.0 + base / 100.0 if metric == "slowdown" and base is not None else 1.0
        low, high = c.get("ci_low_pct"), c.get("ci_high_pct")
        entry = {"metric": metric, "unit": "pp" if metric == "slowdown" else "%", "verdict": c.get("verdict"),
                 "baseline": base, "current": cur, "change": change,
                 "ci_low": None if low is None else scale * low, "ci_high": None if high is None else scale * high,
                 "detectable": None, "change_pct": c.get("change_pct"),
                 "ci_low_pct": c.get("ci_low_pct"), "ci_high_pct": c.get("ci_high_pct"), "p_value": c.get("p_value"),
                 "df": None, "noise_pct": None, "baseline_runs": 1, "current_runs": 1}
        new_cells.append({"cell_id": c.get("cell_id"), "part": None, "verdict": c.get("verdict"),
                          "moved": [metric] if c.get("verdict") in ("regression", "improvement") else [],
                          "remeasured": 0, "metrics": [] if c.get("verdict") in ("new", "missing") else [entry]})
    part = {"profile": None, "mode": "gating", "baseline": doc.get("baseline"), "baseline_runs": 1, "current_runs": 1,
            "machine": None, "baseline_machine": None, "differences": [], "hint": None}
    return {"gating": True, "parts": [part], "cells": new_cells, "summary": doc.get("summary") or {}}


def _update_to_3(doc: dict) -> dict:
    """v2 → v3: every test was judged on its own p-value (no per-run control)."""
    parts = doc.get("parts")
    if not isinstance(parts, list):
        raise ValueError("'parts' is not a list")
    doc["parts"] = [p | {"error_control": "none"} if isinstance(p, dict) and p.get("mode") in ("gating", "ab") else p
                    for p in parts]
    for c in doc.get("cells") or []:
        for m in (c.get("metrics") or []) if isinstance(c, dict) else []:
            if isinstance(m, dict):
                m.setdefault("p_adjusted", m.get("p_value"))
                m.setdefault("se_log", None)
    return doc


def _update_to_4(doc: dict) -> dict:
    """v3 → v4: new optional fields only."""
    return doc


_NOT_RUN_NOTE = re.compile(r"did not run \((\w+): ")


def _update_to_5(doc: dict) -> dict:
    """v4 → v5: a missing cell's recorded status, from its note; missing cells were never allowed to fail."""
    for c in doc.get("cells") or []:
        if isinstance(c, dict) and c.get("verdict") == "missing" and isinstance(c.get("note"), str):
            found = _NOT_RUN_NOTE.match(c["note"])
            if found:
                c.setdefault("not_run", found[1])
    doc.setdefault("allow_missing", False)
    return doc


COMPARISON_FORMAT = Format("comparison", "perfsuite_comparison", 5,
                           {2: _update_to_2, 3: _update_to_3, 4: _update_to_4, 5: _update_to_5}, ComparisonError)


def check_comparison(doc: Any, where: str = "comparison") -> dict:
    """A comparison document of any known version, migrated and checked; ComparisonError (one line) otherwise."""
    doc = COMPARISON_FORMAT.upgrade(doc, where)
    if not isinstance(doc.get("cells"), list) or not all(isinstance(c, dict) for c in doc["cells"]):
        raise ComparisonError(f"{where}: 'cells' is not a list of verdicts")
    if not isinstance(doc.get("parts"), list):
        raise ComparisonError(f"{where}: 'parts' is not a list")
    return doc


def load_comparison(path: str | Path) -> dict:
    return check_comparison(COMPARISON_FORMAT.load(path), str(path))


def read_comparison(path: str | Path) -> "Comparison":
    """The comparison file at ``path`` as typed records (any known version, migrated)."""
    return Comparison.from_dict(COMPARISON_FORMAT.load(path), str(path))


# --- the document as typed records ----------------------------------------------------------------------------------
# Each record keeps the order of the keys it was read with (``keys``) and any key this perfsuite does not know
# (``extra``), so ``to_dict(from_dict(doc)) == doc`` and a file rewritten from its records is the same bytes.
# Optional keys (``note``, ``with_reference``, ``error_control``, ...) are None when absent and written only when
# present in the document read or set.

# Every verdict, in the order a reader needs them: what needs attention first. "reference": compared with a
# baseline of another machine, for information only (never a verdict on the change).
VERDICTS = ("regression", "changed", "missing", "inconclusive", "improvement", "new", "unchanged", "reference")
MODES = ("gating", "environment", "reference", "ab", "none")
UNITS = ("%", "pp", "=")  # "=": a deterministic outcome, compared exactly (perfsuite.compare.outcomes)
FAILING = ("regression", "changed")  # the verdicts that fail a run (exit 1) unless accepted
_NUMBER = "number"


def _check(value: Any, kind: Any, where: str, key: str, optional: bool) -> Any:
    """``value`` if it is of ``kind`` (a type, _NUMBER, or a tuple of allowed strings); else ComparisonError."""
    if value is None and optional:
        return None
    if kind == _NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(kind, tuple):
        ok = isinstance(value, str) and value in kind
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        want = f"one of {', '.join(kind)}" if isinstance(kind, tuple) else \
            "a number" if kind == _NUMBER else f"{'' if kind is int else 'a '}{getattr(kind, '__name__', kind)}"
        raise ComparisonError(f"{where}: {key!r} is {value!r}, not {want}")
    return value


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ComparisonError(f"{where}: {key!r} is {value!r}, not a list of strings")
    return tuple(value)


class _Entry:
    """Shared reading and writing of one JSON object; subclasses declare ``REQUIRED`` and ``OPTIONAL``."""

    REQUIRED: Mapping[str, Any] = {}
    OPTIONAL: Mapping[str, Any] = {}

    @classmethod
    def _read(cls, d: Any, where: str, **converted: Any) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise ComparisonError(f"{where}: expected an object, found {type(d).__name__}")
        missing = [k for k in cls.REQUIRED if k not in d and k not in converted]
        if missing:
            raise ComparisonError(f"{where}: no {missing[0]!r}")
        values: dict[str, Any] = {}
        for k, (kind, optional) in {**cls.REQUIRED, **cls.OPTIONAL}.items():
            if k in converted:
                values[k] = converted[k]
            elif k in d:
                values[k] = _check(d[k], kind, where, k, optional or k in cls.OPTIONAL)
        known = set(cls.REQUIRED) | set(cls.OPTIONAL)
        return values | {"keys": tuple(d), "extra": {k: v for k, v in d.items() if k not in known}}

    def _write(self, **converted: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        order = list(self.keys) + [k for k in (*self.REQUIRED, *self.OPTIONAL, *self.extra) if k not in self.keys]
        for k in order:
            if k in converted:
                out[k] = converted[k]
            elif k in self.REQUIRED or k in self.OPTIONAL:
                v = getattr(self, k)
                if v is not None or k in self.REQUIRED or k in self.keys:
                    out[k] = list(v) if isinstance(v, tuple) else v
            elif k in self.extra:
                out[k] = self.extra[k]
        return out


_KEEP = dict(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class MetricVerdict(_Entry):
    """One metric of one cell: its verdict, the values of both sides and the change, in the metric's unit."""

    metric: str
    unit: str
    verdict: str
    baseline: float | None = None
    current: float | None = None
    change: float | None = None  # % of time, or pp of slow-down
    ci_low: float | None = None
    ci_high: float | None = None
    detectable: float | None = None
    change_pct: float | None = None
    ci_low_pct: float | None = None
    ci_high_pct: float | None = None
    p_value: float | None = None
    df: float | None = None
    noise_pct: float | None = None
    baseline_runs: int = 0
    current_runs: int = 0
    se_log: float | None = None
    p_adjusted: float | None = None
    note: str | None = None
    outlier_runs: int | None = None
    with_reference: str | None = None
    judged: bool | None = None  # False: shown beside the metric that judges, not judged
    paired: bool | None = None
    prior_df: float | None = None  # degrees of freedom the family's prior lent (the moderated t)
    within_pct: float | None = None  # unchanged: within ± this
    more_runs: int | None = None  # inconclusive: fresh runs that would decide it
    tolerance: float | None = None  # a deterministic outcome: values this close are equal
    accepted: bool | None = None  # a change acknowledged (--accept-behaviour): shown, not failing
    p_fresh: float | None = None  # the re-measured runs on their own: a regression's confirmation
    change_fresh_pct: float | None = None
    keys: tuple[str, ...] = field(**_KEEP)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    REQUIRED = {"metric": (str, False), "unit": (UNITS, False), "verdict": (VERDICTS, False),
                **{k: (_NUMBER, True) for k in ("baseline", "current", "change", "ci_low", "ci_high", "detectable",
                                                "change_pct", "ci_low_pct", "ci_high_pct", "p_value", "df",
                                                "noise_pct")},
                "baseline_runs": (int, False), "current_runs": (int, False)}
    OPTIONAL = {"se_log": (_NUMBER, True), "p_adjusted": (_NUMBER, True), "note": (str, True),
                "outlier_runs": (int, True), "with_reference": (str, True), "judged": (bool, True),
                "paired": (bool, True), "prior_df": (_NUMBER, True), "within_pct": (_NUMBER, True),
                "more_runs": (int, True), "tolerance": (_NUMBER, True), "accepted": (bool, True),
                "p_fresh": (_NUMBER, True), "change_fresh_pct": (_NUMBER, True)}

    @property
    def is_judged(self) -> bool:
        return self.judged is not False

    @classmethod
    def from_dict(cls, d: Any, where: str = "metric") -> "MetricVerdict":
        return cls(**cls._read(d, where))

    def to_dict(self) -> dict[str, Any]:
        return self._write()


@dataclass(frozen=True)
class CellVerdict(_Entry):
    """One cell: its verdict (the most urgent of its judged metrics), the metrics that moved, each metric."""

    cell_id: str
    part: str | None
    verdict: str
    moved: tuple[str, ...] = ()
    remeasured: int = 0
    metrics: tuple[MetricVerdict, ...] = ()
    note: str | None = None  # why a cell is missing
    accepted: bool | None = None  # an environment change acknowledged (--accept-environment): shown, not failing
    not_run: str | None = None  # a missing cell the run recorded as not run: its status (oom, no_device, ...)
    keys: tuple[str, ...] = field(**_KEEP)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    REQUIRED = {"cell_id": (str, False), "part": (str, True), "verdict": (VERDICTS, False), "moved": (list, False),
                "remeasured": (int, False), "metrics": (list, False)}
    OPTIONAL = {"note": (str, True), "accepted": (bool, True), "not_run": (str, True)}

    @property
    def fails(self) -> bool:
        return self.verdict in FAILING and not self.accepted

    @classmethod
    def from_dict(cls, d: Any, where: str = "cell") -> "CellVerdict":
        if not isinstance(d, dict):
            raise ComparisonError(f"{where}: expected an object, found {type(d).__name__}")
        where = f"{where} {d.get('cell_id')}" if isinstance(d.get("cell_id"), str) else where
        metrics = d.get("metrics")
        if not isinstance(metrics, list):
            raise ComparisonError(f"{where}: 'metrics' is {metrics!r}, not a list")
        return cls(**cls._read(d, where, moved=_strings(d.get("moved"), where, "moved"),
                               metrics=tuple(MetricVerdict.from_dict(m, f"{where}: metric {i}")
                                             for i, m in enumerate(metrics))))

    def to_dict(self) -> dict[str, Any]:
        return self._write(metrics=[m.to_dict() for m in self.metrics])

    def metric(self, name: str) -> MetricVerdict | None:
        return next((m for m in self.metrics if m.metric == name), None)


@dataclass(frozen=True)
class PartEntry(_Entry):
    """One part of a run (a profile on one machine) and what it was compared with (``mode``)."""

    profile: str | None
    mode: str
    baseline: str | None = None
    baseline_runs: int = 0
    current_runs: int = 1
    machine: str | None = None
    baseline_machine: str | None = None
    differences: tuple[str, ...] = ()
    hint: str | None = None
    error_control: str | None = None  # gating and A/B parts from format 3 on
    tests: int | None = None
    alpha: float | None = None
    per_test_alpha: float | None = None
    baseline_quality: Mapping[str, Any] | None = None  # perfsuite.compare.quality's assessment, as written
    looks: int | None = None  # the re-measure budget α was spent over (format 4)
    groups: tuple[Mapping[str, Any], ...] | None = None  # one adapter's slow-downs on every shape, one test each
    priors: Mapping[str, Any] | None = None  # each family's prior (perfsuite.compare.moderated)
    accepted: bool | None = None  # environment mode: acknowledged, does not fail the run
    keys: tuple[str, ...] = field(**_KEEP)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    REQUIRED = {"profile": (str, True), "mode": (MODES, False), "baseline": (str, True),
                "baseline_runs": (int, False), "current_runs": (int, False), "machine": (str, True),
                "baseline_machine": (str, True), "differences": (list, False), "hint": (str, True)}
    OPTIONAL = {"error_control": (str, True), "tests": (int, True), "alpha": (_NUMBER, True),
                "per_test_alpha": (_NUMBER, True), "baseline_quality": (dict, True), "looks": (int, True),
                "groups": (list, True), "priors": (dict, True), "accepted": (bool, True)}

    @property
    def gates(self) -> bool:
        return self.mode in ("gating", "ab") or (self.mode == "environment" and not self.accepted)

    def failing_groups(self) -> list[Mapping[str, Any]]:
        """The group tests (an adapter on every shape) that called a regression, where this part gates."""
        return [g for g in (self.groups or ()) if g.get("verdict") == "regression"] if self.gates else []

    @classmethod
    def from_dict(cls, d: Any, where: str = "part") -> "PartEntry":
        diffs = d.get("differences") if isinstance(d, dict) else None
        groups = d.get("groups") if isinstance(d, dict) else None
        if groups is not None and not (isinstance(groups, list) and all(
                isinstance(g, dict) and isinstance(g.get("group"), str) and g.get("verdict") in VERDICTS
                for g in groups)):
            raise ComparisonError(f"{where}: 'groups' is not a list of group verdicts")
        converted = ({} if diffs is None else {"differences": _strings(diffs, where, "differences")}) | (
            {} if groups is None else {"groups": tuple(groups)})
        return cls(**cls._read(d, where, **converted))

    def to_dict(self) -> dict[str, Any]:
        return self._write()


@dataclass(frozen=True)
class Comparison:
    """A comparison document as typed records: its parts, its cells, and the count of cells per verdict."""

    gating: bool  # whether any verdict here can fail the run
    parts: tuple[PartEntry, ...]
    cells: tuple[CellVerdict, ...]
    summary: Mapping[str, int]
    allow_missing: bool = False  # the caller let the baseline's cells this run lacks pass (--allow-missing)
    keys: tuple[str, ...] = field(**_KEEP)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "comparison") -> "Comparison":
        """Any known version of the document, migrated and checked; ComparisonError (one line) otherwise."""
        doc = check_comparison(doc, where)
        summary = doc.get("summary")
        if not isinstance(summary, dict) or not all(isinstance(k, str) and isinstance(v, int)
                                                    and not isinstance(v, bool) for k, v in summary.items()):
            raise ComparisonError(f"{where}: 'summary' is not an object of counts")
        gating = _check(doc.get("gating"), bool, where, "gating", False)
        allow_missing = _check(doc.get("allow_missing", False), bool, where, "allow_missing", False)
        known = {COMPARISON_FORMAT.key, "gating", "parts", "cells", "summary", "allow_missing"}
        return cls(gating, tuple(PartEntry.from_dict(p, f"{where}: part {i}") for i, p in enumerate(doc["parts"])),
                   tuple(CellVerdict.from_dict(c, f"{where}: cell {i}") for i, c in enumerate(doc["cells"])),
                   dict(summary), allow_missing, tuple(doc), {k: v for k, v in doc.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The document as written (the current format version first)."""
        values = {"gating": self.gating, "parts": [p.to_dict() for p in self.parts],
                  "cells": [c.to_dict() for c in self.cells], "summary": dict(self.summary),
                  "allow_missing": self.allow_missing}
        order = [k for k in self.keys if k != COMPARISON_FORMAT.key] + [k for k in (*values, *self.extra)
                                                                       if k not in self.keys]
        return COMPARISON_FORMAT.stamp({k: values[k] if k in values else self.extra[k] for k in order})

    def count(self, verdict: str) -> int:
        return self.summary.get(verdict, 0)

    @property
    def has_regression(self) -> bool:
        """Whether this comparison fails its run: a confirmed regression or a changed behaviour not acknowledged, of a
        cell or of a group (an adapter on every shape)."""
        return any(c.fails for c in self.cells) or any(p.failing_groups() for p in self.parts)

    def allowing_missing(self, allow: bool) -> "Comparison":
        """This comparison with the caller's word on missing cells (``--allow-missing``)."""
        return replace(self, allow_missing=bool(allow))

    @property
    def unmeasured(self) -> tuple[CellVerdict, ...]:
        """The baseline's cells this run set out to measure (a selection or shard scopes them) and did not, in the
        parts that gate: absent from the run (removed, renamed, never collected), and, in an A/B part, also those
        the new side recorded as not run (both sides ran on one machine with the same options, so a skip there
        — an OOM, a budget, a device check — comes from the code under test). A cell a gating run recorded as not
        run (oom, no_device, outside_budget, ...) is reported with its reason and does not count: the run said
        why, and the baseline's machine is the same one. Empty when ``allow_missing``."""
        if self.allow_missing:
            return ()
        gates: dict[str | None, bool] = {}
        ab: set[str | None] = set()
        for p in self.parts:
            gates[p.profile] = gates.get(p.profile, False) or p.gates
            if p.mode == "ab":
                ab.add(p.profile)
        return tuple(c for c in self.cells if c.verdict == "missing" and gates.get(c.part)
                     and (c.not_run is None or c.part in ab))

    @property
    def fails(self) -> bool:
        """Whether this comparison fails the run (exit 1): :attr:`has_regression`, or a cell that should have been
        measured and was not (:attr:`unmeasured`)."""
        return self.has_regression or bool(self.unmeasured)

    @property
    def exit_code(self) -> int:
        return 1 if self.fails else 0


def as_comparison(doc: "Comparison | dict", where: str = "comparison") -> Comparison:
    """``doc`` as typed records: a :class:`Comparison` as it is, a document (any known version) read."""
    return doc if isinstance(doc, Comparison) else Comparison.from_dict(doc, where)
