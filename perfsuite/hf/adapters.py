"""Every method of the hf implementation, with its exact peft (or AdapterHub) configuration, and those peft refuses.

Today's families (Llama, Qwen2, Mistral: :mod:`perfsuite.hf.families`) have separate ``nn.Linear`` projections:
there every method targets ``q_proj`` and ``v_proj`` (FAMILY_TARGET; IA³ also ``down_proj``), ``fan_in_fan_out``
False. On GPT-2, all peft methods (``task_type="CAUSAL_LM"``: a PeftModelForCausalLM, as users load one) adapt its fused
``attn.c_attn`` — a ``Conv1D`` holding W_q, W_k and W_v side by side,
stored (in, out), hence ``fan_in_fan_out=True`` — in every block (IA³ also scales ``mlp.c_proj``'s input).
**What LoRA adapts, and how it compares with the reference.** peft's LoRA on ``c_attn`` is one rank-r pair for
the whole fused projection: A is r × d, B is 3d × r, so ΔW covers q, k *and* v with a shared A. The reference
model's LoRA (:class:`perfsuite.models.adapters.LoRAQKV`) adapts only q and v, each with its own rank-r pair. Both have
4·r·d parameters and cost 4·r·d multiply-adds per token per block, so their latencies compare like with like in
work; the functions differ (k is adapted here). peft has no way to adapt only some outputs of one fused layer;
peft LoRA of rank 2r with B's k rows zero computes the reference's function exactly, at 6·r·d — that is how the
tests check that the two stacks give the same outputs for the same weights.

Adapter weights that a method starts at zero (LoRA's B, VeRA's λ_b, AdaLoRA's E, …) are drawn from
N(0, INIT_STD²) with a seeded generator, as the reference's ``init="random"``: timing never runs on zeros.
peft's default ``autocast_adapter_dtype=True`` is kept: in float16/bfloat16 peft holds adapters in float32 and
casts activations around them — that is the stack users run, so it is what is timed.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

from perfsuite.models.adapters import INIT_STD, UnknownAdapterError
from perfsuite.cells.grid import HF_ADAPTER_NAMES, RANK_FREE
from perfsuite.hf import ADAPTERHUB_ADAPTERS

TARGET = ["c_attn"]  # GPT-2's fused q, k, v projection (peft's default LoRA target for gpt2)
# Llama, Qwen2 and Mistral: separate nn.Linear projections; LoRA's paper target, q and v (peft's default for them).
FAMILY_TARGET = ["q_proj", "v_proj"]
FAMILY_FEEDFORWARD = ["down_proj"]  # IA³ scales the MLP's down projection's input, as (IA)³ does for T5's wo
ADALORA_TOTAL_STEP = 1000  # AdaLoRA refuses total_step=None; its rank schedule only acts while training
FOURIERFT_SCALING = 150.0  # peft's default (the FourierFT paper's value for GPT-2)


def fourierft_frequencies(d: int, rank: int) -> int:
    """FourierFT's n_frequency for a rank-r cell: as many trainable coefficients as LoRA of rank r on ``c_attn``
    (r·(d + 3d)), at most the d × 3d spectrum. Its forward builds ΔW by an inverse 2-D FFT of the whole
    spectrum every call, so its latency hardly depends on this number."""
    return min(rank * 4 * d, 3 * d * d)


def family_frequencies(d: int, kv_dim: int, rank: int) -> int:
    """FourierFT's n_frequency on q_proj (d × d) and v_proj (d × kv_dim): LoRA of rank r's parameters per
    projection (about 2·r·d), at most the smaller spectrum."""
    return min(2 * rank * d, d * kv_dim)


def _peft_config(name: str, rank: int, model_config, seed: int):
    """peft's configuration of method ``name`` for ``model_config`` (a transformers config): GPT-2's Conv1D
    ``c_attn`` (stored (in, out): fan_in_fan_out), or the q_proj/v_proj Linear layers of today's families."""
    import peft

    gpt2 = getattr(model_config, "model_type", "gpt2") == "gpt2"
    target = TARGET if gpt2 else FAMILY_TARGET
    common = dict(task_type="CAUSAL_LM", fan_in_fan_out=gpt2)  # PeftModelForCausalLM, as users load it
    lora = dict(r=rank, lora_alpha=rank, target_modules=target, lora_dropout=0.0, **common)
    if name in ("lora", "lora-merged"):
        return peft.LoraConfig(**lora)
    if name == "dora":
        return peft.LoraConfig(**lora, use_dora=True)
    if name == "vera":
        return peft.VeraConfig(r=rank, target_modules=target, vera_dropout=0.0, projection_prng_key=seed, **common)
    if name == "adalora":
        return peft.AdaLoraConfig(init_r=rank, target_r=rank, lora_alpha=rank, target_modules=target,
                                  lora_dropout=0.0, total_step=ADALORA_TOTAL_STEP, **common)
    if name == "fourierft":
        if gpt2:
            n_frequency = fourierft_frequencies(model_config.n_embd, rank)
        else:
            d = model_config.hidden_size
            kv_dim = model_config.num_key_value_heads * (d // model_config.num_attention_heads)
            n_frequency = family_frequencies(d, kv_dim, rank)
        return peft.FourierFTConfig(n_frequency=n_frequency, scaling=FOURIERFT_SCALING, target_modules=target,
                                    random_loc_seed=seed, **common)
    if name == "ia3":
        scaled, feedforward = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]) if gpt2 else (
            FAMILY_TARGET + FAMILY_FEEDFORWARD, FAMILY_FEEDFORWARD)
        return peft.IA3Config(target_modules=scaled, feedforward_modules=feedforward, **common)
    plugin = _plugin(name)  # another package's method (perfsuite.extensions): given the model's width
    if plugin is not None:
        return plugin.peft_config(rank, model_config.n_embd if gpt2 else model_config.hidden_size, seed)
    raise UnknownAdapterError(f"no peft configuration for {name!r}")


