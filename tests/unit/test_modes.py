"""Execution modes: the mode field of cells, opt-in selection, compilation and CUDA graph capture through seams,
recompilation in the timed loop, and cells that cannot run in their mode."""

import pytest

from perfsuite.cells.grid import (MODES, Cell, get_profile, in_modes, names_field, selected_cells,
                                  unsupported_reason)
from perfsuite.formats.record import STATUS_UNSUPPORTED
from perfsuite.timing import RoundPolicy
from perfsuite.workloads import latency
from perfsuite.workloads.context import CellContext
from perfsuite.workloads.modes import GRAPH_WARMUP_CALLS, capture, compiled_graphs, prepare
from synthetic import FakeBenchmark

DONE_WHEN = "mode == 'compile' and adapter in ('none', 'lora') and batch == 1"


def test_a_cells_id_names_its_mode_only_when_not_eager():
    eager = Cell("latency", "lora", 8, batch=1, seq_len=32)
    assert eager.id == "latency[lora-r8-b1-s32]"  # eager ids are the ones baselines already hold
    assert Cell("latency", "lora", 8, batch=1, seq_len=32, mode="compile").id == "latency[lora-r8-b1-s32-compile]"
    assert Cell("latency", "lora", 8, batch=1, seq_len=32, impl="hf", mode="graphs").id == \
        "latency[lora-r8-b1-s32-hf-graphs]"
    with pytest.raises(ValueError, match="mode"):
        Cell("latency", "lora", 8, mode="jit")


def test_a_cell_written_before_modes_reads_back_eager():
    d = Cell("latency", "lora", 8, batch=1, seq_len=32).to_dict()
    del d["mode"]
    assert Cell.from_dict(d).mode == "eager"


def test_in_modes_copies_latency_cells_only():
    cells = [Cell("latency", "none", 0, batch=1, seq_len=8), Cell("recompute", "none", 0, batch=1, window=4)]
    out = in_modes(cells)
    assert [c.mode for c in out if c.workload == "latency"] == list(MODES)
    assert [c.mode for c in out if c.workload == "recompute"] == ["eager"]


def test_compile_and_graphs_cells_are_opt_in():
    smoke = get_profile("smoke")
    default = smoke.cells(device="cpu")
    assert {c.mode for c in default} == {"eager"}  # the default smoke run keeps its size
    assert {c.mode for c in selected_cells(smoke, "adapter == 'lora'", device="cpu")} == {"eager"}
    chosen = selected_cells(smoke, DONE_WHEN, device="cpu")
    assert [c.id for c in chosen] == ["latency[none-r0-b1-s32-compile]", "latency[lora-r8-b1-s32-compile]"]
    assert names_field(DONE_WHEN, "mode") and not names_field("batch == 1", "mode")
    every = smoke.cells(device="cpu", all_modes=True)
    assert len(every) == len(default) + 2 * sum(c.workload == "latency" for c in default)


def test_graphs_on_a_cpu_and_other_workloads_in_a_mode_are_unsupported():
    assert "CUDA" in unsupported_reason(Cell("latency", "lora", 8, batch=1, seq_len=8, mode="graphs"))
    assert unsupported_reason(Cell("latency", "lora", 8, batch=1, seq_len=8, mode="graphs", device="cuda")) is None
    assert unsupported_reason(Cell("latency", "lora", 8, batch=1, seq_len=8, mode="compile")) is None
    assert "eagerly" in unsupported_reason(Cell("recompute", "none", 0, batch=1, window=4, mode="compile"))


# --- capture and replay through the seam -------------------------------------------------------------


class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(f"{self.name} waits for {other.name}")


class FakeGraph:
    def __init__(self, log):
        self.log, self.replays = log, 0

    def replay(self):
        self.replays += 1
        self.log.append("replay")


class FakeCudaGraphs:
    """torch.cuda's streams and graphs as a log: which stream each call ran on, what was captured."""

    def __init__(self):
        self.log, self.stream, self.graphs = [], "main", []
        self.main = FakeStream("main", self.log)

    def side_stream(self):
        return FakeStream("side", self.log)

    def current_stream(self):
        return self.main

    class _On:
        def __init__(self, api, name):
            self.api, self.name = api, name

        def __enter__(self):
            self.before, self.api.stream = self.api.stream, self.name

        def __exit__(self, *exc):
            self.api.stream = self.before

    def on_stream(self, stream):
        return self._On(self, stream.name)

    def new_graph(self):
        self.graphs.append(FakeGraph(self.log))
        return self.graphs[-1]

    def capturing(self, graph):
        return self._On(self, "capture")

    def synchronize(self):
        self.log.append("synchronize")


def test_capture_warms_up_on_a_side_stream_then_captures_once_and_returns_the_replay():
    api = FakeCudaGraphs()
    forward = lambda: api.log.append(f"forward on {api.stream}")  # noqa: E731
    replay = capture(forward, api)
    assert api.log == (["side waits for main"] + ["forward on side"] * GRAPH_WARMUP_CALLS
                       + ["main waits for side", "forward on capture", "synchronize"])
    replay()
    replay()
    assert api.graphs[0].replays == 2 and api.log.count("forward on capture") == 1  # replays never call Python


def test_prepare_graphs_times_each_capture_and_records_a_forward_that_breaks_it():
    api, ticks = FakeCudaGraphs(), iter(range(100))

    def breaks():
        if api.stream == "capture":
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    ready = prepare({"plain": lambda: None, "dora": breaks}, "graphs", "cuda", graph_api=api,
                    clock=lambda: float(next(ticks)), synchronize=lambda device: None)
    assert list(ready.forwards) == ["plain"] and ready.compile_s == {"plain": 1.0}
    assert ready.failed["dora"] == "graphs failed: RuntimeError: CUDA error: operation not permitted when stream is capturing"
    ready.forwards["plain"]()
    assert api.graphs[0].replays == 1


