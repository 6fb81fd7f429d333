"""Models shared between cells of a session: built once, adapted copies reused by consecutive cells; random weights
from a seed, or a checkpoint's (:mod:`perfsuite.checkpoint`); hf cells get transformers' twin (:mod:`perfsuite.hf`)."""

from __future__ import annotations

import copy

import torch

from perfsuite.adapters import attach
from perfsuite.model import GPT2, build_model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}") from None


class ModelCache:
    """Keeps one plain model per (preset, dtype, device) and the last adapted copy.

    The grid orders cells adapter → rank → sizes, so keeping only the last adapted
    model builds each one once without holding the whole grid in device memory.
    """

    def __init__(self, seed: int = 0, checkpoint=None):
        self.seed = seed
        self.checkpoint = checkpoint  # a perfsuite.checkpoint.Checkpoint: cells whose model is its label load it
        self._hf = None  # the hf twin (perfsuite.hf.models.HFModelCache), made on first use
        self._base: dict[tuple, GPT2] = {}
        self._adapted_key: tuple | None = None
        self._adapted: GPT2 | None = None

    def base(self, preset: str, dtype: str, device: str) -> GPT2:
        key = (preset, dtype, device)
        if key not in self._base:
            if self.trained(preset):
                from perfsuite.checkpoint import load_reference_model

                self._base[key] = load_reference_model(self.checkpoint, dtype=torch_dtype(dtype), device=device)
            else:
                self._base[key] = build_model(preset, seed=self.seed, dtype=torch_dtype(dtype), device=device)
        return self._base[key]

    def adapted(self, preset: str, dtype: str, device: str, adapter: str, rank: int) -> GPT2:
        base = self.base(preset, dtype, device)
        if rank == 0 or adapter == "none":
            return base
        key = (preset, dtype, device, adapter, rank)
        if key != self._adapted_key:
            self._adapted = None  # free the previous copy before making the next
            self._adapted = attach(copy.deepcopy(base), adapter, rank, seed=self.seed + 1).eval()
            self._adapted_key = key
        return self._adapted

    def trained(self, preset: str) -> bool:
        """Whether cells of model ``preset`` run the checkpoint's weights (else random ones from the seed)."""
        return self.checkpoint is not None and preset == self.checkpoint.label

    def for_impl(self, impl: str):
        """The models of implementation ``impl``: this cache for "ref", its transformers twin for "hf"."""
        if impl == "ref":
            return self
        if self._hf is None:
            from perfsuite.hf.models import HFModelCache

            self._hf = HFModelCache(self)
        return self._hf

    def env(self, cell) -> dict:
        """What a cell's ``env`` adds to the machine's: the checkpoint (path, SHA-256) and the hf libraries."""
        extra = dict(self.checkpoint.env()) if self.trained(cell.model) else {}
        if cell.impl == "hf":
            from perfsuite.hf import library_versions

            extra["libraries"] = library_versions(cell)
        return extra

    def clear(self) -> None:
        if self._hf is not None:
            self._hf.clear()
        self._base.clear()
        self._adapted, self._adapted_key = None, None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
