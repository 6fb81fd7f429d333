"""The main job: benchmark → results JSON → compare with the matching baseline → report.

pytest (with pytest-benchmark and the perfsuite plugin) does the measuring, so
everything stays reachable with plain ``pytest`` too. Cells are journaled as
they finish; the results JSON is assembled from the journal even after Ctrl-C,
and ``--resume`` measures only what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import write_json_atomic, write_text_atomic
from perfsuite.formats.journal import Journal
from perfsuite.plugin.options import cell_option_args

JOURNAL_NAME = "journal.jsonl"
RESULTS_NAME = "results.json"

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class RunOutcome:
    out_dir: Path
    exit_code: int
    results: Path | None = None
    comparison: Path | None = None
    report: Path | None = None
    lines: list[str] = field(default_factory=list)  # the one-screen summary


def find_benchmarks_dir(explicit: str | None = None) -> Path:
    """The benchmark tests: an explicit folder, else tests/benchmarks of this checkout or of the current folder."""
    import perfsuite

    candidates = [Path(explicit)] if explicit else [
        Path(perfsuite.__file__).resolve().parents[1] / "tests" / "benchmarks", Path.cwd() / "tests" / "benchmarks"]
    for c in candidates:
        if (c / "test_latency.py").exists():
            return c
    raise PerfsuiteError(f"cannot find the benchmark tests (looked in {', '.join(map(str, candidates))}); "
                         "run from a perfsuite checkout or pass --benchmarks DIR")


def pytest_args(*, benchmarks: Path, journal: Path, options: dict[str, object], resume: bool,
                extra: list[str]) -> list[str]:
    """The pytest command line for a run: the plugin's own options plus journal and progress."""
    args = [str(benchmarks), "-q", "-p", "no:cacheprovider", "--perfsuite-progress",
            f"--perfsuite-journal={journal}", "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name",
            *cell_option_args(options)]
    if resume:
        args.append("--perfsuite-resume")
    return args + list(extra)


def resume_options(journal: Journal) -> dict[str, object]:
    """The settings of the run being resumed, from its journal: a resumed run measures the same grid."""
    s = journal.settings()
    return {"profile": s["profile"], "device": s["device"], "dtype": s["dtype"], "cells": s.get("selection"),
            "rounds": s["rounds"], "warmup": s["warmup"], "shard": s.get("shard"), "threads": s.get("threads"),
            "weights": s.get("weights_path")}


