"""What one cell record becomes in the history store: a row per metric with the band of the night's median,
and the key of the series it continues."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from perfsuite.formats.record import CellRecord
from perfsuite.history.schema import EXACT_METRICS, METRICS  # noqa: F401 (METRICS: the name its readers import)
from perfsuite.measure.machine import SOFTWARE_FIELDS, Fingerprint
from perfsuite.measure.paired import median_interval_ranks



def median_interval(samples) -> tuple[float | None, float | None]:
    """Distribution-free 95 % interval of a median from order statistics (normal approximation of the binomial)."""
    try:
        s = np.sort(np.asarray(samples if samples is not None else (), dtype=float))
    except (TypeError, ValueError):  # malformed samples: the night keeps its value, without a band
        return None, None
    n = s.size
    if s.ndim != 1 or n < 3 or not np.all(np.isfinite(s)):
        return None, None
    lo, hi = median_interval_ranks(n)  # the same ranks as the timing loop's stopping rule
    return float(s[lo]), float(s[hi])


def metric_rows(rec: CellRecord) -> list[tuple[str, float, float | None, float | None]]:
    """(metric, value, ci_low, ci_high) for each of STEP_METRICS the record has as a positive number and each of
    EXACT_METRICS it has as a finite number ≥ 0 (0 recomputed tokens is a value, not a gap)."""
    rows = []
    time_ms = rec.get("time_ms")
    if _positive(time_ms):
        rows.append(("time_ms", float(time_ms), *median_interval(rec.samples_ms)))
    slowdown, ref = rec.get("slowdown_pct"), rec.ref_samples_ms
    if rec.cell.adapter != "none" and isinstance(slowdown, (int, float)) and _positive(1 + slowdown / 100.0):
        try:
            ratios = np.asarray(rec.samples_ms, dtype=float) / np.asarray(ref, dtype=float) if ref else None
        except (TypeError, ValueError):
            ratios = None
        rows.append(("slowdown_ratio", 1 + slowdown / 100.0, *median_interval(ratios)))
    if _positive(rec.get("peak_mem_bytes")):
        rows.append(("peak_mem_bytes", float(rec.get("peak_mem_bytes")), None, None))
    for metric in EXACT_METRICS:
        value = rec.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:  # a bool is 1 or 0
            rows.append((metric, float(value), None, None))
    return rows


def searched_metrics(cell, *, gpu: bool) -> tuple[str, ...]:
    """The metrics of ``cell`` the nightly searches for change points (the per-night family, see docs/history.md): time
    always, the slow-down ratio where the cell has a paired reference, peak memory on a GPU (None on the CPU)."""
    ratio = ("slowdown_ratio",) if cell.adapter != "none" else ()
    return ("time_ms", *ratio, *(("peak_mem_bytes",) if gpu else ()))

def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def series_key(fp: Fingerprint) -> str:
    """The fingerprint without software versions and without the boot id: what one series continues on."""
    d = {k: v for k, v in fp.to_dict().items() if k not in SOFTWARE_FIELDS}
    d["host"] = str(d["host"]).split("#boot-")[0] if d.get("host") else None
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def software_line(fp: dict) -> str:
    """The software of a fingerprint on one line, e.g. "torch 2.13.0+cpu, cuda 12.4"."""
    return ", ".join(f"{k.removesuffix('_version')} {fp.get(k)}" for k in SOFTWARE_FIELDS if fp.get(k))
