"""The pytest plugin (entry point ``pytest11: perfsuite``): the cell grid as parametrized benchmarks.

A test asks for the ``perfsuite_cell`` fixture and names its workload with
``@pytest.mark.perfsuite(workload="latency")``; the plugin parametrizes it with the selected
profile's cells of that workload and ``perfsuite_measure`` turns the workload's
:class:`~perfsuite.formats.record.CellRecord` into pytest-benchmark's ``extra_info``. Cells that
cannot run are recorded through ``perfsuite_skip`` and listed under ``perfsuite.not_run``, so nothing
silently disappears. Options: :mod:`~perfsuite.options`; session state:
:mod:`~perfsuite.plugin.session`; the end-of-session comparison: :mod:`~perfsuite.plugin.gate`.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from dataclasses import replace
from typing import NoReturn

import pytest

from perfsuite.cells.grid import WORKLOADS, Cell, compile_selection, get_profile, unsupported_reason
from perfsuite.cells.shard import parse_shard
from perfsuite.errors import EXIT_JOURNAL_WRITE_FAILED, PerfsuiteError
from perfsuite.formats.io import write_json_atomic
from perfsuite.formats.journal import Journal, JournalWriteError
from perfsuite.formats.record import (STATUS_MISSING_EXTRA, STATUS_NO_DEVICE, STATUS_OOM, STATUS_UNSUPPORTED, STATUSES,
                                      CellRecord, missing_extra_reasons)
from perfsuite.formats.results import perfsuite_section, results_document
from perfsuite.hf import missing_extra
from perfsuite.locks import writer_lock
from perfsuite.options import add_cell_options, add_session_options
from perfsuite.plugin.progress import ProgressPlugin
from perfsuite.plugin.session import STATE, SessionState, run_header, state_of

MARKER_KWARGS = {"workload"}  # allow-list for @pytest.mark.perfsuite(...)
JOURNAL_LOCK = pytest.StashKey[contextlib.ExitStack]()


def _stop_on_journal_error(e: JournalWriteError) -> NoReturn:
    pytest.exit(f"perfsuite: {e}; the cells journaled before are kept", returncode=EXIT_JOURNAL_WRITE_FAILED)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfsuite", "perfsuite: adapter performance regression suite")
    add_cell_options(group.addoption)
    add_session_options(group.addoption)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perfsuite(workload): a benchmark parametrized over the profile's cells")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped with a reason where none is visible")
    opt = config.getoption
    try:
        if opt("perfsuite_adapters"):  # before the grid is read: contributed adapters join its cells
            from perfsuite.extensions import add_adapters

            add_adapters(opt("perfsuite_adapters"))
        profile = get_profile(opt("perfsuite_profile"))
        if opt("perfsuite_cells"):
            compile_selection(opt("perfsuite_cells"))  # a bad expression fails before collection
        shard = parse_shard(opt("perfsuite_shard")) if opt("perfsuite_shard") else None
        journal = Journal(opt("perfsuite_journal")) if opt("perfsuite_journal") else None
        if opt("perfsuite_resume") and journal is None:
            raise PerfsuiteError("--perfsuite-resume needs --perfsuite-journal FILE")
        if journal is not None:  # one session appends to a journal at a time (released at unconfigure)
            config.stash[JOURNAL_LOCK] = contextlib.ExitStack()
            config.stash[JOURNAL_LOCK].enter_context(writer_lock(journal.path, f"journal {journal.path}",
                                                                 folder=False))
        done = journal.done_cell_ids() if journal and opt("perfsuite_resume") else set()
        device, missing = _device(opt("perfsuite_device"), profile)
        checkpoint = _checkpoint(opt("perfsuite_weights"))
        state = SessionState(
            profile=profile, device=device, device_missing=missing, dtype=opt("perfsuite_dtype"),
            rounds=opt("perfsuite_rounds"), warmup=opt("perfsuite_warmup"), selection=opt("perfsuite_cells"),
            threads=1 if opt("perfsuite_threads") is None else opt("perfsuite_threads"), shard=shard,
            journal=journal, done=done, checkpoint=checkpoint, adapters=opt("perfsuite_adapters"))
        state.check(resume=opt("perfsuite_resume"))
    except PerfsuiteError as e:
        pytest_unconfigure(config)
        raise pytest.UsageError(f"perfsuite: {e}") from None
    config.stash[STATE] = state
    if opt("perfsuite_progress"):
        config.pluginmanager.register(ProgressPlugin(state), "perfsuite-progress")
    baseline = opt("perfsuite_compare")
    if baseline is not None:  # the comparison runs at session end, once pytest-benchmark has its results
        from perfsuite.plugin.gate import SessionGate

        config.pluginmanager.register(SessionGate(config, baseline), "perfsuite-gate")


def pytest_unconfigure(config: pytest.Config) -> None:
    lock = config.stash.get(JOURNAL_LOCK, None)
    if lock is not None:
        lock.close()
        del config.stash[JOURNAL_LOCK]


def _checkpoint(path: str | None):
    """--perfsuite-weights DIR, read and hashed (CheckpointError, one line, when it is not a GPT-2 checkpoint)."""
    if not path:
        return None
    from perfsuite.models.checkpoint import check_weights, read_checkpoint

    checkpoint = read_checkpoint(path)
    check_weights(checkpoint)  # the whole file, before the first cell
    return checkpoint


def _device(requested: str, profile) -> tuple[str, str | None]:
    """(device the cells are built for, why it cannot run here or None)."""
    from perfsuite.measure.device import DeviceUnavailable, resolve_device

    try:
        device = resolve_device(requested)
    except DeviceUnavailable as e:
        return "cuda", str(e)
    if requested == "auto" and profile.needs_gpu and device == "cpu":
        return "cuda", f"profile {profile.name!r} needs a GPU and none is visible"
    return device, None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perfsuite_cell" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("perfsuite")
    if marker is None or marker.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: use @pytest.mark.perfsuite(workload=...)")
    unknown = set(marker.kwargs) - MARKER_KWARGS
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown perfsuite marker argument(s) {sorted(unknown)}")
    workload = marker.kwargs.get("workload")
    if workload not in WORKLOADS:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: workload must be one of {WORKLOADS}, not {workload!r}")
    cells = metafunc.config.stash[STATE].cells(workload)
    if not cells:  # one skip that says why, not pytest's "got empty parameter set" with a file position
        reason = f"no {workload} cells in this profile and selection"
        nothing = pytest.param(None, marks=pytest.mark.skip(reason=reason))
        metafunc.parametrize("perfsuite_cell", [nothing], ids=["no-cells"], indirect=True)
        return
    metafunc.parametrize("perfsuite_cell", cells, ids=[c.param_id for c in cells], indirect=True)


@pytest.fixture(scope="session")
def perfsuite_state(request: pytest.FixtureRequest) -> SessionState:
    return request.config.stash[STATE]


@pytest.fixture(scope="session")
def perfsuite_context(perfsuite_state: SessionState):
    """What cells run with: the shared models, the rounds policy, the session's cells (shape groups share a
    loop) and the GPU monitor (NVML; None on a CPU)."""
    from perfsuite.measure.gpu_state import monitor_for
    from perfsuite.workloads.context import CellContext, ModelCache

    state = perfsuite_state
    if state.context is None:
        # What a shared loop may build: every runnable cell of the profile, not only the selected, sharded or
        # unfinished ones — a loop's members move each other's times (norm_time read +17 % for the plain model in a
        # 2-cell selection's loop), so a selection, a shard (never split inside a shape group) or a resumed run times
        # each shape group whole, as the baseline did, and records the cells it was asked for.
        runnable = [c for c in state.profile_cells() if not missing_extra(c) and not unsupported_reason(c)
                    and not (c.device == state.device and state.device_missing)]
        state.context = CellContext(models=ModelCache(checkpoint=state.checkpoint), policy=state.policy,
                                    cells=runnable, gpu=monitor_for(state.device))
    return state.context


@pytest.fixture
def perfsuite_skip(perfsuite_state: SessionState):
    """Record a cell that cannot run (status, reason) in the results, then skip it visibly."""

    def skip(cell: Cell, status: str, reason: str, **metrics):
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        try:
            perfsuite_state.record_not_run(cell, status, reason, **metrics)
        except JournalWriteError as e:
            _stop_on_journal_error(e)
        pytest.skip(f"{cell.id}: {status}: {reason}")

    return skip


@pytest.fixture
def perfsuite_measure(benchmark, perfsuite_cell: Cell, perfsuite_state: SessionState, perfsuite_context,
                      perfsuite_skip):
    """Run a workload's ``run_cell(benchmark, cell, context)`` and return its record.

    Out of memory, or a record whose status is not ok (e.g. over the token budget), is recorded in the
    results and skipped with the reason; the record goes into pytest-benchmark's ``extra_info``.
    """

    def measure(run_cell) -> CellRecord:
        from perfsuite.measure.device import cpu_threads, is_out_of_memory

        state, cell = perfsuite_state, perfsuite_cell
        oom = None
        try:
            with cpu_threads(state.threads if cell.device == "cpu" else None):
                models = perfsuite_context.models
                record = run_cell(benchmark, cell, replace(perfsuite_context, models=models.for_impl(cell.impl)))
                record = replace(record, env={**record.env, **models.env(cell)})
        except KeyboardInterrupt:
            # Ctrl-C before the timing started: pytest-benchmark would warn "fixture was not used" at session end,
            # an error under filterwarnings=error, and the interrupted run would end in a traceback.
            benchmark.skipped = True
            raise
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            oom = str(e).splitlines()[0]
        if oom is not None:
            # Out of the except block, the traceback no longer holds the failed cell's tensors: drop the cached
            # models, collect, then give the memory back, so the next cell starts clean (no OOM cascade).
            perfsuite_context.models.clear()
            gc.collect()
            _empty_device_cache()
            perfsuite_skip(cell, STATUS_OOM, oom)
        if not record.ok:
            perfsuite_skip(cell, record.status, record.reason or "", **record.metrics)
        benchmark.extra_info.update(record.to_dict())
        return record

    return measure


def _empty_device_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@pytest.fixture
def perfsuite_cell(request: pytest.FixtureRequest, perfsuite_state: SessionState, perfsuite_skip) -> Cell:
    cell: Cell = request.param
    if cell.device == perfsuite_state.device and perfsuite_state.device_missing:
        perfsuite_skip(cell, STATUS_NO_DEVICE, perfsuite_state.device_missing)
    lacking = missing_extra(cell)
    if lacking:
        perfsuite_skip(cell, STATUS_MISSING_EXTRA, lacking)
    unsupported = unsupported_reason(cell)
    if unsupported:
        perfsuite_skip(cell, STATUS_UNSUPPORTED, unsupported)
    return cell


def _cell_of(item: pytest.Item) -> Cell | None:
    callspec = getattr(item, "callspec", None)
    cell = callspec.params.get("perfsuite_cell") if callspec else None
    return cell if isinstance(cell, Cell) else None  # None: the one skipped "no-cells" parameter (or NOTSET)


def pytest_collection_finish(session: pytest.Session) -> None:
    state = state_of(session.config)
    if state is None:
        return
    items = [(item, _cell_of(item)) for item in session.items]
    cells = [c for _, c in items if c is not None]
    state.cell_nodeids = {item.nodeid: c for item, c in items if c is not None}
    if state.journal and cells:
        try:
            state.journal.append_header(run_header(session.config), state.settings(), [c.id for c in cells],
                                        sorted(state.done))
        except JournalWriteError as e:
            _stop_on_journal_error(e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    cell, state = _cell_of(item), state_of(item.config)
    if cell is None or state is None:
        return
    report = outcome.get_result()
    if report.when == "call" and report.passed:
        fixture = item.funcargs.get("benchmark")
        if fixture is not None and fixture.stats:
            entry = fixture.stats.as_dict(include_data=True)
            state.benchmarks.append(entry)
            if state.journal:
                try:
                    state.journal.append_benchmark(entry)
                except JournalWriteError as e:
                    _stop_on_journal_error(e)
                except KeyboardInterrupt:
                    # Ctrl-C while the line was written (its fsync is slow on a busy disk): raised out of this
                    # old-style wrapper it would be a PluggyTeardownRaisedWarning, an error here. Stop the session
                    # as an interruption instead; a torn line is cut off by the next append.
                    item.session.shouldstop = "interrupted while journaling a cell"


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo) -> None:
    """Ctrl-C must end a run as an interruption (exit 130, --resume finishes it). pytest's own report of it reads
    every traceback entry's line number, and a KeyboardInterrupt that lands on an instruction without one (Python
    3.11+: ``tb_lineno`` None) made that report itself fail (an INTERNALERROR, exit 1, seen in CI). Such entries
    carry nothing to show: they are dropped before pytest's reporter runs, and so is the chain behind the interrupt."""
    excinfo.traceback = excinfo.traceback.filter(lambda entry: has_line_number(entry))
    excinfo.value.__cause__ = excinfo.value.__context__ = None


