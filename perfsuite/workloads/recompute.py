"""Recompute: deterministic decoding by decode–verify–rollback (LLM-42, Gond et al. 2026, Fig. 13).

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
attention mask (as serving engines do), not the model's concatenated cache.

Benchmark cells decode with an untied random output head (:func:`untied_head`): with
the random tied embeddings greedy decoding repeats its input token and nothing can flip.
Cells on a checkpoint's trained weights (``--weights``) decode with the model's own tied head. hf cells run
this same decoder on transformers' layers, peft's adapters inside them (:class:`perfsuite.hf.models.HFGPT2`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from perfsuite.adapters import INIT_STD
from perfsuite.cells.grid import DEFAULT_TOKEN_BUDGET, Cell, budget_violation, token_budget
from perfsuite.machine import machine_env
from perfsuite.model import GPT2
from perfsuite.formats.record import STATUS_OUTSIDE_BUDGET, CellRecord, model_dims, not_run
from perfsuite.timing import count_flops, paired_benchmark, peak_memory_bytes
from perfsuite.workloads.models import ModelCache

PROMPT_SEED = 4242  # request i's prompt is drawn from PROMPT_SEED + i: the same requests in every cell
HEAD_SEED = 4343  # the untied output head the cells decode with (see untied_head)


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

    @property
    def output_tokens(self) -> int:
        return self.tokens.numel()

    @property
    def recompute_pct(self) -> float:
        """Recomputed tokens per output token, in % (LLM-42's recompute cost)."""
        return 100.0 * self.recomputed_tokens / self.output_tokens


# --- a ragged forward pass over a preallocated KV cache ------------------------------------------

class _KVBuffer:
    """Keys and values of every layer, (rows, n_head, length, head_dim); slot p holds position p."""

    def __init__(self, model: GPT2, rows: int, length: int):
        cfg, p = model.config, model.wte.weight
        shape = (rows, cfg.n_head, length, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in model.h]
        self.v = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in model.h]


