"""``perfsuite ab BASE [HEAD]``: two commits' code measured alternately in separate processes; a verdict per cell."""

from __future__ import annotations

import sys

from perfsuite.ab import DEFAULT_RUNS, ab
from perfsuite.commands.compare import options_from_args
from perfsuite.compare.render import render_markdown, render_terminal
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT
from perfsuite.compare.verdicts import REMEASURE
from perfsuite.formats.io import write_json_atomic, write_text_atomic
from perfsuite.plugin.options import add_cell_options, add_wait_argument, at_least_two, at_least_zero, cell_option_values

HELP = "A/B: run BASE's and HEAD's benchmarks alternately, each run in its own process; exit 1 on a regression"


def add_arguments(p) -> None:
    p.add_argument("base", metavar="BASE", help="the commit to compare against (any git revision, e.g. origin/main)")
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
    p.add_argument("--keep-worktrees", action="store_true", help="leave the git worktrees in --out for inspection")
    add_wait_argument(p, "--out")
    p.add_argument("--remeasure", type=at_least_zero, default=REMEASURE, metavar="N",
                   help=f"re-measure a suspect regression N times, one more block each (a fresh process of each "
                        f"side, the same cell options); it must stay a regression (default: {REMEASURE})")


def run(args) -> int:
    doc, a, b, seconds = ab(args.base, args.head, cell_option_values(args), runs=args.runs, out_dir=args.out,
                            compare_options=options_from_args(args), keep_worktrees=args.keep_worktrees,
                            wait=args.wait,
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        write_json_atomic(args.json, doc.to_dict())
    if args.markdown:
        write_text_atomic(args.markdown, render_markdown(doc, f"perfsuite A/B: {a.ref} → {b.ref}"))
    print(render_terminal(doc, f"perfsuite ab: A = {a.ref}, B = {b.ref}, {args.runs} runs each, {seconds:.0f} s"))
    return 1 if doc.has_regression else 0
