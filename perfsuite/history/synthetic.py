"""Synthetic nightly histories: for the tests, for measuring the change-point detector, and for sizing the page.

Noise is log-normal between runs, at the levels measured on this project's shared 2-core CPU runner with the
smoke profile in separate processes: absolute time sd 3–10 % per cell, the paired slow-down ratio sd 0.5–3 %.
Optionally a share of nights is hit by a stall (10–50 % slower), as a descheduled runner does; an environment
upgrade (a new torch: every cell and its reference slower by one factor) and a changed deterministic outcome
(recompute_pct) can be planted.

The monitoring measurement (:func:`monitoring_false_issues`, :func:`monitoring_power`) watches a series night by
night as the nightly does: each night it calls :func:`perfsuite.history.looks.look`, the function
:func:`perfsuite.history.changes.series_changes` calls, on the series as it stood that night.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from perfsuite.cells.grid import Cell
from perfsuite.compare.stats import wilson_interval
from perfsuite.formats.record import SCHEMA_VERSION, CellRecord
from perfsuite.formats.results import results_document
from perfsuite.history.changepoints import Step, detect
from perfsuite.history.looks import look

TIME_NOISE = 0.03  # sd of log(time) between nights: the low end of what the smoke profile showed here
RATIO_NOISE = 0.015  # sd of log(slow-down ratio) between nights
WITHIN_RUN_NOISE = 0.01  # sd of one night's rounds around its median (draws its band)
SAMPLES_PER_NIGHT = 7
START = datetime(2026, 1, 1, 2, 17, tzinfo=timezone.utc)
SYNTHETIC_ENV = {"device": "cpu", "device_name": "cpu: synthetic", "host": "synthetic-host",
                 "cpu": "synthetic CPU", "cpu_isa": "AVX2", "cpu_cores": 2, "torch_version": "2.13.0+cpu",
                 "threads": 1}
# A step counts as found when a detected change point of the right sign has the step's night in its range.
LOCATION_TOLERANCE = 0
RECOMPUTE_PCT = 0.0  # a synthetic recompute cell's deterministic outcome (0 % recomputed), unless planted


@dataclass(frozen=True)
class Upgrade:
    """From night ``night`` on, the machine's software is ``torch`` and every cell and its reference take
    ``factor`` × as long (the slow-down ratio is unchanged: only raw time shows it)."""

    night: int
    factor: float
    torch: str


def commit_of(night: int) -> str:
    """A stable 40-hex-digit fake commit for night ``night``."""
    return hashlib.sha1(f"perfsuite synthetic night {night}".encode()).hexdigest()


def night_records(cells: Iterable[Cell], night: int, rng: np.random.Generator, *,
                  steps: Mapping[str, tuple[int, float]], time_noise: float, ratio_noise: float,
                  env: Mapping = SYNTHETIC_ENV, upgrade: Upgrade | None = None,
                  behaviour: Mapping[str, tuple[int, float]] | None = None) -> list[CellRecord]:
    """One night's records: each cell's time and slow-down, stepped by ``steps[cell_id] = (night, pct)``; after an
    ``upgrade`` every time scaled; a recompute cell's recompute_pct set by ``behaviour[cell_id] = (night, pct)``."""
    out = []
    upgraded = upgrade is not None and night >= upgrade.night
    env = {**env, "torch_version": upgrade.torch} if upgraded else env
    for k, cell in enumerate(cells):
        night_at, pct = steps.get(cell.id, (None, 0.0))
        factor = 1.0 + pct / 100.0 if night_at is not None and night >= night_at else 1.0
        base = 0.2 * (1 + k % 17) * (cell.batch or 1) * (upgrade.factor if upgraded else 1.0)
        ratio = (1.0 if cell.adapter == "none" else 1.2) * factor * float(np.exp(rng.normal(0, ratio_noise)))
        time_ms = base * ratio * float(np.exp(rng.normal(0, time_noise)))
        samples = time_ms * np.exp(rng.normal(0, WITHIN_RUN_NOISE, SAMPLES_PER_NIGHT))
        ref = samples / ratio * np.exp(rng.normal(0, WITHIN_RUN_NOISE / 2, SAMPLES_PER_NIGHT))
        metrics = {"time_ms": float(np.median(samples)), "ref_time_ms": float(np.median(ref)),
                   "slowdown_pct": 100.0 * (ratio - 1.0), "samples_ms": samples.round(6).tolist(),
                   "ref_samples_ms": ref.round(6).tolist(), "rounds": SAMPLES_PER_NIGHT, "iqr_pct": 2.0}
        if cell.workload == "recompute":
            night_at, recompute = (behaviour or {}).get(cell.id, (None, RECOMPUTE_PCT))
            metrics |= {"recompute_pct": recompute if night_at is not None and night >= night_at else RECOMPUTE_PCT,
                        "mismatches": 0, "matches_fixed_schedule": True}
        out.append(CellRecord(replace(cell, device="cpu"), env=dict(env), metrics=metrics))
    return out


