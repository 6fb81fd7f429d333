"""Deterministic decoding by decode–verify–rollback (LLM-42, Gond et al. 2026, Fig. 13).

Batched decoding is not deterministic: a request's tokens depend on which other
requests share its batch, because kernels reduce in a shape-dependent order. LLM-42
keeps the fast path and makes the output deterministic after the fact:

1. decode ``window`` tokens per request on the fast path (incremental, KV cache, whole batch);
2. verify them in one fixed-shape pass: every request's window is a row of a
   ``rows × window`` batch (``rows = token_budget // window``, padding rows included),
   attending to ``context`` key slots, so a row's result never depends on its neighbours;
3. roll back at the first token where the two disagree: keep the verified token,
   discard the rest of the window (those tokens are decoded again).

Everything in a request's verified KV cache, its prompt included, comes from the
fixed-shape pass, so the final tokens equal those of a decode that uses that pass for
every token (:func:`decode_fixed`). The cost is the recomputed tokens (``recompute_pct``)
and the verification passes (``throughput_ratio`` against :func:`decode_plain`).

Requests roll back at different positions, so the batch is ragged: the KV cache is one
preallocated buffer per layer, a row per request, with per-row positions and an
attention mask (as serving engines do), not the model's concatenated cache. Every pass
attends to a fixed number of key slots (the schedule's context; plain decoding: its cache),
the mask hiding what a row may not see, and every decoder runs under its pinned attention
backends (:func:`perfsuite.models.attention.decoder_attention`): the attention kernel sees the same
few shapes all night, not a new key length every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from perfsuite.models.attention import decoder_attention
from perfsuite.cells.grid import DEFAULT_TOKEN_BUDGET, budget_violation
from perfsuite.models.model import GPT2


@dataclass(frozen=True)
class Schedule:
    """The one shape of every verification pass: ``rows × window`` tokens against ``context`` key slots."""

    window: int  # tokens verified at a time, per request
    context: int  # key slots per row: at least the longest prompt + output; fixed, so neighbours never matter
    token_budget: int = DEFAULT_TOKEN_BUDGET

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, not {self.window}")
        if self.window > self.token_budget:
            raise ValueError(f"window {self.window} exceeds the token budget {self.token_budget}")

    @property
    def rows(self) -> int:
        """Requests one pass verifies; fewer requests are padded to this many rows."""
        return self.token_budget // self.window


@dataclass(frozen=True)
class VerifiedDecode:
    """What decode–verify–rollback produced and what it cost."""

    tokens: torch.Tensor  # (batch, gen_len): the verified output
    mismatch_positions: tuple[tuple[int, int], ...]  # (request, output position) of each rollback, in order
    recomputed_tokens: int  # fast-path tokens discarded after a mismatch, hence decoded again
    fast_tokens: int  # tokens the fast path decoded, discarded ones included
    verify_passes: int  # fixed-shape passes, the prompt's included
    windows: int = 0  # verified windows (decode, verify, roll back): the host reads back once per window
    steps: int = 0  # fast-path passes of the whole batch (each window steps as far as its longest request)

    @property
    def output_tokens(self) -> int:
        return self.tokens.numel()

    @property
    def recompute_pct(self) -> float:
        """Recomputed tokens per output token, in % (LLM-42's recompute cost)."""
        return 100.0 * self.recomputed_tokens / self.output_tokens


# --- a ragged forward pass over a preallocated KV cache ------------------------------------------

class KVBuffer:
    """Keys and values of every layer, (rows, n_head, length, head_dim); slot p holds position p."""

    def __init__(self, model: GPT2, rows: int, length: int):
        cfg, p = model.config, model.wte.weight
        shape = (rows, cfg.n_head, length, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in model.h]
        self.v = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in model.h]


