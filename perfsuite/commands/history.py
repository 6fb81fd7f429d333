"""``perfsuite history``: keep every nightly run, find the change points, draw the trends (thin over
:mod:`perfsuite.history`)."""

from __future__ import annotations

import time
from pathlib import Path

from perfsuite.commands import comma_numbers
from perfsuite.errors import PerfsuiteError
from perfsuite.options import at_least_one
from perfsuite.table import printable

HELP = "nightly history: add runs to a store, list change points, acknowledge intended steps, draw trends"
DEFAULT_STORE = "perfsuite-history.sqlite"
DEFAULT_OUT = "perfsuite-out/trends"
METRIC_CHOICES = ("all", "auto", "time_ms", "slowdown_ratio", "peak_mem_bytes", "recompute_pct", "mismatches",
                  "matches_fixed_schedule")  # = ("all", "auto", *perfsuite.history.rows.METRICS), tested
TABLES = ("search", "recent", "monitoring")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def with_store(q):
        q.add_argument("--store", default=DEFAULT_STORE, metavar="PATH",
                       help=f"the history store, an SQLite file (default: {DEFAULT_STORE})")
        return q

    def with_selection(q):
        q.add_argument("--cells", default=None, metavar="EXPR", help="only cells matching a selection expression")
        q.add_argument("--metric", default="all", choices=METRIC_CHOICES,
                       help="series to search: all (default), auto (only the slow-down ratio where a cell has one, "
                            "else time), or one")
        return q

    a = with_store(sub.add_parser("add", help="add one run (its results file, or the shards of one run) to the store"))
    a.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files of ONE run (shards of it)")
    s = with_selection(with_store(sub.add_parser("show", help="list each change point: cell, step, commit range")))
    s.add_argument("--json", default=None, metavar="FILE", help="also write the change points as JSON (for CI)")
    k = with_store(sub.add_parser("ack", help="mark the step at a commit as intended: later searches start there"))
    k.add_argument("cells", nargs="+", metavar="CELL", help="cell ids, e.g. 'latency[lora-r8-b1-s32]'")
    k.add_argument("--commit", required=True, metavar="SHA", help="a run's commit (7+ hex digits), e.g. the end of "
                                                                  "the change point's range")
    k.add_argument("--note", required=True, metavar="TEXT", help="why the step is expected")
    r = with_selection(with_store(sub.add_parser("report", help="render the trends page (index.html, figures, "
                                                                   "trends.csv)")))
    r.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    m = sub.add_parser("simulate", help="measure false change points (A/A), detection power, and false issues over "
                                        "nightly looks, on simulated series")
    m.add_argument("--tables", default=",".join(TABLES), metavar="LIST",
                   help=f"which tables: {', '.join(TABLES)} (default: all three)")
    m.add_argument("--looks", type=at_least_one, default=60, metavar="N",
                   help="nightly looks of the monitoring table (default: 60)")
    m.add_argument("--nights", default="60,365", metavar="LIST", help="history lengths (default: 60,365)")
    m.add_argument("--noise", default="1,3,5,10", metavar="PCTS", help="between-run noise sd, %% (default: 1,3,5,10)")
    m.add_argument("--steps", default="2,5,10", metavar="PCTS", help="step sizes, %% (default: 2,5,10)")
    m.add_argument("--stalls", type=float, default=0.0, metavar="SHARE",
                   help="share of nights hit by a 10-50 %% stall (default: 0)")
    m.add_argument("--trials", type=at_least_one, default=500, help="series per row (default: 500)")
    m.add_argument("--recent-noise", type=float, default=1.5, metavar="PCT",
                   help="noise sd of the last-nights rows, %% (default: 1.5)")
    m.add_argument("--recent-step", type=float, default=5.0, metavar="PCT",
                   help="step of the last-nights rows, %% (default: 5)")
    m.add_argument("--autocorrelation", type=float, default=0.3, metavar="PHI",
                   help="lag-1 autocorrelation of the nightly noise in the last-nights rows' second setting "
                        "(default: 0.3)")
    m.add_argument("--seed", type=int, default=0, help="seed of the simulated series (default: 0)")
    y = with_store(sub.add_parser("synth", help="fill a store with synthetic nightlies (to size the page, or try it)"))
    y.add_argument("--profile", default="smoke", help="whose cells (default: smoke)")
    y.add_argument("--nights", type=at_least_one, default=60, help="nightlies to write (default: 60)")
    y.add_argument("--step", action="append", default=[], metavar="EXPR:PCT@NIGHT",
                   help="a step of PCT %% from NIGHT on in the cells matching EXPR; repeatable")
    y.add_argument("--time-noise", type=float, default=3.0, metavar="PCT", help="time noise sd, %% (default: 3)")
    y.add_argument("--ratio-noise", type=float, default=1.5, metavar="PCT", help="slow-down noise sd, %% (1.5)")
    y.add_argument("--seed", type=int, default=0, help="seed of the synthetic noise (default: 0)")


def run(args) -> int:
    return {"add": _add, "show": _show, "ack": _ack, "report": _report, "simulate": _simulate,
            "synth": _synth}[args.action](args)


