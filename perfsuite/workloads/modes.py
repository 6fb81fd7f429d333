"""Execution modes of a latency loop's forwards: eager, ``torch.compile``, or a CUDA graph replayed.

Everything that turns a forward into its compiled or captured form happens here, before the timed loop, and is
timed (``compile_s``: compilation with the first call, or warm-up with capture); a forward that cannot be
compiled or captured (a model that syncs the host inside its forward breaks capture) is set aside with the
reason, and its cells are recorded ``unsupported``. Inside the loop, :func:`compiled_graphs` counts the graphs
dynamo has compiled so far: the loop's workload compares it before and after, so a cell whose loop recompiled is
marked (``recompiles_in_loop``) instead of being silently averaged.

CUDA graph capture follows the torch docs (CUDA semantics, "CUDA Graphs"): warm-up calls on a side stream, the
current stream waits for it, one capture under ``torch.cuda.graph``; the captured forward reads the same input
tensor every replay (the group's tokens: a static input). Each forward gets its own graph and memory pool, since
the loop replays them in rotating order. :class:`CudaGraphApi` is the seam: tests pass a fake with the same
methods to prove warm-up, capture and replay on a CPU.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping

GRAPH_WARMUP_CALLS = 3  # side-stream calls before capture (the docs' example warms up 3 iterations)
RECOMPILE_LIMIT = 64  # dynamo's per-code-object limit while a group compiles: one graph per model of the group


@dataclass(frozen=True)
class Prepared:
    """A group's forwards in its mode: what the loop times, what preparing each cost, and those that failed."""

    forwards: dict[Hashable, Callable[[], object]]
    compile_s: dict[Hashable, float] = field(default_factory=dict)
    failed: dict[Hashable, str] = field(default_factory=dict)  # key → why it cannot run in this mode


class CudaGraphApi:
    """The torch.cuda calls a capture makes (the seam tests replace)."""

    def side_stream(self):
        import torch

        return torch.cuda.Stream()

    def current_stream(self):
        import torch

        return torch.cuda.current_stream()

    def on_stream(self, stream):
        import torch

        return torch.cuda.stream(stream)

    def new_graph(self):
        import torch

        return torch.cuda.CUDAGraph()

    def capturing(self, graph):
        import torch

        return torch.cuda.graph(graph)

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()


def capture(fn: Callable[[], object], api: CudaGraphApi, warmup: int = GRAPH_WARMUP_CALLS) -> Callable[[], object]:
    """``fn`` captured in a CUDA graph; returns its replay (the graph keeps its output and workspace alive)."""
    side = api.side_stream()
    side.wait_stream(api.current_stream())
    with api.on_stream(side):
        for _ in range(warmup):
            fn()
    api.current_stream().wait_stream(side)
    graph = api.new_graph()
    with api.capturing(graph):
        fn()
    api.synchronize()
    return graph.replay


def _torch_compile(fn: Callable[[], object]) -> Callable[[], object]:
    import torch

    return torch.compile(fn)


def _synchronize(device: str) -> None:
    from perfsuite.device import synchronize

    synchronize(device)


def prepare(forwards: Mapping[Hashable, Callable[[], object]], mode: str, device: str, *,
            compiler: Callable | None = None, graph_api: CudaGraphApi | None = None,
            clock: Callable[[], float] = time.perf_counter, synchronize: Callable[[str], None] | None = None
            ) -> Prepared:
    """``forwards`` made ready for ``mode`` outside the timed region, each one's cost in seconds. ``compiler``,
    ``graph_api``, ``clock`` and ``synchronize`` are seams (torch.compile, torch.cuda, perf_counter)."""
    sync = synchronize or _synchronize
    if mode == "eager":
        return Prepared(dict(forwards))
    if mode == "graphs" and not device.startswith("cuda"):
        return Prepared({}, failed={k: "CUDA graphs need a CUDA device" for k in forwards})
    make = (lambda fn: _quietly(capture, fn, graph_api or CudaGraphApi())) if mode == "graphs" else (
        lambda fn: _first_call(compiler or _torch_compile, fn, device))
    ready, cost, failed = {}, {}, {}
    for key, fn in forwards.items():
        sync(device)
        t0 = clock()
        try:
            ready[key] = make(fn)
        except Exception as e:  # a model that breaks under compilation or capture: its cells say why
            from perfsuite.device import is_out_of_memory

            if is_out_of_memory(e):
                raise
            failed[key] = f"{mode} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            continue
        sync(device)
        cost[key] = clock() - t0
    return Prepared(ready, cost, failed)


def _quietly(capture_fn: Callable, fn: Callable[[], object], api: CudaGraphApi) -> Callable[[], object]:
    """A capture with torch's own warnings silenced: under pytest's filterwarnings=error a warning raised inside
    ``torch.cuda.graph`` would abort the capture half-way and read as the model's failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return capture_fn(fn, api)


def _first_call(compiler: Callable, fn: Callable[[], object], device: str) -> Callable[[], object]:
    """``compiler(fn)`` called once: torch.compile compiles on the first call, so its cost lands here. Inductor's
    own deprecation warnings (e.g. of torch.jit APIs it still touches) are torch's to fix, not errors of the cell."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        compiled = compiler(fn)
        compiled()
    return compiled


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (its ``unique_graphs`` counter); 0 before any."""
    import sys

    dynamo_utils = sys.modules.get("torch._dynamo.utils")
    if dynamo_utils is None:
        return 0
    return int(dynamo_utils.counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def mode_context(mode: str):
    """What a group's compilation and loop run under: for compile, dynamo's per-code-object recompile limit
    raised, since the models of a group share their forward's code object (each is one more graph)."""
    if mode != "compile":
        yield
        return
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        yield
