"""Today's causal LMs — Llama, Qwen2, Mistral — built from a transformers config with seeded random weights (nothing
downloaded: latency depends on shapes, not on trained values), wrapped as the workloads use a model.

The named shapes (``perfsuite.cells.grid.MODERN_MODELS``): ``*-tiny`` for a CPU (hidden 128, 2 layers), and the
layer shapes of Llama-3-8B and Qwen2-7B for a GPU — every width of the real model (hidden, MLP, heads, grouped KV
heads, vocabulary) but only ``FEW_LAYERS`` of its layers, so one GPU holds the plain model and every adapted copy
of a latency group, and the grid keeps its time. Their times are per ``FEW_LAYERS``-layer model, not the real one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from perfsuite.cells.grid import MODERN_MODELS
from perfsuite.errors import PerfsuiteError
from perfsuite.hf.facade import ModelFacade

FEW_LAYERS = 4  # layers of the 8B/7B shapes (Llama-3-8B has 32, Qwen2-7B 28)


@dataclass(frozen=True)
class FamilyShape:
    """A named shape: the transformers family and its config's sizes."""

    family: str  # "llama", "qwen2" or "mistral"
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    note: str = ""  # what the shape is, in words (docs/hf.md)


SHAPES: dict[str, FamilyShape] = {
    "llama-tiny": FamilyShape("llama", 128, 344, 2, 4, 2, 512, "CPU: hidden 128, 2 layers, 2 KV heads"),
    "qwen2-tiny": FamilyShape("qwen2", 128, 344, 2, 4, 2, 512, "CPU: hidden 128, 2 layers, 2 KV heads, q/k/v biases"),
    "mistral-tiny": FamilyShape("mistral", 128, 344, 2, 4, 2, 512, "CPU: hidden 128, 2 layers, 2 KV heads"),
    # Meta-Llama-3-8B's config.json: hidden 4096, MLP 14336, 32 heads, 8 KV heads, vocabulary 128256, 32 layers.
    "llama-3-8b": FamilyShape("llama", 4096, 14336, FEW_LAYERS, 32, 8, 128256,
                              f"GPU: Llama-3-8B's widths, {FEW_LAYERS} of its 32 layers"),
    # Qwen2-7B's config.json: hidden 3584, MLP 18944, 28 heads, 4 KV heads, vocabulary 152064, 28 layers.
    "qwen2-7b": FamilyShape("qwen2", 3584, 18944, FEW_LAYERS, 28, 4, 152064,
                            f"GPU: Qwen2-7B's widths, {FEW_LAYERS} of its 28 layers"),
}


def get_shape(name: str) -> FamilyShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise PerfsuiteError(f"unknown model shape {name!r}; known: {', '.join(SHAPES)}") from None


def family_config(name: str):
    """transformers' config of shape ``name`` (LlamaConfig, Qwen2Config or MistralConfig); eager attention (the
    same kernels on every machine), no dropout, untied head as the real models."""
    import transformers

    s = get_shape(name)
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "mistral": transformers.MistralConfig}[s.family]
    config = cls(hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                 num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
                 num_key_value_heads=s.num_key_value_heads, vocab_size=s.vocab_size,
                 max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=False, attention_dropout=0.0)
    config._attn_implementation = "sdpa"
    return config


MAX_POSITIONS = 4096  # the configs' max_position_embeddings (RoPE: no learned table; a bound for prompts)


