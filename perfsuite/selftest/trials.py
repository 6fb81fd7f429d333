"""Measure the detector where it runs: false alarms and detection power *between separate processes*.

Users meet the detector across processes — a run against a baseline recorded earlier, or A/B runs of two
commits — so that is what is measured. ``processes`` worker processes each measure one block per level (0 %:
nothing changed; and each planted slow-down), in a random order, with fresh models per block: a block is one
latency cell timed as a run times it, through the same timing loop
(:func:`perfsuite.measure.timing.round_robin`). Comparisons are then formed from blocks of *different*
processes and judged by the same function ``perfsuite compare`` and ``perfsuite ab`` use
(:func:`perfsuite.compare.verdicts.compare_metric`):

* ``ab``: ``runs`` processes' 0 % blocks (A) against ``runs`` other processes' blocks of a level (B);
* ``baseline``: ``runs`` processes' 0 % blocks (the baseline) against one other process's block of a level,
  a suspect regression re-measured with one more process's block, as ``perfsuite run`` does.

A/A comparisons (level 0 against level 0) give the false-alarm rate; the planted levels the detection rate.
The ``trials`` comparisons per level are drawn from the pool of processes, so they share processes and are
not independent: the intervals printed (Wilson, 95 %) are for independent trials and understate the
uncertainty; the pool's size is what bounds it.

The slow-downs are real extra work inside the measured call: ``k`` tiny tensor operations after the adapted
forward pass, ``k`` calibrated from the measured cost of one operation and of the forward pass; the effect
each ``k`` really has is measured on its own (interleaved, many rounds) and reported beside the nominal one.
The workers and the calibration are :mod:`perfsuite.selftest.bench`; this module draws and judges the comparisons.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from perfsuite.cells.grid import Cell
from perfsuite.compare.stats import wilson_interval
from perfsuite.compare.verdicts import CompareOptions, compare_metric, run_estimate
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.comparison import CellVerdict, MetricVerdict
from perfsuite.formats.record import CellRecord
from perfsuite.selftest.bench import Bench, _with_threads
from perfsuite.selftest.options import Level, SelftestOptions

@dataclass
class SelftestReport:
    options: SelftestOptions
    device: str
    forward_ms: float
    extra_op_us: float
    levels: list[Level]  # levels[0] is the A/A level (0 %)
    seconds: float
    processes: int

    def rate(self, level: Level, key: str, verdict: str = "regression") -> tuple[float, float, float]:
        n = len(level.verdicts.get(key, []))
        k = level.count(key, verdict)
        low, high = wilson_interval(k, n)
        return (k / n if n else 0.0), low, high

    def to_json(self) -> dict:
        return {"options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.options).items()},
                "device": self.device, "forward_ms": self.forward_ms, "extra_op_us": self.extra_op_us,
                "seconds": self.seconds, "processes": self.processes,
                "levels": [{"nominal_pct": lv.nominal_pct, "extra_ops": lv.extra_ops, "measured_pct": lv.measured_pct,
                            "realized_pct": lv.realized_pct,
                            "verdicts": {key: {v: lv.count(key, v) for v in sorted(set(vs))}
                                         for key, vs in lv.verdicts.items()},
                            "trials": {key: len(vs) for key, vs in lv.verdicts.items()}} for lv in self.levels]}

    def table(self) -> str:
        o = self.options
        lines = [f"perfsuite selftest on {self.device}: {o.model} {o.adapter} r{o.rank} b{o.batch} s{o.seq_len}, "
                 f"forward {self.forward_ms:.3f} ms, {o.rounds} rounds per block; {self.processes} separate worker "
                 f"processes in {self.seconds:.0f} s; {o.trials} comparisons per mode and level drawn from them",
                 (f"gates: Holm over the loop's tests at alpha {o.alpha:g} per run, as a run's part is judged; "
                  if o.loop else
                  f"gates: p < {o.alpha / o.family:.2g} (alpha {o.alpha:g} over a run of {o.family} tests, Holm's "
                  f"strictest step: what a lone moved cell must pass; t test on the between-run spread) and change >= "
                  f"{o.min_effect_pct:g}%; ") +
                 f"runs per side: {o.runs}; baseline mode re-measures a suspect {o.remeasure}x; 95% Wilson intervals "
                 "(the trials share processes: the true uncertainty is larger); effect: nominal; measured: in a "
                 "calibration loop; in runs: in the workers' blocks, the median over processes against their A/A block"]
        for mode in o.modes:
            for metric in (LOOP_KEYS if o.loop else o.metrics):
                key = f"{mode}/{metric}"
                what = "A/B" if mode == "ab" else "against a baseline"
                if o.loop:
                    head = (f"{what}, the whole {o.loop} loop per run (Holm over its tests, the shared-move rule): "
                            + ("runs with any regression" if metric == "run" else f"the measured cell {o.cell.id}"))
                else:
                    head = f"{what}, metric {metric}:"
                lines += ["", head,
                          f"  {'effect':>7}  {'measured':>8}  {'in runs':>8}  {'regression (detection) rate':<32}  "
                          f"{'improv.':>7}  {'inconcl.':>8}"]
                for lv in self.levels:
                    rate, low, high = self.rate(lv, key)
                    n = len(lv.verdicts.get(key, []))
                    measured = "-" if lv.measured_pct is None else f"{lv.measured_pct:+.1f}%"
                    realized = lv.realized_pct.get(metric)
                    realized = "-" if realized is None else f"{realized:+.1f}%"
                    label = "A/A" if lv.nominal_pct == 0 else f"+{lv.nominal_pct:g}%"
                    lines.append(f"  {label:>7}  {measured:>8}  {realized:>8}  {lv.count(key, 'regression'):>4}/{n:<4} = "
                                 f"{100 * rate:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]  "
                                 f"{lv.count(key, 'improvement'):>7}  {lv.count(key, 'inconclusive'):>8}")
        return "\n".join(lines)


def run_selftest(options: SelftestOptions, progress: Callable[[str], None] = lambda s: None,
                 workdir: str | Path | None = None) -> SelftestReport:
    """Calibrate the slow-downs, measure the pool of worker processes, then draw and judge the comparisons."""
    from perfsuite.measure.device import resolve_device, synchronize

    t0 = time.monotonic()
    device = resolve_device(options.device)
    bench = Bench(options, device)
    forward_ms, op_us = _with_threads(options, bench.calibrate)
    levels = [Level(0.0, 0)] + [Level(e, max(1, round(e / 100 * forward_ms * 1e3 / op_us)))
                                for e in options.effects_pct]
    for lv in levels[1:]:
        lv.measured_pct = _with_threads(options, lambda lv=lv: bench.measure_effect(lv.extra_ops))
        progress(f"calibrated +{lv.nominal_pct:g}%: {lv.extra_ops} extra ops, measured {lv.measured_pct:+.2f}%")
    synchronize(device)
    pool = _measure_pool(options, device, [lv.extra_ops for lv in levels], progress, workdir)
    for li, lv in enumerate(levels[1:], start=1):
        lv.realized_pct = {m: e for m in options.metrics if (e := realized_effect(pool, li, m, options.cell)) is not None}
    rng = np.random.default_rng(options.seed)
    cell = options.cell
    if options.loop:  # per-run verdicts of the whole loop: the run's own error control and shared-move rule
        compare_options = CompareOptions(alpha=options.alpha, min_effect_pct=options.min_effect_pct)
        cells = {c.id: c for c in bench.loop_cells()}
        for li, lv in enumerate(levels):
            for _ in range(options.trials):
                for mode in options.modes:
                    _loop_trial(mode, pool, li, rng, options, compare_options, cells, lv)
        return SelftestReport(options, device, forward_ms, op_us, levels, time.monotonic() - t0, len(pool))
    compare_options = CompareOptions(alpha=options.alpha / options.family, min_effect_pct=options.min_effect_pct)
    for li, lv in enumerate(levels):
        for _ in range(options.trials):
            for mode in options.modes:
                _trial(mode, pool, li, rng, options, compare_options, cell, lv)
    return SelftestReport(options, device, forward_ms, op_us, levels, time.monotonic() - t0, len(pool))


def _measure_pool(options: SelftestOptions, device: str, extra_ops: list[int], progress, workdir) -> list[dict]:
    rng = np.random.default_rng(options.seed + 1)
    pool = []
    with tempfile.TemporaryDirectory(prefix="perfsuite-selftest-", dir=workdir) as tmp:
        t0 = time.monotonic()
        for p in range(options.processes):
            spec = Path(tmp) / f"spec-{p}.json"
            out = Path(tmp) / f"blocks-{p}.json"
            spec.write_text(json.dumps({"options": asdict(options), "device": device, "extra_ops": extra_ops,
                                        "order": [int(i) for i in rng.permutation(len(extra_ops))]}))
            proc = subprocess.run([sys.executable, "-m", "perfsuite.selftest.bench", str(spec), str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise PerfsuiteError(f"selftest worker {p + 1} failed (exit {proc.returncode}): {tail[0]}")
            pool.append({int(k): v for k, v in json.loads(out.read_text()).items()})
            if (p + 1) % max(1, options.processes // 10) == 0:
                progress(f"worker processes: {p + 1}/{options.processes}, {time.monotonic() - t0:.0f} s")
    return pool


def realized_effect(pool: list[dict], level: int, metric: str, cell: Cell) -> float | None:
    """The effect ``level`` really had where the trials measured it, in %: the median over worker processes of its
    block's run estimate against the same process's A/A block (the calibration loop runs warmer and tighter)."""
    diffs = []
    for blocks in pool:
        a_block, b_block = blocks[0], blocks[level]
        if cell.id in a_block:  # a loop block: the measured cell's part of it
            a_block, b_block = a_block[cell.id], b_block[cell.id]
        a, b = run_estimate(_record(cell, a_block), metric), run_estimate(_record(cell, b_block), metric)
        if a is not None and b is not None:
            diffs.append(b[0] - a[0])
    return 100.0 * math.expm1(float(np.median(diffs))) if diffs else None


def _record(cell: Cell, block: dict) -> CellRecord:
    return CellRecord(cell, metrics=block)


def _trial(mode: str, pool: list[dict], level: int, rng, options: SelftestOptions, compare_options: CompareOptions,
           cell: Cell, lv: Level) -> None:
    """One comparison of ``mode`` for ``level``, from distinct processes of the pool."""
    r = options.runs
    picks = [int(i) for i in rng.choice(len(pool), size=2 * r if mode == "ab" else r + 1 + options.remeasure,
                                        replace=False)]
    base = [_record(cell, pool[i][0]) for i in picks[:r]]
    if mode == "ab":
        current = [_record(cell, pool[i][level]) for i in picks[r:]]
    else:
        current = [_record(cell, pool[picks[r]][level])]
    for metric in options.metrics:
        entry = MetricVerdict.from_dict(compare_metric(base, current, metric, compare_options))
        extra = list(picks[r + 1:]) if mode == "baseline" else []
        cur = list(current)
        while entry.verdict == "regression" and extra:  # a suspect: one more fresh process, as perfsuite run does
            cur.append(_record(cell, pool[extra.pop(0)][level]))
            entry = MetricVerdict.from_dict(compare_metric(base, cur, metric, compare_options))
        lv.verdicts.setdefault(f"{mode}/{metric}", []).append(entry.verdict)


LOOP_KEYS = ("run", "cell")  # per-run: any regression in the loop; per cell: the measured cell flagged


def _loop_part(cells: dict[str, Cell], block: dict):
    from perfsuite.compare.baselines import Part
    from perfsuite.measure.machine import Fingerprint

    recs = tuple(CellRecord(cells[cid], metrics=b) for cid, b in sorted(block.items()))
    return Part("selftest", Fingerprint.of({}, recs[0].cell), recs)


def _loop_trial(mode: str, pool: list[dict], level: int, rng, options: SelftestOptions,
                compare_options: CompareOptions, cells: dict[str, Cell], lv: Level) -> None:
    """One run of ``mode`` over the whole loop, judged as compare_part judges a run's part: the per-run verdict
    (any regression) and the measured cell's."""
    from perfsuite.compare.baselines import baseline_of
    from perfsuite.compare.verdicts import compare_part

    r = options.runs
    picks = [int(i) for i in rng.choice(len(pool), size=2 * r + 1 if mode == "ab" else r + 1 + options.remeasure,
                                        replace=False)]
    baseline = baseline_of([_loop_part(cells, pool[i][0]) for i in picks[:r]], name="A", keep=r)
    extra = list(picks[2 * r:] if mode == "ab" else picks[r + 1:])
    if mode == "ab":
        current = [_loop_part(cells, pool[i][level]) for i in picks[r:2 * r]]

        def both(ids):  # one more block: a fresh process of each side (the A side's a 0 % block)
            i = extra.pop(0)
            fresh = {rec.id: rec for rec in _loop_part(cells, pool[i][level]).records if rec.id in ids}
            again = {rec.id: rec for rec in _loop_part(cells, pool[i][0]).records if rec.id in ids}
            return again, fresh

        entries = compare_part(current, baseline, replace(compare_options, remeasure=1), gating=True,
                               remeasure_both=both)
    else:
        current = [_loop_part(cells, pool[picks[r]][level])]

        def one(ids):
            return {rec.id: rec for rec in _loop_part(cells, pool[extra.pop(0)][level]).records if rec.id in ids}

        entries = compare_part(current, baseline, replace(compare_options, remeasure=options.remeasure),
                               gating=True, remeasure=one)
    verdicts = {c.cell_id: c.verdict for c in map(CellVerdict.from_dict, entries)}
    lv.verdicts.setdefault(f"{mode}/run", []).append(
        "regression" if "regression" in verdicts.values() else "unchanged")
    lv.verdicts.setdefault(f"{mode}/cell", []).append(verdicts.get(options.cell.id, "missing"))

