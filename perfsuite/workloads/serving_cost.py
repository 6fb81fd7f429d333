"""What serving-time cells cost before they run: the serving workload's groups and the latency workload's decode
steps, priced step by step as :mod:`perfsuite.estimate` prices a latency group (that module calls these; they take
its night and its op counter, so nothing here imports it).

A call costs ``kernels × s_per_kernel + views × s_per_view + FLOPs × s_per_flop`` (the estimate's device rates).

- Kernels: counted, not guessed — the serving workload's own code (its :class:`~perfsuite.workloads.serving.Bank`
  and inputs) run once on a narrow twin of the model (every layer, width 64, rank 4: op counts do not depend on
  width or rank), for the plain model and for each method at K = 1 and 2 (:func:`member_ops` extends in K).
- FLOPs: from the model's sizes: per token and layer 2·(4d² + 2·d·f) for GPT-2 (2·(2d² + 2·d·kv + 3·d·f) for a
  gated, grouped-query family), 4·d·ctx for attention over ``ctx`` slots, 2·d·V for the head; a LoRA of rank r
  adds 8·r·d per layer (q and v of the reference model, or peft's one pair on GPT-2's fused c_attn; 2·r·(3d + kv)
  on a family's q_proj and v_proj); the gathered method pays the bank's largest rank for every row.
- Untimed steps of a group: the base and the adapter banks built; the correctness check (each member once, each
  (request, adapter) reference alone); host syncs, FLOPs (FlopCounterMode's bookkeeping per op) and peak memory
  (one call each per member); the warm-up and the timed rounds of the loop (the plain model, every member, the
  probe priced as a plain call).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from typing import Callable

from perfsuite.cells.grid import MODERN_MODELS, Cell

PEFT_BUILD_FACTOR = 3.0  # peft's add_adapter per layer against perfsuite's adapted copy (its config, its injection)


@dataclasses.dataclass(frozen=True)
class Dims:
    layers: int
    width: int
    ffn: int
    vocab: int
    kv: int  # the width of keys/values (grouped-query families: fewer heads)
    gated: bool  # a gated MLP (three matrices): the families

    def flops_per_token(self, ctx: int) -> float:
        d, f = self.width, self.ffn
        block = 2 * (2 * d * d + 2 * d * self.kv + 3 * d * f) if self.gated else 2 * (4 * d * d + 2 * d * f)
        return self.layers * (block + 4 * d * max(0, ctx - 1)) + 2 * d * self.vocab

    def lora_flops_per_token(self, rank: float, impl: str) -> float:
        d = self.width
        per_layer = 2 * rank * (3 * d + self.kv) if self.gated and impl == "hf" else 8 * rank * d
        return self.layers * per_layer

    @property
    def params(self) -> int:
        d = self.width
        block = (2 * d * d + 2 * d * self.kv + 3 * d * self.ffn) if self.gated else (4 * d * d + 2 * d * self.ffn)
        return self.layers * block + self.vocab * d * (2 if self.gated else 1)


def dims_of(model: str) -> Dims:
    if model in MODERN_MODELS:
        from perfsuite.hf.families import get_shape

        s = get_shape(model)
        kv = s.num_key_value_heads * (s.hidden_size // s.num_attention_heads)
        return Dims(s.num_hidden_layers, s.hidden_size, s.intermediate_size, s.vocab_size, kv, True)
    from perfsuite.models.model import get_config

    c = get_config(model)
    return Dims(c.n_layer, c.n_embd, c.n_inner, c.vocab_size, c.n_embd, False)


def _tokens_ctx(cell: Cell) -> tuple[int, int]:
    """(new tokens per request, key slots each attends to)."""
    return (1, cell.kv_len + 1) if cell.phase == "decode" else (cell.seq_len, cell.seq_len)


# --- kernels, counted on a narrow twin ---------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _narrow_base(model: str, impl: str):
    """The model's narrow twin: every layer, width 64 (perfsuite's GPT2 and its transformers twin, or the family)."""
    import torch

    from perfsuite.models.model import GPT2, get_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if model in MODERN_MODELS:
            import transformers

            from perfsuite.hf.families import FamilyDims, HFCausalLM, family_config

            config = family_config(model)
            kv_heads = 2 if config.num_key_value_heads < config.num_attention_heads else 4
            for k, v in dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=kv_heads,
                             vocab_size=64).items():
                setattr(config, k, v)
            core = transformers.AutoModelForCausalLM.from_config(config).eval()
            return HFCausalLM(core, FamilyDims(config.num_hidden_layers, 64, 4, 128, 64, kv_heads))
        narrow = dataclasses.replace(get_config(model), n_embd=64, n_head=4, n_inner=256, vocab_size=64)
        base = GPT2(narrow).eval()
        if impl == "ref":
            return base
        from perfsuite.hf.models import HFGPT2, hf_model_from_reference

        return HFGPT2(hf_model_from_reference(base), narrow)


@functools.lru_cache(maxsize=64)
def _counted(count_ops: Callable, model: str, impl: str, phase: str, method: str | None, k: int) -> tuple[int, int]:
    """(kernels, ops) of one call on the model's narrow twin: the plain model (method None), or ``k`` adapters in a
    batch of two requests (one each for k = 2)."""
    import torch

    from perfsuite.workloads.serving import Bank, make_inputs, logits

    base = _narrow_base(model, impl)
    shape = dict(phase="decode", kv_len=4) if phase == "decode" else dict(seq_len=4)
    inputs = make_inputs(Cell("serving", "none", 0, batch=2, model="tiny", **shape), base)
    with torch.inference_mode():
        if method is None:
            return count_ops(lambda: logits(base, inputs))
        return count_ops(Bank(method, base, [4, 4], 1, "cpu").call([0, k - 1], inputs))


def member_ops(count_ops: Callable, model: str, impl: str, phase: str, method: str | None, k: int) -> tuple[int, int]:
    """(kernels, ops) of one call of a serving member (method None: the plain model). Counted at K = 1 and 2 and
    extended in K: the loop and peft run the same ops once per distinct adapter of the batch, the gathered
    method the same ops whatever K (neither depends on the batch size, the order or the ranks)."""
    one = _counted(count_ops, model, impl, phase, method, 1)
    if method is None or k == 1:
        return one
    two = _counted(count_ops, model, impl, phase, method, 2)
    return tuple(a + (k - 1) * (b - a) for a, b in zip(one, two))


# --- the night's steps -------------------------------------------------------------------------------------


def _built(night, key: tuple, seconds: float) -> None:
    seen = night.__dict__.setdefault("_serving_built", set())
    if key not in seen:
        seen.add(key)
        night.add("model builds", seconds)


def price_decode_group(night, cell: Cell, models, low: int, high: int, warmup: int, *, forward_ops: Callable) -> None:
    """A latency group of decode steps: as a latency group, each call one token per request after ``kv_len``;
    FLOPs counted on one real call (FlopCounterMode's bookkeeping per op). ``forward_ops``: the estimate's count
    of a forward's (kernels, ops) for an adapter."""
    from perfsuite.models.model import get_config

    night.base_model(cell)
    per_round = 0.0
    for adapter, rank in models:
        rank = max(rank, 1) if adapter != "none" else 0
        night.adapted_model(cell, adapter, rank)
        step = night.pass_s(cell, adapter, rank, cell.batch, 1, cell.kv_len + 1)
        counted = night.pass_s(cell, adapter, rank, cell.batch, 1, cell.kv_len + 1, counted=True)
        ops = forward_ops(get_config(cell.model), adapter, rank, cell.dtype)[1]
        night.add("FLOP counting", step + ops * night.host.dispatch_op_s)
        night.add("untimed passes (syncs, memory)", counted + step)
        per_round += step
    night.add("warm-up", warmup * per_round)
    night.add("timed rounds", low * per_round, high * per_round)
    night.forwards[0] += len(models) * low
    night.forwards[1] += len(models) * high


def price_serving(night, cells: list[Cell], rounds_of: Callable[[Cell, int], tuple[int, int, int]], *,
                  count_ops: Callable) -> int:
    """Every serving group of ``cells`` priced into ``night``; ``rounds_of(cell, cycle)``: (floor, ceiling, warm-up)
    rounds of its loop; ``count_ops(fn)``: (kernels, ops) of a call. Returns the number of groups."""
    from perfsuite.workloads.serving import PLAIN, group_key, k1_of, member_key

    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for c in cells:
        if c.workload == "serving":
            groups[group_key(c)].append(c)
    for members in groups.values():
        first = members[0]
        dims, (tokens, ctx) = dims_of(first.model), _tokens_ctx(first)
        rates, host = night.timer(first), night.host
        loop = {member_key(c): c for c in members}
        for c in members:
            if member_key(c) != PLAIN:
                loop.setdefault(member_key(k1_of(c)), k1_of(c))
        loop.setdefault(PLAIN, dataclasses.replace(first, adapter="none", rank=0, method=None, n_adapters=None,
                                                   order=None, rank_mix=None))
        _built(night, ("base", first.model, first.dtype, first.device, first.quant, first.impl),
               dims.params * host.init_param_s)
        plain_flops = first.batch * tokens * dims.flops_per_token(ctx)

        def call_s(c: Cell, rows: int) -> tuple[float, int]:
            """Seconds and ops of one call of member ``c`` for ``rows`` requests."""
            if member_key(c) == PLAIN:
                kernels, ops = member_ops(count_ops, c.model, c.impl, c.phase, None, 1)
                return rates.seconds(kernels, ops, plain_flops * rows / c.batch), ops
            kernels, ops = member_ops(count_ops, c.model, c.impl, c.phase, c.method, c.n_adapters)
            from perfsuite.workloads.mixed import adapter_ranks

            ranks = adapter_ranks(c.rank, c.n_adapters, c.rank_mix)
            rank = max(ranks) if c.method == "gathered" else sum(ranks) / len(ranks)
            flops = rows * tokens * (dims.flops_per_token(ctx) + dims.lora_flops_per_token(rank, c.impl))
            return rates.seconds(kernels, ops, flops), ops

        per_round, banks = call_s(loop[PLAIN], first.batch)[0], {}  # the probe: priced as a plain call
        for key, c in loop.items():
            seconds, ops = call_s(c, c.batch)
            per_round += seconds
            night.add("untimed passes (syncs, memory)", 2 * seconds + ops * host.dispatch_op_s)
            night.add("FLOP counting", seconds + ops * host.dispatch_op_s)
            if key == PLAIN:
                continue
            night.add("correctness checks (per-request references)", seconds)
            bank = (c.method, c.rank, c.rank_mix)
            banks[bank] = max(banks.get(bank, 0), c.n_adapters)
        for (method, rank, mix), k in banks.items():
            c = next(m for m in loop.values() if (m.method, m.rank, m.rank_mix) == (method, rank, mix))
            per_layer = host.adapted_build_layer_s * (PEFT_BUILD_FACTOR if method == "peft" else 1.0)
            night.add("model builds", k * dims.layers * per_layer)
            single = call_s(loop[PLAIN], 1)[0]  # one request alone through one adapter: a one-row call
            night.add("correctness checks (per-request references)", first.batch * min(k, first.batch) * single)
        low, high, warmup = rounds_of(first, len(loop) + 1)
        night.add("warm-up", warmup * per_round)
        night.add("timed rounds", low * per_round, high * per_round)
        night.forwards[0] += len(loop) * low
        night.forwards[1] += len(loop) * high
    return len(groups)
