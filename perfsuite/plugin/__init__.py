"""The pytest plugin (entry point ``pytest11: perfsuite``): options, the cell grid, and the results JSON.

A test asks for the ``perfsuite_cell`` fixture and names its workload with
``@pytest.mark.perfsuite(workload="latency")``; the plugin parametrizes it with
the selected profile's cells of that workload. Cells that cannot run are
recorded through ``perfsuite_skip`` and listed in the JSON under
``perfsuite.not_run``, so nothing silently disappears.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field

import pytest

from perfsuite.errors import PerfsuiteError
from perfsuite.cells.grid import WORKLOADS, Cell, Profile, compile_selection, get_profile, select
from perfsuite.formats.journal import Journal, write_json_atomic
from perfsuite.formats.record import SCHEMA_VERSION, STATUS_NO_DEVICE, STATUS_OK, STATUS_OOM, STATUSES
from perfsuite.cells.shard import estimated_cost, parse_shard, shard_cells
from perfsuite.timing import DeviceUnavailable, cpu_threads, is_out_of_memory, resolve_device
from perfsuite.workloads.models import DTYPES, ModelCache

MARKER_KWARGS = {"workload"}  # allow-list for @pytest.mark.perfsuite(...)


def add_perfsuite_options(add) -> None:
    """Options shared by the pytest plugin and ``perfsuite run``, so the two cannot drift apart."""
    add("--perfsuite-profile", default="smoke", metavar="NAME",
        help="grid of cells to run: smoke (default), paper, recompute, subspace, full")
    add("--perfsuite-device", default="auto", choices=("auto", "cpu", "cuda"),
        help="device to run cells on; auto picks cuda when a GPU is visible (default: auto)")
    add("--perfsuite-dtype", default=None, choices=tuple(DTYPES),
        help="override the profile's dtype")
    add("--perfsuite-cells", default=None, metavar="EXPR",
        help="run only cells matching a Python-like expression over cell fields, "
             "e.g. \"adapter in ('lora', 'houlsby') and batch <= 4\"")
    add("--perfsuite-rounds", default=None, type=int, metavar="N",
        help="timed rounds per cell (default: the profile's)")
    add("--perfsuite-warmup", default=None, type=int, metavar="N",
        help="untimed warm-up rounds per cell (default: the profile's)")
    add("--perfsuite-threads", default=None, type=int, metavar="N",
        help="CPU threads for torch while cells run (default: 1 on the CPU, where a second thread stalls "
             "calls by hundreds of ms on shared runners; 0: torch's own default)")
    add("--perfsuite-compare", nargs="?", const="auto", default=None, metavar="BASELINE",
        help="at the end of the session, compare the cells with BASELINE (a baseline file or a results JSON; "
             "default: the matching one in baselines/), re-measure suspects, fail on a confirmed regression")
    add("--perfsuite-shard", default=None, metavar="I/N",
        help="run only shard I of N (1-based): disjoint, balanced by estimated cost, deterministic")
    add("--perfsuite-journal", default=None, metavar="FILE",
        help="append each finished cell to FILE (JSON lines) as it is measured, so an interrupted run keeps it")
    add("--perfsuite-resume", action="store_true", default=False,
        help="with --perfsuite-journal: skip cells the journal already holds")
    add("--perfsuite-progress", action="store_true", default=False,
        help="print a progress line per cell: done/total, elapsed, estimated time left")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfsuite", "perfsuite: adapter performance regression suite")
    add_perfsuite_options(group.addoption)


def pytest_sessionstart(session: pytest.Session) -> None:
    baseline = session.config.getoption("perfsuite_compare", None)
    if baseline is not None:  # the comparison runs at session end, once pytest-benchmark has its results
        from perfsuite.compare.verdicts import SessionComparison

        session.config.pluginmanager.register(SessionComparison(session.config, baseline), "perfsuite-compare")


class Progress:
    """Progress lines for long runs: cells done / total, elapsed, time left (estimated from cell costs)."""

    def __init__(self):
        self.total_cost = self.done_cost = 0.0
        self.total = self.done = 0
        self.t0 = time.monotonic()
        self.reporter = None

    def start(self, cells: list[Cell], config: pytest.Config) -> None:
        self.total, self.total_cost = len(cells), sum(map(estimated_cost, cells))
        self.reporter = config.pluginmanager.get_plugin("terminalreporter")
        self.capture = config.pluginmanager.get_plugin("capturemanager")
        self.t0 = time.monotonic()

    def _line(self, text: str) -> None:
        if self.reporter is None:
            return
        if self.capture is None:
            self.reporter.write_line(text)
            return
        with self.capture.global_and_fixture_disabled():  # like live logging: shown while output is captured
            if self.reporter._tw.width_of_current_line:  # after pytest's progress dots
                self.reporter._tw.line()
            self.reporter.write_line(text)

    def starting(self, cell: Cell) -> None:
        elapsed = time.monotonic() - self.t0
        left = "?" if not self.done_cost else _fmt_s(elapsed * (self.total_cost - self.done_cost) / self.done_cost)
        self._line(f"[perfsuite {self.done + 1}/{self.total}] {cell.id}  elapsed {_fmt_s(elapsed)}, ~{left} left")

    def finished(self, cell: Cell) -> None:
        self.done += 1
        self.done_cost += estimated_cost(cell)


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class SessionState:
    profile: Profile
    device: str  # the device cells are built for
    device_missing: str | None  # why that device cannot run here, or None
    dtype: str | None  # --perfsuite-dtype, or None: the profile's
    rounds: int | None  # --perfsuite-rounds, or None: the profile's (per part of a composite profile)
    warmup: int | None
    selection: str | None
    threads: int = 1  # torch CPU threads for cells on the CPU (0: torch's default)
    shard: tuple[int, int] | None = None
    journal: Journal | None = None
    done: set[str] = field(default_factory=set)  # cells a resumed journal already holds
    not_run: list[dict] = field(default_factory=list)
    models: ModelCache = field(default_factory=ModelCache)
    progress: Progress | None = None

    def timing(self, cell: Cell) -> tuple[int, int]:
        """(rounds, warm-up rounds) of ``cell``: the command line's, else its profile's."""
        rounds, warmup = self.profile.timing(cell)
        return self.rounds or rounds, warmup if self.warmup is None else self.warmup

    def all_cells(self) -> list[Cell]:
        """The profile's cells after selection and sharding (resumed cells included)."""
        cells = select(self.profile.cells(device=self.device, dtype=self.dtype), self.selection)
        return shard_cells(cells, *self.shard) if self.shard else cells

    def cells(self, workload: str) -> list[Cell]:
        return [c for c in self.all_cells() if c.workload == workload and c.id not in self.done]

    def record_not_run(self, cell: Cell, status: str, reason: str) -> None:
        entry = {"perfsuite_schema": SCHEMA_VERSION, "cell_id": cell.id, "cell": cell.to_dict(),
                 "status": status, "reason": reason}
        self.not_run.append(entry)
        if self.journal:
            self.journal.append("not_run", **entry)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perfsuite(workload): a benchmark parametrized over the profile's cells")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped with a reason where none is visible")
    opt = config.getoption
    try:
        profile = get_profile(opt("perfsuite_profile"))
        if opt("perfsuite_cells"):
            compile_selection(opt("perfsuite_cells"))  # a bad expression fails before collection
        shard = parse_shard(opt("perfsuite_shard")) if opt("perfsuite_shard") else None
        journal = Journal(opt("perfsuite_journal")) if opt("perfsuite_journal") else None
        if opt("perfsuite_resume") and journal is None:
            raise PerfsuiteError("--perfsuite-resume needs --perfsuite-journal FILE")
        done = journal.done_cell_ids() if journal and opt("perfsuite_resume") else set()
    except PerfsuiteError as e:
        raise pytest.UsageError(f"perfsuite: {e}") from None
    requested = opt("perfsuite_device")
    missing = None
    try:
        device = resolve_device(requested)
        if requested == "auto" and profile.needs_gpu and device == "cpu":
            device, missing = "cuda", f"profile {profile.name!r} needs a GPU and none is visible"
    except DeviceUnavailable as e:
        device, missing = "cuda", str(e)
    config._perfsuite = SessionState(
        profile=profile, device=device, device_missing=missing, dtype=opt("perfsuite_dtype"),
        rounds=opt("perfsuite_rounds"), warmup=opt("perfsuite_warmup"),
        selection=opt("perfsuite_cells"), threads=1 if opt("perfsuite_threads") is None else opt("perfsuite_threads"),
        shard=shard, journal=journal, done=done,
        progress=Progress() if opt("perfsuite_progress") else None)
    try:
        _check_session(config._perfsuite, resume=opt("perfsuite_resume"))
    except PerfsuiteError as e:
        raise pytest.UsageError(f"perfsuite: {e}") from None