def has_line_number(entry) -> bool:
    return getattr(getattr(entry, "_rawentry", None), "tb_lineno", None) is not None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # before pytest-benchmark's own wrapper saves
def pytest_sessionfinish(session: pytest.Session):
    """No cell was timed (all skipped: no GPU, out of budget, out of memory): pytest-benchmark would write no JSON
    and warn. Write the JSON ourselves, with the cells that did not run, so none of them is lost."""
    _save_not_run_only(session.config)
    yield


def _save_not_run_only(config: pytest.Config) -> None:
    state = state_of(config)
    # pytest-benchmark has no public handle on its session; this is the one place perfsuite reaches into it.
    bench = getattr(config, "_benchmarksession", None)
    if state is None or bench is None or bench.benchmarks or not bench.json or bench.disabled or not state.not_run:
        return
    write_json_atomic(bench.json, results_document(run_header(config), [], state.settings(), state.not_run))
    bench.json = None  # written: nothing left for pytest-benchmark to save


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    """One line per optional package the run lacked, saying how to get it (its cells are listed as skipped)."""
    state = state_of(config)
    for reason, n in missing_extra_reasons(state.not_run if state else []).items():
        terminalreporter.write_line(f"perfsuite: {n} cell{'s' if n != 1 else ''} not run: {reason}")


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    state = state_of(config)
    if state is not None:
        output_json["perfsuite"] = perfsuite_section(state.settings(), state.not_run)
