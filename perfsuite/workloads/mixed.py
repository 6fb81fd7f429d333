"""A batch whose requests use different LoRAs, on perfsuite's own model: the adapters, their bank, and two ways to
compute it (a serving cell's ``method``).

K adapters are K ordinary single-adapter models (:func:`single_adapters`: the reference LoRA on W_q and W_v,
:class:`perfsuite.models.adapters.LoRAQKV`, each from its own seed), so each request can be checked against its own
adapter alone. Their weights are stacked into a bank per layer (:class:`MultiLoRAQKV`), zero-padded to the largest
rank when ranks differ (``rank_mix`` "hetero"; padding adds nothing to the product, as Punica and vLLM pad to
``max_lora_rank``). Which adapter each row uses is an :class:`Assignment` that every layer of the model reads:

- ``gathered``: each row's A and B gathered by adapter index, then batched matmuls — the shape of Punica's BGMV
  (one kernel over the batch whatever its adapters; the index tensor is an input, made once per batch as a
  server uploads it once per step);
- ``loop``: a loop over the batch's distinct adapters, each with its rows picked by an index list built from the
  per-row adapter ids inside the call, exactly as peft's ``_mixed_batch_forward`` does with ``adapter_names``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from perfsuite.models.adapters import INIT_STD, LoRAQKV, adapted_copy, attach

# A bank's B matrices are drawn with this spread (the latency workload's adapters: INIT_STD), so that each adapter
# moves the logits well past the correctness check's tolerance, in fp16 too; values do not change what a call costs.
BANK_B_STD = 0.2
HETERO_RANKS = (0.5, 1.0, 2.0)  # rank_mix "hetero": adapter k has rank r × HETERO_RANKS[k mod 3]
ORDER_SEED = 777  # the permutation of a shuffled batch (the same in every process)


def adapter_ranks(rank: int, k: int, rank_mix: str | None) -> list[int]:
    """The ranks of a bank's ``k`` adapters: all ``rank``, or for "hetero" r/2, r, 2r in turn."""
    if rank_mix is None:
        return [rank] * k
    return [max(1, int(rank * HETERO_RANKS[i % len(HETERO_RANKS)])) for i in range(k)]


def row_adapters(batch: int, k: int, order: str) -> list[int]:
    """Which adapter each of ``batch`` requests uses: the ``k`` adapters in turn, as evenly as the batch allows,
    ``grouped`` (sorted by adapter) or ``shuffled`` (a seeded permutation, the same in every process)."""
    if not 1 <= k <= batch:
        raise ValueError(f"{k} adapters need 1 to {batch} requests each; batch is {batch}")
    rows = sorted(i % k for i in range(batch))
    if order == "shuffled":
        random.Random(ORDER_SEED + 1000 * batch + k).shuffle(rows)
    elif order != "grouped":
        raise ValueError(f"order must be grouped or shuffled, not {order!r}")
    return rows


@dataclass
class Assignment:
    """The batch's adapter per row, shared by every layer of a model: ``index`` (a device tensor, for gathered) and
    ``ids`` (a Python list, for the loop, as peft receives ``adapter_names``)."""

    index: torch.Tensor | None = None
    ids: list[int] = field(default_factory=list)

    def set(self, index: torch.Tensor, ids: list[int]) -> None:
        self.index, self.ids = index, ids


def single_adapters(base, ranks: list[int], seed: int) -> list:
    """One reference LoRA model per adapter (copies sharing ``base``'s weights), adapter k from seed ``seed + k``,
    its B matrices scaled to BANK_B_STD."""
    singles = [attach(adapted_copy(base), "lora", r, seed=seed + k).eval() for k, r in enumerate(ranks)]
    with torch.no_grad():
        for model in singles:
            for block in model.h:
                for b in (block.attn.c_attn.lora_B_q, block.attn.c_attn.lora_B_v):
                    b.mul_(BANK_B_STD / INIT_STD)
    return singles