RESUME_MUST_MATCH = ("profile", "device", "dtype")  # what makes a journal's cell ids mean the same measurement


def _check_session(state: SessionState, *, resume: bool) -> None:
    """Refuse, before collection, a selection that picks no cell and a resume of a journal of other settings."""
    cells = select(state.profile.cells(device=state.device, dtype=state.dtype), state.selection)
    if state.selection and not cells:
        raise PerfsuiteError(f"cell selection {state.selection!r} matches none of the cells of profile "
                             f"{state.profile.name!r} (list them with: perfsuite cells --profile {state.profile.name})")
    headers = [e for e in state.journal.read() if e.get("kind") == "header"] if resume and state.journal else []
    if headers:
        before, now = headers[0]["perfsuite"], _run_settings(state)
        differ = [f"{k} {before.get(k)!r} → {now.get(k)!r}" for k in RESUME_MUST_MATCH if before.get(k) != now.get(k)]
        if differ:
            raise PerfsuiteError(f"cannot resume {state.journal.path} with other settings ({', '.join(differ)}); "
                                 "use the journal's settings or start a new journal")


def _state(config: pytest.Config) -> SessionState:
    return config._perfsuite


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
    cells = _state(metafunc.config).cells(workload)
    metafunc.parametrize("perfsuite_cell", cells, ids=[c.param_id for c in cells], indirect=True)


