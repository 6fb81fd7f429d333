"""Trained-like weights without a download: a small GPT-2 trained briefly on a synthetic Markov "language".

Random weights give near-tied logits, so decode–verify–rollback rolls back more often than on a trained model.
This trains the ``tiny`` preset (or another) for a few hundred Adam steps on text from a sparse Markov chain
— every token has ``SUCCESSORS`` possible next tokens with Zipf-like probabilities, the tokens themselves
Zipf-distributed — until its next-token distributions are peaked, and saves it as a Hugging Face checkpoint
(``perfsuite checkpoint make-tiny DIR``), which ``--weights DIR`` runs every cell on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from perfsuite.models.model import GPT2, build_model
from perfsuite.measure.device import cpu_threads

SUCCESSORS = 4  # possible next tokens per token
STEPS, BATCH, LENGTH, LR = 200, 32, 64, 3e-3  # about 8 s on one CPU core for the tiny preset


@dataclass(frozen=True)
class Trained:
    model: GPT2
    first_loss: float  # cross-entropy (nats/token) before training
    final_loss: float  # mean of the last 20 steps
    entropy: float  # the chain's own conditional entropy (nats/token): the best loss reachable


def markov_chain(vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(successors (vocab, SUCCESSORS), their probabilities): token t is followed by successors[t, k] with
    probability probs[k] ∝ 1/(k+1); successors drawn with a Zipf-like bias towards low token ids."""
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    successors = torch.multinomial(weights.expand(vocab, vocab), SUCCESSORS, replacement=False, generator=g)
    probs = 1.0 / torch.arange(1, SUCCESSORS + 1, dtype=torch.float64)
    return successors, probs / probs.sum()


def sample_text(chain: tuple[torch.Tensor, torch.Tensor], batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    successors, probs = chain
    out = torch.empty(batch, length, dtype=torch.long)
    out[:, 0] = torch.randint(0, successors.shape[0], (batch,), generator=g)
    for t in range(1, length):
        k = torch.multinomial(probs.expand(batch, -1), 1, generator=g)[:, 0]
        out[:, t] = successors[out[:, t - 1], k]
    return out


def train_tiny(preset: str = "tiny", *, steps: int = STEPS, seed: int = 0) -> Trained:
    """``preset`` with random weights from ``seed``, trained ``steps`` Adam steps on the chain's text (float32, CPU,
    one thread: a second one made each step slower on a shared 2-core machine)."""
    with cpu_threads(1):
        return _train(preset, steps, seed)


def _train(preset: str, steps: int, seed: int) -> Trained:
    model = build_model(preset, seed=seed).train()
    chain = markov_chain(model.config.vocab_size, seed)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    for _ in range(steps):
        x = sample_text(chain, BATCH, LENGTH + 1, g)
        logits, _ = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    probs = chain[1]
    entropy = float(-(probs * probs.log()).sum())
    tail = losses[-20:] or [float("nan")]
    return Trained(model.eval(), losses[0] if losses else float("nan"), sum(tail) / len(tail), entropy)
