"""fused-lora: LoRA on W_q and W_v of GPT-2's fused ``c_attn`` with ONE down- and ONE up-projection.

perfsuite's built-in ``lora`` (perfsuite.models.adapters.LoRAQKV) stacks A_q and A_v into one down-projection but runs
two up-projections (B_q, B_v) and two slices. Here q and v share A (r × d) and their up-projections are one
(2d × r) matrix: h_q += (α/r)·B_q·A·x and h_v += (α/r)·B_v·A·x with one product each way. 3·r·d weights instead
of 4·r·d, and two kernel launches instead of three: whether that pays is what the grid measures, beside LoRA.

Top-level imports stay light (perfsuite reads the adapter's name to list cells without importing torch).
"""

from __future__ import annotations

import math

from perfsuite.extensions import AdapterPlugin

INIT_STD = 0.02  # as perfsuite's own adapters: random B, so timing never runs on zeros


def _fused_module(base, r: int, alpha: float, generator, init: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FusedLoRAQKV(nn.Module):
        is_adapter = True  # perfsuite.models.adapters.adapter_parameters counts its weights

        def __init__(self):
            super().__init__()
            d = base.in_features
            like = dict(dtype=base.weight.dtype, device=base.weight.device)
            self.base, self.r, self.scaling = base, r, alpha / r
            self.lora_A = nn.Parameter(torch.empty(r, d, **like))  # shared by q and v
            self.lora_B = nn.Parameter(torch.empty(2 * d, r, **like))  # B_q above B_v: one up-projection

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            qkv = self.base(x)
            d = self.lora_B.shape[0] // 2
            delta = F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling  # (B, T, 2d)
            return torch.cat([qkv[..., :d] + delta[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :] + delta[..., d:]],
                             dim=-1)

    mod = FusedLoRAQKV()
    with torch.no_grad():
        if base.weight.is_meta:  # perfsuite counts FLOPs on the meta device: shapes only
            return mod
        mod.lora_A.copy_(torch.randn(mod.lora_A.shape, generator=generator) / math.sqrt(mod.lora_A.shape[1]))
        b = torch.randn(mod.lora_B.shape, generator=generator) * INIT_STD if init != "zero" else torch.zeros(mod.lora_B.shape)
        mod.lora_B.copy_(b)
    return mod


def attach(model, rank: int, generator, init: str, alpha: float | None = None) -> None:
    """Replace every block's ``attn.c_attn`` by its fused-LoRA version (perfsuite's attach contract: in place)."""
    for block in model.h:
        block.attn.c_attn = _fused_module(block.attn.c_attn, rank, float(rank if alpha is None else alpha),
                                          generator, init)


ADAPTER = AdapterPlugin(
    name="fused-lora",
    doc="LoRA on W_q and W_v with a shared A and one (2d × r) up-projection: one down and one up matmul "
        "(perfsuite's example of a contributed adapter, examples/custom-adapter).",
    attach=attach,
)
