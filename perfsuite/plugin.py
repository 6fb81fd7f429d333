"""The pytest plugin (entry point ``pytest11: perfsuite``): options, the cell grid, and the results JSON.

A test asks for the ``perfsuite_cell`` fixture and names its workload with
``@pytest.mark.perfsuite(workload="latency")``; the plugin parametrizes it with
the selected profile's cells of that workload. Cells that cannot run are
recorded through ``perfsuite_skip`` and listed in the JSON under
``perfsuite.not_run``, so nothing silently disappears.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from perfsuite.errors import PerfsuiteError
from perfsuite.grid import WORKLOADS, Cell, Profile, compile_selection, get_profile, select
from perfsuite.record import SCHEMA_VERSION, STATUS_NO_DEVICE, STATUSES
from perfsuite.timing import DeviceUnavailable, resolve_device
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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfsuite", "perfsuite: adapter performance regression suite")
    add_perfsuite_options(group.addoption)


@dataclass
class SessionState:
    profile: Profile
    device: str  # the device cells are built for
    device_missing: str | None  # why that device cannot run here, or None
    dtype: str | None
    rounds: int
    warmup: int
    selection: str | None
    not_run: list[dict] = field(default_factory=list)
    models: ModelCache = field(default_factory=ModelCache)

    def cells(self, workload: str) -> list[Cell]:
        cells = [c for c in self.profile.cells(device=self.device, dtype=self.dtype) if c.workload == workload]
        return select(cells, self.selection)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perfsuite(workload): a benchmark parametrized over the profile's cells")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped with a reason where none is visible")
    opt = config.getoption
    try:
        profile = get_profile(opt("perfsuite_profile"))
        if opt("perfsuite_cells"):
            compile_selection(opt("perfsuite_cells"))  # a bad expression fails before collection
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
        rounds=opt("perfsuite_rounds") or profile.rounds,
        warmup=profile.warmup if opt("perfsuite_warmup") is None else opt("perfsuite_warmup"),
        selection=opt("perfsuite_cells"))


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
    metafunc.parametrize("perfsuite_cell", cells, ids=[c.param_id for c in cells])


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
        perfsuite_state.not_run.append({"perfsuite_schema": SCHEMA_VERSION, "cell_id": cell.id,
                                        "cell": cell.to_dict(), "status": status, "reason": reason})
        pytest.skip(f"{cell.id}: {status}: {reason}")

    return skip


@pytest.fixture
def perfsuite_cell(request: pytest.FixtureRequest, perfsuite_state: SessionState, perfsuite_skip) -> Cell:
    cell: Cell = request.param
    if cell.device == perfsuite_state.device and perfsuite_state.device_missing:
        perfsuite_skip(cell, STATUS_NO_DEVICE, perfsuite_state.device_missing)
    return cell


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    state = getattr(config, "_perfsuite", None)
    if state is None:
        return
    output_json["perfsuite"] = {
        "perfsuite_schema": SCHEMA_VERSION,
        "profile": state.profile.name,
        "device": state.device,
        "dtype": state.dtype or state.profile.dtype,
        "rounds": state.rounds,
        "warmup": state.warmup,
        "selection": state.selection,
        "not_run": list(state.not_run),
    }
