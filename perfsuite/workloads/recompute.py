"""Recompute workload: a benchmark cell of deterministic decoding (LLM-42, Gond et al. 2026, Fig. 13).

Times :func:`perfsuite.models.decoding.decode_verified` (decode–verify–rollback) against
:func:`~perfsuite.models.decoding.decode_plain` in one round-robin loop, and records the recompute cost, the mismatch
rate that drives it (``mismatch_rate``: rollbacks per fast-path decision checked, what the cost model prices
rollbacks from), the host syncs per window, the logit margins of the greedy decisions, the attention backend the
decoder ran on (``sdpa_backend``), whether the verified tokens equal the fixed-schedule decode's
(``matches_fixed_schedule``: recorded, not asserted — on a GPU a token in column 0 of one pass and column j of
another may reduce differently, and near-ties flip) and whether two verified decodes of the cell gave the same
tokens (``verified_repeatable``: the determinism LLM-42 promises, asserted by the benchmark).

What is observed besides the timing is bounded: the host syncs are counted on a decode cut to two windows (the
count per window is the claim), the FLOPs are counted on one pass of each shape and multiplied by the passes the
decode made (every pass of a shape attends to the same key slots, so this is exact), and the peak memory is read
on one plain, uncounted decode — not a whole 512-token decode under a Python dispatch mode.

Benchmark cells decode with an untied random output head (:func:`untied_head`): with
the random tied embeddings greedy decoding repeats its input token and nothing can flip.
Cells on a checkpoint's trained weights (``--weights``) decode with the model's own tied head. hf cells run
this same decoder on transformers' layers, peft's adapters inside them (:class:`perfsuite.hf.models.HFGPT2`).
"""

from __future__ import annotations

import statistics
from collections import Counter

import torch

from perfsuite.models.adapters import INIT_STD
from perfsuite.models.attention import decoder_attention, decoder_backend
from perfsuite.cells.grid import Cell, budget_violation, token_budget
from perfsuite.models.decoding import (KVBuffer, Schedule, VerifiedDecode, decode_fixed, decode_plain, decode_verified,
                                ragged_forward)
from perfsuite.formats.record import STATUS_OUTSIDE_BUDGET, CellRecord, model_dims, not_run
from perfsuite.measure.gpu_state import watched
from perfsuite.measure.machine import machine_env
from perfsuite.models.model import GPT2
from perfsuite.measure.probe import PROBE_KEY, ProbeShape, make_probe
from perfsuite.measure.syncs import count_host_syncs
from perfsuite.measure.paired import PairedTiming
from perfsuite.measure.bench_bridge import record_rounds
from perfsuite.measure.device import count_flops, peak_memory_above, tensor_bytes
from perfsuite.measure.timing import round_robin
from perfsuite.workloads.context import CellContext

PROMPT_SEED = 4242  # request i's prompt is drawn from PROMPT_SEED + i: the same requests in every cell
HEAD_SEED = 4343  # the untied output head the cells decode with (see untied_head)


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


def margin_stats(margins: list[torch.Tensor]) -> dict:
    """Quantiles of the top-1 − top-2 logit margins of the greedy decisions, and how many were exact ties."""
    m = torch.cat(margins).float().cpu() if margins else torch.zeros(0)
    if not m.numel():
        return {"margin_p1": None, "margin_p10": None, "margin_p50": None, "exact_ties": 0, "decisions": 0}
    q = torch.quantile(m, torch.tensor([0.01, 0.10, 0.50])).tolist()
    return {"margin_p1": q[0], "margin_p10": q[1], "margin_p50": q[2], "exact_ties": int((m == 0).sum()),
            "decisions": int(m.numel())}


OBSERVED_WINDOWS = 2  # the host syncs are counted on a decode cut to this many windows


def syncs_per_window(decode_cut) -> tuple[Counter, int]:
    """Host syncs of one decode cut to a few windows (``decode_cut()`` returns its VerifiedDecode), and its
    windows: the claim is one read-back per window, which a few windows show as well as hundreds."""
    out: dict = {}
    syncs = count_host_syncs(lambda: out.setdefault("result", decode_cut()))
    return syncs, out["result"].windows


def decode_flops(model, schedule: Schedule, batch: int, result: VerifiedDecode, head=None) -> int:
    """FLOPs of the verified decode ``result``: one fixed-shape pass (rows × window over the context; the prefill
    chunks have that shape too) counted once, times its passes, plus one fast-path step (batch × 1 over the
    context) counted once, times the steps the decode took. Each pass of a shape attends to the same key slots,
    so the product is the count of the whole decode (tests/unit/test_recompute.py checks it against one)."""
    device = model.wte.weight.device
    cache = KVBuffer(model, schedule.rows, schedule.context + schedule.window)

    def one(rows: int, tokens: int) -> int:
        idx = torch.zeros(rows, tokens, dtype=torch.long, device=device)
        starts = torch.zeros(rows, dtype=torch.long, device=device)
        with torch.inference_mode(), decoder_attention(device):
            return count_flops(lambda: ragged_forward(model, cache, idx, starts, schedule.context, head=head))

    return result.verify_passes * one(schedule.rows, schedule.window) + result.steps * one(batch, 1)


