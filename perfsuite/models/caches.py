"""The model cache shape shared by the reference models (:mod:`perfsuite.workloads.context`) and their
transformers twins (:mod:`perfsuite.hf.models`), and the dtype names cells use. Both import it from here, so
neither imports the other at module level."""

from __future__ import annotations

from typing import Any

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}") from None


class LastAdapted:
    """The cache shape both implementations share: plain models by (preset, dtype, device), built by ``base``,
    and only the last adapted model asked for, built by ``build_adapted`` (consecutive cells share it)."""

    def __init__(self) -> None:
        self._base: dict[tuple, Any] = {}
        self._adapted_key: tuple | None = None
        self._adapted: Any = None

    def build_adapted(self, preset: str, dtype: str, device: str, adapter: str, rank: int):
        raise NotImplementedError

    def adapted(self, preset: str, dtype: str, device: str, adapter: str, rank: int):
        """The adapted model, kept until another one is asked for."""
        key = (preset, dtype, device, adapter, rank)
        if key != self._adapted_key:
            self._adapted = None  # free the previous copy before making the next
            self._adapted = self.build_adapted(*key)
            self._adapted_key = key
        return self._adapted

    def clear(self) -> None:
        """Drop every model (after an out-of-memory error the caller collects and empties the device cache)."""
        self._base.clear()
        self._adapted, self._adapted_key = None, None
