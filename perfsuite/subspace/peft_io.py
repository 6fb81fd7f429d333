"""Read and write LoRA checkpoints in the layout HF peft saves (``save_pretrained``), without peft.

A checkpoint is a directory with ``adapter_config.json`` and ``adapter_model.safetensors``
whose keys look like ``base_model.model.transformer.h.0.attn.c_attn.lora_A.weight``:
``lora_A`` of shape (r, d_in), ``lora_B`` of shape (d_out, r), one pair per adapted
module (embeddings: ``lora_embedding_A`` (r, vocab) and ``lora_embedding_B`` (d, r);
convolutions: A (r, c_in, k_h, k_w), read as (r, c_in·k_h·k_w)). Any module name is
accepted. Keys that are not LoRA factors (DoRA magnitudes, ``modules_to_save`` copies,
biases) are counted in :attr:`LoraCheckpoint.other_keys`, not read.

Naming, for the subspace analysis: a module's ``layer`` is the first all-digit part of
its path (``transformer.h.0.attn.c_attn`` → 0; -1 when there is none), and its
``matrix`` is the shortest dotted tail of the rest of the path that tells it apart from
the other modules of that layer (``c_attn``; ``attn.c_proj`` when ``mlp.c_proj`` is
adapted too). A fused module such as GPT-2's ``c_attn`` (W_q, W_k, W_v in one) has one
lora_A for all three, acting on their common input, so it is one matrix, ``"c_attn"``;
non-fused models give ``q_proj``, ``v_proj`` and so on.

safetensors is the only dependency; pickled ``adapter_model.bin`` files are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import atomic_path, write_text_atomic

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
KEY_PREFIX = "base_model.model."  # what peft puts before the model's own module path
NO_LAYER = -1  # the layer of a module whose path has no index (e.g. lm_head)

# <module>.lora_A.weight, <module>.lora_A.<adapter>.weight, <module>.lora_embedding_A[.<adapter>]
_LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.lora_(?:(?P<factor>[AB])(?:\.(?P<adapter>[^.]+))?\.weight"
    r"|embedding_(?P<efactor>[AB])(?:\.(?P<eadapter>[^.]+))?)$")


class PeftFormatError(PerfsuiteError, ValueError):
    pass


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: its path inside the model and its two factors (float64), ΔW ∝ B A."""

    path: str  # e.g. "transformer.h.0.attn.c_attn" (without peft's "base_model.model.")
    lora_A: np.ndarray = field(repr=False)  # (r, d_in)
    lora_B: np.ndarray = field(repr=False)  # (d_out, r)

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    @property
    def in_features(self) -> int:
        return self.lora_A.shape[1]

    @property
    def out_features(self) -> int:
        return self.lora_B.shape[0]


@dataclass(frozen=True)
class LoraCheckpoint:
    path: Path
    config: dict[str, Any]
    modules: dict[str, LoraModule]  # by module path, in file order
    other_keys: tuple[str, ...] = ()  # tensors in the file that are not LoRA factors


def layer_of(path: str) -> int:
    """The first all-digit component of a module path (the block index), or NO_LAYER."""
    for part in path.split("."):
        if part.isdigit():
            return int(part)
    return NO_LAYER


def module_names(paths: Iterable[str]) -> dict[str, tuple[int, str]]:
    """(layer, matrix) for each module path: matrix is the shortest tail unique within its layer.

    Name the union of two checkpoints' modules at once, so that the same module gets the same name in both.
    """
    paths = list(dict.fromkeys(paths))
    rests = {}
    for p in paths:
        parts = p.split(".")
        digits = [i for i, part in enumerate(parts) if part.isdigit()]
        rests[p] = parts[: digits[0]] + parts[digits[0] + 1 :] if digits else parts
    names = {}
    for p in paths:
        layer, rest = layer_of(p), rests[p]
        peers = [rests[q] for q in paths if q != p and layer_of(q) == layer]
        name = p  # when even the whole rest is shared (paths differing in a later index only)
        for n in range(1, len(rest) + 1):
            if all(q[-n:] != rest[-n:] for q in peers):
                name = ".".join(rest[-n:])
                break
        names[p] = (layer, name)
    return names