def test_prepare_graphs_on_a_cpu_fails_every_forward():
    ready = prepare({"plain": lambda: None}, "graphs", "cpu")
    assert not ready.forwards and "CUDA" in ready.failed["plain"]


def test_prepare_compile_times_the_first_call_outside_the_loop():
    calls, ticks = [], iter([0.0, 30.0, 30.0, 32.5])

    def compiler(fn):
        calls.append("compile")
        return lambda: (calls.append("compiled call"), fn())

    ready = prepare({"plain": lambda: None, "lora": lambda: None}, "compile", "cpu", compiler=compiler,
                    clock=lambda: next(ticks))
    assert ready.compile_s == {"plain": 30.0, "lora": 2.5}
    assert calls == ["compile", "compiled call"] * 2 and not ready.failed


def test_prepare_eager_passes_the_forwards_through():
    fn = lambda: None  # noqa: E731
    assert prepare({"plain": fn}, "eager", "cpu").forwards == {"plain": fn}


# --- the latency loop in a mode ---------------------------------------------------------------------


def _ctx(cells):
    return CellContext(policy=lambda cell: RoundPolicy.fixed(4, 1), cells=cells)


def test_a_recompilation_inside_the_timed_loop_is_recorded(monkeypatch):
    """A stand-in for torch.compile whose third call compiles one more graph (as a guard failure would): the
    loop's cells record it instead of averaging it in."""
    import torch._dynamo.utils as dynamo_utils

    monkeypatch.setitem(dynamo_utils.counters, "stats", dynamo_utils.counters["stats"].copy())
    calls = {"n": 0}

    def fake_prepare(forwards, mode, device):
        def bump(fn):
            def call():
                calls["n"] += 1
                if calls["n"] == 3:
                    dynamo_utils.counters["stats"]["unique_graphs"] += 1
                return fn()
            return call
        return prepare({k: bump(f) for k, f in forwards.items()}, "eager", device)

    monkeypatch.setattr(latency, "prepare", fake_prepare)
    cells = [Cell("latency", a, r, batch=1, seq_len=8, mode="compile") for a, r in (("none", 0), ("lora", 4))]
    before = compiled_graphs()
    record = latency.run_latency_cell(FakeBenchmark(), cells[1], _ctx(cells))
    assert compiled_graphs() == before + 1
    assert record.ok and record.get("recompiles_in_loop") == 1


def test_a_forward_that_cannot_be_compiled_is_recorded_unsupported(monkeypatch):
    from perfsuite.workloads.modes import Prepared

    def fake_prepare(forwards, mode, device):
        base = latency.BASE
        return Prepared({base: forwards[base]}, {base: 1.0}, {k: "compile failed: Unsupported: x" for k in forwards
                                                              if k != base})

    monkeypatch.setattr(latency, "prepare", fake_prepare)
    cells = [Cell("latency", a, r, batch=1, seq_len=8, mode="compile") for a, r in (("none", 0), ("lora", 4))]
    ctx = _ctx(cells)
    lora = latency.run_latency_cell(FakeBenchmark(), cells[1], ctx)
    assert lora.status == STATUS_UNSUPPORTED and lora.reason == "compile failed: Unsupported: x"
    plain = latency.run_latency_cell(FakeBenchmark(), cells[0], ctx)
    assert plain.ok and plain.get("compile_s") == 1.0


def test_a_plain_model_that_cannot_be_captured_leaves_its_whole_group_unsupported(monkeypatch):
    from perfsuite.workloads.modes import Prepared

    monkeypatch.setattr(latency, "prepare", lambda forwards, mode, device: Prepared(
        {}, failed={k: "graphs failed: boom" for k in forwards}))
    cells = [Cell("latency", a, r, batch=1, seq_len=8, mode="graphs") for a, r in (("none", 0), ("lora", 4))]
    ctx = _ctx(cells)
    assert {latency.run_latency_cell(FakeBenchmark(), c, ctx).status for c in cells} == {STATUS_UNSUPPORTED}


def test_each_mode_is_its_own_baseline_part():
    from perfsuite.compare.baselines import part_name

    assert part_name("smoke", Cell("latency", "lora", 8, batch=1, seq_len=32)) == "smoke"
    assert part_name("smoke", Cell("latency", "lora", 8, batch=1, seq_len=32, mode="compile")) == "smoke/compile"
    assert part_name("paper", Cell("latency", "lora", 8, batch=1, seq_len=32, impl="hf", mode="graphs")) == \
        "paper/hf/graphs"


def test_dynamos_counter_sees_a_real_recompilation():
    """With real torch.compile (dynamo, its eager backend: no C++ compiler needed): a compiled forward whose input
    changes shape after compilation compiles again, and compiled_graphs counts it."""
    import torch

    state = {"x": torch.ones(2, 3)}
    ready = prepare({"plain": lambda: state["x"] * 2 + 1}, "compile", "cpu",
                    compiler=lambda fn: torch.compile(fn, backend="eager"))
    before = compiled_graphs()
    ready.forwards["plain"]()
    assert compiled_graphs() == before  # the same input: the compiled graph is reused
    state["x"] = torch.ones(5, 7, 11)
    ready.forwards["plain"]()
    assert compiled_graphs() > before and ready.compile_s["plain"] > 0
