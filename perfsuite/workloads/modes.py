"""Execution modes of a latency loop's forwards: eager, ``torch.compile``, or a CUDA graph replayed.

Everything that turns a forward into its compiled or captured form happens here, before the timed loop, and is
timed (``compile_s``: compilation with the first call, or warm-up with capture); a forward that cannot be
compiled or captured (a model that syncs the host inside its forward breaks capture) is set aside with the
reason, and its cells are recorded ``unsupported``.

compile: each model gets its *own code object* (a copy of its forward's code under the model's name) compiled
with ``dynamic=False``, and dynamo is reset at the start of every shape group (:func:`mode_context`). Dynamo keeps
its compiled code per code object: with one shared lambda every model of every group piled onto one cache, the
second shape switched on automatic dynamic shapes, and past the recompile limit dynamo ran the forward eagerly
without a word. Now a group's models are compiled once each, for its static shapes; the group then runs with
``error_on_recompile`` and ``fail_on_recompile_limit_hit``, and a forward with no compiled code after its first
call (it ran eagerly) or one that recompiled in the loop raises :class:`CompileFallback`: its cells fail, loudly.
:func:`compiled_graphs` counts the graphs dynamo compiled, read around the loop (``recompiles_in_loop``).

graphs: CUDA graph capture follows the torch docs (CUDA semantics, "CUDA Graphs"): warm-up calls on a side
stream, the current stream waits for it, one capture under ``torch.cuda.graph``; the captured forward reads the
same input tensor every replay (the group's tokens: a static input). The graphs of a group share *one memory
pool* (a private pool per graph kept a copy of every model's activations and logits: 1.65 GB of fp16 logits at
b32 s512, times 24 models); that is safe here because the loop replays them one at a time, each reads only the
static input and the weights, and writes every intermediate before reading it, and no output is read after its
replay. :meth:`Prepared.release` frees a group's graphs after its loop. :class:`CudaGraphApi` is the seam: tests
pass a fake with the same methods to prove warm-up, capture, the shared pool and replay on a CPU.
"""

from __future__ import annotations

import contextlib
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping

GRAPH_WARMUP_CALLS = 3  # side-stream calls before capture (the docs' example warms up 3 iterations)


class CompileFallback(RuntimeError):
    """A compiled forward that ran eagerly or recompiled: its cells must fail, not be timed as compiled."""


@dataclass(frozen=True)
class Prepared:
    """A group's forwards in its mode: what the loop times, what preparing each cost, and those that failed."""

    forwards: dict[Hashable, Callable[[], object]]
    compile_s: dict[Hashable, float] = field(default_factory=dict)
    failed: dict[Hashable, str] = field(default_factory=dict)  # key → why it cannot run in this mode
    graphs: list = field(default_factory=list)  # the group's CUDA graphs (graphs mode), freed by release()
    codes: dict[Hashable, types.CodeType] = field(default_factory=dict)  # compile mode: each forward's own code

    def release(self) -> None:
        """Free the group's CUDA graphs (their share of the pool goes back when the last one is reset)."""
        for graph in self.graphs:
            graph.reset()
        self.graphs.clear()
        self.forwards.clear()

    def check_compiled(self) -> None:
        """Every compiled forward has exactly one compiled entry on its own code: none ran eagerly, none
        recompiled (raises :class:`CompileFallback` naming the first that did)."""
        for key, code in self.codes.items():
            entries = compiled_entries(code)
            if entries != 1:
                what = "ran eagerly (no compiled code)" if entries == 0 else f"was compiled {entries} times"
                raise CompileFallback(f"compile mode: the forward of {key} {what}; its cells are not compiled "
                                      "timings")


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

    def new_pool(self):
        """A memory pool handle every capture of a group shares."""
        import torch

        return torch.cuda.graph_pool_handle()

    def capturing(self, graph, pool):
        import torch

        return torch.cuda.graph(graph, pool=pool)

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()


def capture(fn: Callable[[], object], api: CudaGraphApi, pool=None, warmup: int = GRAPH_WARMUP_CALLS):
    """``fn`` captured in a CUDA graph allocating from ``pool`` (shared by the group); returns the graph. Its
    output is dropped once captured: nothing reads it, so its memory is the pool's again."""
    side = api.side_stream()
    side.wait_stream(api.current_stream())
    with api.on_stream(side):
        for _ in range(warmup):
            fn()
    api.current_stream().wait_stream(side)
    graph = api.new_graph()
    with api.capturing(graph, pool):
        fn()
    api.synchronize()
    return graph


BACKEND = "inductor"  # torch.compile's backend (tests use dynamo's "eager": no C++ compiler needed)


def _torch_compile(fn: Callable[[], object]) -> Callable[[], object]:
    import torch

    return torch.compile(fn, backend=BACKEND, dynamic=False)


def own_code(fn: Callable[[], object], name: str) -> Callable[[], object]:
    """``fn`` with a code object of its own (a copy named ``name``), closure and defaults kept: dynamo caches
    compiled code per code object, so each model's forward gets its own cache, never another model's."""
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def compiled_entries(code: types.CodeType) -> int:
    """Compiled entries dynamo holds for ``code`` (0: every call of it ran eagerly)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return len(_debug_get_cache_entry_list(code))


def _synchronize(device: str) -> None:
    from perfsuite.measure.device import synchronize

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
    api = graph_api or CudaGraphApi()
    pool = api.new_pool() if mode == "graphs" else None
    ready, cost, failed, graphs, codes = {}, {}, {}, [], {}
    for i, (key, fn) in enumerate(forwards.items()):
        sync(device)
        t0 = clock()
        try:
            if mode == "graphs":
                graphs.append(_quietly(capture, fn, api, pool))
                ready[key] = graphs[-1].replay
            else:
                fn = own_code(fn, f"perfsuite_forward_{i}")
                ready[key] = _first_call(compiler or _torch_compile, fn, device)
                codes[key] = fn.__code__
        except Exception as e:  # a model that breaks under compilation or capture: its cells say why
            from perfsuite.measure.device import is_out_of_memory

            if is_out_of_memory(e):
                raise
            failed[key] = f"{mode} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            continue
        sync(device)
        cost[key] = clock() - t0
    return Prepared(ready, cost, failed, graphs, codes)


def _quietly(capture_fn: Callable, fn: Callable[[], object], api: CudaGraphApi, pool=None):
    """A capture with torch's own warnings silenced: under pytest's filterwarnings=error a warning raised inside
    ``torch.cuda.graph`` would abort the capture half-way and read as the model's failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return capture_fn(fn, api, pool)


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
    """What a group's compilation and loop run under: for compile, dynamo reset (the previous groups' code gone)
    and any recompilation an error instead of a silent new graph or an eager fallback."""
    if mode != "compile":
        yield
        return
    import torch._dynamo

    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True, fail_on_recompile_limit_hit=True,
                                    automatic_dynamic_shapes=False):
        yield