@pytest.fixture(scope="session")
def perfsuite_state(request: pytest.FixtureRequest) -> SessionState:
    return _state(request.config)


@pytest.fixture(scope="session")
def perfsuite_models(perfsuite_state: SessionState) -> ModelCache:
    return perfsuite_state.models


@pytest.fixture
def perfsuite_skip(perfsuite_state: SessionState):
    """Record a cell that cannot run (status, reason) in the JSON, then skip it visibly."""

    def skip(cell: Cell, status: str, reason: str):
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        perfsuite_state.record_not_run(cell, status, reason)
        pytest.skip(f"{cell.id}: {status}: {reason}")

    return skip


@pytest.fixture
def perfsuite_measure(benchmark, perfsuite_cell: Cell, perfsuite_state: SessionState, perfsuite_skip):
    """Run a workload's ``run_cell(benchmark, cell, models, rounds=, warmup=)`` and return its record.

    Out of memory, or a record whose status is not ok (e.g. over the token budget), is recorded in the
    JSON and skipped with the reason; the record goes into pytest-benchmark's ``extra_info``.
    """

    def measure(run_cell) -> dict:
        state, cell = perfsuite_state, perfsuite_cell
        try:
            with cpu_threads(state.threads if cell.device == "cpu" else None):
                rounds, warmup = state.timing(cell)
                record = run_cell(benchmark, cell, state.models, rounds=rounds, warmup=warmup)
        except KeyboardInterrupt:
            # Ctrl-C before the timing started: pytest-benchmark would warn "fixture was not used" at session end,
            # an error under filterwarnings=error, and the interrupted run would end in a traceback.
            benchmark.skipped = True
            raise
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            state.models.clear()
            perfsuite_skip(cell, STATUS_OOM, str(e).splitlines()[0])
        if record["status"] != STATUS_OK:
            perfsuite_skip(cell, record["status"], record["reason"])
        benchmark.extra_info.update(record)
        return record

    return measure


