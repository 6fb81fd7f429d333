"""The device a cell runs on, as torch sees it: which device (:func:`resolve_device`), its CPU threads, its
synchronize, out-of-memory errors, the memory a call needs above what is resident, the bytes of a model's tensors
and the FLOPs of one call. The timing loop (:mod:`perfsuite.measure.timing`) synchronizes through it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(requested: str) -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'. Asking for a missing device raises."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("no CUDA device is visible to torch on this machine")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}; use cpu, cuda or auto")
    return requested


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """torch's CPU thread count set to ``n`` for the block (None or 0: left as it is), then restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


# Ops that only change a tensor's metadata: the host dispatches them, no kernel runs on the device.
VIEW_OPS = frozenset({"aten.view", "aten._unsafe_view", "aten.transpose", "aten.t", "aten.permute", "aten.expand",
                      "aten.select", "aten.slice", "aten.split", "aten.split_with_sizes", "aten.unsqueeze",
                      "aten.squeeze", "aten.alias", "aten.detach", "aten.reshape", "aten.unbind", "aten.as_strided",
                      "aten.lift_fresh"})


_NAMES: dict = {}


def op_name(packet) -> str:
    """``str(packet)`` of an aten op packet, remembered (torch builds the string anew each time: ~0.4 ms)."""
    name = _NAMES.get(packet)
    if name is None:
        name = _NAMES[packet] = str(packet)
    return name


@dataclass(frozen=True)
class Work:
    """What one call dispatches: ``ops`` aten ops, ``kernels`` of them launching a kernel (not a view), ``flops``."""

    kernels: int
    ops: int
    flops: int

    def __add__(self, other: "Work") -> "Work":
        return Work(self.kernels + other.kernels, self.ops + other.ops, self.flops + other.flops)

    def __sub__(self, other: "Work") -> "Work":
        return Work(self.kernels - other.kernels, self.ops - other.ops, self.flops - other.flops)

    def __mul__(self, n: int) -> "Work":
        return Work(self.kernels * n, self.ops * n, self.flops * n)


def count_work(fn: Callable[[], object], *, flops: bool = True) -> Work:
    """The ops, kernels and FLOPs of one call of ``fn``, counted in one pass at the dispatcher; FLOPs by the formulas
    of torch's FlopCounterMode (its registry: matmuls and attention), equal to its count (tests/unit/test_counting.py)
    without its module tracking, and without importing dynamo (torch wraps its own dispatch modes in
    ``torch._disable_dynamo``: seconds of imports on a CPU, for a mode nothing compiles inside). ``flops`` False:
    ops and kernels only (no op is decomposed to find its FLOPs: Python decompositions, seconds of imports)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    counts = [0, 0, 0]
    depth = [0]  # inside an op's decomposition: its parts carry FLOPs, the op itself was the one dispatched

    class Counting(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            packet = func._overloadpacket
            if not depth[0]:
                counts[0] += op_name(packet) not in VIEW_OPS
                counts[1] += 1
            formula = flop_registry.get(packet) if flops else None
            if flops and formula is None and func is not torch.ops.prim.device.default:  # as FlopCounterMode
                depth[0] += 1
                try:
                    with self:
                        out = func.decompose(*args, **kwargs)
                finally:
                    depth[0] -= 1
                if out is not NotImplemented:
                    return out
            out = func(*args, **kwargs)
            if formula is not None:
                counts[2] += int(formula(*args, **kwargs, out_val=out))
            return out

    with Counting():
        fn()
    return Work(*counts)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call, as torch's FlopCounterMode counts them (matmuls and attention)."""
    return count_work(fn).flops


def tensor_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of ``modules``, each tensor once (adapted copies share the plain
    model's): the weights a cell's call has resident, computed the same way on every device."""
    seen, total = set(), 0
    for m in modules:
        for t in (*m.parameters(), *m.buffers()):
            if id(t) not in seen and not t.is_meta:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


_CUBLAS_WARM: set[str] = set()  # devices whose cuBLAS/cuBLASLt workspaces this process has allocated


def _device_matmuls(device: str) -> None:
    """Small matmuls in every dtype cells use, plain and with a bias (cuBLAS and cuBLASLt each allocate a workspace
    through the caching allocator on their first call: 32 MiB on an H100)."""
    import torch.nn.functional as F

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        a = torch.ones(64, 64, dtype=dtype, device=device)
        a @ a
        F.linear(a, a, a[0])


def warm_cublas(device: str) -> None:
    """Make the process's first matmuls on ``device`` now (once), so their workspaces are resident before any peak
    reading and no cell's ``peak_mem_bytes`` carries them. Nothing on a CPU."""
    if not device.startswith("cuda") or device in _CUBLAS_WARM:
        return
    _device_matmuls(device)
    torch.cuda.synchronize()
    _CUBLAS_WARM.add(device)


def peak_memory_above(fn: Callable[[], object], device: str) -> int | None:
    """Device memory one call of ``fn`` needs above what was allocated before it (activations, the KV cache), so a
    cell's peak does not count the weights resident for the whole group, nor cuBLAS's workspaces (warmed first:
    :func:`warm_cublas`). On the CPU, where torch keeps no allocator statistics, the peak of the allocations and
    frees ``torch.profiler`` records during the call (:func:`cpu_peak_memory`); None where it recorded none. ``fn``
    is called once on every device, so a caller may observe that call too."""
    if not device.startswith("cuda"):
        return cpu_peak_memory(fn)
    warm_cublas(device)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before)


def cpu_peak_memory(fn: Callable[[], object]) -> int | None:
    """The CPU memory one call of ``fn`` holds at its peak above what was allocated before it: the running sum of
    the allocator's events (``[memory]``: bytes allocated, negative when freed) that ``torch.profiler`` records with
    ``profile_memory``, in time order. None when the profiler recorded no allocation (nothing to measure)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    if not events:
        return None
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return int(peak)
