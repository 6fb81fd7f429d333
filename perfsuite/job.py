"""The main job: benchmark → results JSON → compare with the matching baseline → report.

pytest (with pytest-benchmark and the perfsuite plugin) does the measuring, so
everything stays reachable with plain ``pytest`` too. Cells are journaled as
they finish; the results JSON is assembled from the journal even after Ctrl-C,
and ``--resume`` measures only what is missing.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from perfsuite.cells.grid import compile_selection, get_profile, no_match_message, selected_cells
from perfsuite.errors import (EXIT_INTERRUPTED, EXIT_JOURNAL_WRITE_FAILED, EXIT_OK, EXIT_REGRESSION, EXIT_USAGE,
                              PerfsuiteError)
from perfsuite.formats.comparison import Comparison
from perfsuite.formats.io import write_json_atomic, write_text_atomic
from perfsuite.formats.journal import Journal
from perfsuite.formats.record import STATUS_OUTSIDE_BUDGET, missing_extra_reasons
from perfsuite.locks import writer_lock
from perfsuite.options import cell_option_args

JOURNAL_NAME = "journal.jsonl"
RESULTS_NAME = "results.json"
PREVIOUS_NAME = "previous"  # a finished run that a new run into the same --out replaces is moved here
# What a finished run leaves in --out (besides its lock files and the remeasure-*.json of its suspects).
RUN_FILES = (JOURNAL_NAME, RESULTS_NAME, "comparison.json", "comparison.md", "report")


@dataclass
class RunOutcome:
    out_dir: Path
    exit_code: int
    results: Path | None = None
    comparison: Path | None = None
    report: Path | None = None
    lines: list[str] = field(default_factory=list)  # the one-screen summary


def find_benchmarks_dir(explicit: str | None = None) -> Path:
    """The benchmark tests: an explicit folder, else tests/benchmarks of this checkout (whose node ids earlier runs
    recorded), else the tests shipped in the package (an installed perfsuite)."""
    import perfsuite
    import perfsuite.benchmarks

    candidates = [Path(explicit)] if explicit else [
        Path(perfsuite.__file__).resolve().parents[1] / "tests" / "benchmarks",
        Path(perfsuite.benchmarks.__file__).resolve().parent]
    for c in candidates:
        if (c / "test_latency.py").exists():
            return c
    raise PerfsuiteError(f"cannot find the benchmark tests (looked in {', '.join(map(str, candidates))}); "
                         "pass --benchmarks DIR")


def benchmarks_root(bench_dir: Path) -> Path:
    """pytest's rootdir for a run of ``bench_dir``: the checkout (or, installed, the folder holding the package),
    so that the node ids a run records can be run again from there (a re-measurement)."""
    return bench_dir.resolve().parents[1]


def default_baselines_dir() -> Path:
    """``./baselines`` when the current folder has one, else the checkout's (perfsuite run from a checkout's
    subfolder), else ``./baselines`` (none yet: the comparison says how to record one)."""
    import perfsuite

    here = Path("baselines")
    checkout = Path(perfsuite.__file__).resolve().parents[1] / "baselines"
    if here.is_dir() or not checkout.is_dir():
        return here
    return _shortest(checkout)


def pytest_args(*, benchmarks: Path, journal: Path, options: dict[str, object], resume: bool,
                extra: list[str]) -> list[str]:
    """The pytest command line for a run: the plugin's own options plus journal and progress."""
    args = [str(benchmarks), "-q", "-p", "no:cacheprovider", f"--rootdir={benchmarks_root(benchmarks)}",
            "--perfsuite-progress",
            f"--perfsuite-journal={journal}", "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name",
            *cell_option_args(options)]
    if resume:
        args.append("--perfsuite-resume")
    return args + list(extra)