def _forward(model: GPT2, cache: _KVBuffer, idx: torch.Tensor, starts: torch.Tensor, ctx: int,
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


def _prompts(model: GPT2, prompts: Sequence[torch.Tensor] | torch.Tensor, gen_len: int) -> list[torch.Tensor]:
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
    prompts = _prompts(model, prompts, gen_len)
    B, device = len(prompts), prompts[0].device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    longest = max(len(p) for p in prompts)
    cache = _KVBuffer(model, B, longest + gen_len)
    idx = torch.zeros(B, longest, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        idx[b, : len(p)] = p
    logits = _forward(model, cache, idx, torch.zeros(B, dtype=torch.long, device=device), longest, head=head)
    out = torch.empty(B, gen_len, dtype=torch.long, device=device)
    out[:, 0] = logits[torch.arange(B, device=device), lengths - 1].argmax(-1)
    for t in range(1, gen_len):
        logits = _forward(model, cache, out[:, t - 1 : t], lengths + (t - 1), longest + t, head=head)
        out[:, t] = logits[:, -1].argmax(-1)
    return out


def _prefill_fixed(model: GPT2, cache: _KVBuffer, prompts: list[torch.Tensor], schedule: Schedule,
                   head: torch.Tensor | None) -> torch.Tensor:
    """Prompts through the fixed-shape pass, ``window`` tokens per row at a time; returns each first token (B,)."""
    W, device = schedule.window, prompts[0].device
    first = torch.empty(len(prompts), dtype=torch.long, device=device)
    for c in range(0, max(len(p) for p in prompts), W):
        idx = torch.zeros(schedule.rows, W, dtype=torch.long, device=device)
        starts = [schedule.context] * schedule.rows  # rows with nothing to do write past the context
        ends = {}
        for b, p in enumerate(prompts):
            chunk = p[c : c + W]
            if len(chunk):
                idx[b, : len(chunk)] = chunk
                starts[b] = c
                if c + W >= len(p):
                    ends[b] = len(chunk) - 1
        logits = _forward(model, cache, idx, torch.tensor(starts, device=device), schedule.context, head=head)
        for b, j in ends.items():
            first[b] = logits[b, j].argmax(-1)
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
                 head: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: every token from the fixed-shape pass (a request per row, one token each). Slow, exact."""
    prompts = _prompts(model, prompts, gen_len)
    _check_schedule(prompts, gen_len, schedule)
    B, device = len(prompts), prompts[0].device
    cache = _KVBuffer(model, schedule.rows, schedule.context + schedule.window)
    out = torch.empty(B, gen_len, dtype=torch.long, device=device)
    out[:, 0] = _prefill_fixed(model, cache, prompts, schedule, head)
    starts = torch.full((schedule.rows,), schedule.context, device=device)
    starts[:B] = torch.tensor([len(p) for p in prompts], device=device)
    idx = torch.zeros(schedule.rows, schedule.window, dtype=torch.long, device=device)
    for t in range(1, gen_len):
        idx[:B, 0] = out[:, t - 1]
        logits = _forward(model, cache, idx, starts, schedule.context, head=head)
        out[:, t] = logits[:B, 0].argmax(-1)
        starts[:B] += 1
    return out


@torch.inference_mode()
def decode_verified(model: GPT2, prompts: Sequence[torch.Tensor] | torch.Tensor, gen_len: int, schedule: Schedule,
                    *, head: torch.Tensor | None = None, inject: Iterable[tuple[int, int]] = ()) -> VerifiedDecode:
    """Decode–verify–rollback: fast-path windows, each checked by one fixed-shape pass for the whole batch.

    ``inject`` flips the fast path's token at (request, output position) every time it decodes it
    (LLM-42's mismatch injection), to test the rollback and calibrate the cost model. Position 0
    comes from the verified prefill, so positions 1..gen_len-1 can be injected.
    """
    prompts = _prompts(model, prompts, gen_len)
    _check_schedule(prompts, gen_len, schedule)
    B, W, device = len(prompts), schedule.window, prompts[0].device
    inject = set(inject)
    for b, p in inject:
        if not (0 <= b < B and 1 <= p < gen_len):
            raise ValueError(f"cannot inject a mismatch at request {b}, position {p}: "
                             f"need 0 <= request < {B} and 1 <= position < {gen_len}")
    vocab = model.config.vocab_size
    cache = _KVBuffer(model, schedule.rows, schedule.context + W)
    last = _prefill_fixed(model, cache, prompts, schedule, head)  # each request's last verified token
    out: list[list[int]] = [[t] for t in last.tolist()]  # verified output tokens
    verified = [len(p) for p in prompts]  # cache slots holding verified keys/values: prompt + output - 1
    mismatches: list[tuple[int, int]] = []
    recomputed = fast = 0
    passes = -(-max(verified) // W)
    spec = torch.zeros(B, W, dtype=torch.long, device=device)  # this window's fast-path tokens
    while True:
        want = [min(W, gen_len - len(o)) for o in out]  # tokens each request decodes in this window
        if not any(want):
            break
        # 1. Decode: the batch steps together; a request sits out once its window is full.
        for s in range(max(want)):
            active = [b for b in range(B) if want[b] > s]
            prev = last if s == 0 else spec[:, s - 1]
            rows = None if active == list(range(len(active))) else torch.tensor(active, device=device)
            at = slice(0, len(active)) if rows is None else rows
            starts = [verified[b] + s for b in active]
            logits = _forward(model, cache, prev[at][:, None], torch.tensor(starts, device=device),
                              max(starts) + 1, rows, head=head)
            spec[at, s] = logits[:, -1].argmax(-1)
            for b in active:
                if (b, len(out[b]) + s) in inject:
                    spec[b, s] = (spec[b, s] + 1) % vocab
        fast += sum(want)
        # 2. Verify: each window replayed from its request's verified cache, one fixed-shape pass.
        idx = torch.zeros(schedule.rows, W, dtype=torch.long, device=device)
        idx[:B, 0] = last
        idx[:B, 1:] = spec[:, : W - 1]
        idx[:B][torch.arange(W, device=device) >= torch.tensor(want, device=device)[:, None]] = 0
        starts = [verified[b] if want[b] else schedule.context for b in range(B)]
        starts += [schedule.context] * (schedule.rows - B)  # padding rows write past the context
        logits = _forward(model, cache, idx, torch.tensor(starts, device=device), schedule.context, head=head)
        checked = logits[:B].argmax(-1).tolist()
        proposed = spec.tolist()
        passes += 1
        # 3. Rollback: keep the verified token at the first disagreement, drop the rest of the window.
        for b in range(B):
            n = want[b]
            j = next((j for j in range(n) if proposed[b][j] != checked[b][j]), None)
            if j is None:
                out[b] += proposed[b][:n]
                verified[b] += n
            else:
                mismatches.append((b, len(out[b]) + j))
                out[b] += proposed[b][:j] + [checked[b][j]]
                verified[b] += j + 1
                recomputed += n - j - 1
        last = torch.tensor([o[-1] for o in out], device=device)
    return VerifiedDecode(tokens=torch.tensor(out, device=device), mismatch_positions=tuple(mismatches),
                          recomputed_tokens=recomputed, fast_tokens=fast, verify_passes=passes)


# --- the benchmark cell --------------------------------------------------------------------------

def untied_head(model: GPT2, seed: int = HEAD_SEED) -> torch.Tensor:
    """A random output matrix (vocab × n_embd) to decode with instead of the tied embedding.

    With random tied embeddings a token's own embedding dominates its logits, so greedy decoding
    repeats its input (2-3 distinct tokens in 128 on the tiny model) and no rounding difference can
    flip it: every cell would measure 0 %. An independent head makes the decode wander, with near-ties.
    """
    cfg, p = model.config, model.wte.weight
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(cfg.vocab_size, cfg.n_embd, generator=g) * INIT_STD).to(dtype=p.dtype, device=p.device)


def cell_prompts(cell: Cell, vocab_size: int) -> torch.Tensor:
    """The cell's ``batch`` prompts of ``seq_len`` tokens; request i is the same in every cell."""
    rows = [torch.randint(0, vocab_size, (cell.seq_len,), generator=torch.Generator().manual_seed(PROMPT_SEED + i))
            for i in range(cell.batch)]
    return torch.stack(rows).to(cell.device)


def run_recompute_cell(benchmark, cell: Cell, models: ModelCache, *, rounds: int, warmup: int) -> CellRecord:
    """Time decode–verify–rollback with pytest-benchmark, plain decoding interleaved (the paired reference);
    returns its record.

    A cell over its token budget is not run: its record has status ``outside_budget`` and the reason.
    """
    budget = token_budget(cell)
    reason = budget_violation(cell.batch, cell.window, budget)
    if reason:
        return not_run(cell, STATUS_OUTSIDE_BUDGET, reason, token_budget=budget)
    model = models.adapted(cell.model, cell.dtype, cell.device, cell.adapter, cell.rank)
    head = None if models.trained(cell.model) else untied_head(model)  # trained weights decode with their own head
    prompts = cell_prompts(cell, model.config.vocab_size)
    schedule = Schedule(window=cell.window, context=cell.seq_len + cell.gen_len, token_budget=budget)

    def verified() -> VerifiedDecode:
        return decode_verified(model, prompts, cell.gen_len, schedule, head=head)

    def plain() -> torch.Tensor:
        return decode_plain(model, prompts, cell.gen_len, head=head)

    result = verified()
    reference = decode_fixed(model, prompts, cell.gen_len, schedule, head=head)
    plain_tokens = plain()
    peak = peak_memory_bytes(verified, cell.device)
    flops = count_flops(verified)
    timing = paired_benchmark(benchmark, verified, plain, device=cell.device, rounds=rounds, warmup=warmup)
    metrics = {
        "recompute_pct": result.recompute_pct,
        "recomputed_tokens": result.recomputed_tokens,
        "output_tokens": result.output_tokens,
        "fast_tokens": result.fast_tokens,
        "mismatches": len(result.mismatch_positions),
        "mismatch_positions": [list(m) for m in result.mismatch_positions],  # [request, output position]
        "verify_passes": result.verify_passes,
        "token_budget": budget,
        "verify_rows": schedule.rows,
        "matches_fixed_schedule": bool(torch.equal(result.tokens, reference)),
        "plain_differing_tokens": int((plain_tokens != result.tokens).sum()),
        "output_head": "tied" if head is None else "untied",
        "flops": flops,
        "peak_mem_bytes": peak,
    }
    if timing is not None:
        n = result.output_tokens
        metrics |= {
            "time_ms": timing.time_ms,
            "ref_time_ms": timing.ref_time_ms,
            "slowdown_pct": timing.slowdown_pct,  # verified against plain decoding, from paired rounds
            "iqr_pct": timing.iqr_pct,
            "throughput_tok_s": n / (timing.time_ms / 1e3),
            "plain_throughput_tok_s": n / (timing.ref_time_ms / 1e3),
            # plain time / verified time from rounds paired close in time (timing.PairedTiming.pair_ratios)
            "throughput_ratio": statistics.median(1.0 / r for r in timing.pair_ratios),
            "samples_ms": list(timing.adapter_ms),
            "ref_samples_ms": list(timing.ref_ms),
        }
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(model), metrics=metrics)
