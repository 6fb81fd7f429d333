"""Synthetic nightly histories: for the tests, for measuring the change-point detector, and for sizing the page.

Noise is log-normal between runs, at the levels measured on this project's shared 2-core CPU runner with the
smoke profile in separate processes: absolute time sd 3–10 % per cell, the paired slow-down ratio sd 0.5–3 %.
Optionally a share of nights is hit by a stall (10–50 % slower), as a descheduled runner does.
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
from perfsuite.history.changepoints import detect

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


def commit_of(night: int) -> str:
    """A stable 40-hex-digit fake commit for night ``night``."""
    return hashlib.sha1(f"perfsuite synthetic night {night}".encode()).hexdigest()


def night_records(cells: Iterable[Cell], night: int, rng: np.random.Generator, *, steps: Mapping[str, tuple[int, float]],
                  time_noise: float, ratio_noise: float, env: Mapping = SYNTHETIC_ENV) -> list[CellRecord]:
    """One night's records: each cell's time and slow-down, stepped by ``steps[cell_id] = (night, pct)``."""
    out = []
    for k, cell in enumerate(cells):
        night_at, pct = steps.get(cell.id, (None, 0.0))
        factor = 1.0 + pct / 100.0 if night_at is not None and night >= night_at else 1.0
        base = 0.2 * (1 + k % 17) * (cell.batch or 1)
        ratio = (1.0 if cell.adapter == "none" else 1.2) * factor * float(np.exp(rng.normal(0, ratio_noise)))
        time_ms = base * ratio * float(np.exp(rng.normal(0, time_noise)))
        samples = time_ms * np.exp(rng.normal(0, WITHIN_RUN_NOISE, SAMPLES_PER_NIGHT))
        ref = samples / ratio * np.exp(rng.normal(0, WITHIN_RUN_NOISE / 2, SAMPLES_PER_NIGHT))
        metrics = {"time_ms": float(np.median(samples)), "ref_time_ms": float(np.median(ref)),
                   "slowdown_pct": 100.0 * (ratio - 1.0), "samples_ms": samples.round(6).tolist(),
                   "ref_samples_ms": ref.round(6).tolist(), "rounds": SAMPLES_PER_NIGHT, "iqr_pct": 2.0}
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


def build_store(store_path: str | Path, cells: list[Cell], nights: int, *, steps: Mapping[str, tuple[int, float]] | None = None,
                time_noise: float = TIME_NOISE, ratio_noise: float = RATIO_NOISE, seed: int = 0,
                profile: str = "synthetic") -> list[str]:
    """Add ``nights`` synthetic nightly runs of ``cells`` to a store, through `history add`'s own path.
    Returns the commits, night by night."""
    from perfsuite.history.store import add_files

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="perfsuite-synth-") as tmp:
        for night in range(nights):
            recs = night_records(cells, night, rng, steps=steps or {}, time_noise=time_noise, ratio_noise=ratio_noise)
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
        hits += any(s.first - LOCATION_TOLERANCE <= at <= s.last + LOCATION_TOLERANCE and s.step_pct * step_pct > 0
                    for s in d.steps)
    return Rate(hits, trials)


def power(nights: int, noise: float, step_pct: float, trials: int, seed: int,
          stall_share: float = 0.0) -> tuple[Rate, float]:
    """(share of series whose step at 2/3 of the history is found with its night in the range, mean range width)."""
    rng = np.random.default_rng(seed)
    at, hits, widths = nights * 2 // 3, 0, []
    for _ in range(trials):
        d = detect(simulated_series(rng, nights, noise, step_pct=step_pct, at=at, stall_share=stall_share))
        found = [s for s in d.steps if s.first - LOCATION_TOLERANCE <= at <= s.last + LOCATION_TOLERANCE
                 and s.step_pct * step_pct > 0]
        hits += bool(found)
        widths += [s.last - s.first + 1 for s in found]
    return Rate(hits, trials), float(np.mean(widths)) if widths else float("nan")