def check_selection(options: dict[str, object]) -> None:
    """The profile exists and the selection parses and picks a cell, on either device: else one PerfsuiteError line
    here rather than pytest's usage error and ours. With --adapters or --weights the grid is only known inside the
    run's pytest session, which checks the selection itself."""
    profile = get_profile(str(options.get("profile") or "smoke"))
    expr = str(options["cells"]) if options.get("cells") else None
    if expr is None:
        return
    compile_selection(expr)
    if options.get("adapters") or options.get("weights"):
        return
    if not any(selected_cells(profile, expr, device=d) for d in ("cpu", "cuda")):
        raise PerfsuiteError(no_match_message(profile, profile.cells(device="cpu", all_modes=True), expr))


def not_run_text(not_run: list[dict]) -> str:
    """"not run: N" for the cells that could not run; the cells left blank by the grid's design (a recompute cell over
    its token budget, as LLM-42 Fig. 13 leaves them) are counted apart: they are no fault and need no action."""
    blank = sum(1 for r in not_run if r.get("status") == STATUS_OUTSIDE_BUDGET)
    text = f"not run: {len(not_run) - blank}"
    return text + (f" (and {blank} blank by design: over the token budget)" if blank else "")


def keep_previous(out: Path) -> Path | None:
    """Move a finished run's files out of the way of a new run into ``out``: into ``out/previous`` (an older
    run there is deleted: one earlier run is kept). None when ``out`` held no run's files."""
    present = [out / name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return None
    previous = out / PREVIOUS_NAME
    try:
        if previous.exists():
            shutil.rmtree(previous)
        previous.mkdir()
        for path in present + sorted(out.glob("remeasure-*.json")):
            path.rename(previous / path.name)
    except OSError as e:
        raise PerfsuiteError(f"cannot move the finished run in {out} to {previous}: {e.strerror or e}") from None
    return previous


def resume_options(journal: Journal) -> dict[str, object]:
    """The settings of the run being resumed, from its journal: a resumed run measures the same grid."""
    s = journal.settings()
    missing = [k for k in ("profile", "device", "dtype", "rounds", "warmup") if k not in s]
    if missing:
        raise PerfsuiteError(f"{journal.path}: the run header lacks {', '.join(missing)}; cannot resume it "
                             "(start over with --fresh)")
    return {"profile": s["profile"], "device": s["device"], "dtype": s["dtype"], "cells": s.get("selection"),
            "rounds": s["rounds"], "warmup": s["warmup"], "shard": s.get("shard"), "threads": s.get("threads"),
            "weights": s.get("weights_path"), "adapters": s.get("adapters")}


def run_job(*, out_dir: str | Path, options: dict[str, object], resume: bool = False, fresh: bool = False,
            benchmarks: str | None = None, baseline: str | None = None, baselines_dir: str | None = None,
            compare_options=None, report: bool = True, extra_pytest_args: list[str] | None = None,
            wait: bool = False, allow_missing: bool = False) -> RunOutcome:
    """Benchmark → results.json → comparison (when ``compare_options``, a CompareOptions) → report.

    The output folder is locked for the whole job (:mod:`perfsuite.locks`): a second run on it is refused at once
    (or waits, with ``wait``), so it can neither delete this run's journal nor time its cells a second time.
    ``allow_missing``: a baseline cell the run did not measure does not fail it."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PerfsuiteError(f"--out {out}: is a file, not a folder")
    if not resume:  # a bad profile or expression is refused in one line, before pytest starts or anything moves
        check_selection(options)
    if resume and not out.exists():  # no folder, no run in it; a folder is checked under its lock (a live run's
        raise PerfsuiteError(f"nothing to resume: {out / JOURNAL_NAME} does not exist")  # journal may be coming)
    out.mkdir(parents=True, exist_ok=True)
    with writer_lock(out, f"output folder {out}", folder=True, wait=wait):
        return _locked_job(out, options=options, resume=resume, fresh=fresh, benchmarks=benchmarks,
                           baseline=baseline, baselines_dir=baselines_dir, compare_options=compare_options,
                           report=report, extra_pytest_args=extra_pytest_args, allow_missing=allow_missing)


def _locked_job(out: Path, *, options: dict[str, object], resume: bool, fresh: bool, benchmarks: str | None,
                baseline: str | None, baselines_dir: str | None, compare_options, report: bool,
                extra_pytest_args: list[str] | None, allow_missing: bool = False) -> RunOutcome:
    journal = Journal(out / JOURNAL_NAME)
    if journal.path.exists() and not (resume or fresh):
        if not journal.is_complete():
            raise PerfsuiteError(f"{journal.path} holds an unfinished run: pass --resume to finish it "
                                 "or --fresh to start over")
        fresh = True  # the earlier run finished: kept in DIR/previous, never silently replaced
    kept = keep_previous(out) if fresh and journal.is_complete() else None
    if kept is not None:
        print(f"perfsuite run: the finished run in {out} is moved to {kept}/ (its report: {kept}/report/index.html); "
              f"this run replaces it in {out}", flush=True)
    if fresh and journal.path.exists():
        journal.path.unlink()
    if resume and not journal.path.exists():
        raise PerfsuiteError(f"nothing to resume: {journal.path} does not exist")
    if resume:
        options = resume_options(journal)
    bench_dir = find_benchmarks_dir(benchmarks)

    t0 = time.monotonic()
    code = pytest.main(pytest_args(benchmarks=bench_dir, journal=journal.path, options=options, resume=resume,
                                   extra=extra_pytest_args or []))
    outcome = RunOutcome(out_dir=out, exit_code=EXIT_OK)
    if kept is not None:
        outcome.lines.append(f"previous:   the finished run that was in {out} is now in {kept}/")
    interrupted = code == pytest.ExitCode.INTERRUPTED
    if code == pytest.ExitCode.USAGE_ERROR:
        raise PerfsuiteError("pytest refused the options (see the message above)")
    if code == EXIT_JOURNAL_WRITE_FAILED:  # disk full (or not writable): not a failed cell, never exit 1
        raise PerfsuiteError(f"cannot write {journal.path} (see above); the cells journaled before are kept: make "
                             f"room, then finish with: perfsuite run --resume --out {out}")
    if not journal.read():
        outcome.exit_code = EXIT_INTERRUPTED if interrupted else EXIT_USAGE
        outcome.lines.append("no cell was measured; nothing written")
        return outcome

    doc = journal.to_results_json()
    outcome.results = write_json_atomic(out / RESULTS_NAME, doc)
    n_ok = len(doc["benchmarks"])
    outcome.lines.append(f"cells measured: {n_ok}, {not_run_text(doc['perfsuite']['not_run'])}, "
                         f"in {time.monotonic() - t0:.0f} s")
    outcome.lines.append(f"results:    {outcome.results}")
    for reason, n in missing_extra_reasons(doc["perfsuite"]["not_run"]).items():
        outcome.lines.append(f"not run:    {n} cell{'s' if n != 1 else ''}: {reason}")
    if interrupted:
        outcome.exit_code = EXIT_INTERRUPTED
        outcome.lines.append(f"interrupted: the {n_ok + len(doc['perfsuite']['not_run'])} cells done are kept; "
                             f"finish with: perfsuite run --resume --out {out}")
        return outcome
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        outcome.exit_code = EXIT_REGRESSION
        outcome.lines.append(f"pytest exited with {int(code)}: some cells failed (see above)")

    comparison = None
    if compare_options:
        try:
            comparison = _compare_step(outcome, baseline, baselines_dir, compare_options, benchmarks_root(bench_dir),
                                       record_hint(options), allow_missing)
        except PerfsuiteError as e:  # a bad baseline must not cost the report: say so, render, exit 2
            outcome.exit_code = EXIT_USAGE
            outcome.lines.append(f"comparison: failed: {e}")
    if report:
        _report_step(outcome, comparison)
    return outcome


def _compare_step(outcome: RunOutcome, baseline: str | None, baselines_dir: str | Path | None, options,
                  rootdir: Path, hint: str, allow_missing: bool = False) -> Comparison | None:
    """Compare each part with this machine's baseline (gating) or another machine's (reference); write
    comparison.json and .md when anything was compared."""
    from perfsuite.compare.baselines import load_all, load_reference
    from perfsuite.compare.render import render_markdown, render_terminal
    from perfsuite.compare.verdicts import compare_results
    from perfsuite.formats.io import read_json
    from perfsuite.formats.results import load_results
    from perfsuite.processes import node_ids_of, remeasurer

    results = load_results([outcome.results])
    directory = Path(baselines_dir) if baselines_dir else default_baselines_dir()
    baselines = load_reference(baseline) if baseline else load_all(directory)
    remeasure = (remeasurer(results, node_ids_of(read_json(outcome.results)), rootdir, outcome.out_dir)
                 if options.remeasure else None)
    doc = compare_results(results, baselines, options, remeasure=remeasure, record_hint=hint).allowing_missing(
        allow_missing)
    if not doc.parts:
        outcome.lines.append("comparison: no cell was measured")
        return None
    outcome.lines.extend(summary_part_lines(doc.parts, directory))
    if not doc.cells:
        return None
    outcome.comparison = write_json_atomic(outcome.out_dir / "comparison.json", doc.to_dict())
    write_text_atomic(outcome.out_dir / "comparison.md", render_markdown(doc))
    print(render_terminal(doc))
    counts = ", ".join(f"{n} {v}" for v, n in doc.summary.items() if n)
    outcome.lines.append(f"comparison: {outcome.comparison} ({counts})")
    if doc.has_regression:
        outcome.exit_code = EXIT_REGRESSION
        outcome.lines.append("REGRESSION confirmed: see the comparison table above")
    if doc.unmeasured:
        outcome.exit_code = EXIT_REGRESSION
        outcome.lines.append(f"MISSING: {len(doc.unmeasured)} baseline cell(s) not measured (named above); "
                             "--allow-missing when intended")
    return doc


def summary_part_lines(parts, directory: Path) -> list[str]:
    """One summary line per part of a comparison (:class:`perfsuite.formats.comparison.PartEntry`), each said once:
    the parts of one profile part on several setups (hf-modern-smoke's Llama- and Qwen2-shaped models) without a
    baseline read alike, and are one line."""
    lines: list[str] = []
    for p in parts:
        if p.mode == "none":
            line = f"comparison: part {p.profile}: no baseline for this machine in {directory}; {p.hint}"
        elif p.mode == "reference":
            line = (f"comparison: part {p.profile}: no baseline for this machine; compared with {p.baseline} "
                    f"of another machine for reference only (never fails the run); {p.hint}")
        elif p.mode == "environment":
            line = (f"comparison: part {p.profile}: against this machine's {p.baseline} ({p.baseline_runs} runs) "
                    f"recorded with other software ({'; '.join(p.differences)})"
                    + (": accepted, does not fail the run" if p.accepted else ": judged as an environment change"))
        else:
            line = f"comparison: part {p.profile}: against this machine's {p.baseline} ({p.baseline_runs} runs)"
        if line not in lines:
            lines.append(line)
    return lines


def record_hint(options: dict) -> str:
    """The command that records this machine's baseline for the run's profile and device."""
    extra = "".join(f" --{k} {options[k]}" for k in ("device", "dtype") if options.get(k) not in (None, "auto"))
    return f"record one with: perfsuite baseline record --profile {options.get('profile') or 'smoke'}{extra}"


def _shortest(path: Path) -> Path:
    """``path`` relative to the current folder when it is inside it (what the reports and messages show)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _report_step(outcome: RunOutcome, comparison: Comparison | None = None) -> None:
    from perfsuite.report import render_report
    from perfsuite.formats.results import load_results

    files = render_report(load_results([outcome.results]), outcome.out_dir / "report", comparison=comparison)
    outcome.report = files.index
    outcome.lines.append(f"report:     {files.index} (and summary.md, results.csv, {len(files.figures)} figure files)")