def night_document(records: list[CellRecord], night: int, profile: str = "synthetic") -> dict:
    """A results document, as the plugin writes one, for the records of one night."""
    header = {"machine_info": {"node": "synthetic-host"}, "commit_info": {"id": commit_of(night), "branch": "main",
                                                                         "dirty": False},
              "datetime": (START + timedelta(days=night)).isoformat(), "pytest_benchmark_version": "5.2.3"}
    benches = [{"name": f"test_{r.cell.workload}[{r.cell.param_id}]", "extra_info": r.to_dict(),
                "stats": {"rounds": r.get("rounds")}} for r in records]
    settings = {"profile": profile, "device": "cpu", "dtype": "float32"}
    doc = results_document(header, benches, settings, [])
    assert doc["perfsuite"]["perfsuite_schema"] == SCHEMA_VERSION
    return doc


def build_store(store_path: str | Path, cells: list[Cell], nights: int, *,
                steps: Mapping[str, tuple[int, float]] | None = None, time_noise: float = TIME_NOISE,
                ratio_noise: float = RATIO_NOISE, seed: int = 0, profile: str = "synthetic",
                upgrade: Upgrade | None = None, behaviour: Mapping[str, tuple[int, float]] | None = None) -> list[str]:
    """Add ``nights`` synthetic nightly runs of ``cells`` to a store, through `history add`'s own path (``upgrade``,
    ``behaviour``: as :func:`night_records`). Returns the commits, night by night."""
    from perfsuite.history.store import add_files

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="perfsuite-synth-") as tmp:
        for night in range(nights):
            recs = night_records(cells, night, rng, steps=steps or {}, time_noise=time_noise, ratio_noise=ratio_noise,
                                 upgrade=upgrade, behaviour=behaviour)
            path = Path(tmp) / f"night-{night:04d}.json"
            path.write_text(json.dumps(night_document(recs, night, profile)))
            add_files(store_path, [path])
            path.unlink()
    return [commit_of(n) for n in range(nights)]


# --- measuring the detector ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    hits: int
    trials: int

    def text(self) -> str:
        lo, hi = wilson_interval(self.hits, self.trials)
        return f"{100.0 * self.hits / self.trials:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def simulated_series(rng: np.random.Generator, nights: int, noise: float, *, step_pct: float = 0.0,
                     at: int | None = None, stall_share: float = 0.0, autocorrelation: float = 0.0) -> np.ndarray:
    """Log-normal nightly noise of sd ``noise``, AR(1) with lag-1 ``autocorrelation`` (a machine's slow weeks; the
    marginal sd stays ``noise``), optional stalls and a step of ``step_pct`` from night ``at`` on."""
    y = rng.normal(0.0, noise, nights)
    if autocorrelation:
        e = rng.normal(0.0, noise * np.sqrt(1.0 - autocorrelation ** 2), nights)
        y[0] = rng.normal(0.0, noise)
        for i in range(1, nights):
            y[i] = autocorrelation * y[i - 1] + e[i]
    if stall_share:
        hit = rng.random(nights) < stall_share
        y[hit] += np.log1p(rng.uniform(0.1, 0.5, int(hit.sum())))
    if step_pct:
        y[at:] += np.log1p(step_pct / 100.0)
    return np.exp(y)


def found_at(step: Step, at: int, step_pct: float) -> bool:
    """Whether a detected ``step`` is the planted one: the right sign, the planted night in its range."""
    return (step.first - LOCATION_TOLERANCE <= at <= step.last + LOCATION_TOLERANCE
            and step.step_pct is not None and step.step_pct * step_pct > 0)


def false_change_points(nights: int, noise: float, trials: int, seed: int, stall_share: float = 0.0,
                        autocorrelation: float = 0.0) -> Rate:
    """A/A: series without any step that get at least one change point (provisional ones count)."""
    rng = np.random.default_rng(seed)
    hits = sum(bool(detect(simulated_series(rng, nights, noise, stall_share=stall_share,
                                            autocorrelation=autocorrelation)).steps)
               for _ in range(trials))
    return Rate(hits, trials)


