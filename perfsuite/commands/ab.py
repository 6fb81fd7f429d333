"""``perfsuite ab BASE [HEAD]``: two commits' code measured alternately in separate processes; a verdict per cell."""

from __future__ import annotations

from perfsuite.ab import DEFAULT_RUNS
from perfsuite.commands.compare import add_allow_missing_argument, options_from_args
from perfsuite.compare.render import render_markdown, render_terminal
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT
from perfsuite.compare.verdicts import REMEASURE
from perfsuite.formats.io import write_json_atomic, write_text_atomic
from perfsuite.options import add_cell_options, add_wait_argument, at_least_two, at_least_zero, cell_option_values

HELP = ("A/B: run BASE's and HEAD's benchmarks alternately, each run in its own process; exit 1 on a regression or a "
        "cell BASE measured and HEAD did not. BASE's and HEAD's own code executes (their perfsuite package, "
        "conftest.py, benchmarks): never ab a ref you would not run, outside a sandbox")


def add_arguments(p) -> None:
    p.add_argument("base", metavar="BASE", help="the commit to compare against (any git revision, e.g. origin/main); "
                                                "its code runs")
    p.add_argument("head", metavar="HEAD", nargs="?", default=None,
                   help="the commit under test (default: the working tree as it is, uncommitted changes included)")
    add_cell_options(p.add_argument, prefix="--")
    p.add_argument("--runs", type=at_least_two, default=DEFAULT_RUNS, metavar="N",
                   help=f"runs per side, alternated A B, B A, ... (default: {DEFAULT_RUNS})")
    p.add_argument("--min-effect", type=float, default=MIN_EFFECT_PCT, metavar="PCT",
                   help=f"smallest change (%%) called a regression or an improvement (default: {MIN_EFFECT_PCT:g})")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help=f"two-sided significance level of the t test between the runs (default: {ALPHA:g})")
    p.add_argument("--out", default="perfsuite-out/ab", metavar="DIR",
                   help="where the worktrees and every run's results go (default: perfsuite-out/ab)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the comparison as JSON (one entry per cell)")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write the comparison as Markdown (a PR comment)")
    p.add_argument("--keep-worktrees", action="store_true",
                   help="leave the git worktrees in --out for inspection (the next ab there removes them only if "
                        "unchanged: an edit, a symlink or a folder not a worktree is refused, never deleted)")
    add_allow_missing_argument(p)
    add_wait_argument(p, "--out")
    p.add_argument("--remeasure", type=at_least_zero, default=REMEASURE, metavar="N",
                   help=f"re-measure a suspect regression up to N times, one more block each (a fresh process of each "
                        f"side, the same cell options), with alpha spent over the N looks (default: {REMEASURE})")
    p.add_argument("--accept-behaviour", action="store_true",
                   help="a changed deterministic outcome (recompute %%, mismatches, phi on fixed seeds) fails the A/B "
                        "as 'changed'; with this flag it is shown and does not (the change the pull request intends)")


def run(args) -> int:
    """A thin shell over :func:`perfsuite.api.ab`: the options from the command line, progress on stderr, the
    verdicts printed."""
    from perfsuite import api

    compare = options_from_args(args)  # checked as the command line's, before anything runs
    options = api.RunOptions(**cell_option_values(args), alpha=compare.alpha, min_effect_pct=compare.min_effect_pct,
                             accept_behaviour=compare.accept_behaviour)
    result = api.ab(args.base, args.head, options, runs=args.runs, out_dir=args.out,
                    keep_worktrees=args.keep_worktrees, remeasure=compare.remeasure, wait=args.wait,
                    allow_missing=args.allow_missing, verbose=True)
    doc, a, b = result.comparison.comparison, result.a, result.b  # "REF (commit)"
    if args.json:
        write_json_atomic(args.json, doc.to_dict())
    if args.markdown:
        write_text_atomic(args.markdown, render_markdown(doc, f"perfsuite A/B: {a} → {b}"))
    print(render_terminal(doc, f"perfsuite ab: A = {a}, B = {b}, {args.runs} runs each, {result.seconds:.0f} s"))
    return doc.exit_code
