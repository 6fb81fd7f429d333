"""The real stack: cells on transformers' models with peft's adapters, and whether this machine can run them.

The ``hf`` implementation: cells on transformers' ``GPT2LMHeadModel`` with peft's adapters (the optional extra
``pip install -e '.[hf]'``), and whether this machine can run them — answered here without importing torch,
transformers or peft, so listing cells and recording the ones that cannot run stay free.

:mod:`perfsuite.hf.adapters` holds every method's peft (or AdapterHub) configuration; :mod:`perfsuite.hf.models`
builds the models from the reference model's weights or a checkpoint, and the cache the workloads use.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

HF_EXTRA_HINT = "pip install -e '.[hf]' (or: pip install 'transformers>=4.46' 'peft>=0.14')"
# AdapterHub's bottleneck adapters: the `adapters` package, which pins transformers below 5 (so it is not part of
# the hf extra). Their hf cells run only where it is installed next to a transformers it accepts.
ADAPTERHUB_ADAPTERS = ("houlsby", "pfeiffer", "parallel")
ADAPTERHUB_HINT = ("AdapterHub's bottleneck adapters need the `adapters` package, which pins transformers < 5: "
                   "pip install adapters (in an environment with transformers 4.x)")
# A quantized base's library (a cell's ``quant``; perfsuite.workloads.quant applies them) and how to get it.
QUANT_LIBRARIES = {"ao-int8": "torchao", "ao-int4": "torchao", "bnb-nf4": "bitsandbytes", "bnb-int8": "bitsandbytes"}
QUANT_HINTS = {"torchao": "pip install -e '.[quant]' (torchao>=0.18)", "bitsandbytes": "pip install bitsandbytes (CUDA)"}


def _installed(module: str) -> bool:
    if module in sys.modules:  # imported already (lazy modules may have no __spec__), or blocked: None
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extra(cell) -> str | None:
    """Why ``cell`` cannot run here for want of an optional package (one line, with how to get it), or None: the
    hf libraries for hf cells, AdapterHub for its adapters, the quantization library of a quantized base."""
    library = QUANT_LIBRARIES.get(getattr(cell, "quant", "none"))
    if library is not None and not _installed(library):
        return f"the {cell.quant} base needs {library}, not installed: {QUANT_HINTS[library]}"
    if getattr(cell, "impl", "ref") != "hf":
        return None
    lacking = [m for m in ("transformers", "peft") if not _installed(m)]
    if lacking:
        return f"the hf implementation needs {' and '.join(lacking)}, not installed: {HF_EXTRA_HINT}"
    if cell.adapter in ADAPTERHUB_ADAPTERS and not _installed("adapters"):
        return ADAPTERHUB_HINT
    return None


def library_versions(cell=None) -> str:
    """``"transformers 5.23.0, peft 0.21.2"`` (plus ``adapters`` for AdapterHub cells): a fingerprint's
    ``libraries``, so a comparison sees a library upgrade as what it is."""
    names = ["transformers", "peft"]
    if cell is not None and cell.adapter in ADAPTERHUB_ADAPTERS:
        names.append("adapters")
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} absent")
    return ", ".join(parts)
