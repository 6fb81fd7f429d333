"""What one doctor check reports (:class:`Check`), and the small real cell the checks run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
MODEL, ADAPTER, RANK, BATCH, SEQ_LEN = "tiny", "lora", 8, 2, 32  # the small real cell the checks run
PAPER_MODEL = "gpt2-medium"  # the night's model: its shapes are the ones the GPU checks exercise


@dataclass(frozen=True)
class Check:
    """One check's outcome: its figure as printed, ``ok`` / ``failed`` / ``skipped``, and what to fix."""

    name: str
    figure: str
    status: str
    fix: str | None = None  # for a failed check: what to do; for a skipped one: why it does not apply
    values: dict[str, Any] = field(default_factory=dict)


def small_model(device: str):
    import torch

    from perfsuite.workloads.context import ModelCache

    model = ModelCache().build_adapted(MODEL, "float32", device, ADAPTER, RANK)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.config.vocab_size, (BATCH, SEQ_LEN), generator=gen).to(device)
    return model, tokens