def _add(args) -> int:
    from perfsuite import api

    added = api.history_add(args.store, args.results)
    if added.run is None:
        print(printable(f"already in {args.store}: these files were added before; nothing changed"))
        return 0
    skipped = f", {added.not_measured} not measured" if added.not_measured else ""
    print(printable(f"run {added.run.run_id}: commit {added.run.short} of {added.run.datetime[:19]}, {added.cells} "
                    f"cells{skipped}, {added.rows} rows → {args.store}"))
    return 0


def _show(args) -> int:
    from perfsuite.history.changes import find_changes, write_changes
    from perfsuite.history.store import open_store

    with open_store(args.store) as store:
        found = find_changes(store, args.cells, args.metric)
        runs, acks = store.runs(), store.acks()
    changes = [c for s in found for c in s.changes]
    for c in changes:
        print(printable(c.line()))  # commits, software versions: recorded strings, printed inert
    wanted = {s.series.cell.id for s in found}
    for a in acks:
        if a.cell_id in wanted:
            print(printable(f"acknowledged: {a.cell_id} from {a.run.short} ({a.run.datetime[:10]}): {a.note}"))
    cells = len({s.series.cell.id for s in found})
    filed = sum(c.filed for c in changes)
    print(printable(f"{len(changes)} change point{'s' * (len(changes) != 1)} ({filed} filed) in {len(found)} series "
                    f"of {cells} cells, {len(runs)} runs in {args.store}"))
    if args.json:
        print(printable(f"→ {write_changes(args.json, found, args.store)}"))
    return 0


def _ack(args) -> int:
    from perfsuite.history.store import BUSY_TIMEOUT_S, checked_store_path, open_store
    from perfsuite.locks import writer_lock

    checked_store_path(args.store)  # before the lock file is made beside it
    with writer_lock(args.store, f"history store {args.store}", folder=False, wait=BUSY_TIMEOUT_S):
        with open_store(args.store, write=True) as store:
            acks = store.ack(args.cells, args.commit, args.note)
    for a in acks:
        print(printable(f"acknowledged {a.cell_id} from {a.run.short} ({a.run.datetime[:10]}): {a.note}"))
    return 0


def _report(args) -> int:
    from perfsuite.history.changes import find_changes
    from perfsuite.history.store import open_store
    from perfsuite.history.trends import render_trends

    start = time.perf_counter()
    with open_store(args.store) as store:
        found = find_changes(store, args.cells, args.metric)
    if not found:
        raise PerfsuiteError(f"{args.store}: no series to draw" + (f" for --cells {args.cells!r}" if args.cells else ""))
    files = render_trends(found, args.out)
    size = sum(p.stat().st_size for p in (files.index, *files.figures))
    print(f"{len(found)} series, {len(files.figures)} figures → {files.index} "
          f"({size / 1e6:.2f} MB with its figures; {files.csv.name} {files.csv.stat().st_size / 1e6:.2f} MB) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _simulate(args) -> int:
    nights = [int(n) for n in comma_numbers(args.nights, "--nights", positive=True)]
    noises, steps = (comma_numbers(getattr(args, o), f"--{o}", positive=True) for o in ("noise", "steps"))
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise PerfsuiteError(f"--tables {args.tables!r}: choose from {', '.join(TABLES)}")
    if args.trials < 1:
        raise PerfsuiteError("--trials must be at least 1")
    if not 0 <= args.autocorrelation < 1:
        raise PerfsuiteError("--autocorrelation must be in [0, 1)")
    if "search" in tables:
        _search_table(args, nights, noises, steps)
    if "recent" in tables:
        _recent_table(args, nights)
    if "monitoring" in tables:
        _monitoring_table(args)
    return 0


def _search_table(args, nights, noises, steps) -> None:
    from perfsuite.history.synthetic import false_change_points, power

    head = ["nightlies", "noise sd", "false change points (A/A)"]
    head += [f"found +{s:g} % (range, nightlies)" for s in steps]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for n in nights:
        for noise in noises:
            aa = false_change_points(n, noise / 100, args.trials, args.seed, args.stalls)
            cells = [str(n), f"{noise:g} %", aa.text()]
            for k, step in enumerate(steps):
                rate, width = power(n, noise / 100, step, args.trials, args.seed + k + 1, args.stalls)
                cells.append(f"{rate.text()}, {width:.1f}" if width == width else f"{rate.text()}, –")  # none found
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n{args.trials} series per cell of the table; [95 % Wilson interval]; steps at 2/3 of the history, "
          f"found when a change point of the right sign has the step's night in its commit range"
          + (f"; {args.stalls:g} of nights stalled" if args.stalls else ""))


