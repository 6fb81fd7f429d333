"""Per-run estimates: what one run of a cell says about each metric it is compared on (a log estimate and its
within-run standard error), before any verdict. :mod:`perfsuite.compare.verdicts` tests them between runs and
:mod:`perfsuite.compare.quality` judges what a baseline's runs can confirm; both read them from here."""

from __future__ import annotations

import math

import numpy as np

from perfsuite.compare.stats import bootstrap_se, check_samples
from perfsuite.formats.record import CellRecord
from perfsuite.measure.paired import PairedTiming


def probe_numerator(rec: CellRecord) -> tuple[float, ...] | None:
    """What the probe normalises: the cell's own rounds, or for recompute plain decoding's (the verified decode's
    own cost is the slow-down's job)."""
    return rec.ref_samples_ms if rec.cell.workload == "recompute" else rec.samples_ms


def probe_samples(rec: CellRecord) -> tuple[float, ...] | None:
    """The probe's rounds of the cell's loop, one per timed round, or None (older records, or none timed)."""
    probe, own = rec.probe_samples_ms, probe_numerator(rec)
    return probe if probe and own and len(probe) == len(own) else None


IN_LOOP_METRICS = ("norm_time", "slowdown")  # ratios of members of one loop: they depend on who else is in it


def cell_metrics(rec: CellRecord) -> tuple[str, ...]:
    """The metrics a cell is compared on: its time normalised by the probe when the loop timed one, its raw time,
    its slow-down when it has a paired reference that is not itself (the r = 0 latency cell is timed against
    itself: its slow-down is 0 by construction), and its peak memory where recorded."""
    plain_vs_plain = rec.cell.workload == "latency" and (rec.cell.adapter == "none" or rec.cell.rank == 0)
    own = ("norm_time", "time") if probe_samples(rec) is not None else ("time",)
    if rec.samples_ms is None:
        own = ()
    metrics = own if plain_vs_plain or rec.ref_samples_ms is None or not own else (*own, "slowdown")
    return (*metrics, "memory") if _peak(rec) is not None else metrics


def judged(metric: str, metrics: tuple[str, ...]) -> bool:
    """Raw time is only shown where the probe-normalised time judges the cell's speed."""
    return not (metric == "time" and "norm_time" in metrics)


def loop_members(rec: CellRecord) -> str | None:
    """Who shared the cell's timing loop (the models and the probe, as the workload recorded them), or None for a
    record from before loops were recorded — taken to be its shape group's full loop, what every run measures
    since (a selection times whole shape groups)."""
    value = rec.get("loop_members")
    return value if isinstance(value, str) else None


def loop_key(cell) -> str:
    """The loop a cell's rounds came from, for the noise structure of a family: a latency cell's shape group
    (every model of one shape, timed in one round-robin loop), else the cell's own loop."""
    if cell.workload == "latency":  # every field but the adapter's: a decode step's cache length, a quantized base...
        return "|".join(f"{k}={v}" for k, v in sorted(cell.to_dict().items()) if k not in ("adapter", "rank"))
    return cell.id


def _peak(rec: CellRecord) -> float | None:
    value = rec.get("peak_mem_bytes")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def log_values(rec: CellRecord, metric: str) -> np.ndarray | None:
    """The per-round (time) or per-pair-of-rounds (slow-down) logs whose median is the run's estimate."""
    if metric == "memory":
        peak = _peak(rec)
        return None if peak is None else np.array([math.log(peak)])
    if rec.samples_ms is None:
        return None
    if metric == "time":
        return np.log(np.asarray(rec.samples_ms, dtype=float))
    num, den = (probe_numerator(rec), probe_samples(rec)) if metric == "norm_time" else (rec.samples_ms,
                                                                                         rec.ref_samples_ms)
    if num is None or den is None:
        return None
    if metric == "norm_time":  # per round: a stalled round moves one ratio, not the geometric mean of its rotation
        return np.log(np.asarray(num, dtype=float)) - np.log(np.asarray(den, dtype=float))
    cycle = rec.cycle or 2  # the rotation of the loop the rounds came from (older records: pairs)
    return np.log(np.asarray(PairedTiming(tuple(num), tuple(den), cycle=cycle).pair_ratios, dtype=float))


def run_estimate(rec: CellRecord, metric: str) -> tuple[float, float] | None:
    """(log estimate, its within-run standard error) of one run, or None when the run lacks the metric.
    Samples that are not positive finite numbers are an error (ValueError), never dropped."""
    names = {"slowdown": ("samples_ms", "ref_samples_ms"), "norm_time": ("samples_ms", "ref_samples_ms",
                                                                        "probe_samples_ms")}.get(metric, ("samples_ms",))
    for name in names:
        if rec.get(name):
            check_samples(rec.get(name), name)
    values = log_values(rec, metric)
    if values is None or not values.size:
        return None
    if metric == "memory":  # one reading per run: its spread is the runs'
        return float(values[0]), 0.0
    return float(np.median(values)), bootstrap_se(values)


def shown(log_value: float, metric: str) -> float:
    """What a table shows: the time in ms, the time in probe times, the slow-down in %, or the peak memory in MiB."""
    if metric == "memory":
        return math.exp(log_value) / 2 ** 20
    return 100.0 * math.expm1(log_value) if metric == "slowdown" else math.exp(log_value)
