"""Quantized bases (a cell's ``quant``): the plain model's block weights in 8 or 4 bits, adapters unmerged on top.

QLoRA-style serving keeps the base quantized, where LoRA cannot be merged, so the unmerged overhead is what ships.
Two libraries, each the way its users apply it, to every ``nn.Linear`` of the transformer blocks (the tied output
head stays in the model's dtype, as weight-only recipes keep it):

- torchao (``pip install -e '.[quant]'``), ``quantize_`` with a config. ``ao-int8``: ``Int8WeightOnlyConfig()``.
  ``ao-int4``: ``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))``, the int4 weight-only
  path torchao runs on a CPU (int4 values kept unpacked in int8, dequantized per call). torchao 0.18's
  ``Int4WeightOnlyConfig`` has no CPU path (its packings need mslk or CUDA: checked by a test), so it is not used.
- bitsandbytes (CUDA; ``pip install bitsandbytes``): each linear replaced by ``bnb.nn.Linear4bit`` (``bnb-nf4``,
  ``quant_type="nf4"``, compute in the model's dtype) or ``bnb.nn.Linear8bitLt`` (``bnb-int8``, LLM.int8 with
  ``threshold=6.0``), weights quantized when moved to the GPU — what transformers' ``load_in_4bit``/``load_in_8bit``
  do and the layers peft's QLoRA wraps. The library is a seam (``api``): tests pass a fake to run the replacement
  on a CPU.

Whether a cell's library is installed is answered without torch by :func:`perfsuite.hf.missing_extra`.
"""

from __future__ import annotations

import logging
from typing import Any

from perfsuite.hf import QUANT_LIBRARIES as LIBRARY

INT4_GROUP_SIZE = 32  # int4 scales per 32 weights (divides every width of the presets)
BNB_INT8_THRESHOLD = 6.0  # LLM.int8's outlier threshold (Dettmers et al. 2022; transformers' default)


def block_linears(model) -> list[tuple[Any, str, Any]]:
    """(parent module, attribute, nn.Linear) of every linear layer inside the transformer blocks ``model.h``."""
    from torch import nn

    out = []
    for parent in model.h.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) and type(child) is nn.Linear:
                out.append((parent, name, child))
    return out


def quantize_base(model, quant: str, *, api=None):
    """``model`` (a reference GPT2, plain) with its block linears quantized in place, returned; ``api``: the library
    module (torchao.quantization or bitsandbytes), imported when None."""
    if quant == "none":
        return model
    if LIBRARY.get(quant) == "torchao":
        return _torchao(model, quant, api)
    if LIBRARY.get(quant) == "bitsandbytes":
        return _bitsandbytes(model, quant, api)
    raise ValueError(f"unknown quantization {quant!r}; known: none, {', '.join(LIBRARY)}")


def import_torchao():
    """torchao.quantization, imported with its import-time log lines (CUDA kernels a CPU build cannot load, torch's
    notes on its enums) kept out of a benchmark's output."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import torchao.quantization

        return torchao.quantization
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def torchao_config(quant: str, api):
    """The torchao config of ``quant`` (see the module docstring)."""
    import torch

    if quant == "ao-int8":
        return api.Int8WeightOnlyConfig()
    from torchao.quantization.granularity import PerGroup

    return api.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP_SIZE))


def _torchao(model, quant: str, api):
    api = api or import_torchao()
    targets = {id(lin) for _, _, lin in block_linears(model)}
    api.quantize_(model, torchao_config(quant, api), filter_fn=lambda module, fqn: id(module) in targets)
    return model


def _bitsandbytes(model, quant: str, api):
    """Every block linear replaced by its bitsandbytes twin holding the same weights, then moved to the model's
    device (where bitsandbytes quantizes them), as transformers' ``replace_with_bnb_linear`` does."""
    if api is None:
        import bitsandbytes as api
    ref = model.wte.weight
    for parent, name, lin in block_linears(model):
        bias = lin.bias is not None
        weight = lin.weight.detach().to("cpu")
        if quant == "bnb-nf4":
            new = api.nn.Linear4bit(lin.in_features, lin.out_features, bias=bias, compute_dtype=ref.dtype,
                                    quant_type="nf4")
            new.weight = api.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
        else:
            new = api.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=bias, has_fp16_weights=False,
                                      threshold=BNB_INT8_THRESHOLD)
            new.weight = api.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        if bias:
            new.bias = type(lin.bias)(lin.bias.detach().to("cpu"), requires_grad=False)
        setattr(parent, name, new.to(ref.device))
    return model


def library_version(quant: str) -> str:
    """``"torchao 0.18.0"``: the library a quantized base ran on, recorded with its cells."""
    import importlib.metadata

    library = LIBRARY[quant]
    try:
        return f"{library} {importlib.metadata.version(library)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{library} absent"