class MultiLoRAQKV(nn.Module):
    """A bank of K LoRAs on W_q and W_v of GPT-2's fused ``c_attn``; each row of a batch through its own
    (the Assignment's). ``method``: "gathered" or "loop" (see the module docstring)."""

    def __init__(self, base: nn.Module, loras: list[LoRAQKV], method: str, assignment: Assignment):
        super().__init__()
        if method not in ("gathered", "loop"):
            raise ValueError(f"method must be gathered or loop, not {method!r}")
        self.base, self.method, self.assignment = base, method, assignment
        self.ranks = [m.r for m in loras]
        R, d = max(self.ranks), loras[0].lora_A.shape[1]
        like = loras[0].lora_A
        bank_a = torch.zeros(len(loras), 2 * R, d, dtype=like.dtype, device=like.device)
        bank_bq = torch.zeros(len(loras), R, d, dtype=like.dtype, device=like.device)  # B stored transposed: (r, d)
        bank_bv = torch.zeros_like(bank_bq)
        for k, m in enumerate(loras):
            r = m.r
            bank_a[k, :r], bank_a[k, R:R + r] = m.lora_A[:r], m.lora_A[r:]
            bank_bq[k, :r], bank_bv[k, :r] = m.lora_B_q.T, m.lora_B_v.T
        self.R = R
        self.bank_a, self.bank_bq, self.bank_bv = (nn.Parameter(t, requires_grad=False) for t in (bank_a, bank_bq, bank_bv))
        self.scaling = nn.Parameter(torch.tensor([m.scaling for m in loras], dtype=like.dtype, device=like.device),
                                    requires_grad=False)
        # the loop's per-adapter weights, unpadded (as peft keeps one lora_A/lora_B per adapter)
        self.loop_a = nn.ParameterList(nn.Parameter(m.lora_A.detach(), requires_grad=False) for m in loras)
        self.loop_bq = nn.ParameterList(nn.Parameter(m.lora_B_q.detach(), requires_grad=False) for m in loras)
        self.loop_bv = nn.ParameterList(nn.Parameter(m.lora_B_v.detach(), requires_grad=False) for m in loras)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.base(x)
        delta_q, delta_v = self._gathered(x) if self.method == "gathered" else self._loop(x, qkv)
        if delta_q is None:  # the loop added its deltas into qkv in place
            return qkv
        d = x.shape[-1]
        return torch.cat([qkv[..., :d] + delta_q, qkv[..., d:2 * d], qkv[..., 2 * d:] + delta_v], dim=-1)

    def _gathered(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BGMV: every row's adapter gathered by index, then one batched matmul per product."""
        idx, R = self.assignment.index, self.R
        a = self.bank_a[idx]  # (B, 2R, d)
        z = torch.bmm(x, a.transpose(1, 2)) * self.scaling[idx].view(-1, 1, 1)  # (B, T, 2R)
        dq = torch.bmm(z[..., :R], self.bank_bq[idx])  # (B, T, R) @ (B, R, d)
        dv = torch.bmm(z[..., R:], self.bank_bv[idx])
        return dq, dv

    def _loop(self, x: torch.Tensor, qkv: torch.Tensor) -> tuple[None, None]:
        """peft's mixed batch: per distinct adapter, its rows by an index list, its product, added into the output."""
        ids, d = self.assignment.ids, x.shape[-1]
        for k in dict.fromkeys(ids):  # the batch's adapters, in order of first appearance
            rows = [i for i, a in enumerate(ids) if a == k]
            sub = x[rows]
            r = self.ranks[k]
            z = F.linear(sub, self.loop_a[k]) * self.scaling[k]
            qkv[rows, :, :d] += F.linear(z[..., :r], self.loop_bq[k])
            qkv[rows, :, 2 * d:] += F.linear(z[..., r:], self.loop_bv[k])
        return None, None


def mixed_model(base, singles: list, method: str) -> tuple[nn.Module, Assignment]:
    """A copy of ``base`` whose every block's ``c_attn`` holds the bank of ``singles``' LoRAs, and the Assignment
    its layers read."""
    assignment = Assignment()
    model = adapted_copy(base)
    for i, block in enumerate(model.h):
        loras = [s.h[i].attn.c_attn for s in singles]
        block.attn.c_attn = MultiLoRAQKV(block.attn.c_attn, loras, method, assignment)
    return model.eval(), assignment
