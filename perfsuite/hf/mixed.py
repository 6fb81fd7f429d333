"""peft's own mixed-adapter batch: one PeftModel holding K LoRAs, called with ``adapter_names=`` (one name per row),
which peft serves by a loop over the batch's distinct adapters with row index lists (``_mixed_batch_forward``).

The adapters are peft LoRAs as :mod:`perfsuite.hf.adapters` configures them for the model (GPT-2's fused
``c_attn``, or q_proj/v_proj of today's families), adapter k of rank ``ranks[k]`` named ``a<k>``, its A from peft's
own initialisation under seed ``seed + k`` and its B (peft's zeros) drawn with the spread of the reference model's
banks (:data:`perfsuite.workloads.mixed.BANK_B_STD`).
"""

from __future__ import annotations

import copy
import warnings

import torch

from perfsuite.hf.adapters import _peft_config


def adapter_name(k: int) -> str:
    return f"a{k}"


def peft_bank(core, ranks: list[int], seed: int):
    """A PeftModel around a copy of ``core`` (a transformers causal LM) with one LoRA per rank, in eval mode."""
    import peft

    from perfsuite.workloads.mixed import BANK_B_STD

    model = None
    for k, r in enumerate(ranks):
        config = _peft_config("lora", r, core.config, seed + k)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(seed + k)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            if model is None:
                model = peft.get_peft_model(copy.deepcopy(core), config, adapter_name=adapter_name(k))
            else:
                model.add_adapter(adapter_name(k), config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ".lora_B." in name and not p.any():
                p.copy_((torch.randn(p.shape, generator=g) * BANK_B_STD).to(p.dtype))
    return model.eval()


def names_of(ids: list[int]) -> list[str]:
    """peft's ``adapter_names`` for a batch whose row i uses adapter ``ids[i]``."""
    return [adapter_name(k) for k in ids]


def single(model, k: int):
    """``model`` with only adapter k active (its ordinary single-adapter forward): the per-request reference."""
    model.set_adapter(adapter_name(k))
    return model