def ragged_forward(model: GPT2, cache: KVBuffer, idx: torch.Tensor, starts: torch.Tensor, ctx: int,
             rows: torch.Tensor | None = None, head: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (R, T, vocab) for tokens ``idx`` (R, T) at positions ``starts + t``, cache rows ``rows``.

    Writes the new keys and values into their slots, then attends to the first ``ctx`` slots
    with a per-row causal mask. ``rows`` None means cache rows 0..R-1 (no gather).
    """
    R, T = idx.shape
    device = idx.device
    pos = starts[:, None] + torch.arange(T, device=device)  # (R, T)
    # Padding may run past the model's last position; its logits are never read.
    x = model.wte(idx) + model.wpe(pos.clamp(max=model.config.n_positions - 1))
    mask = (torch.arange(ctx, device=device) <= pos[:, :, None])[:, None]  # (R, 1, T, ctx)
    row_ids = torch.arange(R, device=device) if rows is None else rows
    for i, block in enumerate(model.h):
        attn = block.attn
        h = block.ln_1(x)
        C = h.shape[-1]
        q, k, v = attn.c_attn(h).split(C, dim=2)
        q, k, v = (t.view(R, T, attn.n_head, C // attn.n_head) for t in (q, k, v))  # (R, T, nh, hs)
        cache.k[i][row_ids[:, None], :, pos] = k
        cache.v[i][row_ids[:, None], :, pos] = v
        if rows is None:
            keys, values = cache.k[i][:R, :, :ctx], cache.v[i][:R, :, :ctx]
        else:
            keys, values = cache.k[i][rows, :, :ctx], cache.v[i][rows, :, :ctx]
        y = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)  # (R, nh, T, hs)
        a = attn.c_proj(y.transpose(1, 2).reshape(R, T, C))
        x = block.after_attention(x, a)
    x = model.ln_f(x)
    return model.lm_head(x) if head is None else F.linear(x, head)


def device_ints(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """Host integers as a device tensor without a host sync: one fill kernel per value (the value a kernel
    argument), joined on the device. ``torch.tensor(values, device=...)`` copies from pageable memory and waits
    for the device, and so does writing one element at a time (``out[i] = v`` is a blocking copy on CUDA)."""
    if not values:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.stack([torch.full((), int(v), dtype=torch.long, device=device) for v in values])


def check_prompts(model: GPT2, prompts: Sequence[torch.Tensor] | torch.Tensor, gen_len: int) -> list[torch.Tensor]:
    device = model.wte.weight.device
    out = [torch.as_tensor(p, dtype=torch.long, device=device).flatten() for p in prompts]
    if not out or any(len(p) == 0 for p in out):
        raise ValueError("need at least one request, each with a non-empty prompt")
    if gen_len < 1:
        raise ValueError(f"gen_len must be >= 1, not {gen_len}")
    longest = max(len(p) for p in out) + gen_len - 1  # the last output token is never fed back
    if longest > model.config.n_positions:
        raise ValueError(f"prompt + output of {longest} tokens is longer than n_positions={model.config.n_positions}")
    return out


# --- the three decoders ----------------------------------------------------------------------
# ``head`` (vocab × n_embd) replaces the tied output embedding when given; see untied_head.

@torch.inference_mode()
def decode_plain(model: GPT2, prompts: Sequence[torch.Tensor] | torch.Tensor, gen_len: int, *,
                 head: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy tokens (batch, gen_len) from the fast path alone: one batched prefill, then one step per token."""
    prompts = check_prompts(model, prompts, gen_len)
    B, device = len(prompts), prompts[0].device
    lengths = device_ints([len(p) for p in prompts], device)
    longest = max(len(p) for p in prompts)
    cache = KVBuffer(model, B, longest + gen_len)
    idx = torch.zeros(B, longest, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        idx[b, : len(p)] = p
    with decoder_attention(device):
        logits = ragged_forward(model, cache, idx, torch.zeros(B, dtype=torch.long, device=device), longest,
                                head=head)
        out = torch.empty(B, gen_len, dtype=torch.long, device=device)
        out[:, 0] = logits[torch.arange(B, device=device), lengths - 1].float().argmax(-1)
        for t in range(1, gen_len):  # every step attends to the whole cache: one key length, the mask does the rest
            logits = ragged_forward(model, cache, out[:, t - 1 : t], lengths + (t - 1), longest + gen_len, head=head)
            out[:, t] = logits[:, -1].float().argmax(-1)
    return out


def _prefill_fixed(model: GPT2, cache: KVBuffer, prompts: list[torch.Tensor], schedule: Schedule,
                   head: torch.Tensor | None) -> torch.Tensor:
    """Prompts through the fixed-shape pass, ``window`` tokens per row at a time; returns each first token (B,)."""
    W, device = schedule.window, prompts[0].device
    first = torch.empty(len(prompts), dtype=torch.long, device=device)
    lengths = torch.zeros(schedule.rows, dtype=torch.long, device=device)  # padding rows: no prompt
    lengths[: len(prompts)] = device_ints([len(p) for p in prompts], device)
    for c in range(0, max(len(p) for p in prompts), W):
        idx = torch.zeros(schedule.rows, W, dtype=torch.long, device=device)
        # rows with nothing to do write past the context; computed on the device, no host data per chunk
        starts = torch.full_like(lengths, schedule.context).masked_fill_(lengths > c, c)
        ends = {}
        for b, p in enumerate(prompts):
            chunk = p[c : c + W]
            if len(chunk):
                idx[b, : len(chunk)] = chunk
                if c + W >= len(p):
                    ends[b] = len(chunk) - 1
        logits = ragged_forward(model, cache, idx, starts, schedule.context, head=head)
        for b, j in ends.items():
            first[b] = logits[b, j].float().argmax(-1)
    return first


def _check_schedule(prompts: list[torch.Tensor], gen_len: int, schedule: Schedule) -> None:
    reason = budget_violation(len(prompts), schedule.window, schedule.token_budget)
    if reason:
        raise ValueError(reason)
    need = max(len(p) for p in prompts) + gen_len - 1
    if need > schedule.context:
        raise ValueError(f"schedule context {schedule.context} is shorter than prompt + output ({need} tokens)")


@torch.inference_mode()
def decode_fixed(model: GPT2, prompts: Sequence[torch.Tensor] | torch.Tensor, gen_len: int, schedule: Schedule, *,
                 head: torch.Tensor | None = None, margins: list | None = None) -> torch.Tensor:
    """The reference: every token from the fixed-shape pass (a request per row, one token each). Slow, exact.

    ``margins``, a list, receives each decision's top-1 minus top-2 logit (fp32, (B,) per output token after the
    first): how near a tie each greedy choice was, which is what decides how often rounding flips it."""
    prompts = check_prompts(model, prompts, gen_len)
    _check_schedule(prompts, gen_len, schedule)
    with decoder_attention(prompts[0].device):
        return _decode_fixed(model, prompts, gen_len, schedule, head, margins)


def _decode_fixed(model: GPT2, prompts: list[torch.Tensor], gen_len: int, schedule: Schedule,
                  head: torch.Tensor | None, margins: list | None) -> torch.Tensor:
    B, device = len(prompts), prompts[0].device
    cache = KVBuffer(model, schedule.rows, schedule.context + schedule.window)
    out = torch.empty(B, gen_len, dtype=torch.long, device=device)
    out[:, 0] = _prefill_fixed(model, cache, prompts, schedule, head)
    starts = torch.full((schedule.rows,), schedule.context, device=device)
    starts[:B] = device_ints([len(p) for p in prompts], device)
    idx = torch.zeros(schedule.rows, schedule.window, dtype=torch.long, device=device)
    for t in range(1, gen_len):
        idx[:B, 0] = out[:, t - 1]
        logits = ragged_forward(model, cache, idx, starts, schedule.context, head=head)[:B, 0].float()
        out[:, t] = logits.argmax(-1)
        if margins is not None:
            top = logits.topk(2, dim=-1).values
            margins.append(top[:, 0] - top[:, 1])
        starts[:B] += 1
    return out


@torch.inference_mode()
def decode_verified(model: GPT2, prompts: Sequence[torch.Tensor] | torch.Tensor, gen_len: int, schedule: Schedule,
                    *, head: torch.Tensor | None = None, inject: Iterable[tuple[int, int]] = (),
                    max_windows: int | None = None) -> VerifiedDecode:
    """Decode–verify–rollback: fast-path windows, each checked by one fixed-shape pass for the whole batch.

    Everything a window needs stays on the device — positions, which requests still decode, the accepted
    tokens — so the host reads back once per window (the accepted counts and first mismatches, which plan the
    next window), and never blocks inside one. Every request steps through every decode step of a window
    (those whose window is full compute on, their results discarded), so no step's shape depends on data.

    ``inject`` flips the fast path's token at (request, output position) every time it decodes it
    (LLM-42's mismatch injection), to test the rollback and calibrate the cost model. Position 0
    comes from the verified prefill, so positions 1..gen_len-1 can be injected.
    """
    prompts = check_prompts(model, prompts, gen_len)
    _check_schedule(prompts, gen_len, schedule)
    B = len(prompts)
    inject = set(inject)
    for b, p in inject:
        if not (0 <= b < B and 1 <= p < gen_len):
            raise ValueError(f"cannot inject a mismatch at request {b}, position {p}: "
                             f"need 0 <= request < {B} and 1 <= position < {gen_len}")
    with decoder_attention(prompts[0].device):
        return _decode_verified(model, prompts, gen_len, schedule, head, inject, max_windows)


def _decode_verified(model: GPT2, prompts: list[torch.Tensor], gen_len: int, schedule: Schedule,
                     head: torch.Tensor | None, inject: set[tuple[int, int]], max_windows: int | None
                     ) -> VerifiedDecode:
    B, W, device = len(prompts), schedule.window, prompts[0].device
    vocab = model.config.vocab_size
    cache = KVBuffer(model, schedule.rows, schedule.context + W)
    steps = torch.arange(W, device=device)
    flip = torch.zeros(B, gen_len + W, dtype=torch.long, device=device)  # +1 where a mismatch is injected
    if inject:  # one scalar fill at the injected slots (flip[b, p] = 1 would be a blocking copy each on CUDA)
        flip.view(-1).index_fill_(0, device_ints([b * (gen_len + W) + p for b, p in sorted(inject)], device), 1)
    out = torch.zeros(B, gen_len + W, dtype=torch.long, device=device)  # verified tokens (room for a window)
    out[:, 0] = _prefill_fixed(model, cache, prompts, schedule, head)
    last = out[:, 0].clone()  # each request's last verified token
    prompt_len = [len(p) for p in prompts]
    prompt_len_dev = device_ints(prompt_len, device)
    n_out = [1] * B  # verified output tokens per request, as the host knows them (read back once per window)
    n_out_dev = torch.ones(B, dtype=torch.long, device=device)
    pad_starts = torch.full((schedule.rows - B,), schedule.context, dtype=torch.long, device=device)
    mismatches: list[tuple[int, int]] = []
    recomputed = fast = windows = steps_taken = 0
    passes = -(-max(prompt_len) // W)
    spec = torch.zeros(B, W, dtype=torch.long, device=device)  # this window's fast-path tokens
    while True:
        want = [min(W, gen_len - n) for n in n_out]  # tokens each request decodes in this window
        if not any(want) or windows == max_windows:
            break
        want_dev = (gen_len - n_out_dev).clamp(max=W)
        base = n_out_dev + prompt_len_dev - 1  # each request's last verified slot: where this window's tokens go
        # 1. Decode: the whole batch steps together for the longest window of this round, every step over the
        # schedule's context (one key length; the mask hides the slots past each row's position).
        for s in range(max(want)):
            prev = last if s == 0 else spec[:, s - 1]
            logits = ragged_forward(model, cache, prev[:, None], base + s, schedule.context, head=head)
            token = logits[:, -1].float().argmax(-1)
            token = (token + flip.gather(1, (n_out_dev + s)[:, None])[:, 0]) % vocab
            spec[:, s] = torch.where(want_dev > s, token, spec[:, s])
        fast += sum(want)
        windows += 1
        steps_taken += max(want)
        # 2. Verify: each window replayed from its request's verified cache, one fixed-shape pass.
        valid = steps < want_dev[:, None]  # (B, W): the tokens each request proposed
        idx = torch.zeros(schedule.rows, W, dtype=torch.long, device=device)
        idx[:B, 0] = last
        idx[:B, 1:] = spec[:, : W - 1]
        idx[:B] *= valid
        starts = torch.cat([torch.where(want_dev > 0, base, schedule.context), pad_starts])
        checked = ragged_forward(model, cache, idx, starts, schedule.context, head=head)[:B].float().argmax(-1)
        passes += 1
        # 3. Rollback, on the device: keep the verified token at the first disagreement, drop the rest.
        differ = (spec != checked) & valid
        hit = differ.any(1)
        first = torch.where(hit, differ.long().argmax(1), want_dev)  # argmax: the first True
        accepted = torch.where(hit, first + 1, want_dev)
        tokens = torch.where(hit[:, None] & (steps == first[:, None]), checked, spec)
        slots = n_out_dev[:, None] + steps  # where this window's tokens go in ``out``
        keep = steps < accepted[:, None]
        out.scatter_(1, slots, torch.where(keep, tokens, out.gather(1, slots)))
        last = torch.where(accepted > 0, tokens.gather(1, (accepted - 1).clamp(min=0)[:, None])[:, 0], last)
        n_out_dev = n_out_dev + accepted
        # The window's one read-back: what was accepted and where it first disagreed (plans the next window).
        got, first_host, hit_host = torch.stack([accepted, first, hit.long()]).tolist()
        for b in range(B):
            if hit_host[b]:
                mismatches.append((b, n_out[b] + first_host[b]))
                recomputed += want[b] - first_host[b] - 1
            n_out[b] += got[b]
    return VerifiedDecode(tokens=out[:, :gen_len], mismatch_positions=tuple(mismatches),
                          recomputed_tokens=recomputed, fast_tokens=fast, verify_passes=passes, windows=windows,
                          steps=steps_taken)
