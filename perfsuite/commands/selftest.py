"""``perfsuite selftest``: measure the regression detector on this machine (false alarms and power)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from perfsuite.commands import comma_numbers
from perfsuite.compare.verdicts import REMEASURE
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import write_text_atomic
from perfsuite.selftest.options import METRICS, MODES, THREADS_NOTE, SelftestOptions, family_of
from perfsuite.selftest.trials import run_selftest
from perfsuite.compare.stats import ALPHA, ERROR_CONTROLS, MIN_EFFECT_PCT
from perfsuite.selftest.grid import DESIGNS, KINDS, GridSimulation, detectable, simulate_grid

HELP = ("measure the detector on this machine, between separate processes: false alarms over A/A comparisons and "
        "detection of real slow-downs of known size, in A/B mode and against a baseline")

DEFAULTS = SelftestOptions()
FAMILY_PROFILE = "smoke"  # the production run the selftest's comparisons stand for
SIM = GridSimulation()
# --quick: a smoke test of the selftest itself (seconds), not a measurement to quote.
QUICK = dict(processes=4, trials=3, runs=2, rounds=10, warmup=1, calibration_rounds=30, effects_pct=(20.0,),
             remeasure=1)


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
                   help=f"metrics to test: {', '.join(METRICS)} (default: all of them)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the measured cell runs; auto: CUDA when a GPU is visible (default: auto)")
    p.add_argument("--model", default=DEFAULTS.model, help="model preset of the measured cell (default: tiny)")
    p.add_argument("--adapter", default=DEFAULTS.adapter, help="adapter of the measured cell (default: lora)")
    p.add_argument("--rank", type=int, default=DEFAULTS.rank,
                   help=f"adapter rank of the measured cell (default: {DEFAULTS.rank})")
    p.add_argument("--batch", type=int, default=DEFAULTS.batch,
                   help=f"batch of the measured cell (default: {DEFAULTS.batch})")
    p.add_argument("--seq-len", type=int, default=DEFAULTS.seq_len,
                   help=f"tokens per sequence of the measured cell (default: {DEFAULTS.seq_len})")
    p.add_argument("--dtype", default=DEFAULTS.dtype, help=f"dtype of the measured cell (default: {DEFAULTS.dtype})")
    p.add_argument("--min-effect", type=float, default=MIN_EFFECT_PCT, metavar="PCT",
                   help=f"the comparison's minimum effect (default: {MIN_EFFECT_PCT:g})")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default: {ALPHA:g})")
    p.add_argument("--remeasure", type=int, default=REMEASURE, metavar="N",
                   help=f"baseline mode and --simulate: re-measure a suspect up to N times with further processes, "
                        f"as perfsuite run does; 0: a merge job without a device (default: {REMEASURE})")
    p.add_argument("--threads", type=int, default=DEFAULTS.threads, metavar="N",
                   help="torch CPU threads while measuring; 0: leave torch's setting (default: 1, because "
                        + THREADS_NOTE.replace("%", "%%") + ")")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the draws (which processes a comparison takes; the simulated noise) (default: 0)")
    p.add_argument("--family", default=FAMILY_PROFILE, metavar="N|PROFILE",
                   help="judge each comparison at alpha / N, what a lone moved cell must pass in a run of N tests "
                        "under the run's error control (Holm); a profile name: its tests per run (default: "
                        f"{FAMILY_PROFILE}, {family_of(FAMILY_PROFILE)} tests; 1: each test alone)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--loop", default=None, metavar="PROFILE",
                   help="time the profile's whole loop of the cell's shape in every block (e.g. smoke: 9 models and "
                        "the probe) and report per-run verdicts: runs with any regression (Holm over the loop's tests, "
                        "the shared-move rule) and the measured cell's")
    g = p.add_argument_group("grid-scale simulation (--grid PROFILE --simulate): a whole grid's nightly, judged by the "
                             "production code: per-run false alarms, power, re-measure cost")
    g.add_argument("--grid", default=None, metavar="PROFILE", help="the profile whose loops are simulated, "
                   "e.g. paper (531 latency cells in 27 loops)")
    g.add_argument("--simulate", action="store_true", help="simulate instead of measuring (needs --grid)")
    g.add_argument("--design", default=SIM.design, metavar="MvK",
                   help=f"M current runs against K baseline runs: {', '.join(DESIGNS)} (KvK: A/B, K runs a side) "
                        f"(default: {SIM.design}, the nightly)")
    g.add_argument("--detect", default=",".join(KINDS), metavar="LIST",
                   help="which smallest-slow-down-found-in-95%%-of-nights figures to search for: uniform (every adapter "
                        "cell), method (every cell of one adapter), single (one cell); 'none' skips them "
                        "(default: all three; each takes ~10 searches of --detect-trials nights)")
    g.add_argument("--detect-trials", type=int, default=100, metavar="N",
                   help="nights per effect size tried by the detection search (default: 100)")
    g.add_argument("--within-noise", type=float, default=SIM.within_noise_pct, metavar="PCT",
                   help=f"a run's own sampling error of each estimate, the floor of a test's spread "
                        f"(default: {SIM.within_noise_pct:g})")
    g.add_argument("--time-noise", type=float, default=SIM.time_noise_pct, metavar="PCT",
                   help=f"between-process sd of a cell's probe-normalised time (default: {SIM.time_noise_pct:g}; "
                        "measured on this project's VMs: 0.7-5.2, docs/verdicts.md)")
    g.add_argument("--slowdown-noise", type=float, default=SIM.slowdown_noise_pct, metavar="PCT",
                   help=f"between-process sd of a slow-down ratio (default: {SIM.slowdown_noise_pct:g})")
    g.add_argument("--loop-correlation", type=float, default=SIM.loop_correlation, metavar="R",
                   help=f"correlation of time estimates within a loop (default: {SIM.loop_correlation:g})")
    g.add_argument("--cross-correlation", type=float, default=SIM.cross_correlation, metavar="R",
                   help=f"correlation of time estimates across loops of a run (default: {SIM.cross_correlation:g})")
    g.add_argument("--slowdown-correlation", type=float, default=SIM.slowdown_correlation, metavar="R",
                   help=f"correlation of slow-downs within a loop (default: {SIM.slowdown_correlation:g}, assumed)")
    g.add_argument("--error-control", default=SIM.error_control, choices=tuple(ERROR_CONTROLS),
                   help=f"how a run's tests share alpha (default: {SIM.error_control})")


def _family(text: str) -> int:
    from perfsuite.cells.grid import PROFILES

    if text in PROFILES:
        return family_of(text)
    try:
        return int(text)
    except ValueError:
        raise PerfsuiteError(f"--family {text!r}: a number of tests or a profile ({', '.join(PROFILES)})") from None


def _check_cell(o: SelftestOptions) -> None:
    """Unknown names fail here, in one line, before minutes of measuring."""
    from perfsuite.models.adapters import get_adapter
    from perfsuite.models.model import PRESETS
    from perfsuite.models.caches import DTYPES
    from perfsuite.measure.device import DeviceUnavailable, resolve_device

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


def _simulate(args) -> int:
    from perfsuite.cells.grid import PROFILES

    if args.grid not in PROFILES:
        raise PerfsuiteError(f"--grid: unknown profile {args.grid!r}; known: {', '.join(PROFILES)}")
    kinds = () if args.detect.strip() == "none" else _names(args.detect, "--detect", KINDS)
    if args.detect_trials < 1:
        raise PerfsuiteError("--detect-trials must be >= 1")
    try:
        sim = GridSimulation(grid=args.grid, design=args.design, trials=args.trials, remeasure=args.remeasure,
                             time_noise_pct=args.time_noise, slowdown_noise_pct=args.slowdown_noise,
                             within_noise_pct=args.within_noise, loop_correlation=args.loop_correlation,
                             cross_correlation=args.cross_correlation, slowdown_correlation=args.slowdown_correlation,
                             alpha=args.alpha, min_effect_pct=args.min_effect, error_control=args.error_control,
                             seed=args.seed)
    except ValueError as e:
        raise PerfsuiteError(str(e)) from None
    rate = simulate_grid(sim)
    if not rate.cells:
        raise PerfsuiteError(f"--grid {args.grid}: the profile has no latency or recompute cells to simulate")
    print(rate.describe())
    print(rate.line())
    print(rate.cost_line(), flush=True)
    if kinds:
        found = {}
        for kind in kinds:
            print(f"  searching the smallest {kind} slow-down found in 95 % of nights ...", file=sys.stderr, flush=True)
            found[kind] = detectable(sim, kind, trials=args.detect_trials)
        shown = ", ".join(f"{k} {'> 400' if v is None else f'{v:.1f}'} %" for k, v in found.items())
        print(f"detects (95 % of runs): {shown}")
    return 0


def run(args) -> int:
    metrics = _names(args.metrics, "--metrics", METRICS)
    modes = _names(args.modes, "--modes", MODES)
    if args.simulate or args.grid:
        if not (args.simulate and args.grid):
            raise PerfsuiteError("--grid and --simulate go together: a grid is simulated, not measured")
        return _simulate(args)
    try:
        options = SelftestOptions(
            processes=args.processes, trials=args.trials, runs=args.runs, modes=modes,
            rounds=args.rounds, warmup=args.warmup,
            effects_pct=comma_numbers(args.effects, "--effects", kind="percentages", example="2,5,10,20"),
            metrics=metrics, device=args.device, model=args.model, adapter=args.adapter, rank=args.rank,
            batch=args.batch, seq_len=args.seq_len, dtype=args.dtype, alpha=args.alpha,
            min_effect_pct=args.min_effect, remeasure=args.remeasure, threads=args.threads, seed=args.seed,
            family=_family(args.family), loop=args.loop)
        if args.quick:
            options = replace(options, **QUICK)
    except ValueError as e:
        raise PerfsuiteError(str(e)) from None
    _check_cell(options)
    report = run_selftest(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.table())
    if args.json:
        write_text_atomic(args.json, json.dumps(report.to_json(), indent=1) + "\n")  # never half a file
    return 0
