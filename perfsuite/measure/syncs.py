"""Counting host syncs: what in a timed call would make the host wait for a GPU — measurable on any device.

A read-back (``.item()``, ``int()``/``bool()`` of a tensor, ``.tolist()``, ``torch.equal``, a copy to the CPU),
an op whose output shape depends on the data (``nonzero``, boolean-mask indexing and assignment ``x[mask] = t``,
``unique``) and a blocking copy of host data to the device (``torch.tensor(python_data, device=...)``, a list
used as an index, a Python scalar written into one element ``out[i] = v``) each stall the stream on CUDA.
:class:`SyncCounter` sees them through torch's dispatcher on any device and counts what CUDA would sync on,
so a CPU test can hold every timed region to its budget:

* host data: ``torch.tensor(...)`` and a Python scalar in an assignment both reach the dispatcher as
  ``lift_fresh``. A non-empty one is a copy to the device, unless the op that consumes it takes it as a kernel
  argument: ``x[i, :] = v`` (``fill_``) and ``x[idx] = v`` / ``x[mask] = v`` with a scalar ``v``
  (``index_put_``, which CUDA turns into a scalar fill). One element written, ``out[i] = v``, is a
  ``copy_`` of the 0-dim host tensor: a blocking copy on CUDA (torch routes a 0-dim target through
  ``select`` + ``copy_``), counted;
* ``Tensor.tolist``, which the dispatcher does not see on a CPU tensor, and ``.item()``, ``float()``, ``int()``,
  ``bool()`` of a tensor, which it does not see under ``inference_mode`` (where every timed region runs), are
  counted by wrapping them while the counter is active — once each: the CUDA→CPU copy or
  ``_local_scalar_dense`` torch makes inside them is not counted again;
* an empty tensor has nothing to copy and is not counted.

On CUDA, a GPU test also runs the timed regions under ``torch.cuda.set_sync_debug_mode``
(tests/unit/test_gpu.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

READ_BACK = frozenset({"aten._local_scalar_dense", "aten.equal"})  # .item(), int(t), bool(t), torch.equal
DATA_DEPENDENT = frozenset({"aten.nonzero", "aten.masked_select", "aten._unique2", "aten.unique_dim",
                            "aten.unique_consecutive", "aten.repeat_interleave"})
INDEX_PUT = frozenset({"aten.index_put_", "aten.index_put", "aten._index_put_impl_"})
HOST_DATA = frozenset({"aten.lift_fresh"})  # a tensor made from Python data (then copied to the device)
SCALAR_ARGUMENT = frozenset({"aten.fill_", "aten.masked_fill_", "aten.masked_fill"}) | INDEX_PUT
COPIES = frozenset({"aten._to_copy", "aten.copy_"})
# Tensor methods that read a value back to Python, wrapped while the counter is active: under inference_mode a CPU
# tensor's .item()/float()/bool() never reaches the dispatcher, and .tolist() never does on the CPU.
READ_BACK_METHODS = {"tolist": "tolist", "item": "read_back", "__float__": "read_back", "__int__": "read_back",
                     "__bool__": "read_back", "__index__": "read_back"}


class SyncCounter(TorchDispatchMode):
    """Counts host syncs by kind while active (see the module docstring)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False: nothing is compiled inside this mode, and torch's default wraps it in ``torch._disable_dynamo``,
        whose first call imports dynamo (seconds on a CPU) for a counter of a plain forward."""
        return False

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._originals: dict[str, Callable] = {}
        self._inside_read_back = False
        self._host_scalars: dict[int, torch.Tensor] = {}  # 0-dim host data not yet consumed, by id (kept alive)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self):
        self._originals = {name: getattr(torch.Tensor, name) for name in READ_BACK_METHODS}
        for name, kind in READ_BACK_METHODS.items():
            setattr(torch.Tensor, name, self._counted(self._originals[name], kind))
        return super().__enter__()

    def _counted(self, original, kind: str):
        def read_back(t, *args, **kwargs):
            if self._inside_read_back:
                return original(t, *args, **kwargs)
            self.counts[kind] += 1
            self._inside_read_back = True  # what torch dispatches inside (the copy to the CPU) is the same sync
            try:
                return original(t, *args, **kwargs)
            finally:
                self._inside_read_back = False

        return read_back

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        if self._host_scalars:  # host data never consumed by a kernel: torch.tensor(v, device=...) copies it
            self.counts["host_to_device"] += len(self._host_scalars)
            self._host_scalars.clear()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        out = func(*args, **kwargs)
        if self._inside_read_back:
            return out
        scalar = self._host_scalar_among(args)
        if name in READ_BACK:
            self.counts["read_back"] += 1
        elif name in DATA_DEPENDENT and not (name == "aten.repeat_interleave" and kwargs.get("output_size")):
            self.counts["data_dependent_shape"] += 1
        elif name == "aten.index" and _has_bool_index(args):
            self.counts["data_dependent_shape"] += 1
        elif name in INDEX_PUT and _has_bool_index(args) and not _masked_fill_path(args, scalar):
            self.counts["data_dependent_shape"] += 1
        elif name in HOST_DATA and isinstance(out, torch.Tensor) and out.numel() > 0:
            if out.dim() == 0:
                self._host_scalars[id(out)] = out  # a copy, or a kernel argument: the op that consumes it says
            else:
                self.counts["host_to_device"] += 1
        elif name in COPIES and scalar is None and _crosses_devices(func, args, kwargs, out):
            self.counts["device_copy"] += 1
        if scalar is not None and name not in HOST_DATA:
            del self._host_scalars[id(scalar)]
            if name not in SCALAR_ARGUMENT:
                self.counts["host_to_device"] += 1  # copied into a device tensor (out[i] = v), or a tensor's data
        return out

    def _host_scalar_among(self, args) -> torch.Tensor | None:
        for a in args:
            if isinstance(a, torch.Tensor) and a.dim() == 0 and self._host_scalars.get(id(a)) is a:
                return a
        return None


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _masked_fill_path(args, scalar) -> bool:
    """``x[mask] = v`` with one mask and a host scalar: CUDA fills with the scalar, no nonzero (no sync)."""
    indices = [i for i in args[1] if i is not None]
    return scalar is not None and len(indices) == 1 and not (len(args) > 3 and args[3])


def _crosses_devices(func, args, kwargs, out) -> bool:
    """A copy between the CPU and a GPU that the host waits for (a non-blocking upload from pinned memory does not
    count; a 0-dim CPU tensor copied into a device tensor does: the copy blocks, whatever its size)."""
    src = args[1] if str(func.overloadpacket) == "aten.copy_" and len(args) > 1 else (args[0] if args else None)
    dst = args[0] if str(func.overloadpacket) == "aten.copy_" else out
    if not (isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor)) or src.device.type == dst.device.type:
        return False
    if src.numel() == 0:
        return False  # an empty tensor: nothing to copy
    uploads = src.device.type == "cpu"
    return not (uploads and kwargs.get("non_blocking") and src.is_pinned())


def count_host_syncs(fn: Callable[[], object]) -> Counter[str]:
    """The host syncs of one call of ``fn``, by kind."""
    with SyncCounter() as counter:
        fn()
    return counter.counts
