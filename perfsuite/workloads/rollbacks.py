"""How many fast-path steps and verified windows a decode–verify–rollback decode takes, given a mismatch rate.

:func:`perfsuite.models.decoding.decode_verified` decodes a window of ``min(W, left)`` tokens per request on the fast
path, verifies them, and at the first disagreement keeps the verified token and decodes the rest again. The batch
moves in lockstep: every window, each unfinished request proposes its tokens and the batch steps as far as its
longest proposal (requests already done compute on, discarded). So a window with no mismatch anywhere costs W
steps for W tokens, and a window in which a request disagrees at its j-th token costs W steps for j + 1 of its
tokens: with bf16 near-ties (gpt2-medium: about 5 % of greedy decisions within an ulp), a 512-token window
decodes ~20 tokens per 512 steps. Pricing a cell without rollbacks under-priced the recompute night 2-4 fold.

Each checked decision disagrees with probability ``p`` (a cell records its own as ``mismatch_rate``: rollbacks
per checked decision), independently. :func:`expected_decode` draws the decode of a batch (seeded, a few dozen
draws, vectorised) and returns the mean windows and steps; :func:`single_request` is the exact expectation for
one request, by a recurrence, for what needs no numpy. No torch here: sharding prices cells with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

DEFAULT_MISMATCH_RATE = 0.05  # per checked decision; see the module docstring and docs/timing.md, "Recompute is priced with its rollbacks"
DRAWS = 64  # decodes drawn per estimate
SEED = 42


@dataclass(frozen=True)
class DecodeCost:
    """A verified decode's expected work: windows (one verify pass and one read-back each) and fast-path steps
    (one batched pass each), and the same for a plain decode: ``gen_len - 1`` steps."""

    windows: float
    steps: float


@functools.lru_cache(maxsize=4096)
def single_request(window: int, gen_len: int, p: float) -> DecodeCost:
    """The exact expected windows and steps of one request decoding ``gen_len`` tokens (the first from the
    prefill) with windows of ``window``: E(n) = w + Σ_j p(1−p)^j E(n−j−1) + (1−p)^w E(n−w), w = min(W, n)."""
    q, n_max = 1.0 - p, gen_len - 1
    steps, wins = [0.0] * (n_max + 1), [0.0] * (n_max + 1)
    s_steps = s_wins = 0.0  # Σ_{j < w} q^j E(n−1−j), kept as a sliding sum
    for n in range(1, n_max + 1):
        s_steps = steps[n - 1] + q * s_steps
        s_wins = wins[n - 1] + q * s_wins
        if n > window:  # the sum holds window terms: drop the oldest
            s_steps -= q ** window * steps[n - 1 - window]
            s_wins -= q ** window * wins[n - 1 - window]
        w = min(window, n)
        steps[n] = w + p * s_steps + q ** w * steps[n - w]
        wins[n] = 1 + p * s_wins + q ** w * wins[n - w]
    return DecodeCost(wins[n_max], steps[n_max])


@functools.lru_cache(maxsize=1024)
def expected_decode(window: int, gen_len: int, batch: int, p: float, draws: int = DRAWS) -> DecodeCost:
    """Mean windows and steps of a batch of ``batch`` requests decoding in lockstep (see the module docstring)."""
    if batch == 1:
        return single_request(window, gen_len, p)
    import numpy as np

    rng = np.random.default_rng(SEED)
    left = np.full((draws, batch), gen_len - 1)
    windows = np.zeros(draws)
    steps = np.zeros(draws)
    while (left > 0).any():
        want = np.minimum(window, left)
        active = (left > 0).any(axis=1)
        first = rng.geometric(p, size=left.shape) - 1 if p > 0 else np.full(left.shape, window)
        accepted = np.where(first < want, first + 1, want)
        windows += active
        steps += want.max(axis=1)
        left -= accepted
    return DecodeCost(float(windows.mean()), float(steps.mean()))


def lockstep(window: int, gen_len: int, mismatches: list[set[int]]) -> tuple[int, int]:
    """(windows, steps) of a batch in lockstep when request b's fast path disagrees at exactly the output
    positions ``mismatches[b]`` whenever it checks them (as :func:`perfsuite.models.decoding.decode_verified`'s ``inject``
    does): the decoder's own bookkeeping, step by step, to check the model against the decoder."""
    n_out = [1] * len(mismatches)
    windows = steps = 0
    while True:
        want = [min(window, gen_len - n) for n in n_out]
        if not any(want):
            return windows, steps
        windows += 1
        steps += max(want)
        for b, w in enumerate(want):
            hit = next((j for j in range(w) if n_out[b] + j in mismatches[b]), None)
            n_out[b] += w if hit is None else hit + 1
