"""Measure the detector itself on this machine: false alarms over A/A comparisons, and power for real slow-downs.

Each trial measures a *baseline* block and then, in a random order, one
*current* block per effect size — 0 % (nothing changed: an A/A comparison) and
each requested slow-down — and compares every current block with the baseline
through the very function ``perfsuite compare`` uses. A block is what one cell
of a benchmark run is: fresh model copies (new memory, as in a new run), a few
warm-up rounds, then ``rounds`` rounds of the r = 0 model and the adapted one,
interleaved in alternating order as ``perfsuite.timing.paired_benchmark`` does.
A suspect regression is re-measured as ``perfsuite compare --remeasure`` would.

The slow-downs are real extra work inside the measured function: ``k`` tiny
tensor operations after the adapted forward pass, ``k`` calibrated from the
measured cost of one operation and of the forward pass; the effect each ``k``
really has is then measured on its own (interleaved, many rounds) and reported
beside the nominal one.

Blocks measured seconds apart drift less than runs made days apart, so these
rates are the best case for this machine's run-to-run noise, and they change
with the load other jobs put on the machine: run it more than once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from perfsuite.compare.verdicts import REMEASURE, CompareOptions, compare_records, confirm
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT, wilson_interval
from perfsuite.timing import resolve_device, synchronize, timed_call
from perfsuite.workloads.models import ModelCache

THREADS_NOTE = ("one thread: the tiny smoke cell gains nothing from more, and on a shared 2-core runner two OpenMP "
                "threads stall for whole scheduler slices (measured under load: median 0.3 ms, but 10-40 % of calls "
                "200-700 ms); run the suite the same way, OMP_NUM_THREADS=1")
EXTRA_OP_NUMEL = 64  # elements of the tensors the extra work adds: small, so it never wakes torch's thread pool
CALIBRATION_OPS = 50  # extra operations timed together when calibrating the cost of one


@dataclass(frozen=True)
class SelftestOptions:
    trials: int = 300  # A/A comparisons, and comparisons per effect size (300: 0 false alarms bound the rate at 1.3 %)
    rounds: int = 30  # timed rounds per block: the smoke profile's rounds per cell
    warmup: int = 3
    effects_pct: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0)
    metrics: tuple[str, ...] = ("slowdown", "time")
    device: str = "auto"
    model: str = "tiny"
    adapter: str = "lora"
    rank: int = 8
    batch: int = 1
    seq_len: int = 32
    dtype: str = "float32"
    alpha: float = ALPHA
    min_effect_pct: float = MIN_EFFECT_PCT
    remeasure: int = REMEASURE
    calibration_rounds: int = 300
    threads: int = 1  # torch CPU threads while measuring; 0 leaves torch's setting (see THREADS_NOTE)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trials < 1 or self.rounds < 2 or self.warmup < 0 or self.calibration_rounds < 10 or self.threads < 0:
            raise ValueError("need trials >= 1, rounds >= 2, warmup >= 0, calibration_rounds >= 10, threads >= 0")
        if any(e <= 0 for e in self.effects_pct):
            raise ValueError("effect sizes must be positive (%)")


@dataclass
class Level:
    """One effect size: the extra work that makes it, and what the trials decided."""

    nominal_pct: float
    extra_ops: int
    measured_pct: float | None = None  # the slow-down the extra work really causes, measured on its own
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # metric -> one verdict per trial
    estimates: dict[str, list[float]] = field(default_factory=dict)  # metric -> estimated change_pct per trial

    def count(self, metric: str, verdict: str) -> int:
        return sum(v == verdict for v in self.verdicts.get(metric, []))


@dataclass
class SelftestReport:
    options: SelftestOptions
    device: str
    forward_ms: float  # median time of the measured function
    extra_op_us: float  # measured cost of one extra operation
    levels: list[Level]  # levels[0] is the A/A level (0 %)
    seconds: float
    blocks: int
    threads: int  # torch CPU threads while measuring

    def rate(self, level: Level, metric: str, verdict: str = "regression") -> tuple[float, float, float]:
        n = len(level.verdicts.get(metric, []))
        k = level.count(metric, verdict)
        low, high = wilson_interval(k, n)
        return (k / n if n else 0.0), low, high

    def to_json(self) -> dict:
        return {
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options.__dict__.items()},
            "device": self.device, "forward_ms": self.forward_ms, "extra_op_us": self.extra_op_us,
            "seconds": self.seconds, "blocks": self.blocks, "threads": self.threads,
            "levels": [{"nominal_pct": lv.nominal_pct, "extra_ops": lv.extra_ops, "measured_pct": lv.measured_pct,
                        "verdicts": {m: {v: lv.count(m, v) for v in sorted(set(vs))} for m, vs in lv.verdicts.items()},
                        "trials": {m: len(vs) for m, vs in lv.verdicts.items()},
                        "median_estimate_pct": {m: float(np.median(es)) if es else None
                                                for m, es in lv.estimates.items()}}
                       for lv in self.levels],
        }

    def table(self) -> str:
        o = self.options
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        lines = [f"perfsuite selftest on {self.device} ({threads}): {o.model} {o.adapter} r{o.rank} "
                 f"b{o.batch} s{o.seq_len}, forward {self.forward_ms:.3f} ms; {o.trials} trials x {len(self.levels)} "
                 f"levels, {o.rounds} rounds per block, {self.blocks} blocks in {self.seconds:.0f} s",
                 f"gates: p < {o.alpha:g} and change >= {o.min_effect_pct:g}%; suspect regressions re-measured "
                 f"{o.remeasure}x; rates with 95% Wilson intervals"]
        for metric in o.metrics:
            lines += ["", f"metric {metric}:",
                      f"  {'effect':>7}  {'measured':>8}  {'regression (detection) rate':<32}  {'improv.':>7}  "
                      f"{'inconcl.':>8}  {'median est.':>11}"]
            for lv in self.levels:
                rate, low, high = self.rate(lv, metric)
                n = len(lv.verdicts.get(metric, []))
                measured = "-" if lv.measured_pct is None else f"{lv.measured_pct:+.1f}%"
                est = lv.estimates.get(metric) or [0.0]
                label = "A/A" if lv.nominal_pct == 0 else f"+{lv.nominal_pct:g}%"
                lines.append(f"  {label:>7}  {measured:>8}  {lv.count(metric, 'regression'):>4}/{n:<4} = "
                             f"{100 * rate:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]  "
                             f"{lv.count(metric, 'improvement'):>7}  {lv.count(metric, 'inconclusive'):>8}  "
                             f"{np.median(est):+10.1f}%")
            aa = self.levels[0]
            rate, low, high = self.rate(aa, metric)
            changed = aa.count(metric, "regression") + aa.count(metric, "improvement")
            lines.append(f"  false-alarm rate (A/A regressions): {100 * rate:.1f}% (95% CI {100 * low:.1f}-"
                         f"{100 * high:.1f}%); any A/A change (regression or improvement): "
                         f"{changed}/{len(aa.verdicts[metric])}")
        return "\n".join(lines)


class ExtraWork:
    """``k`` tiny tensor additions on the device: real work of a tunable cost, appended to the measured function."""

    def __init__(self, device: str):
        self.src = torch.ones(EXTRA_OP_NUMEL, device=device)
        self.out = torch.empty_like(self.src)

    def __call__(self, k: int) -> None:
        for _ in range(k):
            torch.add(self.src, 1.0, out=self.out)


class Bench:
    """The measured function (a forward pass of the adapted model, plus ``k`` extra operations) and its r = 0 twin."""

    def __init__(self, options: SelftestOptions, device: str):
        self.o, self.device = options, device
        gen = torch.Generator().manual_seed(options.seed)
        self.extra = ExtraWork(device)
        self.models = ModelCache(seed=options.seed)
        vocab = self.models.base(options.model, options.dtype, device).config.vocab_size
        self.tokens = torch.randint(0, vocab, (options.batch, options.seq_len), generator=gen).to(device)

    def fresh_models(self) -> None:
        """New copies of both models, as a new benchmark run would build (new memory, new layout)."""
        self.models.clear()
        self.models.base(self.o.model, self.o.dtype, self.device)
        self.models.adapted(self.o.model, self.o.dtype, self.device, self.o.adapter, self.o.rank)

    def functions(self, k: int) -> tuple[Callable[[], object], Callable[[], object]]:
        base = self.models.base(self.o.model, self.o.dtype, self.device)
        adapted = self.models.adapted(self.o.model, self.o.dtype, self.device, self.o.adapter, self.o.rank)
        tokens, extra = self.tokens, self.extra

        def measured():
            adapted(tokens)
            extra(k)

        return measured, (lambda: base(tokens))

    def block(self, k: int) -> dict:
        """One cell's worth of measurement, as a record ``compare`` reads: interleaved r = 0 and adapted times."""
        self.fresh_models()
        fn, base_fn = self.functions(k)
        adapted_ms, base_ms = [], []
        with torch.inference_mode():
            for i in range(self.o.warmup + self.o.rounds):
                # as perfsuite.timing.paired_benchmark: r = 0 before the adapted call in even rounds, after in odd
                if i % 2 == 0:
                    b = timed_call(base_fn, self.device)
                    a = timed_call(fn, self.device)
                else:
                    a = timed_call(fn, self.device)
                    b = timed_call(base_fn, self.device)
                if i >= self.o.warmup:
                    base_ms.append(1e3 * b)
                    adapted_ms.append(1e3 * a)
        return {"samples_ms": adapted_ms, "ref_samples_ms": base_ms}

    def calibrate(self) -> tuple[float, float]:
        """(median forward ms, median µs of one extra operation), measured interleaved."""
        self.fresh_models()
        fn, _ = self.functions(0)
        fwd, op = [], []
        with torch.inference_mode():
            for _ in range(self.o.calibration_rounds):
                fwd.append(timed_call(fn, self.device))
                op.append(timed_call(lambda: self.extra(CALIBRATION_OPS), self.device) / CALIBRATION_OPS)
        return 1e3 * float(np.median(fwd)), 1e6 * float(np.median(op))

    def measure_effect(self, k: int) -> float:
        """The slow-down ``k`` extra operations really cause: median of paired ratios, interleaved rounds."""
        fn, _ = self.functions(0)
        slow, _ = self.functions(k)
        ratios = []
        with torch.inference_mode():
            for _ in range(self.o.calibration_rounds):
                t0 = timed_call(fn, self.device)
                t1 = timed_call(slow, self.device)
                ratios.append(t1 / t0)
        return 100.0 * (float(np.median(ratios)) - 1.0)


