"""Counting host syncs: what in a timed call would make the host wait for a GPU — measurable on any device.

A read-back (``.item()``, ``int()``/``bool()`` of a tensor, ``.tolist()``, a copy to the CPU), an op whose
output shape depends on the data (``nonzero``, boolean-mask indexing, ``unique``) and a blocking copy of host
data to the device (``torch.tensor(python_list, device=...)``, a list used as an index) each stall the
stream on CUDA. :class:`SyncCounter` sees them through torch's dispatcher on any device, so a CPU test can
hold every timed region to its budget; ``Tensor.tolist``, which the dispatcher does not see on a CPU
tensor, is counted by wrapping it while the counter is active. A scalar written into a tensor
(``x[i] = 3``) is a kernel argument, not a copy, and an empty tensor has nothing to copy: neither is counted. On CUDA, a GPU test also runs the
timed regions under ``torch.cuda.set_sync_debug_mode`` (tests/unit/test_gpu.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

READ_BACK = frozenset({"aten._local_scalar_dense"})  # .item(), int(t), bool(t), float(t)
DATA_DEPENDENT = frozenset({"aten.nonzero", "aten.masked_select", "aten._unique2", "aten.unique_dim",
                            "aten.unique_consecutive", "aten.repeat_interleave"})
HOST_DATA = frozenset({"aten.lift_fresh"})  # a tensor made from Python data (then copied to the device)
COPIES = frozenset({"aten._to_copy", "aten.copy_"})


class SyncCounter(TorchDispatchMode):
    """Counts host syncs by kind while active (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._tolist = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self):
        self._tolist = torch.Tensor.tolist
        counts, original = self.counts, self._tolist

        def tolist(t, *args, **kwargs):
            counts["tolist"] += 1
            return original(t, *args, **kwargs)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        out = func(*args, **kwargs)
        if name in READ_BACK:
            self.counts["read_back"] += 1
        elif name in DATA_DEPENDENT and not (name == "aten.repeat_interleave" and kwargs.get("output_size")):
            self.counts["data_dependent_shape"] += 1
        elif name == "aten.index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                          for i in (args[1] if len(args) > 1 else ()) or ()):
            self.counts["data_dependent_shape"] += 1
        elif name in HOST_DATA and isinstance(out, torch.Tensor) and out.dim() > 0 and out.numel() > 0:
            self.counts["host_to_device"] += 1
        elif name in COPIES and _crosses_devices(func, args, kwargs, out):
            self.counts["device_copy"] += 1
        return out


def _crosses_devices(func, args, kwargs, out) -> bool:
    """A copy between the CPU and a GPU that the host waits for (a non-blocking upload does not count)."""
    src = args[1] if str(func.overloadpacket) == "aten.copy_" and len(args) > 1 else (args[0] if args else None)
    dst = args[0] if str(func.overloadpacket) == "aten.copy_" else out
    if not (isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor)) or src.device.type == dst.device.type:
        return False
    if (src.device.type == "cpu" and src.dim() == 0) or src.numel() == 0:
        return False  # a CPU scalar into a device tensor is a fill, an empty tensor nothing to copy
    uploads = src.device.type == "cpu"
    return not (uploads and kwargs.get("non_blocking") and src.is_pinned())


def count_host_syncs(fn: Callable[[], object]) -> Counter[str]:
    """The host syncs of one call of ``fn``, by kind."""
    with SyncCounter() as counter:
        fn()
    return counter.counts
