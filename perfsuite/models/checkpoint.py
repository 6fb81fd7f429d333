"""GPT-2 checkpoints in the Hugging Face layout (``config.json`` + ``model.safetensors``), read into and written from
the reference model of :mod:`perfsuite.models.model`; nothing is ever downloaded.

The layout is what ``GPT2LMHeadModel.save_pretrained`` writes and what the Hub's ``gpt2`` / ``gpt2-medium``
folders hold: tensor names with or without the ``transformer.`` prefix, the four projections stored as
``Conv1D`` weights of shape (in, out) — transposed here into ``nn.Linear``'s (out, in) — and the output head
tied to ``wte`` (absent from the file, or equal to ``wte``). A :class:`Checkpoint` names a folder by its
content: ``label`` = folder name + the first hex digits of the SHA-256 of both files, the ``model`` a cell
records, so a baseline made on one checkpoint never judges another. Anything malformed or mismatched
raises :class:`CheckpointError`, one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.io import read_json
from perfsuite.models.model import GPT2Config

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HASH_DIGITS = 8  # of the SHA-256 in a checkpoint's label (the full digest is in each cell's env)
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # stored (in, out) in the HF layout
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older GPT-2 files
HF_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # the tanh GELU the reference model computes
# Bounds on a config's dimensions, checked before any shape is built from them: a crafted n_layer of 10**9 cost
# 17 s and 3 GB before a MemoryError. Far above any GPT-2 (gpt2-xl: 48 layers, d = 1600, 25 heads, vocab 50257,
# 1024 positions).
MAX_DIMS = {"n_layer": 1_024, "n_embd": 65_536, "n_head": 1_024, "n_inner": 262_144, "vocab_size": 1 << 21,
            "n_positions": 1 << 20}
# Config switches of transformers' GPT-2 that change the computation; the reference model has none of them.
UNSUPPORTED_SWITCHES = ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention")


class CheckpointError(PerfsuiteError, ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder, checked and hashed (no tensor read yet)."""

    path: Path
    config: GPT2Config
    sha256: str  # of config.json's bytes followed by model.safetensors' bytes

    @property
    def label(self) -> str:
        """What cells record as their ``model``: e.g. ``gpt2-medium@3f2a9c1e``."""
        return f"{self.path.name}@{self.sha256[:HASH_DIGITS]}"

    def env(self) -> dict[str, str]:
        """What a cell's ``env`` records about the weights it ran with."""
        return {"weights": str(self.path), "weights_sha256": self.sha256}


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def config_from_hf(d: Any, where: str) -> GPT2Config:
    """The reference model's config from a Hugging Face GPT-2 ``config.json`` (a dict); refuses what it cannot run."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: not a JSON object")
    if d.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{where}: model_type {d.get('model_type')!r:.60} is not a GPT-2 (need 'gpt2')")
    act = d.get("activation_function", "gelu_new")
    if not isinstance(act, str) or act not in HF_ACTIVATIONS:
        raise CheckpointError(f"{where}: activation_function {act!r:.60} is not supported (need one of "
                              f"{HF_ACTIVATIONS})")
    eps = d.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, float | int) or isinstance(eps, bool) or abs(eps) > 1 or not math.isclose(eps, 1e-5):
        raise CheckpointError(f"{where}: layer_norm_epsilon {eps!r:.60} is not supported (the reference model uses "
                              "1e-5)")
    on = [k for k in UNSUPPORTED_SWITCHES if d.get(k)] + ([] if d.get("scale_attn_weights", True) else
                                                         ["scale_attn_weights=false"])
    if on:
        raise CheckpointError(f"{where}: {', '.join(on)} not supported by the reference model")
    missing = [k for k in ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions") if k not in d]
    if missing:
        raise CheckpointError(f"{where}: missing {', '.join(missing)}")
    n_inner = d.get("n_inner")
    if n_inner is None and isinstance(d["n_embd"], int):
        n_inner = 4 * d["n_embd"]  # transformers' default
    dims = {"n_layer": d["n_layer"], "n_embd": d["n_embd"], "n_head": d["n_head"], "n_inner": n_inner,
            "vocab_size": d["vocab_size"], "n_positions": d["n_positions"]}
    bad = [f"{k}={v!r:.40}" for k, v in dims.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise CheckpointError(f"{where}: {', '.join(bad)} must be positive integers")
    over = [f"{k}={v} (at most {MAX_DIMS[k]})" for k, v in dims.items() if v > MAX_DIMS[k]]
    if over:
        raise CheckpointError(f"{where}: {', '.join(over)}: not a GPT-2 this harness builds")
    try:
        return GPT2Config(**dims)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def config_to_hf(cfg: GPT2Config) -> dict[str, Any]:
    """A ``config.json`` transformers reads as the same GPT-2 (dropouts 0: inference only)."""
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd, "n_head": cfg.n_head, "n_inner": cfg.n_inner, "vocab_size": cfg.vocab_size,
            "n_positions": cfg.n_positions, "n_ctx": cfg.n_positions, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "bos_token_id": cfg.vocab_size - 1, "eos_token_id": cfg.vocab_size - 1, "tie_word_embeddings": True}


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The folder's config and hash, checked; CheckpointError (one line) when it is not a GPT-2 checkpoint."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a folder (want a checkpoint folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
    config_file, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME} (not a Hugging Face checkpoint folder)")
    if not weights.is_file():
        other = [p.name for p in (path / "model.safetensors.index.json", path / "pytorch_model.bin") if p.exists()]
        hint = (f"; found {other[0]}: only a single {WEIGHTS_NAME} is read (re-save it with "
                "save_pretrained(..., safe_serialization=True, max_shard_size='10GB'))" if other else "")
        raise CheckpointError(f"{path}: no {WEIGHTS_NAME}{hint}")
    d = read_json(config_file, CheckpointError)  # a FIFO, a huge or deeply nested file: one line
    cfg = config_from_hf(d, str(config_file))
    return Checkpoint(path.resolve(), cfg, _sha256([config_file, weights]))


def _expected_shapes(cfg: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Tensor name (without ``transformer.``) → shape in the HF layout."""
    d, f = cfg.n_embd, cfg.n_inner
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (cfg.vocab_size, d), "wpe.weight": (cfg.n_positions, d),
                                          "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        shapes |= {p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
                   p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
                   p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
                   p + "mlp.c_fc.weight": (d, f), p + "mlp.c_fc.bias": (f,),
                   p + "mlp.c_proj.weight": (f, d), p + "mlp.c_proj.bias": (d,)}
    return shapes