def read_lora_checkpoint(path: str | Path) -> LoraCheckpoint:
    """The LoRA factors of a peft-layout checkpoint directory; a clear PeftFormatError for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise PeftFormatError(f"{path}: not a directory (expected a peft adapter directory with {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE})")
    config = _read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        hint = (f"; it has {PICKLE_FILE}, which is pickle and is not read: re-save it with "
                "save_pretrained(..., safe_serialization=True)") if (path / PICKLE_FILE).exists() else ""
        raise PeftFormatError(f"{path}: no {WEIGHTS_FILE}{hint}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise PeftFormatError(f"{weights}: cannot read safetensors file: {e}") from None

    found: dict[tuple[str, str | None], dict[str, torch.Tensor]] = {}  # (module, adapter name) → {A, B}
    other = []
    for key, t in tensors.items():
        m = _LORA_KEY.match(key)
        if m is None:
            other.append(key)
            continue
        module = (m["module"].removeprefix(KEY_PREFIX), m["adapter"] or m["eadapter"])
        found.setdefault(module, {})[m["factor"] or m["efactor"]] = t
    adapters = {adapter for _, adapter in found if adapter is not None}
    if len(adapters) > 1:
        raise PeftFormatError(f"{weights}: holds several adapters ({', '.join(sorted(adapters))}); "
                              "save each to its own directory")
    factors = {module: f for (module, _), f in found.items()}
    if len(factors) < len(found):
        raise PeftFormatError(f"{weights}: the same module appears with and without an adapter name")
    if not factors:
        raise PeftFormatError(f"{weights}: no LoRA factors (no keys like <module>.lora_A.weight)")

    modules = {}
    for module, f in factors.items():
        if set(f) != {"A", "B"}:
            missing = ({"A", "B"} - set(f)).pop()
            raise PeftFormatError(f"{weights}: {module} has lora_{set(f).pop()} but no lora_{missing}")
        a, b = _as_matrix_a(f["A"], module, weights), _as_matrix_b(f["B"], module, weights)
        if a.shape[0] != b.shape[1]:
            raise PeftFormatError(f"{weights}: {module}: lora_A has rank {a.shape[0]} but lora_B has rank "
                                  f"{b.shape[1]} (expected A (r, d_in) and B (d_out, r))")
        modules[module] = LoraModule(module, a, b)
    _check_rank(config, modules, path)
    return LoraCheckpoint(path, config, modules, tuple(other))


def _read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise PeftFormatError(f"{path}: no {CONFIG_FILE} (not a peft adapter directory)")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PeftFormatError(f"{cfg_path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise PeftFormatError(f"{cfg_path}: expected a JSON object")
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise PeftFormatError(f"{cfg_path}: peft_type is {peft_type!r}; only LoRA adapters are read")
    return config


def _as_matrix_a(t: torch.Tensor, module: str, where: Path) -> np.ndarray:
    if t.ndim < 2:
        raise PeftFormatError(f"{where}: {module}: lora_A has shape {tuple(t.shape)}, expected (r, d_in)")
    return t.reshape(t.shape[0], -1).to(torch.float64).numpy()  # conv: (r, c_in, k_h, k_w) → (r, c_in·k_h·k_w)


def _as_matrix_b(t: torch.Tensor, module: str, where: Path) -> np.ndarray:
    if t.ndim < 2 or any(s != 1 for s in t.shape[2:]):
        raise PeftFormatError(f"{where}: {module}: lora_B has shape {tuple(t.shape)}, expected (d_out, r)")
    return t.reshape(t.shape[0], t.shape[1]).to(torch.float64).numpy()


def _check_rank(config: dict[str, Any], modules: Mapping[str, LoraModule], path: Path) -> None:
    """Without a rank_pattern, every module has the config's r; a disagreement means a broken checkpoint."""
    r = config.get("r")
    if not isinstance(r, int) or config.get("rank_pattern"):
        return
    wrong = [f"{m.path} (r={m.rank})" for m in modules.values() if m.rank != r]
    if wrong:
        raise PeftFormatError(f"{path}: {CONFIG_FILE} says r={r} but the weights have "
                              f"{', '.join(wrong[:3])}{' …' if len(wrong) > 3 else ''}")


def write_lora_checkpoint(path: str | Path, factors: Mapping[str, tuple[Any, Any]], *, lora_alpha: float | None = None,
                          target_modules: list[str] | None = None, base_model: str | None = None,
                          fan_in_fan_out: bool = False, dtype: torch.dtype = torch.float32) -> Path:
    """Save ``{module path: (A (r, d_in), B (d_out, r))}`` as peft's ``save_pretrained`` lays it out.

    ``target_modules`` defaults to the last component of each path; ``lora_alpha`` to the most common rank.
    The directory is created if need be; existing adapter files in it are replaced.
    """
    path = Path(path)
    if not factors:
        raise PeftFormatError("no modules to write")
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for module, (a, b) in factors.items():
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise PeftFormatError(f"{module}: expected A (r, d_in) and B (d_out, r), got {tuple(a.shape)} "
                                  f"and {tuple(b.shape)}")
        tensors[f"{KEY_PREFIX}{module}.lora_A.weight"] = a.to(dtype).contiguous()
        tensors[f"{KEY_PREFIX}{module}.lora_B.weight"] = b.to(dtype).contiguous()
        ranks[module] = a.shape[0]
    counts = list(ranks.values())
    r = max(set(counts), key=lambda x: (counts.count(x), -x))
    config = {
        "alpha_pattern": {},
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": r if lora_alpha is None else lora_alpha,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": {m: k for m, k in ranks.items() if k != r},
        "target_modules": sorted(target_modules or {m.rsplit(".", 1)[-1] for m in factors}),
        "task_type": "CAUSAL_LM",
        "use_rslora": False,
    }
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS_FILE) as tmp:  # the weights first: a config never names half a file
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_text_atomic(path / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path
