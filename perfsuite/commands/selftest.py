"""``perfsuite selftest``: measure the regression detector on this machine (false alarms and power)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from perfsuite.commands import comma_numbers
from perfsuite.compare.verdicts import REMEASURE
from perfsuite.errors import PerfsuiteError
from perfsuite.selftest import METRICS, MODES, THREADS_NOTE, SelftestOptions, run_selftest
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT

HELP = ("measure the detector on this machine, between separate processes: false alarms over A/A comparisons and "
        "detection of real slow-downs of known size, in A/B mode and against a baseline")

DEFAULTS = SelftestOptions()
# --quick: a smoke test of the selftest itself (seconds), not a measurement to quote.
QUICK = dict(processes=6, trials=3, runs=2, rounds=10, warmup=1, calibration_rounds=30, effects_pct=(20.0,))


def add_arguments(p) -> None:
    p.add_argument("--processes", type=int, default=DEFAULTS.processes, metavar="N",
                   help=f"separate worker processes measured, the pool comparisons are drawn from (default: "
                        f"{DEFAULTS.processes}; about 2 s each for the default cell on a 2-core CPU)")
    p.add_argument("--trials", type=int, default=DEFAULTS.trials,
                   help=f"comparisons per mode and effect size, drawn from the pool (default: {DEFAULTS.trials})")
    p.add_argument("--runs", type=int, default=DEFAULTS.runs, metavar="N",
                   help=f"runs per side in A/B mode, baseline runs in baseline mode (default: {DEFAULTS.runs})")
    p.add_argument("--modes", default=",".join(DEFAULTS.modes), metavar="LIST",
                   help="ab (two sides of separate runs) and/or baseline (one run against recorded runs, a suspect "
                        "re-measured) (default: both)")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds: checks the selftest runs, its rates mean little")
    p.add_argument("--rounds", type=int, default=DEFAULTS.rounds,
                   help=f"timed rounds per block, like a cell's rounds (default: {DEFAULTS.rounds})")
    p.add_argument("--warmup", type=int, default=DEFAULTS.warmup, help="warm-up rounds per block")
    p.add_argument("--effects", default=",".join(f"{e:g}" for e in DEFAULTS.effects_pct), metavar="PCTS",
                   help="slow-downs to detect, %% (default: 2,5,10,20)")
    p.add_argument("--metrics", default=",".join(DEFAULTS.metrics), metavar="LIST",
                   help=f"metrics to test: {', '.join(METRICS)} (default: both)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--model", default=DEFAULTS.model, help="model preset of the measured cell (default: tiny)")
    p.add_argument("--adapter", default=DEFAULTS.adapter, help="adapter of the measured cell (default: lora)")
    p.add_argument("--rank", type=int, default=DEFAULTS.rank)
    p.add_argument("--batch", type=int, default=DEFAULTS.batch)
    p.add_argument("--seq-len", type=int, default=DEFAULTS.seq_len)
    p.add_argument("--dtype", default=DEFAULTS.dtype)
    p.add_argument("--min-effect", type=float, default=MIN_EFFECT_PCT, metavar="PCT",
                   help=f"the comparison's minimum effect (default: {MIN_EFFECT_PCT:g})")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default: {ALPHA:g})")
    p.add_argument("--remeasure", type=int, default=REMEASURE, metavar="N",
                   help=f"baseline mode: re-measure a suspect N times with further processes, as perfsuite run "
                        f"does (default: {REMEASURE})")
    p.add_argument("--threads", type=int, default=DEFAULTS.threads, metavar="N",
                   help="torch CPU threads while measuring; 0: leave torch's setting (default: 1, because "
                        + THREADS_NOTE.replace("%", "%%") + ")")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")


def _check_cell(o: SelftestOptions) -> None:
    """Unknown names fail here, in one line, before minutes of measuring."""
    from perfsuite.adapters import get_adapter
    from perfsuite.model import PRESETS
    from perfsuite.timing import DeviceUnavailable, resolve_device
    from perfsuite.workloads.context import DTYPES

    if o.model not in PRESETS:
        raise PerfsuiteError(f"unknown model preset {o.model!r}; known: {', '.join(PRESETS)}")
    if o.dtype not in DTYPES:
        raise PerfsuiteError(f"unknown dtype {o.dtype!r}; known: {', '.join(DTYPES)}")
    get_adapter(o.adapter)  # raises a PerfsuiteError naming the known adapters
    if o.rank < 1:
        raise PerfsuiteError("--rank must be >= 1: the measured cell is an adapted model, timed against r = 0")
    try:
        resolve_device(o.device)
    except DeviceUnavailable as e:
        raise PerfsuiteError(str(e)) from None


def _names(text: str, option: str, known: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise PerfsuiteError(f"{option}: unknown {unknown or 'empty list'}; use {', '.join(known)}")
    return names


def run(args) -> int:
    metrics = _names(args.metrics, "--metrics", METRICS)
    modes = _names(args.modes, "--modes", MODES)
    try:
        options = SelftestOptions(
            processes=args.processes, trials=args.trials, runs=args.runs, modes=modes,
            rounds=args.rounds, warmup=args.warmup,
            effects_pct=comma_numbers(args.effects, "--effects", kind="percentages", example="2,5,10,20"),
            metrics=metrics, device=args.device, model=args.model, adapter=args.adapter, rank=args.rank,
            batch=args.batch, seq_len=args.seq_len, dtype=args.dtype, alpha=args.alpha,
            min_effect_pct=args.min_effect, remeasure=args.remeasure, threads=args.threads, seed=args.seed)
        if args.quick:
            options = replace(options, **QUICK)
    except ValueError as e:
        raise PerfsuiteError(str(e)) from None
    _check_cell(options)
    report = run_selftest(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=1) + "\n")
    return 0