def _listing(names) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_shapes(where: Path, cfg: GPT2Config, shapes: dict[str, tuple[int, ...]]) -> None:
    """The tensors (name without ``transformer.`` → shape, the head left out) are those the config implies."""
    want = _expected_shapes(cfg)
    missing, unexpected = set(want) - set(shapes), set(shapes) - set(want)
    if missing:
        raise CheckpointError(f"{where}: missing {len(missing)} tensor(s) the config implies: {_listing(missing)}")
    if unexpected:
        raise CheckpointError(f"{where}: {len(unexpected)} tensor(s) a GPT-2 does not have: {_listing(unexpected)}")
    for name, shape in want.items():
        if shapes[name] != shape:
            raise CheckpointError(f"{where}: {name} has shape {shapes[name]}, the config implies {shape}")


def check_weights(ckpt: Checkpoint) -> None:
    """The whole checkpoint checked before the first cell, without reading a tensor: the safetensors header
    parses, its data fits the file, and every tensor the config implies is there with its shape. A corrupt file
    is then one line at the command line, not a failure in every cell."""
    from safetensors import SafetensorError, safe_open

    where = ckpt.path / WEIGHTS_NAME
    try:
        with safe_open(str(where), framework="pt") as f:
            shapes = {k.removeprefix("transformer."): tuple(f.get_slice(k).get_shape()) for k in f.keys()
                      if not k.endswith(IGNORED_SUFFIXES)}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{where}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    head = shapes.pop("lm_head.weight", None)
    _check_shapes(where, ckpt.config, shapes)
    if head is not None and head != shapes["wte.weight"]:
        raise CheckpointError(f"{where}: lm_head.weight has shape {head}, not wte.weight's {shapes['wte.weight']}")


def reference_state_dict(ckpt: Checkpoint, *, dtype=None, device="cpu") -> dict:
    """The checkpoint's tensors as the reference model's state dict (Conv1D weights transposed, head tied)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = ckpt.path / WEIGHTS_NAME
    try:
        raw = load_file(str(where))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{where}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    tensors = {k.removeprefix("transformer."): v for k, v in raw.items() if not k.endswith(IGNORED_SUFFIXES)}
    head = tensors.pop("lm_head.weight", None)
    _check_shapes(where, ckpt.config, {name: tuple(t.shape) for name, t in tensors.items()})
    if head is not None and not torch.equal(head, tensors["wte.weight"]):
        raise CheckpointError(f"{where}: lm_head.weight differs from wte.weight (an untied head is not supported)")
    out = {}
    for name, t in tensors.items():
        if name.endswith(".weight") and name.rsplit(".", 1)[0].split(".", 2)[-1] in CONV1D:
            t = t.t()
        out[name] = t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)
    out["lm_head.weight"] = out["wte.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def load_reference_model(ckpt: Checkpoint | str | Path, *, dtype=None, device="cpu"):
    """The reference :class:`~perfsuite.models.model.GPT2` with the checkpoint's weights, in eval mode."""
    import torch

    from perfsuite.models.model import GPT2

    ckpt = ckpt if isinstance(ckpt, Checkpoint) else read_checkpoint(ckpt)
    state = reference_state_dict(ckpt, dtype=dtype, device=device)
    with torch.device("meta"):
        model = GPT2(ckpt.config)
    model.load_state_dict(state, assign=True)
    model.lm_head.weight = model.wte.weight
    return model.eval()


def hf_state_dict(model) -> dict:
    """The reference model's weights in the HF layout (``transformer.`` names, Conv1D (in, out), no head)."""
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        if name.endswith(".weight") and name.rsplit(".", 1)[0].split(".", 2)[-1] in CONV1D:
            t = t.t()
        out["transformer." + name] = t.detach().contiguous()
    return out


def save_checkpoint(model, path: str | Path) -> Checkpoint:
    """Write a reference model as a Hugging Face GPT-2 checkpoint folder that transformers loads as it is."""
    from safetensors.torch import save_file

    from perfsuite.formats.io import atomic_path, write_text_atomic

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(hf_state_dict(model), str(tmp), metadata={"format": "pt"})
    write_text_atomic(path / CONFIG_NAME, json.dumps(config_to_hf(model.config), indent=2) + "\n")
    return read_checkpoint(path)
