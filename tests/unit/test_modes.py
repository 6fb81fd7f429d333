"""Execution modes: the mode field of cells, opt-in selection, compilation and CUDA graph capture through seams,
recompilation in the timed loop, and cells that cannot run in their mode."""

import pytest
from fake_gpu import FakeCudaGraphs

from perfsuite.cells.grid import (MODES, Cell, get_profile, in_modes, names_field, selected_cells,
                                  unsupported_reason)
from perfsuite.formats.record import STATUS_UNSUPPORTED
from perfsuite.measure.timing import RoundPolicy
from perfsuite.workloads import latency
from perfsuite.workloads.context import CellContext
from perfsuite.workloads.modes import GRAPH_WARMUP_CALLS, CompileFallback, capture, compiled_graphs, prepare
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


def test_capture_warms_up_on_a_side_stream_then_captures_once_and_returns_the_replay():
    api = FakeCudaGraphs()
    forward = lambda: api.log.append(f"forward on {api.stream}")  # noqa: E731
    pool = api.new_pool()
    graph = capture(forward, api, pool)
    assert api.log == (["side waits for main"] + ["forward on side"] * GRAPH_WARMUP_CALLS
                       + ["main waits for side", "capture in pool 0", "forward on capture", "synchronize"])
    graph.replay()
    graph.replay()
    assert api.graphs[0].replays == 2 and api.log.count("forward on capture") == 1  # replays never call Python


def test_prepare_graphs_times_each_capture_and_records_a_forward_that_breaks_it():
    api, ticks = FakeCudaGraphs(), iter(range(100))

    def breaks():
        if api.stream == "capture":
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    ready = prepare({"plain": lambda: None, "lora": lambda: None, "dora": breaks}, "graphs", "cuda", graph_api=api,
                    clock=lambda: float(next(ticks)), synchronize=lambda device: None)
    assert list(ready.forwards) == ["plain", "lora"] and ready.compile_s == {"plain": 1.0, "lora": 1.0}
    assert ready.failed["dora"] == "graphs failed: RuntimeError: CUDA error: operation not permitted when stream is capturing"
    ready.forwards["plain"]()
    assert api.graphs[0].replays == 1
    # one memory pool for the whole group, every capture in it; the graphs freed after the group
    assert len(api.pools) == 1 and api.log.count("capture in pool 0") == 3
    ready.release()
    assert [g.was_reset for g in api.graphs] == [True, True, False] and not ready.forwards  # dora's never held one


def test_prepare_graphs_on_a_cpu_fails_every_forward():
    ready = prepare({"plain": lambda: None}, "graphs", "cpu")
    assert not ready.forwards and "CUDA" in ready.failed["plain"]


def test_prepare_compile_times_the_first_call_outside_the_loop_each_forward_with_its_own_code():
    calls, ticks, codes = [], iter([0.0, 30.0, 30.0, 32.5]), []

    def compiler(fn):
        calls.append("compile")
        codes.append(fn.__code__)
        return lambda: (calls.append("compiled call"), fn())

    forwards = {key: (lambda key=key: key) for key in ("plain", "lora")}  # one lambda: one code object for both
    ready = prepare(forwards, "compile", "cpu", compiler=compiler, clock=lambda: next(ticks))
    assert ready.compile_s == {"plain": 30.0, "lora": 2.5}
    assert calls == ["compile", "compiled call"] * 2 and not ready.failed
    assert codes[0] is not codes[1] and forwards["plain"].__code__ is forwards["lora"].__code__  # copies, not it
    assert [c.co_name for c in codes] == ["perfsuite_forward_0", "perfsuite_forward_1"]
    assert ready.codes == {"plain": codes[0], "lora": codes[1]}


def test_prepare_eager_passes_the_forwards_through():
    fn = lambda: None  # noqa: E731
    assert prepare({"plain": fn}, "eager", "cpu").forwards == {"plain": fn}


# --- the latency loop in a mode ---------------------------------------------------------------------


def _ctx(cells):
    return CellContext(policy=lambda cell: RoundPolicy.fixed(4, 1), cells=cells)


def test_a_recompilation_inside_the_timed_loop_fails_the_cells(monkeypatch):
    """A stand-in for torch.compile whose third call compiles one more graph (as a guard failure would): the
    group's cells fail, saying so, instead of averaging it in."""
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
    ctx = _ctx(cells)
    with pytest.raises(CompileFallback, match="compiled 1 graph"):
        latency.run_latency_cell(FakeBenchmark(), cells[1], ctx)
    assert compiled_graphs() == before + 1
    with pytest.raises(CompileFallback, match="compiled 1 graph"):  # the rest of the group, without measuring again
        latency.run_latency_cell(FakeBenchmark(), cells[0], ctx)
    assert calls["n"] > 3


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


def test_compile_cells_across_three_shape_groups_compile_static_graphs_once_each_and_never_run_eagerly(monkeypatch):
    """Real torch.compile (dynamo, a counting stand-in for inductor: no C++ compiler needed) over the compile cells
    of three shape groups in one process. Each group compiles each of its models once, for its own static shapes;
    every call of a compiled forward runs a compiled graph (no silent eager fallback); nothing recompiles in the
    loops. The old code (one lambda code object for every model, automatic dynamic shapes) compiled a dynamic graph
    at the second shape and nothing at the third."""
    import torch

    from perfsuite.measure.device import cpu_threads

    compiled = {"graphs": [], "calls": 0}

    def backend(gm, example_inputs):
        symbolic = [n for n in gm.graph.nodes if n.op == "placeholder" and _symbolic(n.meta.get("example_value"))]
        compiled["graphs"].append(bool(symbolic))

        def run(*args):
            compiled["calls"] += 1
            return gm.forward(*args)
        return run

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": backend}))
    models = (("none", 0), ("lora", 4), ("houlsby", 4))
    batches = (1, 2, 4)
    cells = [Cell("latency", a, r, batch=b, seq_len=8, mode="compile") for b in batches for a, r in models]
    ctx = _ctx(cells)
    per_group = []
    for b in batches:
        before = len(compiled["graphs"])
        with cpu_threads(1):  # as perfsuite run times CPU cells; two threads on a loaded 2-core VM crawl
            records = [latency.run_latency_cell(FakeBenchmark(), c, ctx) for c in cells if c.batch == b]
        per_group.append(compiled["graphs"][before:])
        assert all(r.ok and r.get("recompiles_in_loop") == 0 for r in records)
        assert all(r.get("compile_s") > 0 for r in records)
    assert [len(g) for g in per_group] == [len(models)] * 3  # each model compiled once in each group ...
    assert not any(flag for g in per_group for flag in g)  # ... for its static shapes
    rounds = ctx.shared[latency.group_key(cells[0])][latency.BASE]["samples_ms"]
    assert compiled["calls"] == 3 * len(models) * (1 + 1 + len(rounds))  # the first call, the warm-up, every round


def _symbolic(value) -> bool:
    import torch

    if isinstance(value, torch.SymInt):
        return True
    return isinstance(value, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in value.shape)


def test_a_forward_that_ran_eagerly_after_compiling_fails_its_cells():
    """A compiled forward with no compiled code on its own code object (dynamo skipped it: it ran eagerly) is a
    CompileFallback, not a compiled timing."""
    ready = prepare({"plain": lambda: None}, "compile", "cpu", compiler=lambda fn: fn)  # never compiled
    with pytest.raises(CompileFallback, match="ran eagerly"):
        ready.check_compiled()