@dataclass(frozen=True)
class HFAdapterSpec:
    name: str
    doc: str  # the configuration, in words (docs/hf.md's table is made from these)


HF_ADAPTERS: dict[str, HFAdapterSpec] = {s.name: s for s in [
    HFAdapterSpec("none", "transformers' GPT2LMHeadModel, no adapter (r = 0)."),
    HFAdapterSpec("lora", "peft LoraConfig(r=r, lora_alpha=r, target_modules=['c_attn'], fan_in_fan_out=True, "
                          "lora_dropout=0), unmerged: q, k and v through one rank-r pair."),
    HFAdapterSpec("lora-merged", "the same LoRA folded in by merge_and_unload(): a plain GPT2LMHeadModel again."),
    HFAdapterSpec("dora", "peft LoraConfig as lora, use_dora=True (DoRA, Liu et al. 2024): the weight norm is "
                          "recomputed every forward."),
    HFAdapterSpec("vera", "peft VeraConfig(r=r, target_modules=['c_attn'], fan_in_fan_out=True, vera_dropout=0, "
                          "projection_prng_key=seed): shared random A, B; per-layer scaling vectors."),
    HFAdapterSpec("adalora", f"peft AdaLoraConfig(init_r=r, target_r=r, lora_alpha=r, target_modules=['c_attn'], "
                             f"fan_in_fan_out=True, lora_dropout=0, total_step={ADALORA_TOTAL_STEP}): SVD-form "
                             "LoRA, P·diag(E)·Q."),
    HFAdapterSpec("fourierft", f"peft FourierFTConfig(n_frequency=min(4·r·d, 3·d²), scaling={FOURIERFT_SCALING:g}, "
                               "target_modules=['c_attn'], fan_in_fan_out=True, random_loc_seed=seed): as many "
                               "spectral coefficients as LoRA's parameters."),
    HFAdapterSpec("ia3", f"peft IA3Config(target_modules=['c_attn', 'mlp.c_proj'], feedforward_modules=['mlp.c_proj'],"
                         f" fan_in_fan_out=True): rank-free, recorded at r = {RANK_FREE.get('ia3')}."),
    HFAdapterSpec("houlsby", "AdapterHub DoubleSeqBnConfig(reduction_factor=d/r): bottlenecks after attention and "
                             "after the MLP (needs the `adapters` package)."),
    HFAdapterSpec("pfeiffer", "AdapterHub SeqBnConfig(reduction_factor=d/r): one bottleneck after the MLP "
                              "(needs the `adapters` package)."),
    HFAdapterSpec("parallel", "AdapterHub ParBnConfig(reduction_factor=d/r): a bottleneck beside the MLP "
                              "(needs the `adapters` package)."),
]}

