"""Which scaled-dot-product-attention kernel the decoder runs: pinned, and named in every recompute cell.

``F.scaled_dot_product_attention`` picks a backend per call from the shapes, the mask and what the build offers.
On an H100 with a recent cuDNN it prefers cuDNN attention, which builds an execution graph per (batch, query
length, key length, mask): a decoder whose key length moves with every step would build hundreds of graphs per
cell, and a cuDNN upgrade would move the kernel under the suite without a word. So the decoder
(:mod:`perfsuite.models.decoding`) runs under :func:`decoder_attention`: on CUDA the memory-efficient kernel first (it
takes the decoder's boolean mask), the math kernel as the fallback, cuDNN never; on the CPU torch's fused CPU
kernel, then math. And the decoder keeps one key length per pass shape (the mask covers the slots a row may not
see), so the backend sees the same few shapes all night.

:func:`backend_for` names the backend SDPA would pick for given tensors under the pin (torch's own selector,
``torch._fused_sdp_choice``): each recompute cell records it as ``sdpa_backend``, and the doctor checks fp16 and
bf16 attention at the paper model's shapes with it (:func:`check_attention`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

DECODER_BACKENDS = {"cuda": (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
                    "cpu": (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH)}
_NAMES = {int(b): name.lower() for name, b in SDPBackend.__members__.items()}
ATTENTION_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 4e-2}  # relative error against fp32 math


def _kind(device) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def decoder_attention(device) -> contextlib.AbstractContextManager:
    """The decoder's attention backends, in priority order, for the block (see the module docstring)."""
    return sdpa_kernel(list(DECODER_BACKENDS[_kind(device)]), set_priority=True)


def backend_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                is_causal: bool = False) -> str:
    """The backend SDPA picks for these tensors under the backends in force ("unknown" where torch cannot say)."""
    try:
        return _NAMES.get(int(torch._fused_sdp_choice(q, k, v, mask, 0.0, is_causal)), "unknown")
    except (AttributeError, RuntimeError, TypeError):
        return "unknown"


def decoder_backend(model, rows: int, tokens: int, ctx: int) -> str:
    """The backend the pinned decoder gets for a pass of ``rows × tokens`` queries over ``ctx`` key slots of
    ``model`` (its width, heads, dtype and device)."""
    cfg, p = model.config, model.wte.weight
    q = torch.empty(rows, cfg.n_head, tokens, cfg.n_embd // cfg.n_head, dtype=p.dtype, device=p.device)
    k = torch.empty(rows, cfg.n_head, ctx, cfg.n_embd // cfg.n_head, dtype=p.dtype, device=p.device)
    mask = torch.ones(rows, 1, tokens, ctx, dtype=torch.bool, device=p.device)
    with decoder_attention(p.device):
        return backend_for(q, k, k, mask)


def check_attention(device: str, dtype: torch.dtype, *, batch: int, seq_len: int, n_head: int, head_dim: int,
                    masked: bool = False, seed: int = 0) -> dict:
    """One attention call at these shapes in ``dtype`` against fp32 math: the backend it ran on, its relative
    error, and whether the output is finite and within ATTENTION_TOLERANCE. ``masked``: the decoder's boolean-mask
    call under its pin; else the latency forward's causal call as torch picks it."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, n_head, seq_len, head_dim, generator=gen) for _ in range(3))
    mask = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()[None, None].expand(batch, 1, -1, -1) if masked \
        else None
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not masked)
    args = [t.to(device=device, dtype=dtype) for t in (q, k, v)]
    dev_mask = None if mask is None else mask.to(device)
    with decoder_attention(device) if masked else contextlib.nullcontext():
        backend = backend_for(*args, dev_mask, is_causal=not masked)
        with torch.inference_mode():
            out = F.scaled_dot_product_attention(*args, attn_mask=dev_mask, is_causal=not masked).float().cpu()
    error = float((out - ref).norm() / ref.norm())
    ok = bool(torch.isfinite(out).all()) and error <= ATTENTION_TOLERANCE[dtype]
    return {"backend": backend, "relative_error": error, "ok": ok and backend not in ("error", "unknown")}
