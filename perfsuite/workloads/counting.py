"""What one pass of the reference model dispatches — aten ops, kernels, FLOPs — counted a few blocks at a time.

A pass is its shell (embeddings, final norm, head) plus its blocks, and the blocks of a model are a few kinds
repeated (every block alike; adapterdrop's lower blocks without adapters): :func:`layered_work` counts the pass with
no block and with one block of each kind, and adds each kind's share once per occurrence. Every count is a sum over
the ops a call dispatches, so this equals the count of the whole pass (tests/unit/test_counting.py checks it for
every adapter, forward and ragged decoder pass), at a few blocks' cost instead of 24: the latency workload's FLOPs
(on the meta device, :func:`forward_work`) and the cost model's op counts (``perfsuite cells --estimate``) both
come from here.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from perfsuite.models.adapters import attach
from perfsuite.models.caches import torch_dtype
from perfsuite.measure.device import Work, count_work, op_name


# What initialising a module's parameters dispatches: on the meta device there are no values to set, and torch's
# meta kernels for these are Python references behind ``torch._disable_dynamo`` (seconds of imports, then
# milliseconds a call): a model built on the meta device skips them.
_INIT_OPS = frozenset({"aten.normal_", "aten.uniform_", "aten.zero_", "aten.fill_", "aten.bernoulli_",
                       "aten.exponential_", "aten.random_"})


class _NoValues(TorchDispatchMode):
    """Initialisations of meta tensors skipped (see _INIT_OPS); every other op runs."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if op_name(func._overloadpacket) in _INIT_OPS and args and getattr(args[0], "is_meta", False):
            return args[0]
        return func(*args, **(kwargs or {}))


@functools.lru_cache(maxsize=16)
def _meta_base(config, dtype: str):
    from perfsuite.models.model import GPT2

    with torch.device("meta"), _NoValues():
        return GPT2(config).to(dtype=torch_dtype(dtype)).eval()


@functools.lru_cache(maxsize=64)
def meta_model(config, adapter: str, rank: int, dtype: str):
    """The reference model with ``adapter`` on the meta device: shapes only, no memory, no values drawn (an
    adapter attached to a copy of the plain meta model's module tree, its tensors shared)."""
    base = _meta_base(config, dtype)
    if not rank or adapter == "none":
        return base
    with _NoValues():
        return attach(_tree_copy(base), adapter, rank)


def _shallow(module: nn.Module) -> nn.Module:
    copy_ = copy.copy(module)
    copy_._modules = dict(module._modules)  # its own children: what an adapter replaces or adds
    return copy_


def _tree_copy(model: nn.Module) -> nn.Module:
    """The model, each block and each block's attention as new objects (an adapter sets a block's slots or wraps
    its ``attn.c_attn``); every other module and every tensor shared — a deep copy of 24 blocks costs more than
    the count it is made for."""
    m = _shallow(model)
    blocks = []
    for block in model.h:
        b = _shallow(block)
        b.attn = _shallow(block.attn)
        blocks.append(b)
    m.h = nn.ModuleList(blocks)
    return m


def block_kind(block: nn.Module) -> tuple:
    """What decides a block's count: each submodule's name, type, simple settings and parameter shapes."""
    return tuple((name, type(m).__qualname__,
                  tuple(sorted((k, v) for k, v in vars(m).items()
                               if not k.startswith("_") and isinstance(v, (bool, int, float, str)))),
                  tuple((pn, tuple(p.shape), str(p.dtype)) for pn, p in m.named_parameters(recurse=False)))
                 for name, m in block.named_modules())


def layered_work(model, run, *, flops: bool = True) -> Work:
    """``count_work(run)`` as if ``model.h`` held all its blocks, counted with no block and with one block of each
    kind (``run`` must use whatever ``model.h`` holds: the model's forward, :func:`perfsuite.models.decoding.ragged_forward`)."""
    blocks = model.h
    kinds: dict[tuple, list] = {}
    for block in blocks:
        kinds.setdefault(block_kind(block), [block, 0])[1] += 1
    try:
        model.h = nn.ModuleList()
        shell = total = count_work(run, flops=flops)
        for block, n in kinds.values():
            model.h = nn.ModuleList([block])
            total = total + (count_work(run, flops=flops) - shell) * n
    finally:
        model.h = blocks
    return total


@functools.lru_cache(maxsize=1024)
def forward_work(config, adapter: str, rank: int, seq_len: int, dtype: str) -> Work:
    """Ops, kernels and FLOPs of one forward of ``seq_len`` tokens at batch 1 (every counted op is linear in the
    batch, so FLOPs scale with it; ops and kernels do not)."""
    m = meta_model(config, adapter, rank, dtype)
    tokens = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    with torch.inference_mode():
        return layered_work(m, lambda: m(tokens))


def forward_flops(model, adapter: str, rank: int, batch: int, seq_len: int, dtype: str) -> int:
    """FLOPs of one forward pass of the reference model (``model``: a preset name or a GPT2Config), once per
    (model, adapter, rank, length) on the meta device, times the batch."""
    from perfsuite.models.model import get_config

    config = get_config(model) if isinstance(model, str) else model
    return batch * forward_work(config, adapter, rank, seq_len, dtype).flops