# peft methods that refuse GPT-2's Conv1D (checked against peft 0.21.2 by tests/unit/test_hf.py):
# each raises TypeError from get_peft_model on target "c_attn". They would need nn.Linear layers.
REFUSED = {
    "loha": "LoHaConfig: 'Target module of type Conv1D not supported, currently only adapters for Conv2d, "
            "Conv1d, Linear are supported'",
    "lokr": "LoKrConfig: the same refusal as LoHa (peft's LyCORIS layers)",
    "boft": "BOFTConfig: 'only torch.nn.Linear and torch.nn.Conv2d (optionally quantized) are supported'",
    "hra": "HRAConfig: 'only torch.nn.Linear and torch.nn.Conv2d are supported'",
}


def _plugin(name: str):
    """The contributed adapter ``name`` with a peft config (perfsuite.extensions), or None."""
    from perfsuite.extensions import get_plugin

    plugin = get_plugin(name)
    return plugin if plugin is not None and plugin.peft_config is not None else None


def get_hf_adapter(name: str) -> HFAdapterSpec:
    """A built-in method, or one another package contributes (its ``peft_config``), as the same record."""
    plugin = _plugin(name) if name not in HF_ADAPTERS else None
    if plugin is not None:
        return HFAdapterSpec(plugin.name, plugin.doc)
    try:
        return HF_ADAPTERS[name]
    except KeyError:
        refused = f" (peft refuses GPT-2's Conv1D for {name}: {REFUSED[name]})" if name in REFUSED else ""
        raise UnknownAdapterError(f"unknown hf adapter {name!r}{refused}; known: {', '.join(HF_ADAPTERS)}") from None


def _randomize_zeros(model, seed: int, only: str | None = None) -> None:
    """Trainable adapter tensors (peft freezes the rest; ``only``: names containing it) that start at zero,
    drawn from N(0, INIT_STD²) instead (seeded)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.requires_grad and (only is None or only in name) and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * INIT_STD)


def _attach_peft(model, name: str, rank: int, seed: int):
    import peft
    import torch

    config = _peft_config(name, rank, model.config, seed)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        # peft asks transformers 5 for a deprecated property (is_gradient_checkpointing): not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        adapted = peft.get_peft_model(model, config)
    _randomize_zeros(adapted, seed)
    if name == "lora-merged":
        return adapted.merge_and_unload()
    return adapted


def _attach_adapterhub(model, name: str, rank: int, seed: int):
    """AdapterHub (the `adapters` package) bottleneck configs; only reached where it is installed."""
    import adapters
    import torch

    d = model.config.n_embd
    config = {"houlsby": adapters.DoubleSeqBnConfig, "pfeiffer": adapters.SeqBnConfig,
              "parallel": adapters.ParBnConfig}[name](reduction_factor=d / rank)
    adapters.init(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.add_adapter("perfsuite", config=config)
    model.set_active_adapters("perfsuite")
    _randomize_zeros(model, seed, only=".perfsuite.")
    return model


ATTACH: dict[str, Callable] = {n: (_attach_adapterhub if n in ADAPTERHUB_ADAPTERS else _attach_peft)
                               for n in HF_ADAPTER_NAMES}


def attach_hf(model, name: str, rank: int, *, seed: int = 0, copy_model: bool = True):
    """``model`` (a GPT2LMHeadModel) with method ``name`` of rank ``rank``, in eval mode: a PeftModel, or for
    lora-merged and AdapterHub methods the GPT2LMHeadModel itself. r = 0 or "none": the plain model."""
    get_hf_adapter(name)
    if rank < 0:
        raise ValueError(f"rank must be >= 0, not {rank}")
    if rank == 0 or name == "none":
        return model
    model = copy.deepcopy(model) if copy_model else model
    return ATTACH.get(name, _attach_peft)(model, name, rank, seed).eval()
