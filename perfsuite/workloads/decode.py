"""One decode step: a new token per request against a KV cache of L tokens — what a served token costs.

A prefill of 128–512 tokens is arithmetic-bound; a decode step at batch 1–32 moves every weight for one token a
request, so an adapter's extra kernels and bytes show in a way a prefill never does. The cache holds seeded random
keys and values (their values do not change the step's cost): ``(batch, heads, L, head_dim)`` per layer, the
layout of perfsuite's model and of transformers' caches (``heads`` is the KV heads of a grouped-query family).

The new token sits at position L. GPT-2 learned 1024 positions: a cache of L ≥ n_positions (the 2048 of the paper
profile's decode cells) puts the new token at the last learned position — one embedding row either way, so the
cost is that of a step at L; :func:`position_of` says which.

perfsuite's model runs the step through its own blocks (:func:`reference_step`, the same modules and adapter slots
as its forward); transformers' models (plain, peft) take the cache as a ``DynamicCache`` built anew each call from
the same tensors (transformers appends to a cache it is given; the copy keeps every call at L).
"""

from __future__ import annotations

import functools
import inspect

import torch

KV_SEED = 5151  # the cache's keys and values: the same in every cell of a shape
KV_SCALE = 0.5  # their spread (about the scale of a layer-normed model's keys)


def position_of(kv_len: int, n_positions: int | None) -> int:
    """The new token's position: L, or the last learned one when the model has fewer than L + 1."""
    return kv_len if n_positions is None else min(kv_len, n_positions - 1)


def kv_dims(model) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a reference GPT2 or a wrapped transformers model (grouped-query heads)."""
    core = getattr(model, "model", None)
    if core is None:  # perfsuite's GPT2
        cfg = model.config
        return cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
    cfg = core.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    width = getattr(cfg, "hidden_size", None) or cfg.n_embd
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or width // heads
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    return layers, kv_heads, head_dim


def n_positions(model) -> int | None:
    core = getattr(model, "model", None)
    cfg = model.config if core is None else core.config
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def kv_cache(model, batch: int, kv_len: int, *, dtype, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A seeded random cache of ``kv_len`` tokens for ``batch`` requests, one (keys, values) pair per layer."""
    layers, heads, head_dim = kv_dims(model)
    gen = torch.Generator().manual_seed(KV_SEED)
    shape = (batch, heads, kv_len, head_dim)
    return [tuple((torch.randn(shape, generator=gen) * KV_SCALE).to(dtype=dtype, device=device) for _ in range(2))
            for _ in range(layers)]


def rows_of(kv: list[tuple[torch.Tensor, torch.Tensor]], rows: slice) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The cache of some requests (a per-request reference runs one request alone)."""
    return [(k[rows], v[rows]) for k, v in kv]


def reference_step(model, tokens: torch.Tensor, kv, position: torch.Tensor) -> torch.Tensor:
    """Logits (B, 1, vocab) of one step of perfsuite's GPT2 (its forward's embedding, blocks and head, with the
    position given: see the module docstring)."""
    x = model.wte(tokens) + model.wpe(position)
    for block, layer in zip(model.h, kv):
        x, _ = block(x, layer)
    return model.lm_head(model.ln_f(x))


@functools.lru_cache(maxsize=8)
def _cache_keyword(forward) -> str:
    """transformers ≥ 5.x names the cache ``cache`` (``past_key_values`` is deprecated); 4.x: past_key_values."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def hf_call(module, tokens: torch.Tensor, kv=None, position: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Logits of a transformers causal LM (or a PeftModel around one, ``kwargs`` such as ``adapter_names``): a
    forward of ``tokens``, or with ``kv`` a decode step after that cache, the token at ``position``."""
    if kv is not None:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i, (k, v) in enumerate(kv):
            cache.update(k, v, i)
        core = module.get_base_model() if hasattr(module, "get_base_model") else module
        kwargs[_cache_keyword(type(core).forward)] = cache
        kwargs["position_ids"] = position.expand(tokens.shape[0], 1)
    return module(input_ids=tokens, **kwargs).logits


def step_fn(model, tokens: torch.Tensor, kv, kv_len: int):
    """One decode step of ``model`` (a reference GPT2, or a wrapped transformers model) as a function of nothing."""
    position = torch.tensor([position_of(kv_len, n_positions(model))], device=tokens.device)
    core = getattr(model, "model", None)
    if core is None:
        return lambda: reference_step(model, tokens, kv, position)
    return lambda: hf_call(core, tokens, kv, position.view(1, 1))