def mismatch_rate(result: VerifiedDecode, batch: int) -> float | None:
    """Rollbacks per fast-path decision the verification checked: every accepted token was checked (the one that
    disagreed included) and every request's first token came from the prefill, so the checked decisions are
    output tokens − batch. The cost model prices rollbacks from this rate (perfsuite.workloads.rollbacks)."""
    checked = result.output_tokens - batch
    return len(result.mismatch_positions) / checked if checked > 0 else None


def run_recompute_cell(benchmark, cell: Cell, ctx: CellContext) -> CellRecord:
    """Time decode–verify–rollback against plain decoding in one loop; returns the cell's record.

    A cell over its token budget is not run: its record has status ``outside_budget`` and the reason.
    """
    budget = token_budget(cell)
    reason = budget_violation(cell.batch, cell.window, budget)
    if reason:
        return not_run(cell, STATUS_OUTSIDE_BUDGET, reason, token_budget=budget)
    model = ctx.models.adapted(cell.model, cell.dtype, cell.device, cell.adapter, cell.rank)
    head = None if ctx.models.trained(cell.model) else untied_head(model)  # trained weights decode with their own
    prompts = cell_prompts(cell, model.config.vocab_size)
    schedule = Schedule(window=cell.window, context=cell.seq_len + cell.gen_len, token_budget=budget)

    last: dict[str, torch.Tensor] = {}  # the tokens of the latest timed decodes: repeatable run to run?

    def verified() -> VerifiedDecode:
        out = decode_verified(model, prompts, cell.gen_len, schedule, head=head)
        last["verified"] = out.tokens
        return out

    def plain() -> torch.Tensor:
        last["plain"] = decode_plain(model, prompts, cell.gen_len, head=head)
        return last["plain"]

    results: list[VerifiedDecode] = []
    peak_mem = peak_memory_above(lambda: results.append(verified()), cell.device)
    result = results[0]
    syncs, observed_windows = syncs_per_window(lambda: decode_verified(
        model, prompts, cell.gen_len, schedule, head=head, max_windows=OBSERVED_WINDOWS))
    flops = decode_flops(model, schedule, cell.batch, result, head)
    margins: list[torch.Tensor] = []
    reference = decode_fixed(model, prompts, cell.gen_len, schedule, head=head, margins=margins)
    plain_tokens = plain()
    probe = make_probe(ProbeShape.of_decode(model.config, cell.batch, cell.gen_len),
                       dtype=model.wte.weight.dtype, device=cell.device)
    loop = {"verified": verified, "plain": plain, PROBE_KEY: probe}  # the probe: see perfsuite.measure.probe
    samples, gpu = watched(lambda: round_robin(loop, device=cell.device, policy=ctx.policy(cell)), ctx.gpu)
    metrics = {
        "recompute_pct": result.recompute_pct,
        "recomputed_tokens": result.recomputed_tokens,
        "output_tokens": result.output_tokens,
        "fast_tokens": result.fast_tokens,
        "mismatches": len(result.mismatch_positions),
        "mismatch_positions": [list(m) for m in result.mismatch_positions],  # [request, output position]
        "mismatch_rate": mismatch_rate(result, cell.batch),
        "verify_passes": result.verify_passes,
        "windows": result.windows,
        "decode_steps": result.steps,
        "host_syncs": sum(syncs.values()),  # of the decode cut to observed_windows windows
        "observed_windows": observed_windows,
        "host_syncs_per_window": sum(syncs.values()) / max(1, observed_windows),
        "token_budget": budget,
        "verify_rows": schedule.rows,
        "sdpa_backend": decoder_backend(model, cell.batch, 1, schedule.context),  # the fast path's steps
        "sdpa_backend_verify": decoder_backend(model, schedule.rows, schedule.window, schedule.context),
        # recorded, not asserted: equal by construction in exact arithmetic, not always bit for bit on a GPU
        "matches_fixed_schedule": bool(torch.equal(result.tokens, reference)),
        "plain_differing_tokens": int((plain_tokens != result.tokens).sum()),
        "output_head": "tied" if head is None else "untied",
        "argmax_dtype": "float32",  # each greedy argmax runs over the logits cast to fp32 ...
        "logits_dtype": str(model.wte.weight.dtype if head is None else head.dtype).removeprefix("torch."),  # ... of
        # the head's output in this dtype: values tied there stay tied in fp32
        **margin_stats(margins),
        "flops": flops,
        "weights_bytes": tensor_bytes(model) + (0 if head is None else head.numel() * head.element_size()),
        "peak_mem_bytes": peak_mem,
        "rounds": len(samples["verified"]),
        # two verified decodes of the same requests, the same tokens (the first decode and the last timed one)
        "verified_repeatable": bool(torch.equal(result.tokens, last["verified"])),
        "plain_repeatable": bool(torch.equal(plain_tokens, last["plain"])),
        **gpu,
    }
    if record_rounds(benchmark, samples["verified"]):
        timing = PairedTiming(tuple(samples["verified"]), tuple(samples["plain"]), cycle=len(loop))
        probed = PairedTiming(tuple(samples["plain"]), tuple(samples[PROBE_KEY]), cycle=len(loop))
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
            # plain decoding in probe times, median of per-round ratios: judged as the cell's norm_time (perfsuite.measure.probe)
            "probe_time_ms": probed.ref_time_ms,
            "norm_time": statistics.median(probed.ratios),
            "probe_samples_ms": list(probed.ref_ms),
            "cycle": len(loop),
        }
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(model), metrics=metrics)