@dataclass(frozen=True)
class FamilyDims:
    """A family model's sizes under the names records and the recompute decoder use (the reference's GPT2Config
    names: n_layer, n_embd, n_head, …)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_inner: int
    vocab_size: int
    n_kv_head: int
    n_positions: int = MAX_POSITIONS

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def family_dims(name: str) -> FamilyDims:
    s = get_shape(name)
    return FamilyDims(s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.intermediate_size, s.vocab_size,
                      s.num_key_value_heads)


def build_family_model(name: str, *, seed: int, dtype: torch.dtype, device: str):
    """The causal LM of shape ``name`` with weights drawn from ``seed``, built on ``device`` in ``dtype``, eval mode."""
    import transformers

    if name not in MODERN_MODELS:
        raise PerfsuiteError(f"{name!r} is not a model family shape; known: {', '.join(MODERN_MODELS)}")
    config = family_config(name)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


class _PositionTap:
    """Stands where the recompute decoder adds GPT-2's learned positions (``wpe(pos)``): a RoPE family adds none
    to the embeddings; it keeps the rotary cos/sin of those positions for its blocks' q and k, and adds 0."""

    def __init__(self, rotary, dtype: torch.dtype):
        self.rotary, self.dtype = rotary, dtype
        self.cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, pos: torch.Tensor) -> torch.Tensor:
        probe = torch.empty(0, dtype=self.dtype, device=pos.device)  # the rotary module reads dtype and device
        self.cos_sin = self.rotary(probe, pos)  # each (R, T, head_dim)
        return torch.zeros((), dtype=self.dtype, device=pos.device)


class _FamilyBlockView:
    """A Llama/Qwen2/Mistral decoder layer under the reference Block's names (what the recompute decoder calls):
    ``ln_1`` is its input RMSNorm; ``attn.c_attn`` gives q, k, v side by side as GPT-2's fused projection does —
    q_proj, k_proj, v_proj (peft's layers inside), RoPE at the tapped positions, k and v repeated to every query
    head (grouped-query attention as the decoder's full-head KV cache holds it) — and ``attn.c_proj`` is o_proj."""

    def __init__(self, layer, tap: _PositionTap, dims: FamilyDims, rope):
        self._layer, self._tap, self._dims, self._rope = layer, tap, dims, rope
        self.ln_1 = layer.input_layernorm
        self.attn = SimpleNamespace(c_attn=self._qkv, c_proj=layer.self_attn.o_proj, n_head=dims.n_head)

    def _qkv(self, h: torch.Tensor) -> torch.Tensor:
        R, T, _ = h.shape
        attn, d = self._layer.self_attn, self._dims
        q, k, v = (proj(h).view(R, T, heads, d.head_dim).transpose(1, 2)  # (R, heads, T, hs)
                   for proj, heads in ((attn.q_proj, d.n_head), (attn.k_proj, d.n_kv_head), (attn.v_proj, d.n_kv_head)))
        cos, sin = self._tap.cos_sin
        q, k = self._rope.apply_rotary_pos_emb(q, k, cos, sin)
        groups = d.n_head // d.n_kv_head
        k, v = self._rope.repeat_kv(k, groups), self._rope.repeat_kv(v, groups)
        return torch.cat([t.transpose(1, 2).reshape(R, T, d.n_head * d.head_dim) for t in (q, k, v)], dim=-1)

    def after_attention(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = x + a  # as the decoder layer's forward: residual adds around attention and the MLP
        return x + self._layer.mlp(self._layer.post_attention_layernorm(x))


class HFCausalLM(ModelFacade):
    """A family model — plain, a PeftModel, or merged — as the workloads use a model. Calling it runs transformers'
    (and peft's) own forward: what latency cells time. ``config`` holds its sizes (:class:`FamilyDims`), and
    ``wte``, ``wpe``, ``h``, ``ln_f``, ``lm_head`` give its modules under the reference model's names, so the
    recompute workload's ragged decoder (its attention and KV cache are perfsuite's) drives the family's layers
    with peft's adapters inside them."""

    def __init__(self, model, dims: FamilyDims):
        self.model = model
        self.config = dims
        core = model.get_base_model() if hasattr(model, "get_base_model") else model  # the *ForCausalLM
        self.wte, self.ln_f, self.lm_head = core.model.embed_tokens, core.model.norm, core.lm_head
        self.wpe = _PositionTap(core.model.rotary_emb, self.wte.weight.dtype)
        rope = importlib.import_module(f"transformers.models.{core.config.model_type}.modeling_{core.config.model_type}")
        self.h = [_FamilyBlockView(layer, self.wpe, dims, rope) for layer in core.model.layers]

    def __call__(self, idx: torch.Tensor):
        return self.model(input_ids=idx, use_cache=False)

