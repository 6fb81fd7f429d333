"""``perfsuite compare``: a run against its baseline (or another run); exit 1 on a confirmed regression."""

from __future__ import annotations

import json
from pathlib import Path

from perfsuite.compare.baselines import BASELINE_DIR
from perfsuite.compare.render import render_markdown, render_terminal
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT
from perfsuite.compare.verdicts import CompareError, CompareOptions
from perfsuite.formats.io import write_json_atomic, write_text_atomic
from perfsuite.options import ALLOW_MISSING_HELP, at_least_zero

HELP = ("compare a run with its baseline or another run: a verdict per cell; exit 1 on a confirmed regression or a "
        "baseline cell the run did not measure")


def add_compare_arguments(p, *, remeasure_default: int = 0) -> None:
    """The statistical options, shared with ``perfsuite run`` and ``perfsuite ab``."""
    p.add_argument("--min-effect", type=float, default=MIN_EFFECT_PCT, metavar="PCT",
                   help=f"smallest change (%%) called a regression or an improvement, however significant "
                        f"(default: {MIN_EFFECT_PCT:g})")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help=f"two-sided significance level of the t test on the run-to-run spread (default: {ALPHA:g})")
    p.add_argument("--remeasure", type=at_least_zero, default=remeasure_default, metavar="N",
                   help="re-measure a suspect regression N times, each in a fresh pytest process, before calling it "
                        f"(default: {remeasure_default})")
    p.add_argument("--accept-environment", action="store_true",
                   help="a baseline of this machine recorded with other software (a torch, CUDA, driver or library "
                        "upgrade) is compared on every metric, raw time included, and its regressions fail the run; "
                        "with this flag they are shown and do not (acknowledge an upgrade, then record a new baseline)")
    p.add_argument("--accept-behaviour", action="store_true",
                   help="a changed deterministic outcome (recompute %%, mismatches, phi on fixed seeds) fails the run "
                        "as 'changed'; with this flag it is shown and does not (an intended change)")
    add_allow_missing_argument(p)
    p.add_argument("--baselines-dir", default=None, metavar="DIR",
                   help="where the baselines are (default: baselines/ under --rootdir, the current folder unless "
                        "given; perfsuite run: ./baselines when the current folder has one, else the checkout's)")


def add_allow_missing_argument(p) -> None:
    """``--allow-missing`` (``perfsuite compare``, ``run`` and ``ab``; the pytest plugin's --perfsuite-allow-missing)."""
    p.add_argument("--allow-missing", action="store_true", help=ALLOW_MISSING_HELP)


def options_from_args(args) -> CompareOptions:
    return CompareOptions(alpha=args.alpha, min_effect_pct=args.min_effect, remeasure=args.remeasure,
                          accept_environment=getattr(args, "accept_environment", False),  # not an ab option
                          accept_behaviour=args.accept_behaviour)


def add_arguments(p) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="pytest-benchmark JSON of a perfsuite run (several files: shards of one run)")
    p.add_argument("--baseline", default=None, metavar="FILE",
                   help="a baseline file, or another run's results JSON (default: this machine's baseline in "
                        "--baselines-dir, else another machine's as a reference)")
    add_compare_arguments(p)
    p.add_argument("--extra-runs", nargs="+", default=(), metavar="RESULTS.json",
                   help="re-measures of some of the run's cells made elsewhere (a nightly shard's remeasure-*.json): "
                        "each file one more run of the cells it holds, judged with α spent over the looks as "
                        "--remeasure spends it (pass the shard's budget as --looks)")
    p.add_argument("--looks", type=at_least_zero, default=None, metavar="N",
                   help="with --extra-runs: the re-measure budget the runs were made under (default: --remeasure, "
                        "else the most extra runs any cell has)")
    p.add_argument("--rootdir", default=".", metavar="DIR",
                   help="the checkout the results came from, where --remeasure runs pytest (default: .)")
    p.add_argument("--format", default="table", choices=("table", "markdown", "json"),
                   help="what to print (default: table)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON to FILE")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="also write the comparison as Markdown (a pull-request comment) to FILE")


def run(args) -> int:
    """A thin shell over :func:`perfsuite.api.compare`: the options from the command line, the verdicts printed."""
    from perfsuite import api

    options = options_from_args(args)  # checked as the command line's, before anything is read
    baselines_dir = args.baselines_dir or str(Path(args.rootdir) / BASELINE_DIR)
    comparison = api.compare(args.results, baseline=args.baseline, baselines_dir=baselines_dir, alpha=options.alpha,
                             min_effect_pct=options.min_effect_pct, remeasure=options.remeasure,
                             checkout=args.rootdir, workdir=Path(args.json or args.results[0]).parent,
                             accept_environment=options.accept_environment,
                             accept_behaviour=options.accept_behaviour, extra_runs=list(args.extra_runs),
                             looks=args.looks, allow_missing=args.allow_missing,
                             verbose=True).comparison
    if comparison.parts and all(p.mode == "none" for p in comparison.parts):
        where = args.baseline or baselines_dir
        raise CompareError(f"no baseline in {where} for {', '.join(str(p.profile) for p in comparison.parts)} "
                           f"on {comparison.parts[0].machine}; record one with `perfsuite baseline record` "
                           "or pass --baseline")
    if args.json:
        write_json_atomic(args.json, comparison.to_dict())
    if args.markdown:
        write_text_atomic(args.markdown, render_markdown(comparison))
    if args.format == "json":
        print(json.dumps(comparison.to_dict(), indent=1))
    elif args.format == "markdown":
        print(render_markdown(comparison))
    else:
        print(render_terminal(comparison))
    return comparison.exit_code