def run_selftest(options: SelftestOptions, progress: Callable[[str], None] = lambda s: None) -> SelftestReport:
    """Calibrate the slow-downs, then run the trials (see the module docstring)."""
    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _run(options, progress)
    finally:
        torch.set_num_threads(threads)


def _run(options: SelftestOptions, progress: Callable[[str], None]) -> SelftestReport:
    t_start = time.monotonic()
    device = resolve_device(options.device)
    bench = Bench(options, device)
    forward_ms, op_us = bench.calibrate()
    levels = [Level(0.0, 0)] + [Level(e, max(1, round(e / 100 * forward_ms * 1e3 / op_us)))
                                for e in options.effects_pct]
    for lv in levels[1:]:
        lv.measured_pct = bench.measure_effect(lv.extra_ops)
        progress(f"calibrated +{lv.nominal_pct:g}%: {lv.extra_ops} extra ops, measured {lv.measured_pct:+.2f}%")
    compare_options = CompareOptions(alpha=options.alpha, min_effect_pct=options.min_effect_pct)
    rng = np.random.default_rng(options.seed)
    blocks = 0
    for trial in range(options.trials):
        baseline = bench.block(0)
        blocks += 1
        for i in rng.permutation(len(levels)):
            lv = levels[i]
            current = bench.block(lv.extra_ops)
            blocks += 1
            first = {m: compare_records(baseline, current, m, compare_options) for m in options.metrics}
            retries: dict[str, list[str]] = {m: [] for m in options.metrics}
            suspects = [m for m in options.metrics if first[m].verdict == "regression"]
            for _ in range(options.remeasure if suspects else 0):
                again = bench.block(lv.extra_ops)
                blocks += 1
                for m in suspects:
                    retries[m].append(compare_records(baseline, again, m, compare_options).verdict)
            for m in options.metrics:
                lv.verdicts.setdefault(m, []).append(confirm(first[m].verdict, retries[m]))
                lv.estimates.setdefault(m, []).append(first[m].change_pct)
        if (trial + 1) % max(1, options.trials // 10) == 0:
            aa = levels[0]
            progress(f"trial {trial + 1}/{options.trials}, {time.monotonic() - t_start:.0f} s: A/A regressions "
                     + ", ".join(f"{m} {aa.count(m, 'regression')}" for m in options.metrics))
    synchronize(device)
    return SelftestReport(options=options, device=device, forward_ms=forward_ms, extra_op_us=op_us, levels=levels,
                          seconds=time.monotonic() - t_start, blocks=blocks, threads=torch.get_num_threads())
