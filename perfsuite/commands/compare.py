"""``perfsuite compare``: a run against a baseline (or another run); exit 1 on a confirmed regression."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from perfsuite.formats.baseline import BASELINE_DIR, default_name, fingerprint_of, profile_of
from perfsuite.compare.remeasure import pytest_remeasurer
from perfsuite.compare.render import render_markdown, render_terminal
from perfsuite.compare.verdicts import MODES, CompareError, CompareOptions, compare_with_reference, has_regression
from perfsuite.formats.results import load_results
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT

HELP = "compare a run with its baseline or another run: a verdict per cell; exit 1 on a confirmed regression"


def add_compare_arguments(p) -> None:
    """The statistical options, shared with ``perfsuite run``."""
    p.add_argument("--metric", default="auto", choices=MODES,
                   help="slowdown: the portable metrics, round by round - slow-down %% against the r = 0 model, and "
                        "recompute cells' time against plain decoding (robust to drift); "
                        "time: absolute times (same device fingerprint only; for quiet dedicated machines); "
                        "auto (default): slowdown, and time for cells without r = 0 samples on the same device")
    p.add_argument("--min-effect", type=float, default=MIN_EFFECT_PCT, metavar="PCT",
                   help=f"smallest change (%%) called a regression or improvement (default: {MIN_EFFECT_PCT:g})")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help=f"two-sided significance level: bootstrap of the ratio of medians, exact Mann-Whitney U "
                        f"below 8 samples a side (default: {ALPHA:g})")
    p.add_argument("--remeasure", type=int, default=0, metavar="N",
                   help="re-run suspect regressions N times with pytest (from --rootdir) before declaring them; "
                        "each re-measurement must agree (default: 0)")


def add_arguments(p) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="pytest-benchmark JSON of a perfsuite run (several files: shards of one run)")
    p.add_argument("--baseline", default=None, metavar="FILE",
                   help="a baseline file, or another run's results JSON (default: the baseline in --baselines-dir "
                        "matching the run's device fingerprint and profile)")
    p.add_argument("--baselines-dir", default=str(BASELINE_DIR), metavar="DIR",
                   help="where to look for the matching baseline (default: baselines)")
    add_compare_arguments(p)
    p.add_argument("--rootdir", default=".", metavar="DIR",
                   help="where to run pytest when re-measuring (the checkout the results came from; default: .)")
    p.add_argument("--format", default="table", choices=("table", "markdown", "json"),
                   help="what to print (default: table)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON to FILE")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="also write the comparison as Markdown (a pull-request comment) to FILE")


def options_from_args(args) -> CompareOptions:
    return CompareOptions(metric=args.metric, alpha=args.alpha, min_effect_pct=args.min_effect,
                          remeasure=args.remeasure)


def run(args) -> int:
    options = options_from_args(args)
    results = load_results(args.results)
    remeasure = None
    if options.remeasure:
        run_again = pytest_remeasurer(args.results, results, args.rootdir)

        def remeasure(cell_ids):
            print(f"re-measuring {len(cell_ids)} suspect cells with pytest ...", file=sys.stderr, flush=True)
            return run_again(cell_ids)

    found = compare_with_reference(results, args.baseline, args.baselines_dir, options, remeasure=remeasure)
    if found is None:
        fp, profile = fingerprint_of(results), profile_of(results)
        raise CompareError(f"no baseline in {args.baselines_dir} for profile {profile} on {fp.describe()}; make "
                           f"one with `perfsuite baseline update RESULTS.json` (it would be "
                           f"{default_name(fp, profile)}.json) or pass --baseline")
    comparison, _ = found
    if args.json:
        Path(args.json).write_text(json.dumps(comparison, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(render_markdown(comparison) + "\n")
    if args.format == "json":
        print(json.dumps(comparison, indent=1))
    elif args.format == "markdown":
        print(render_markdown(comparison))
    else:
        print(render_terminal(comparison))
    return 1 if has_regression(comparison) else 0
