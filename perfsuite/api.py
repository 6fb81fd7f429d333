"""The typed Python API: what the ``perfsuite`` commands do, as functions of frozen options returning frozen results.

asv's shape (a pure ``run()`` under a thin command line): options are a :class:`RunOptions`, results typed
records, and nothing is printed unless ``verbose=True`` (pytest's own output and the comparison table included).
Errors are :class:`perfsuite.errors.PerfsuiteError` with a one-line message, as on the command line::

    from perfsuite import api

    result = api.run(api.RunOptions(cells="adapter in ('none', 'lora') and batch == 1", rounds=5))
    print(result.exit_code, result.report)  # 0, perfsuite-out/smoke/report/index.html

Each function wraps the step the command runs (:func:`perfsuite.job.run_job`, :mod:`perfsuite.compare`,
:func:`perfsuite.report.render_report`, :func:`perfsuite.ab.ab`, :mod:`perfsuite.history`); docs/api.md.
Over 350 lines on purpose: the whole public surface — every command's options and results — in one module.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import perfsuite.errors as errors
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.comparison import Comparison

if TYPE_CHECKING:
    from perfsuite.formats.results import Results
    from perfsuite.history.changes import ChangePoint
    from perfsuite.history.store import Added

# the exit codes a result's exit_code takes (perfsuite.errors defines them for every entry point)
EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = (errors.EXIT_OK, errors.EXIT_REGRESSION, errors.EXIT_USAGE,
                                                          errors.EXIT_INTERRUPTED)


@dataclass(frozen=True)
class RunOptions:
    """What ``perfsuite run`` is told on its command line (None: the profile's or perfsuite's default)."""

    profile: str = "smoke"
    cells: str | None = None  # selection expression over cell fields, e.g. "adapter == 'lora' and batch <= 4"
    device: str = "auto"  # auto, cpu or cuda
    dtype: str | None = None
    rounds: int | None = None  # fixed timed rounds per loop (None: the profile's policy)
    warmup: int | None = None
    threads: int | None = None  # torch CPU threads while cells run (None: 1)
    shard: str | None = None  # "I/N"
    weights: str | None = None  # a GPT-2 checkpoint folder
    adapters: str | None = None  # MODULE:OBJECT of contributed adapters (perfsuite.extensions)
    out_dir: str | Path | None = None  # None: perfsuite-out/PROFILE[-shardIofN]
    resume: bool = False
    fresh: bool = False
    compare: bool = True  # compare with the matching baseline
    baseline: str | Path | None = None  # a baseline or results file to compare with (None: baselines_dir's)
    baselines_dir: str | Path | None = None  # None: ./baselines, else the checkout's
    alpha: float | None = None
    min_effect_pct: float | None = None
    remeasure: int | None = None  # re-measurements of a suspect regression (None: perfsuite's default)
    accept_environment: bool = False  # this machine's baseline with other software: shown, does not fail
    accept_behaviour: bool = False  # a changed deterministic outcome: shown, does not fail
    allow_missing: bool = False  # a baseline cell the run did not measure: shown, does not fail (else exit 1)
    report: bool = True
    benchmarks: str | Path | None = None  # the benchmark tests (None: the checkout's, else the package's)
    pytest_args: tuple[str, ...] = ()
    wait: bool = False  # another perfsuite process writing to out_dir: wait for it (else refused at once)

    def __post_init__(self) -> None:
        for name in ("rounds", "warmup", "threads", "remeasure"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (1 if name == "rounds" else 0)):
                raise PerfsuiteError(f"{name} = {value!r}: expected a whole number "
                                     f"{'>= 1' if name == 'rounds' else '>= 0'}")

    def cell_options(self) -> dict[str, object]:
        """The options that choose and time cells (perfsuite.options.CELL_OPTIONS)."""
        from perfsuite.options import CELL_OPTIONS

        return {name: getattr(self, name) for name in CELL_OPTIONS}

    def default_out_dir(self) -> Path:
        return Path(self.out_dir or f"perfsuite-out/{self.profile}"
                    + (f"-shard{self.shard.replace('/', 'of')}" if self.shard else ""))


@dataclass(frozen=True)
class RunResult:
    """What a run wrote, and how it ended: ``exit_code`` 0 (ok), 1 (a confirmed regression or failed cells),
    2 (the comparison failed), 130 (interrupted; the cells done are kept)."""

    exit_code: int
    out_dir: Path
    results: Path | None  # results.json (None: no cell was measured)
    comparison: Path | None  # comparison.json (None: nothing was compared)
    report: Path | None  # report/index.html
    summary: tuple[str, ...]  # the command's one-screen summary, line by line
    output: str = field(default="", repr=False)  # what pytest and the steps printed (verbose=False)

    @property
    def regression(self) -> bool:
        return self.exit_code == EXIT_REGRESSION

    def load_results(self) -> Results:
        from perfsuite.formats.results import load_results

        if self.results is None:
            raise PerfsuiteError(f"no results in {self.out_dir}: no cell was measured")
        return load_results([self.results])


@dataclass(frozen=True)
class CompareResult:
    """A comparison (:mod:`perfsuite.formats.comparison`: its parts, cells and metric verdicts, typed) and what
    it concludes."""

    comparison: Comparison = field(repr=False)

    @property
    def document(self) -> dict:
        """The comparison as its JSON document (what ``comparison.json`` holds)."""
        return self.comparison.to_dict()

    @property
    def summary(self) -> dict[str, int]:
        """Verdict → number of cells (regression, improvement, unchanged, inconclusive, new, missing, ...)."""
        return dict(self.comparison.summary)

    @property
    def regression(self) -> bool:
        return self.comparison.has_regression

    @property
    def fails(self) -> bool:  # the command's exit 1: a regression, or a baseline cell not measured (not allowed)
        return self.comparison.fails

    def markdown(self, title: str | None = None) -> str:
        from perfsuite.compare.render import render_markdown

        return render_markdown(self.comparison, title) if title else render_markdown(self.comparison)

    def terminal(self) -> str:
        from perfsuite.compare.render import render_terminal

        return render_terminal(self.comparison)


@dataclass(frozen=True)
class ReportResult:
    index: Path  # index.html
    summary: Path  # summary.md
    csv: Path  # results.csv
    figures: tuple[Path, ...]
    missing: tuple[str, ...]  # what the report could not show, one line each
    out_dir: Path


@dataclass(frozen=True)
class ABResult:
    comparison: CompareResult
    a: str  # what side A ran ("BASE (commit)")
    b: str
    a_runs: tuple[Path, ...]  # each run's results file
    b_runs: tuple[Path, ...]
    seconds: float
    runs: int  # runs per side


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[io.StringIO]:
    """Everything printed inside, kept instead of shown (unless ``verbose``)."""
    buffer = io.StringIO()
    if verbose:
        yield buffer
        return
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def run(options: RunOptions = RunOptions(), *, verbose: bool = False) -> RunResult:
    """Benchmark the selected cells in this process (pytest), write results.json, compare with the baseline and
    draw the report: ``perfsuite run``."""
    from perfsuite.compare.verdicts import REMEASURE
    from perfsuite.job import run_job

    out = options.default_out_dir()
    with _quiet(verbose) as printed:
        outcome = run_job(out_dir=out, options=options.cell_options(), resume=options.resume, fresh=options.fresh,
                          benchmarks=str(options.benchmarks) if options.benchmarks else None,
                          baseline=str(options.baseline) if options.baseline else None,
                          baselines_dir=str(options.baselines_dir) if options.baselines_dir else None,
                          compare_options=_compare_options(options.alpha, options.min_effect_pct,
                                                           REMEASURE if options.remeasure is None else options.remeasure,
                                                           options.accept_environment, options.accept_behaviour)
                          if options.compare else None, allow_missing=options.allow_missing,
                          report=options.report, extra_pytest_args=list(options.pytest_args), wait=options.wait)
    return RunResult(outcome.exit_code, outcome.out_dir, outcome.results, outcome.comparison, outcome.report,
                     tuple(outcome.lines), printed.getvalue())


def _compare_options(alpha: float | None, min_effect_pct: float | None, remeasure: int = 0,
                     accept_environment: bool = False, accept_behaviour: bool = False):
    from perfsuite.compare.verdicts import CompareOptions

    defaults = CompareOptions()
    return CompareOptions(alpha=defaults.alpha if alpha is None else alpha,
                          min_effect_pct=defaults.min_effect_pct if min_effect_pct is None else min_effect_pct,
                          remeasure=remeasure, accept_environment=accept_environment,
                          accept_behaviour=accept_behaviour)


def _results(results: Results | str | Path | Sequence[str | Path]) -> Results:
    from perfsuite.formats.results import Results, load_results

    if isinstance(results, Results):
        return results
    return load_results([results] if isinstance(results, (str, Path)) else list(results))


def compare(results: Results | str | Path | Sequence[str | Path], *, baseline: str | Path | None = None,
            baselines_dir: str | Path | None = None, alpha: float | None = None,
            min_effect_pct: float | None = None, remeasure: int = 0, checkout: str | Path = ".",
            workdir: str | Path | None = None, accept_environment: bool = False, accept_behaviour: bool = False,
            extra_runs: Sequence[str | Path] = (), looks: int | None = None, allow_missing: bool = False,
            verbose: bool = False) -> CompareResult:
    """Results (files of one run, or loaded) against ``baseline`` (a baseline or results file), else this machine's
    baseline in ``baselines_dir`` (gating), else another machine's (reference): ``perfsuite compare``.
    ``remeasure``: a suspect regression is re-measured that many times, each in a fresh pytest process of
    ``checkout`` (the results must then be files: their pytest node ids say what to run), the fresh results
    written to ``workdir`` (default: the first results file's folder); ``verbose`` says when it does.
    ``extra_runs``: results files of re-measures made elsewhere (a nightly shard's), each one more run of its cells,
    judged with α spent over ``looks`` (default: ``remeasure``, else the most extra runs a cell has).
    ``accept_environment``/``accept_behaviour``/``allow_missing``: an upgrade's or an intended change's verdicts,
    or a baseline cell the results lack, shown, not failing."""
    from perfsuite.compare.baselines import load_all, load_reference
    from perfsuite.compare.verdicts import compare_results
    from perfsuite.job import default_baselines_dir

    loaded = _results(results)
    baselines = (load_reference(str(baseline)) if baseline
                 else load_all(baselines_dir if baselines_dir is not None else default_baselines_dir()))
    run_again = _remeasurer(results, loaded, checkout, workdir, verbose) if remeasure else None
    extra = [_results(p) for p in extra_runs]
    budget = looks if looks is not None else (remeasure or _most_extra_runs(loaded, extra))
    return CompareResult(compare_results(loaded, baselines, _compare_options(alpha, min_effect_pct, budget,
                                                                             accept_environment, accept_behaviour),
                                         remeasure=run_again, extra_runs=extra).allowing_missing(allow_missing))


def _most_extra_runs(loaded: Results, extra: list[Results]) -> int:
    """The most extra runs any cell of ``loaded`` has in ``extra`` (the looks a merge must spend α over)."""
    counts: dict[str, int] = {}
    for results in extra:
        for rec in results.records:
            counts[rec.id] = counts.get(rec.id, 0) + 1
    return max(counts.values(), default=0)


def _remeasurer(files, loaded: Results, checkout: str | Path, workdir: str | Path | None, verbose: bool):
    """Suspects of ``loaded`` re-measured in a fresh pytest process of ``checkout`` (node ids from ``files``)."""
    import sys

    from perfsuite.formats.io import read_json
    from perfsuite.processes import node_ids_of, remeasurer

    if not isinstance(files, (str, Path, list, tuple)):
        raise PerfsuiteError("re-measuring suspects needs the results files (their pytest node ids), not loaded results")
    paths = [files] if isinstance(files, (str, Path)) else list(files)
    ids: dict[str, str] = {}
    for path in paths:
        ids |= node_ids_of(read_json(path))
    run_again = remeasurer(loaded, ids, checkout, workdir if workdir is not None else Path(paths[0]).parent)

    def remeasure(cell_ids: list[str]):
        if verbose:
            print(f"re-measuring {len(cell_ids)} suspect cells in a fresh pytest process ...", file=sys.stderr,
                  flush=True)
        return run_again(cell_ids)

    return remeasure


def report(results: Results | str | Path | Sequence[str | Path], out_dir: str | Path, *,
           comparison: CompareResult | Comparison | None = None, title: str | None = None, vector: str = "svg",
           history: str | Path | None = None) -> ReportResult:
    """The HTML/Markdown report, the figures and results.csv in ``out_dir``: ``perfsuite report``. ``results``: loaded,
    or files (shards of one run, or several runs: a cell of several runs is reported as its median over them,
    :mod:`perfsuite.report.runs`). ``vector``: svg, pdf or none beside each PNG; ``history``: a history store whose
    trends and change points end the page."""
    from perfsuite.report import render_report

    if isinstance(comparison, CompareResult):
        comparison = comparison.comparison
    from perfsuite.formats.results import Results, ResultsError
    from perfsuite.report.runs import load_for_report

    trends = _trend_sections(history, out_dir) if history is not None else ()
    if not isinstance(results, Results):  # shards of one run, or several runs: their medians (report/runs.py)
        results = load_for_report([results] if isinstance(results, (str, Path)) else list(results))
        if results.errors:
            raise ResultsError(results.errors[0])
    files = render_report(results, out_dir, comparison=comparison, title=title, vector=vector,
                          trends=trends)
    return ReportResult(files.index, files.summary, files.csv, tuple(files.figures), tuple(files.missing),
                        files.out_dir)


def _trend_sections(store_path: str | Path, out_dir: str | Path) -> list:
    from perfsuite.history import find_changes, open_store
    from perfsuite.history.trends import trend_sections

    with open_store(store_path) as store:
        return trend_sections(find_changes(store), out_dir)


def ab(base: str, head: str | None = None, options: RunOptions = RunOptions(), *, runs: int | None = None,
       out_dir: str | Path = "perfsuite-out/ab", keep_worktrees: bool = False, repo: str | Path = ".",
       remeasure: int | None = None, wait: bool = False, allow_missing: bool = False,
       verbose: bool = False) -> ABResult:
    """Commit ``base`` against ``head`` (None: the working tree), runs alternated on this machine, each in its own
    process: ``perfsuite ab``. Only the cell options and the statistical options of ``options`` apply; a suspect
    regression is re-measured ``remeasure`` times on both sides (None: as the command, once). ``wait``: another
    perfsuite process writing to ``out_dir``: wait for it (else refused at once). ``allow_missing``: a cell BASE
    measured and HEAD did not passes. ``verbose``: progress on stderr. BASE's and HEAD's code runs: see perfsuite.ab."""
    import sys

    from perfsuite.ab import DEFAULT_RUNS, ab as run_ab
    from perfsuite.compare.verdicts import REMEASURE

    runs = runs or DEFAULT_RUNS
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if verbose else (lambda line: None)
    with _quiet(verbose):
        doc, a, b, seconds = run_ab(base, head, options.cell_options(), runs=runs, out_dir=out_dir,
                                    compare_options=_compare_options(options.alpha, options.min_effect_pct,
                                                                     REMEASURE if remeasure is None else remeasure,
                                                                     accept_behaviour=options.accept_behaviour),
                                    keep_worktrees=keep_worktrees, start=repo, progress=progress, wait=wait)
    return ABResult(CompareResult(doc.allowing_missing(allow_missing)), a.describe(), b.describe(), tuple(a.runs),
                    tuple(b.runs), seconds, runs)


def history_add(store: str | Path, results: str | Path | Sequence[str | Path]) -> Added:
    """Add one run (its results file, or its shards) to the history store, creating it: ``perfsuite history add``.
    ``run`` of the answer is None when these files were added before."""
    from perfsuite.history.store import add_files

    return add_files(store, [results] if isinstance(results, (str, Path)) else list(results))


def history_changes(store: str | Path, *, cells: str | None = None, metric: str = "all") -> list[ChangePoint]:
    """Every change point shown for the store's series (after acknowledgements), each marked ``filed`` or not:
    ``perfsuite history show``."""
    from perfsuite.history.changes import find_changes
    from perfsuite.history.store import open_store

    with open_store(store) as opened:
        return [c for series in find_changes(opened, cells, metric) for c in series.changes]
