"""A GPT-2 decoder you can read in one sitting (after nanoGPT's model.py).

Random weights from a seed, nothing downloaded: latency depends on shapes, not
on trained values. Pre-LN blocks, causal attention through
``scaled_dot_product_attention``, GELU MLP, learned positions, tied output
embedding, and an incremental KV cache for decoding.

Each block has three empty adapter slots (``adapter_attn``, ``adapter_mlp``,
``parallel_mlp``) that :mod:`perfsuite.models.adapters` fills; an empty slot costs one
``is None`` test, so the r = 0 model is the plain model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# A layer's cache: keys and values, each (B, n_head, T_past, head_dim).
LayerCache = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class GPT2Config:
    n_layer: int = 24  # transformer blocks
    n_embd: int = 1024  # model width d
    n_head: int = 16  # attention heads
    n_inner: int = 4096  # MLP hidden width (4 d in GPT-2)
    vocab_size: int = 50257  # GPT-2 BPE vocabulary
    n_positions: int = 1024  # longest sequence (learned positions)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


PRESETS: dict[str, GPT2Config] = {
    # The LoRA paper's model (Hu et al. 2021, Table 1 and Figure 5).
    "gpt2-medium": GPT2Config(n_layer=24, n_embd=1024, n_head=16, n_inner=4096),
    "gpt2": GPT2Config(n_layer=12, n_embd=768, n_head=12, n_inner=3072),
    # Small enough for a CPU smoke run, big enough to have every part.
    "tiny": GPT2Config(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=512, n_positions=1024),
}


def get_config(preset: str) -> GPT2Config:
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown model preset {preset!r}; known: {', '.join(sorted(PRESETS))}") from None


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # fused W_q, W_k, W_v as in GPT-2
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor, past: LayerCache | None = None) -> tuple[torch.Tensor, LayerCache]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if past is None or T == 1:
            # No cache: plain causal. One new token: it may attend to everything cached.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and T > 1)
        else:
            # Several new tokens after a cache: causal mask aligned to the bottom-right.
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.n_inner)
        self.c_proj = nn.Linear(cfg.n_inner, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)
        # Adapter slots, filled by perfsuite.models.adapters; None means "not there".
        self.adapter_attn: nn.Module | None = None  # on the attention output, before the residual add
        self.adapter_mlp: nn.Module | None = None  # on the MLP output, before the residual add
        self.parallel_mlp: nn.Module | None = None  # beside the MLP, same input, outputs summed

    def forward(self, x: torch.Tensor, past: LayerCache | None = None) -> tuple[torch.Tensor, LayerCache]:
        a, present = self.attn(self.ln_1(x), past)
        return self.after_attention(x, a), present

    def after_attention(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The block from the attention output ``a`` on: residual adds, MLP and the adapter slots.

        Separate so that a decoder with its own attention (the recompute workload's ragged KV cache) runs the
        very same rest of the block.
        """
        if self.adapter_attn is not None:
            a = self.adapter_attn(a)
        x = x + a
        h = self.ln_2(x)
        m = self.mlp(h)
        if self.parallel_mlp is not None:
            m = m + self.parallel_mlp(h)
        if self.adapter_mlp is not None:
            m = self.adapter_mlp(m)
        return x + m


class GPT2(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections (Radford et al. 2019).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, past: list[LayerCache] | None = None
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Logits (B, T, vocab) for tokens ``idx`` (B, T) following ``past``, and the grown cache."""
        B, T = idx.shape
        start = 0 if past is None else past[0][0].shape[2]
        if start + T > self.config.n_positions:
            raise ValueError(f"sequence of {start + T} tokens is longer than n_positions={self.config.n_positions}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        present = []
        for i, block in enumerate(self.h):
            x, layer_cache = block(x, None if past is None else past[i])
            present.append(layer_cache)
        return self.lm_head(self.ln_f(x)), present


def build_model(preset: str = "tiny", *, seed: int = 0, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> GPT2:
    """A GPT-2 of the named preset with random weights drawn from ``seed``, in eval mode (drawn on the CPU, so a
    seed gives the same weights on every device). On the meta device: shapes only, built there directly."""
    cfg = get_config(preset)
    if str(device) == "meta":
        with torch.device("meta"):
            return GPT2(cfg).to(dtype=dtype).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2(cfg)
    return model.to(device=device, dtype=dtype).eval()


def truncate_cache(past: list[LayerCache], length: int) -> list[LayerCache]:
    """The cache of the first ``length`` positions (rolling back later tokens)."""
    return [(k[:, :, :length], v[:, :, :length]) for k, v in past]
