"""``perfsuite report``: result JSON files → heatmaps, CSV and a summary page (a thin layer over render_report)."""

from __future__ import annotations

import sys

from perfsuite.errors import PerfsuiteError
from perfsuite.table import printable

HELP = "render the heatmaps, results.csv and a summary page (index.html, summary.md) from result JSON files"
DEFAULT_OUT = "perfsuite-out/report"


def add_arguments(p) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="pytest-benchmark JSON files written with perfsuite: shards of one run, or several runs "
                        "(a cell in several runs is drawn as its median over them, the lowest and highest run "
                        "beside it in the tables)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--comparison", default=None, metavar="FILE",
                   help="verdict JSON from `perfsuite compare`; its table goes on top of the page")
    p.add_argument("--vector", default="svg", choices=("svg", "pdf", "none"),
                   help="vector format written beside each PNG (default: svg)")
    p.add_argument("--title", default=None, help="page title (default: 'perfsuite report — PROFILE')")
    p.add_argument("--history", default=None, metavar="STORE",
                   help="a `perfsuite history` store: add its trends and change points at the end of the page")


def runs_combined(results) -> int:
    """How many runs the most-measured cell was combined from (0: every cell from one run)."""
    from perfsuite.report.runs import RUNS_KEY

    counts = [r.metrics.get(RUNS_KEY) for r in results.records]
    return max((int(c) for c in counts if isinstance(c, int)), default=0)


def run(args) -> int:
    """A thin shell over :func:`perfsuite.api.report`; a file that cannot be read is said and skipped (exit 2)."""
    from perfsuite import api
    from perfsuite.formats.comparison import read_comparison
    from perfsuite.report.runs import load_for_report

    comparison = read_comparison(args.comparison) if args.comparison else None
    results = load_for_report(args.results)
    for line in results.errors:
        print(f"perfsuite report: error: {printable(line)}", file=sys.stderr)
    if not results.runs:
        raise PerfsuiteError(f"none of the {len(args.results)} result file(s) could be read; nothing to report")
    files = api.report(results, args.out, comparison=comparison, title=args.title, vector=args.vector,
                       history=args.history)
    print(printable(f"{len(results.frame)} cells from {len(results.runs)} file(s) → {files.out_dir}/"))
    combined = runs_combined(results)
    if combined:
        print(f"cells of several runs: each drawn as its median over {combined} runs (the tables give the lowest "
              "and highest run)")
    for path in (files.index, files.summary, files.csv, *files.figures):
        print(f"  {printable(path.name)}")
    if files.missing:
        print(f"missing ({len(files.missing)}):")
        for line in files.missing:  # cell ids and the reasons the results recorded
            print(f"  {printable(line)}")
    return 2 if results.errors else 0
