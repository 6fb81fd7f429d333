"""``perfsuite baseline``: write, inspect and find the per-device baselines under ``baselines/``."""

from __future__ import annotations

from perfsuite.formats.baseline import BASELINE_DIR, default_name, find_baseline, fingerprint_of, load_baseline, \
    profile_of, update_baseline
from perfsuite.formats.results import load_results

HELP = "manage baselines: update one from a results JSON, show one, find the one matching a run"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("update", help="write a run's cells into its device's baseline (atomically; says what changed)")
    up.add_argument("results", nargs="+", metavar="RESULTS.json",
                    help="pytest-benchmark JSON of a perfsuite run (several files: shards of one run)")
    up.add_argument("--name", default=None,
                    help="baseline name (file DIR/NAME.json); default: the profile and device fingerprint, "
                         "e.g. smoke_cpu-amd-epyc_torch-2.13.0-cpu_nocuda_float32_tiny")
    up.add_argument("--dir", default=str(BASELINE_DIR), metavar="DIR", help="baseline directory (default: baselines)")
    up.add_argument("--force", action="store_true",
                    help="overwrite a baseline of another device fingerprint or profile (refused otherwise)")
    up.add_argument("--note", default=None, metavar="TEXT",
                    help="free text kept in the file, e.g. the command that made the results (default: keep the "
                         "existing note)")
    up.add_argument("--prune", action="store_true",
                    help="drop baseline cells these results lack (kept by default, so shards can be added one by one)")
    show = sub.add_parser("show", help="print a baseline's fingerprint and cells")
    show.add_argument("file", metavar="FILE")
    find = sub.add_parser("find", help="print the baseline matching a run's fingerprint and profile (exit 1: none)")
    find.add_argument("results", nargs="+", metavar="RESULTS.json")
    find.add_argument("--dir", default=str(BASELINE_DIR), metavar="DIR", help="baseline directory (default: baselines)")


def run(args) -> int:
    if args.action == "update":
        report = update_baseline(load_results(args.results), directory=args.dir, name=args.name, force=args.force,
                                 prune=args.prune, note=args.note)
        print("\n".join(report.lines()))
        return 0
    if args.action == "show":
        b = load_baseline(args.file)
        print(f"{b.path}: baseline {b.name!r}, profile {b.profile}")
        print(f"fingerprint: {b.fingerprint.describe()}")
        print(f"created {b.created}, updated {b.updated}, {len(b.cells)} cells, torch threads "
              f"{b.source.get('threads')}")
        if b.note:
            print(f"note: {b.note}")
        for cell_id, rec in sorted(b.cells.items()):
            time_ms, slow = rec.get("time_ms"), rec.get("slowdown_pct")
            stats = [f"{time_ms:.4g} ms" if time_ms is not None else "",
                     f"slow-down {slow:+.1f}%" if slow is not None else "",
                     f"{len(rec.get('samples_ms') or [])} samples"]
            print(f"  {cell_id}  " + ", ".join(s for s in stats if s))
        return 0
    results = load_results(args.results)
    path = find_baseline(results, args.dir)
    if path is None:
        fp, profile = fingerprint_of(results), profile_of(results)
        print(f"no baseline in {args.dir} for profile {profile} on {fp.describe()} "
              f"(its default name would be {default_name(fp, profile)}.json)")
        return 1
    print(path)
    return 0
