"""``perfsuite run``: the main job (benchmark → compare → report) in one command."""

from __future__ import annotations

import argparse

from perfsuite.commands.compare import add_compare_arguments
from perfsuite.compare.verdicts import REMEASURE
from perfsuite.options import add_cell_options, add_wait_argument, cell_option_values
from perfsuite.table import printable

HELP = "run a profile's benchmarks, compare with the matching baseline, and write the report"

def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p.add_argument, prefix="--")  # the pytest plugin's, without the --perfsuite- prefix
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where results, comparison and report go (default: perfsuite-out/PROFILE)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run in --out: measure only missing cells")
    p.add_argument("--fresh", action="store_true", help="discard an earlier run's journal in --out and start over")
    add_wait_argument(p, "--out")
    p.add_argument("--baseline", default=None, metavar="FILE",
                   help="compare with FILE (a baseline or another results JSON); default: this machine's baseline in "
                        "--baselines-dir, else another machine's as a reference (never failing the run)")
    p.add_argument("--no-compare", action="store_true", help="skip the baseline comparison")
    add_compare_arguments(p, remeasure_default=REMEASURE)  # as in perfsuite compare
    p.add_argument("--no-report", action="store_true", help="skip the HTML/Markdown report")
    p.add_argument("--benchmarks", default=None, metavar="DIR",
                   help="folder of the benchmark tests (default: tests/benchmarks of the perfsuite checkout, else "
                        "those installed with the package)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER,
                   help="after --: extra arguments passed to pytest as they are")


def run(args) -> int:
    """A thin shell over :func:`perfsuite.api.run`: the options from the command line, the summary printed."""
    from perfsuite import api

    if args.weights:  # a bad checkpoint folder or file: one line here, before pytest starts
        from perfsuite.models.checkpoint import check_weights, read_checkpoint

        check_weights(read_checkpoint(args.weights))
    options = api.RunOptions(
        **cell_option_values(args), out_dir=args.out, resume=args.resume, fresh=args.fresh,
        compare=not args.no_compare, baseline=args.baseline, baselines_dir=args.baselines_dir, alpha=args.alpha,
        min_effect_pct=args.min_effect, remeasure=args.remeasure, accept_environment=args.accept_environment,
        accept_behaviour=args.accept_behaviour, allow_missing=args.allow_missing, report=not args.no_report,
        benchmarks=args.benchmarks, wait=args.wait, pytest_args=tuple(a for a in args.pytest_args if a != "--"))
    result = api.run(options, verbose=True)
    print("\n".join(["", "perfsuite run: summary", *("  " + printable(line) for line in result.summary)]))
    return result.exit_code
