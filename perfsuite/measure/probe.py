"""The time probe: fixed torch work timed in every loop, so a cell's time can be read in units of the machine's
speed of the moment.

On a shared machine the time of one process differs from the next by more than the changes worth catching (on a
2-core VM: one LoRA cell 0.76-1.07 ms over five processes). The slow-down cancels that by pairing each adapter
with the plain model of the same rounds; nothing paired the plain model itself. The probe is that partner: a
chain of matrix products and ``tanh`` shaped like the model's MLPs (width ``n_embd``, hidden ``n_inner``, one
per layer), built from torch operations only and seeded tensors, so no change to perfsuite's model, adapter or
decoding code can move it. Timed as one more member of the round-robin loop, it slows down with the machine and
not with the code: ``norm_time`` = cell time / probe time of the same round, its median over the rounds (a
round stalled by a neighbour moves one ratio, not a whole rotation's mean).

What it cannot tell apart: a change of torch, its kernels or the hardware moves the probe too (a torch upgrade that
slows matmuls cancels in the ratio). That is what the fingerprint (a baseline of another torch does not gate) and
the nightly history of raw times are for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

PROBE_SEED = 20261205  # the probe's tensors: the same in every process and every version of perfsuite
PROBE_KEY = "probe"  # its name in a recompute loop (latency loops key their members by (adapter, rank))


@dataclass(frozen=True)
class ProbeShape:
    """The probe's work: ``repeats`` times, ``layers`` products (rows × width) @ (width × hidden) @ (hidden × width)."""

    rows: int  # tokens in flight: batch × sequence length for a forward pass, the batch for one decode step
    width: int  # the model's n_embd
    hidden: int  # the model's n_inner
    layers: int  # the model's n_layer
    repeats: int = 1  # decode steps (recompute: one small chain per generated token, as decoding does)

    def __post_init__(self) -> None:
        if min(self.rows, self.width, self.hidden, self.layers, self.repeats) < 1:
            raise ValueError(f"probe shape needs positive sizes, got {self}")

    @classmethod
    def of_forward(cls, config, batch: int, seq_len: int) -> "ProbeShape":
        """Sized to one forward pass of a latency cell: its tokens through MLP-shaped products, one per layer."""
        return cls(batch * seq_len, *_dims(config))

    @classmethod
    def of_decode(cls, config, batch: int, gen_len: int) -> "ProbeShape":
        """Sized to plain decoding: one token a request per step, ``gen_len`` steps."""
        return cls(batch, *_dims(config), repeats=gen_len)


def _dims(config) -> tuple[int, int, int]:
    """(width, MLP hidden size, layers) of a reference GPT2Config or a transformers config of any family (GPT-2's
    ``n_inner`` may be None there: 4 × width)."""
    width = getattr(config, "n_embd", None) or config.hidden_size
    hidden = getattr(config, "n_inner", None) or getattr(config, "intermediate_size", None) or 4 * width
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    return int(width), int(hidden), int(layers)


def make_probe(shape: ProbeShape, *, dtype, device: str) -> Callable[[], object]:
    """The probe as a function of no arguments, its tensors built once (seeded, scaled so values stay bounded)."""
    import torch

    gen = torch.Generator().manual_seed(PROBE_SEED)
    x = torch.randn(shape.rows, shape.width, generator=gen).to(dtype=dtype, device=device)
    w_in = (torch.randn(shape.width, shape.hidden, generator=gen) / shape.width ** 0.5).to(dtype=dtype, device=device)
    w_out = (torch.randn(shape.hidden, shape.width, generator=gen) / shape.hidden ** 0.5).to(dtype=dtype, device=device)

    def probe() -> object:
        with torch.inference_mode():
            y = x
            for _ in range(shape.repeats):
                for _ in range(shape.layers):
                    y = torch.tanh(y @ w_in) @ w_out
            return y

    return probe
