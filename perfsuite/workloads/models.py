"""Models shared between cells of a session: built once, adapted copies reused by consecutive cells."""

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

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._base: dict[tuple, GPT2] = {}
        self._adapted_key: tuple | None = None
        self._adapted: GPT2 | None = None

    def base(self, preset: str, dtype: str, device: str) -> GPT2:
        key = (preset, dtype, device)
        if key not in self._base:
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

    def clear(self) -> None:
        self._base.clear()
        self._adapted, self._adapted_key = None, None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
