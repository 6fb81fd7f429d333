"""What a pass does, counted from the code it runs: kernels and ops of a forward and of one ragged decoder pass (per
adapter, on a narrow twin: the count does not depend on width), and the FLOPs of a pass of any shape (per token
from the model's matrices on the meta device, attention from the key slots)."""

from __future__ import annotations

import functools

from perfsuite.measure.device import count_work


def count_ops(fn) -> tuple[int, int]:
    """(kernels, ops) of one call of ``fn``: the aten ops torch dispatches, and those of them that launch a kernel
    (views change metadata only, but cost the host the same dispatch)."""
    work = count_work(fn, flops=False)
    return work.kernels, work.ops


def forward_ops(config, adapter: str, rank: int, dtype: str = "float32") -> tuple[int, int]:
    """(kernels, ops) of one forward of the reference model with ``adapter``: counted on a narrow twin on the CPU
    (real tensors, C++ kernels: milliseconds), whose ops are the model's — the count depends on the blocks and the
    adapter, not on widths or rank (tests/unit/test_estimate.py checks it against a model four times as wide). On
    the meta device attention's output comes back in another layout and ``contiguous()`` dispatches one copy per
    block, which the CPU's fused attention kernel makes unnecessary."""
    return _forward_ops(config, adapter if rank else "none")


@functools.lru_cache(maxsize=64)
def _forward_ops(config, adapter: str) -> tuple[int, int]:
    import torch

    from perfsuite.models.adapters import attach
    from perfsuite.workloads.counting import layered_work

    model = _narrow_twin(config)
    if adapter != "none":
        attach(model, adapter, 8)
    tokens = torch.zeros(1, 8, dtype=torch.long)
    with torch.inference_mode():
        work = layered_work(model, lambda: model(tokens), flops=False)
    return work.kernels, work.ops


def _narrow_twin(config):
    import dataclasses

    import torch

    from perfsuite.models.model import GPT2

    narrow = dataclasses.replace(config, n_embd=64, n_head=4, n_inner=256, vocab_size=64, n_positions=64)
    with torch.random.fork_rng(devices=[]):
        return GPT2(narrow).eval()


@functools.lru_cache(maxsize=256)
def token_flops(config, adapter: str, rank: int, dtype: str) -> int:
    """FLOPs of one token through the model with one key slot: every matrix the forward multiplies by is used once
    per token (2 FLOPs per element; the position table is a lookup; the tied embedding once, as the head), and
    attention over one slot is 4·n_embd per layer. Read from the parameters of the model on the meta device, and
    equal to the work counter's count of a one-token forward there (tests/unit/test_estimate.py), without
    dispatching a forward on the meta device (Python reference kernels: seconds for a grid). An adapter another
    package contributes is counted by that forward."""
    from perfsuite.models.adapters import ADAPTERS
    from perfsuite.workloads.counting import forward_work, meta_model

    if adapter not in ADAPTERS:
        return forward_work(config, adapter, rank, 1, dtype).flops
    m = meta_model(config, adapter, rank, dtype)
    matrices = sum(p.numel() for name, p in m.named_parameters() if p.dim() == 2 and name != "wpe.weight")
    return 2 * matrices + 4 * config.n_layer * config.n_embd


@functools.lru_cache(maxsize=64)
def ragged_ops(config, adapter: str, rank: int) -> tuple[int, int]:
    """(kernels, ops) of one ragged decoder pass (:func:`perfsuite.models.decoding.ragged_forward`) of a model with
    ``config``'s blocks and ``adapter``: counted on a narrow twin on the CPU (the count does not depend on width)."""
    import torch

    from perfsuite.models.adapters import attach
    from perfsuite.models.decoding import KVBuffer, ragged_forward

    from perfsuite.workloads.counting import layered_work

    model = _narrow_twin(config)
    if adapter != "none" and rank:
        attach(model, adapter, min(rank, 8))
    cache = KVBuffer(model, 2, 16)
    idx, starts = torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    with torch.inference_mode():
        work = layered_work(model, lambda: ragged_forward(model, cache, idx, starts, 8), flops=False)
    return work.kernels, work.ops


def config_of(cell):
    from perfsuite.models.model import get_config

    return get_config(cell.model)


def pass_cost(cell, adapter: str, rank: int, rows: int, tokens: int, ctx: int) -> tuple[tuple[int, int], float]:
    """((kernels, ops), FLOPs) of one pass of ``rows × tokens`` new tokens attending to ``ctx`` key slots."""
    cfg = config_of(cell)
    per_token = token_flops(cfg, adapter, rank, cell.dtype)  # every linear layer and the head, 1 slot
    attention = 4 * cfg.n_layer * cfg.n_embd * max(0, ctx - 1)  # QKᵀ and AV over the other slots, per token
    return forward_ops(cfg, adapter, rank, cell.dtype), rows * tokens * (per_token + attention)