def _recent_table(args, nights) -> None:
    from perfsuite.history.changepoints import MIN_SEGMENT_RUNS
    from perfsuite.history.synthetic import false_change_points, recent_power

    after, noise, step, phi = MIN_SEGMENT_RUNS, args.recent_noise / 100, args.recent_step, args.autocorrelation
    head = ["nightlies", "noise sd", "lag-1 autocorr.", "false change points (A/A)",
            f"found +{step:g} % in the last {after} nights"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for n in nights:
        for ar in sorted({0.0, phi}):
            aa = false_change_points(n, noise, args.trials, args.seed, autocorrelation=ar)
            found = recent_power(n, noise, step, args.trials, args.seed + 1, after=after, autocorrelation=ar)
            print(f"| {n} | {100 * noise:g} % | {ar:g} | {aa.text()} | {found.text()} |", flush=True)
    print(f"\nlast {after} nights: the step {after} nights before the end, found when a change point (provisional "
          "ones count) of the right sign has its night in the range")


SHOWN_WITHIN, FILED_WITHIN = 4, 8  # nights at the new level (the issue's bar: shown within 4, filed within 8)
FAMILY_PROFILE = "paper"  # the grid whose per-night family of searched series the monitoring table sizes


def _monitoring_table(args) -> None:
    from perfsuite.cells.grid import get_profile
    from perfsuite.compare.stats import wilson_interval
    from perfsuite.history.looks import (EARLY_STEP_SIGMAS, FILE_MIN_BEFORE_RUNS, LOOK_ALPHA, SERIES_ALPHA,
                                         WATCH_LOOKS)
    from perfsuite.history.rows import searched_metrics
    from perfsuite.history.synthetic import monitoring_false_issues, monitoring_power

    looks, noise, step, phi = args.looks, args.recent_noise / 100, args.recent_step, args.autocorrelation
    if looks <= FILED_WITHIN:
        raise PerfsuiteError(f"--looks must be over {FILED_WITHIN} (the step is planted {FILED_WITHIN} nights "
                             "before the last look)")
    family = sum(len(searched_metrics(c, gpu=True)) for c in get_profile(FAMILY_PROFILE).cells(device="cuda"))
    head = ["looks", "noise sd", "lag-1 autocorr.", "series with a false change-point issue", "issues per series",
            "false issues a night, paper grid", "series showing a false step (filed before)",
            f"+{step:g} % shown within {SHOWN_WITHIN} nights", f"+{step:g} % filed within {FILED_WITHIN} nights"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for ar in sorted({0.0, phi}):
        aa = monitoring_false_issues(looks, noise, args.trials, args.seed, autocorrelation=ar)
        shown, filed = monitoring_power(looks, noise, step, args.trials, args.seed + 1, autocorrelation=ar,
                                        shown_within=SHOWN_WITHIN, filed_within=FILED_WITHIN)
        per_night = family * aa.issues / (aa.with_issue.trials * looks)
        bound = family * wilson_interval(aa.with_issue.hits, aa.with_issue.trials)[1] / looks
        print(f"| {looks} | {100 * noise:g} % | {ar:g} | {aa.with_issue.hits}/{aa.with_issue.trials} "
              f"{aa.with_issue.text()} | {aa.issues / aa.with_issue.trials:.4f} | {per_night:.3f} (≤ {bound:.3f}) "
              f"| {aa.shown.text()} | {shown.text()} | {filed.text()} |", flush=True)
    print(f"\n{args.trials} series a row, each watched from its first night: every night the nightly's own look "
          f"(perfsuite.history.looks.look: the search, then the filing decision) on the series as it stood. "
          f"Filed: confirmed, filing p < {LOOK_ALPHA:.2g} ({100 * SERIES_ALPHA:g} % over {WATCH_LOOKS} looks), "
          f"{FILE_MIN_BEFORE_RUNS}+ nights before it or {EARLY_STEP_SIGMAS:g} σ̂. The paper grid on a GPU "
          f"searches {family} series a night (time, slow-down ratio, peak memory): false issues a night = {family} "
          f"× issues per series / {looks} (≤: the same from the interval's upper bound). Showing a false step: on "
          f"the page on at least one night (each one opened an issue before the filing decision). The step: at night "
          f"{looks - FILED_WITHIN}, shown = any change point of the right sign holding its night, filed = a filed one.")


def _synth(args) -> int:
    from perfsuite.cells.grid import get_profile, select
    from perfsuite.history.synthetic import build_store

    cells = get_profile(args.profile).cells(device="cpu")
    steps: dict[str, tuple[int, float]] = {}
    for spec in args.step:
        expr, _, rest = spec.rpartition(":")
        pct, _, night = rest.partition("@")
        try:
            step = (int(night), float(pct))
        except ValueError:
            raise PerfsuiteError(f"--step {spec!r}: expected EXPR:PCT@NIGHT, e.g. \"adapter == 'lora':5@40\"") from None
        steps |= {c.id: step for c in select(cells, expr)}
    if Path(args.store).exists():
        raise PerfsuiteError(f"{args.store}: exists; synth fills a new store only")
    start = time.perf_counter()
    build_store(args.store, cells, args.nights, steps=steps, time_noise=args.time_noise / 100,
                ratio_noise=args.ratio_noise / 100, seed=args.seed, profile=f"synthetic-{args.profile}")
    print(f"{args.nights} nightlies × {len(cells)} cells ({len(steps)} stepped) → {args.store} "
          f"({Path(args.store).stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0
