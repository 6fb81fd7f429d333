"""The device a cell runs on, as torch sees it: which device (:func:`resolve_device`), its CPU threads, its
synchronize, out-of-memory errors, the memory a call needs above what is resident, the bytes of a model's tensors
and the FLOPs of one call. The timing loop (:mod:`perfsuite.timing`) synchronizes through it.
"""

from __future__ import annotations

import contextlib
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


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call, counted by torch's FlopCounterMode (matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


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
