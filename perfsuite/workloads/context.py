"""What cells run with: the models a session shares (built once, adapters on copies sharing the plain model's
weights; random weights from a seed, or a checkpoint's (:mod:`perfsuite.models.checkpoint`); hf cells get transformers'
twin (:mod:`perfsuite.hf`)) and the :class:`CellContext` a workload receives (models, rounds policy, the
session's cells for shared loops, the GPU monitor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from perfsuite.models.adapters import adapted_copy, attach
# torch_dtype, LastAdapted live in perfsuite.models.caches so that perfsuite.hf.models needs nothing from here (no cycle)
from perfsuite.models.caches import LastAdapted, torch_dtype
from perfsuite.cells.grid import Cell
from perfsuite.models.model import GPT2, build_model
from perfsuite.measure.timing import RoundPolicy


class ModelCache(LastAdapted):
    """One plain model per (preset, dtype, device), and the last adapted model asked for.

    Adapted models are :func:`~perfsuite.models.adapters.adapted_copy`\\ s: their weights are the plain model's, so a
    latency group can hold every adapter of a shape at once (:meth:`build_adapted`) without a copy of the
    model per adapter.
    """

    def __init__(self, seed: int = 0, checkpoint=None):
        super().__init__()
        self.seed = seed
        self.checkpoint = checkpoint  # a perfsuite.models.checkpoint.Checkpoint: cells whose model is its label load it
        self._hf = None  # the hf twin (perfsuite.hf.models.HFModelCache), made on first use

    def base(self, preset: str, dtype: str, device: str, quant: str = "none") -> GPT2:
        """The plain model; with ``quant``, a model of its own whose block weights are quantized
        (:mod:`perfsuite.workloads.quant`; the unquantized plain model is left as it is)."""
        key = (preset, dtype, device) + ((quant,) if quant != "none" else ())
        if key not in self._base and quant != "none":
            from perfsuite.workloads.quant import quantize_base

            fresh = ModelCache(self.seed, self.checkpoint).base(preset, dtype, device)
            self._base[key] = quantize_base(fresh, quant)
        if key not in self._base:
            if self.trained(preset):
                from perfsuite.models.checkpoint import load_reference_model

                self._base[key] = load_reference_model(self.checkpoint, dtype=torch_dtype(dtype), device=device)
            else:
                self._base[key] = build_model(preset, seed=self.seed, dtype=torch_dtype(dtype), device=device)
        return self._base[key]

    def build_adapted(self, preset: str, dtype: str, device: str, adapter: str, rank: int, quant: str = "none") -> GPT2:
        """A new adapted model (not cached): the plain model itself for r = 0."""
        base = self.base(preset, dtype, device, quant)
        if rank == 0 or adapter == "none":
            return base
        return attach(adapted_copy(base), adapter, rank, seed=self.seed + 1).eval()

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
        super().clear()


@dataclass
class CellContext:
    """What a workload runs a cell with."""

    models: ModelCache = field(default_factory=ModelCache)
    policy: Callable[[Cell], RoundPolicy] = lambda cell: RoundPolicy(30, 100, 3)
    cells: list[Cell] = field(default_factory=list)  # the profile's runnable cells: a shared loop times its whole group
    shared: dict[Any, Any] = field(default_factory=dict)  # results of shared loops, by group key
    gpu: Any = None  # perfsuite.measure.gpu_state.GpuMonitor on a GPU with NVML, else None

    def group(self, key: Any, measure: Callable[[], Any]) -> Any:
        """A shared loop's result, measured now by ``measure()`` if this is its group's first cell. Out of memory,
        the group keeps the error's first line (its other cells are recorded oom without trying again) and the
        error goes on."""
        if key not in self.shared:
            try:
                self.shared[key] = measure()
            except Exception as e:
                from perfsuite.measure.device import is_out_of_memory

                if is_out_of_memory(e):  # the rest of the group must not try again: one OOM, not a cascade
                    self.shared[key] = str(e).splitlines()[0]
                raise
        return self.shared[key]