def run_job(*, out_dir: str | Path, options: dict[str, object], resume: bool = False, fresh: bool = False,
            benchmarks: str | None = None, baseline: str | None = None, compare_options=None,
            report: bool = True, extra_pytest_args: list[str] | None = None) -> RunOutcome:
    """Benchmark → results.json → comparison (when ``compare_options``, a CompareOptions) → report."""
    out = Path(out_dir)
    journal = Journal(out / JOURNAL_NAME)
    if journal.path.exists() and not (resume or fresh):
        if not journal.is_complete():
            raise PerfsuiteError(f"{journal.path} holds an unfinished run: pass --resume to finish it "
                                 "or --fresh to start over")
        fresh = True  # the earlier run finished: its results.json is replaced by this run's
        print(f"perfsuite run: replacing the finished run in {out}")
    if fresh and journal.path.exists():
        journal.path.unlink()
    if resume and not journal.path.exists():
        raise PerfsuiteError(f"nothing to resume: {journal.path} does not exist")
    if resume:
        options = resume_options(journal)
    out.mkdir(parents=True, exist_ok=True)
    bench_dir = find_benchmarks_dir(benchmarks)

    t0 = time.monotonic()
    code = pytest.main(pytest_args(benchmarks=bench_dir, journal=journal.path, options=options, resume=resume,
                                   extra=extra_pytest_args or []))
    outcome = RunOutcome(out_dir=out, exit_code=EXIT_OK)
    interrupted = code == pytest.ExitCode.INTERRUPTED
    if code == pytest.ExitCode.USAGE_ERROR:
        raise PerfsuiteError("pytest refused the options (see the message above)")
    if not journal.read():
        outcome.exit_code = EXIT_INTERRUPTED if interrupted else EXIT_USAGE
        outcome.lines.append("no cell was measured; nothing written")
        return outcome

    doc = journal.to_results_json()
    outcome.results = write_json_atomic(out / RESULTS_NAME, doc)
    n_ok, n_not_run = len(doc["benchmarks"]), len(doc["perfsuite"]["not_run"])
    outcome.lines.append(f"cells measured: {n_ok}, not run: {n_not_run}, in {time.monotonic() - t0:.0f} s")
    outcome.lines.append(f"results:    {outcome.results}")
    from perfsuite.plugin import missing_extra_reasons

    for reason, n in missing_extra_reasons(doc["perfsuite"]["not_run"]).items():
        outcome.lines.append(f"not run:    {n} cell{'s' if n != 1 else ''}: {reason}")
    if interrupted:
        outcome.exit_code = EXIT_INTERRUPTED
        outcome.lines.append(f"interrupted: the {n_ok + n_not_run} cells done are kept; "
                             f"finish with: perfsuite run --resume --out {out}")
        return outcome
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        outcome.exit_code = EXIT_REGRESSION
        outcome.lines.append(f"pytest exited with {int(code)}: some cells failed (see above)")

    comparison = None
    if compare_options:
        try:
            comparison = _compare_step(outcome, baseline, compare_options, bench_dir.parents[1])
        except PerfsuiteError as e:  # a bad baseline must not cost the report: say so, render, exit 2
            outcome.exit_code = EXIT_USAGE
            outcome.lines.append(f"comparison: failed: {e}")
    if report:
        _report_step(outcome, comparison)
    return outcome


def _compare_step(outcome: RunOutcome, baseline: str | None, options, rootdir: Path) -> dict | None:
    """Compare with ``baseline`` or the matching one in baselines/; write comparison.json and .md."""
    from perfsuite.compare.remeasure import pytest_remeasurer
    from perfsuite.compare.render import render_markdown, render_terminal
    from perfsuite.compare.verdicts import compare_with_reference, has_regression
    from perfsuite.formats.baseline import ran_any
    from perfsuite.formats.results import load_results

    results = load_results([outcome.results])
    remeasure = pytest_remeasurer([outcome.results], results, rootdir) if options.remeasure else None
    found = compare_with_reference(results, baseline, _shortest(rootdir / "baselines"), options, remeasure)
    if found is None:
        hint = (f"; store this run as one with: perfsuite baseline update {outcome.results}" if ran_any(results)
                else " (no cell was measured)")
        outcome.lines.append(f"comparison: no matching baseline in {rootdir / 'baselines'}{hint}")
        return None
    doc, ref = found
    outcome.comparison = write_json_atomic(outcome.out_dir / "comparison.json", doc)
    write_text_atomic(outcome.out_dir / "comparison.md", render_markdown(doc) + "\n")
    print(render_terminal(doc))
    counts = ", ".join(f"{n} {v}" for v, n in doc["summary"].items() if n)
    outcome.lines.append(f"comparison: {outcome.comparison} vs {ref} ({counts})")
    if has_regression(doc):
        outcome.exit_code = EXIT_REGRESSION
        outcome.lines.append("REGRESSION confirmed: see the comparison table above")
    return doc


def _shortest(path: Path) -> Path:
    """``path`` relative to the current folder when it is inside it (what the reports and messages show)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _report_step(outcome: RunOutcome, comparison: dict | None = None) -> None:
    from perfsuite.report import render_report
    from perfsuite.formats.results import load_results

    files = render_report(load_results([outcome.results]), outcome.out_dir / "report", comparison=comparison)
    outcome.report = files.index
    outcome.lines.append(f"report:     {files.index} (and summary.md, results.csv, {len(files.figures)} figure files)")
