"""Recompute workload: a benchmark cell of deterministic decoding (LLM-42, Gond et al. 2026, Fig. 13).

Times :func:`perfsuite.decoding.decode_verified` (decode–verify–rollback) against
:func:`~perfsuite.decoding.decode_plain` in one round-robin loop, and records the recompute cost, the host
syncs per window, the logit margins of the greedy decisions and a check against the fixed-schedule decode.

Benchmark cells decode with an untied random output head (:func:`untied_head`): with
the random tied embeddings greedy decoding repeats its input token and nothing can flip.
Cells on a checkpoint's trained weights (``--weights``) decode with the model's own tied head. hf cells run
this same decoder on transformers' layers, peft's adapters inside them (:class:`perfsuite.hf.models.HFGPT2`).
"""

from __future__ import annotations

import statistics
from collections import Counter

import torch

from perfsuite.adapters import INIT_STD
from perfsuite.cells.grid import Cell, budget_violation, token_budget
from perfsuite.decoding import Schedule, VerifiedDecode, decode_fixed, decode_plain, decode_verified
from perfsuite.formats.record import STATUS_OUTSIDE_BUDGET, CellRecord, model_dims, not_run
from perfsuite.gpu_state import watched
from perfsuite.machine import machine_env
from perfsuite.model import GPT2
from perfsuite.probe import PROBE_KEY, ProbeShape, make_probe
from perfsuite.syncs import count_host_syncs
from perfsuite.paired import PairedTiming
from perfsuite.bench_bridge import record_rounds
from perfsuite.device import count_flops, peak_memory_above, tensor_bytes
from perfsuite.timing import round_robin
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


def observed_decode(decode, device: str) -> tuple[VerifiedDecode, Counter, int, int | None]:
    """One untimed decode observed three ways at once — its host syncs, its FLOPs, the device memory it needs
    above what is resident — instead of a decode for each (a recompute decode is hundreds of forward passes)."""
    out: dict = {}

    def counted() -> None:
        out["syncs"] = count_host_syncs(lambda: out.setdefault("result", decode()))

    def observed() -> None:
        out["flops"] = count_flops(counted)

    peak = peak_memory_above(observed, device)
    return out["result"], out["syncs"], out["flops"], peak


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

    def verified() -> VerifiedDecode:
        return decode_verified(model, prompts, cell.gen_len, schedule, head=head)

    def plain() -> torch.Tensor:
        return decode_plain(model, prompts, cell.gen_len, head=head)

    result, syncs, flops, peak_mem = observed_decode(verified, cell.device)
    margins: list[torch.Tensor] = []
    reference = decode_fixed(model, prompts, cell.gen_len, schedule, head=head, margins=margins)
    plain_tokens = plain()
    probe = make_probe(ProbeShape.of_decode(model.config, cell.batch, cell.gen_len),
                       dtype=model.wte.weight.dtype, device=cell.device)
    loop = {"verified": verified, "plain": plain, PROBE_KEY: probe}  # the probe: see perfsuite.probe
    samples, gpu = watched(lambda: round_robin(loop, device=cell.device, policy=ctx.policy(cell)), ctx.gpu)
    metrics = {
        "recompute_pct": result.recompute_pct,
        "recomputed_tokens": result.recomputed_tokens,
        "output_tokens": result.output_tokens,
        "fast_tokens": result.fast_tokens,
        "mismatches": len(result.mismatch_positions),
        "mismatch_positions": [list(m) for m in result.mismatch_positions],  # [request, output position]
        "verify_passes": result.verify_passes,
        "windows": result.windows,
        "host_syncs": sum(syncs.values()),
        "host_syncs_per_window": sum(syncs.values()) / max(1, result.windows),
        "token_budget": budget,
        "verify_rows": schedule.rows,
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
            # plain decoding in probe times, median of per-round ratios: judged as the cell's norm_time (perfsuite.probe)
            "probe_time_ms": probed.ref_time_ms,
            "norm_time": statistics.median(probed.ratios),
            "probe_samples_ms": list(probed.ref_ms),
            "cycle": len(loop),
        }
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(model), metrics=metrics)