def recent_power(nights: int, noise: float, step_pct: float, trials: int, seed: int, *, after: int = 4,
                 autocorrelation: float = 0.0) -> Rate:
    """Share of series whose step ``after`` nights before the end is reported (provisional counts) at its night."""
    rng = np.random.default_rng(seed)
    at, hits = nights - after, 0
    for _ in range(trials):
        d = detect(simulated_series(rng, nights, noise, step_pct=step_pct, at=at, autocorrelation=autocorrelation))
        hits += any(found_at(s, at, step_pct) for s in d.steps)
    return Rate(hits, trials)


def power(nights: int, noise: float, step_pct: float, trials: int, seed: int,
          stall_share: float = 0.0) -> tuple[Rate, float]:
    """(share of series whose step at 2/3 of the history is found with its night in the range, mean range width)."""
    rng = np.random.default_rng(seed)
    at, hits, widths = nights * 2 // 3, 0, []
    for _ in range(trials):
        d = detect(simulated_series(rng, nights, noise, step_pct=step_pct, at=at, stall_share=stall_share))
        found = [s for s in d.steps if found_at(s, at, step_pct)]
        hits += bool(found)
        widths += [s.last - s.first + 1 for s in found]
    return Rate(hits, trials), float(np.mean(widths)) if widths else float("nan")


# --- watching a series night by night (the nightly's filing decision) ---------------------------------------------


@dataclass(frozen=True)
class Monitoring:
    """Unchanged series watched for ``looks`` nights: those that opened a false change-point issue, the issues
    opened, and those that showed a step (on the page, filed or not) on at least one night."""

    with_issue: Rate
    issues: int
    shown: Rate
    looks: int


def _overlaps(a: Step, b: Step) -> bool:
    """As the nightly's issue script: a filed step whose range overlaps an issue's is that issue (updated)."""
    return a.first <= b.last and b.first <= a.last


def issues_opened(values) -> tuple[int, bool]:
    """(issues the nightly would open, whether any step was shown) watching ``values`` night by night: each night
    :func:`perfsuite.history.looks.look` on the nights so far; a filed step overlapping an issue's range updates
    it (its range becomes the step's), one that overlaps none opens another."""
    ranges: list[Step] = []
    shown = False
    for night in range(1, len(values) + 1):
        tonight = look(values[:night])
        shown |= bool(tonight.detection.steps)
        for step in tonight.filed:
            same = next((k for k, r in enumerate(ranges) if _overlaps(step, r)), None)
            if same is None:
                ranges.append(step)
            else:
                ranges[same] = step
    return len(ranges), shown


def monitoring_false_issues(looks: int, noise: float, trials: int, seed: int, *,
                            autocorrelation: float = 0.0) -> Monitoring:
    """Unchanged series, each watched from its first night for ``looks`` nights (see :func:`issues_opened`)."""
    rng = np.random.default_rng(seed)
    with_issue = issues = shown = 0
    for _ in range(trials):
        opened, saw = issues_opened(simulated_series(rng, looks, noise, autocorrelation=autocorrelation))
        with_issue += opened > 0
        issues += opened
        shown += saw
    return Monitoring(Rate(with_issue, trials), issues, Rate(shown, trials), looks)


def monitoring_power(looks: int, noise: float, step_pct: float, trials: int, seed: int, *,
                     autocorrelation: float = 0.0, shown_within: int = 4, filed_within: int = 8) -> tuple[Rate, Rate]:
    """(series whose step was shown within ``shown_within`` nights, series whose step was filed within
    ``filed_within``): a step at night ``looks - filed_within``, each night after it looked at as the nightly does."""
    rng = np.random.default_rng(seed)
    at, shown, filed = looks - filed_within, 0, 0
    for _ in range(trials):
        values = simulated_series(rng, looks, noise, step_pct=step_pct, at=at, autocorrelation=autocorrelation)
        was_shown = was_filed = False
        for after in range(1, filed_within + 1):  # nights at the new level
            tonight = look(values[:at + after])
            was_shown |= after <= shown_within and any(found_at(s, at, step_pct) for s in tonight.detection.steps)
            was_filed |= any(found_at(s, at, step_pct) for s in tonight.filed)
        shown += was_shown
        filed += was_filed
    return Rate(shown, trials), Rate(filed, trials)