@pytest.fixture
def perfsuite_cell(request: pytest.FixtureRequest, perfsuite_state: SessionState, perfsuite_skip) -> Cell:
    cell: Cell = request.param
    if cell.device == perfsuite_state.device and perfsuite_state.device_missing:
        perfsuite_skip(cell, STATUS_NO_DEVICE, perfsuite_state.device_missing)
    return cell


def _run_settings(state: SessionState) -> dict:
    return {
        "perfsuite_schema": SCHEMA_VERSION,
        "profile": state.profile.name,
        "device": state.device,
        "dtype": state.dtype or state.profile.dtype,
        "rounds": state.rounds or state.profile.rounds,  # None: each part of a composite profile has its own
        "warmup": state.profile.warmup if state.warmup is None else state.warmup,
        "selection": state.selection,
        "threads": state.threads,
        "shard": f"{state.shard[0]}/{state.shard[1]}" if state.shard else None,
    }


def _cell_of(item: pytest.Item) -> Cell | None:
    callspec = getattr(item, "callspec", None)
    cell = callspec.params.get("perfsuite_cell") if callspec else None
    return cell if isinstance(cell, Cell) else None  # not NOTSET, pytest's value for an empty parameter set


def pytest_collection_finish(session: pytest.Session) -> None:
    state = getattr(session.config, "_perfsuite", None)
    if state is None:
        return
    cells = [c for c in map(_cell_of, session.items) if c is not None]
    if state.progress:
        state.progress.start(cells, session.config)
    if state.journal and cells:
        state.journal.append("header", **_run_header(session.config), perfsuite=_run_settings(state),
                             cells=[c.id for c in cells], resumed=sorted(state.done))


def _run_header(config: pytest.Config) -> dict:
    """What pytest-benchmark writes about the machine, the commit and itself, and when."""
    from pytest_benchmark import __version__ as pb_version
    from pytest_benchmark.plugin import pytest_benchmark_generate_commit_info, pytest_benchmark_generate_machine_info

    return {"machine_info": pytest_benchmark_generate_machine_info(),
            "commit_info": pytest_benchmark_generate_commit_info(config), "pytest_benchmark_version": pb_version,
            "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat()}


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # before pytest-benchmark's own wrapper saves
def pytest_sessionfinish(session: pytest.Session):
    """No cell was timed (all skipped: no GPU, out of budget, out of memory): pytest-benchmark would write no JSON
    and warn. Write the JSON ourselves, with the cells that did not run, so none of them is lost."""
    _save_not_run_only(session.config)
    yield


def _save_not_run_only(config: pytest.Config) -> None:
    state = getattr(config, "_perfsuite", None)
    bench = getattr(config, "_benchmarksession", None)
    if state is None or bench is None or bench.benchmarks or not bench.json or bench.disabled or not state.not_run:
        return
    header = _run_header(config)
    doc = {"machine_info": header["machine_info"], "commit_info": header["commit_info"], "benchmarks": [],
           "datetime": header["datetime"], "version": header["pytest_benchmark_version"],
           "perfsuite": {**_run_settings(state), "not_run": list(state.not_run)}}
    write_json_atomic(bench.json, doc)
    bench.json = None  # written: nothing left for pytest-benchmark to save


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    cell = _cell_of(item)
    state = getattr(item.config, "_perfsuite", None)
    if cell is None or state is None:
        return
    report = outcome.get_result()
    if report.when == "call" and report.passed and state.journal:
        fixture = item.funcargs.get("benchmark")
        if fixture is not None and fixture.stats:
            state.journal.append("benchmark", benchmark=fixture.stats.as_dict(include_data=True))
    if report.when == "teardown" and state.progress:
        state.progress.finished(cell)


def pytest_runtest_setup(item: pytest.Item) -> None:
    state = getattr(item.config, "_perfsuite", None)
    cell = _cell_of(item)
    if state and state.progress and cell is not None:
        state.progress.starting(cell)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    state = getattr(config, "_perfsuite", None)
    if state is None:
        return
    output_json["perfsuite"] = {**_run_settings(state), "not_run": list(state.not_run)}
