"""``perfsuite baseline``: record this machine's baselines (several separate runs), add runs, show and find them."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from perfsuite.compare.baselines import BASELINE_DIR, add_runs, default_name, find, load_all, parts_of
from perfsuite.formats.baseline import KEEP_RUNS, load_baseline
from perfsuite.formats.results import load_results
from perfsuite.locks import writer_lock
from perfsuite.options import add_cell_options, add_wait_argument, at_least_one, cell_option_values
from perfsuite.table import printable

HELP = "record this machine's baselines (separate runs), add a run to them, show one, find the one of a run"
DEFAULT_RECORD_RUNS = 5


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    rec = sub.add_parser("record", help="run a profile N times, each in a fresh process, and store the runs as this "
                                        "machine's baseline of each part (replacing its earlier runs)")
    add_cell_options(rec.add_argument, prefix="--")
    rec.add_argument("--runs", type=at_least_one, default=DEFAULT_RECORD_RUNS, metavar="N",
                     help=f"separate runs to record (default: {DEFAULT_RECORD_RUNS}; at least 2 for a between-run "
                          "spread, 5 for a useful one)")
    rec.add_argument("--keep", type=at_least_one, default=None, metavar="N",
                     help=f"runs the baseline keeps when later runs are added (default: max(N, {KEEP_RUNS}))")
    _common(rec)
    rec.add_argument("--out", default="perfsuite-out/baseline-record", metavar="DIR",
                     help="where the runs' result files go (default: perfsuite-out/baseline-record)")
    rec.add_argument("--benchmarks", default=None, metavar="DIR",
                     help="folder of the benchmark tests (default: tests/benchmarks of the perfsuite checkout, else "
                          "those installed with the package)")
    up = sub.add_parser("update", help="add a run's results to its parts' baselines, keeping the last N runs")
    up.add_argument("results", nargs="+", metavar="RESULTS.json",
                    help="results of ONE run (several files: its shards)")
    up.add_argument("--name", default=None,
                    help="baseline name (file DIR/NAME.json; one-part runs only); default: part, device, setup and a "
                         "hash of the machine fingerprint")
    up.add_argument("--keep", type=at_least_one, default=None, metavar="N",
                    help=f"runs to keep (default: the baseline's own setting, {KEEP_RUNS} for a new one)")
    up.add_argument("--replace", action="store_true", help="start the baseline afresh with this run")
    up.add_argument("--force", action="store_true",
                    help="overwrite a file holding a baseline of another fingerprint or part (refused otherwise)")
    up.add_argument("--prune", action="store_true", help="drop, from the kept runs, cells this run lacks")
    _common(up)
    show = sub.add_parser("show", help="print a baseline's machine, runs and cells")
    show.add_argument("file", metavar="FILE", help="a baseline file (baselines/*.json)")
    fnd = sub.add_parser("find", help="print the baseline of each part of a run on this machine (exit 1: a part "
                                      "has none)")
    fnd.add_argument("results", nargs="+", metavar="RESULTS.json")
    fnd.add_argument("--dir", default=str(BASELINE_DIR), metavar="DIR", help="baseline directory (default: baselines)")


def _common(p) -> None:
    p.add_argument("--dir", default=str(BASELINE_DIR), metavar="DIR", help="baseline directory (default: baselines)")
    p.add_argument("--note", default=None, metavar="TEXT",
                   help="free text kept in the file, e.g. why it was recorded (default: keep the existing note)")
    add_wait_argument(p, "the baseline file (or record's --out)")


def run(args) -> int:
    return {"record": _record, "update": _update, "show": _show, "find": _find}[args.action](args)


def _record(args) -> int:
    from perfsuite.errors import PerfsuiteError
    from perfsuite.job import benchmarks_root, find_benchmarks_dir
    from perfsuite.processes import load_run, run_benchmarks

    if args.runs < 1:
        raise PerfsuiteError("--runs must be >= 1")
    checkout = benchmarks_root(find_benchmarks_dir(args.benchmarks))
    options = cell_option_values(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PerfsuiteError(f"--out {out}: is a file, not a folder")
    runs, t0 = [], time.monotonic()
    with writer_lock(out, f"output folder {out}", folder=True, wait=args.wait):
        for i in range(1, args.runs + 1):
            print(f"[baseline record {i}/{args.runs}] profile {args.profile}: a fresh pytest process in {checkout} "
                  f"(elapsed {time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
            runs.append(load_run(run_benchmarks(checkout, out / f"run-{i}.json", options)))
        keep = args.keep if args.keep is not None else max(args.runs, KEEP_RUNS)
        reports = add_runs(runs, directory=args.dir, keep=keep, replace=True, note=args.note, wait=args.wait)
    for r in reports:
        print("\n".join(map(printable, r.lines())))
    print(f"{args.runs} runs in {time.monotonic() - t0:.0f} s; commit the file(s) above to share them "
          "(they gate only runs on this machine: see docs/verdicts.md)")
    return 0


def _update(args) -> int:
    reports = add_runs([load_results(args.results)], directory=args.dir, name=args.name, keep=args.keep,
                       replace=args.replace, force=args.force, note=args.note, prune=args.prune, wait=args.wait)
    for r in reports:
        print("\n".join(map(printable, r.lines())))
    return 0


def _show(args) -> int:
    b = load_baseline(args.file)
    print(printable(f"{b.path}: baseline {b.name!r}, part {b.profile}, {len(b.runs)} run(s) (keeps {b.keep})"))
    print(printable(f"machine: {b.fingerprint.describe()}"))  # host, CPU, versions: recorded strings, printed inert
    print(printable(f"created {b.created}, updated {b.updated}"))
    if b.note:
        print(printable(f"note: {b.note}"))
    for cell_id in b.cell_ids():
        recs = b.cell_runs(cell_id)
        times = [r.get("time_ms") for r in recs if r.get("time_ms")]
        slows = [r.get("slowdown_pct") for r in recs if r.get("slowdown_pct") is not None]
        parts = []
        if times:
            spread = f" (runs {min(times):.4g}-{max(times):.4g})" if len(times) > 1 else ""
            parts.append(f"{statistics.median(times):.4g} ms{spread}")
        if slows:
            parts.append(f"slow-down {statistics.median(slows):+.1f}%")
        print(printable(f"  {cell_id}  " + ", ".join(parts) + f"  [{len(recs)} runs]"))
    return 0


def _find(args) -> int:
    results = load_results(args.results)
    baselines = load_all(args.dir)
    missing = 0
    for part in parts_of(results):
        exact, other = find(part, baselines)
        if exact:
            print(printable(f"{part.profile}: {exact.path}"))
        else:
            missing += 1
            ref = f"; another machine's, for reference: {other.path}" if other else ""
            print(printable(f"{part.profile}: no baseline in {args.dir} for {part.fingerprint.describe()} "
                            f"(it would be {default_name(part)}.json){ref}"))
    return 1 if missing else 0
