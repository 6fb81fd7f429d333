"""Today's causal LMs — Llama, Qwen2, Mistral — built from a transformers config with seeded random weights (nothing
downloaded: latency depends on shapes, not on trained values), wrapped as the workloads use a model.

The named shapes (``perfsuite.cells.grid.MODERN_MODELS``): ``*-tiny`` for a CPU (hidden 128, 2 layers), and the
layer shapes of Llama-3-8B and Qwen2-7B for a GPU — every width of the real model (hidden, MLP, heads, grouped KV
heads, vocabulary) but only ``FEW_LAYERS`` of its layers, so one GPU holds the plain model and every adapted copy
of a latency group, and the grid keeps its time. Their times are per ``FEW_LAYERS``-layer model, not the real one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from perfsuite.cells.grid import MODERN_MODELS
from perfsuite.errors import PerfsuiteError

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
    note: str = ""  # what the shape is, in words (README)


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
                 num_key_value_heads=s.num_key_value_heads, vocab_size=s.vocab_size, max_position_embeddings=4096,
                 tie_word_embeddings=False, attention_dropout=0.0)
    config._attn_implementation = "sdpa"
    return config


@dataclass(frozen=True)
class FamilyDims:
    """A family model's sizes under the names records use (``model_dims``: n_layer, n_embd, …)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_inner: int
    vocab_size: int
    n_kv_head: int


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


class HFCausalLM:
    """A family model — plain, a PeftModel, or merged — as the latency workload uses a model: calling it runs
    transformers' (and peft's) own forward; ``config`` holds its sizes (:class:`FamilyDims`)."""

    def __init__(self, model, dims: FamilyDims):
        self.model = model
        self.config = dims

    def __call__(self, idx: torch.Tensor):
        return self.model(input_ids=idx, use_cache=False)

    def eval(self) -> "HFCausalLM":
        self.model.eval()
        return self

    def parameters(self):
        return self.model.parameters()

    def buffers(self):
        return self.model.buffers()
