"""Serving: a batch whose requests each use their own LoRA, as multi-LoRA servers batch them (S-LoRA, Punica,
vLLM), against the plain model and the single-adapter batch.

The cells of one shape (implementation, model, dtype, device, batch, phase and its length, quantized base) are a
group, timed in one round-robin loop (:func:`perfsuite.measure.timing.round_robin`, as the latency workload does): the
plain model (r = 0), and per method every (K, order, ranks) of the group — the K = 1 batch of each method always
among them, since every mixed batch is also reported against it — and the fixed torch probe. Each member is a
function of nothing: it points the model's :class:`~perfsuite.workloads.mixed.Assignment` at its batch's adapters
(a Python assignment) and calls the model on the group's tokens (a prefill of ``seq_len`` tokens, or one decode
step against the group's KV cache of ``kv_len``: :mod:`perfsuite.workloads.decode`).

Correctness first: before anything is timed, each member's logits are checked, row by row, against the
per-request reference — that row alone through its own adapter's ordinary single-adapter model (perfsuite's
``LoRAQKV``, or peft with only that adapter active) — within a tolerance of the dtype; and each adapter must move
the logits by more than that tolerance (``adapter_effect``), so the check could fail. A member that differs is not
timed and its cell fails with the error (:class:`MixedBatchMismatch`).

A cell records its slow-down against the plain model of the same rounds (``slowdown_pct``, ``ref_samples_ms``:
what verdicts, history and A/B judge, as for latency cells) and against its method's K = 1 batch
(``slowdown_vs_k1_pct``).
"""

from __future__ import annotations

import dataclasses
import statistics

import torch

from perfsuite.measure.bench_bridge import record_rounds
from perfsuite.cells.grid import Cell
from perfsuite.measure.device import count_flops, peak_memory_above, tensor_bytes
from perfsuite.formats.record import STATUS_OOM, CellRecord, model_dims, not_run
from perfsuite.measure.gpu_state import watched
from perfsuite.measure.machine import machine_env
from perfsuite.measure.paired import PairedTiming
from perfsuite.measure.probe import ProbeShape, make_probe
from perfsuite.measure.syncs import count_host_syncs
from perfsuite.measure.timing import round_robin
from perfsuite.workloads.context import CellContext, torch_dtype
from perfsuite.workloads.decode import hf_call, kv_cache, position_of, n_positions, reference_step, rows_of
from perfsuite.workloads.mixed import adapter_ranks, mixed_model, row_adapters, single_adapters

PLAIN = ("none",)
PROBE = ("probe",)
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}  # × max(1, |reference logits|)
MIN_EFFECT_OVER_TOLERANCE = 3.0  # an adapter must move the logits this many tolerances: else the check is blind
ADAPTER_SEED = 1  # adapter k of a bank from seed ADAPTER_SEED + k (the model cache's seed added)


class MixedBatchMismatch(AssertionError):
    """A mixed batch's output differs from its per-request reference (or the check could not have failed)."""


def group_key(cell: Cell) -> tuple:
    return (cell.impl, cell.model, cell.dtype, cell.device, cell.batch, cell.seq_len, cell.mode, cell.phase,
            cell.kv_len, cell.quant)


def member_key(cell: Cell) -> tuple:
    """Which member of its group's loop a cell's rounds come from."""
    if cell.adapter == "none" or cell.rank == 0:
        return PLAIN
    return cell.method, cell.n_adapters, cell.order, cell.rank, cell.rank_mix


def k1_of(cell: Cell) -> Cell:
    """The single-adapter batch of ``cell``'s method and rank: the reference a mixed batch is also reported against."""
    return dataclasses.replace(cell, n_adapters=1, order="grouped", rank_mix=None)


@dataclasses.dataclass
class Inputs:
    """The group's requests: tokens (B, T) or (B, 1), and for a decode step the cache and the new token's position."""

    tokens: torch.Tensor
    kv: list | None = None
    position: torch.Tensor | None = None

    def rows(self, i: int) -> "Inputs":
        return Inputs(self.tokens[i:i + 1], None if self.kv is None else rows_of(self.kv, slice(i, i + 1)),
                      self.position)


def make_inputs(cell: Cell, base) -> Inputs:
    decode = cell.phase == "decode"
    gen = torch.Generator().manual_seed(cell.batch * 100_003 + (cell.kv_len if decode else cell.seq_len))
    vocab = base.config.vocab_size
    tokens = torch.randint(0, vocab, (cell.batch, 1 if decode else cell.seq_len), generator=gen).to(cell.device)
    if not decode:
        return Inputs(tokens)
    kv = kv_cache(base, cell.batch, cell.kv_len, dtype=torch_dtype(cell.dtype), device=cell.device)
    position = torch.tensor([position_of(cell.kv_len, n_positions(base))], device=cell.device)
    return Inputs(tokens, kv, position)


def logits(model, inputs: Inputs, **kwargs) -> torch.Tensor:
    """Logits of one call: perfsuite's GPT2 (a forward, or a decode step) or a transformers model (``model.model``
    of the hf wrappers, or a PeftModel; ``kwargs``: ``adapter_names``)."""
    from perfsuite.hf.facade import ModelFacade
    from perfsuite.models.model import GPT2

    if isinstance(model, GPT2):
        if inputs.kv is None:
            return model(inputs.tokens)[0]
        return reference_step(model, inputs.tokens, inputs.kv, inputs.position)
    # the hf wrappers hold the transformers model in .model; a PeftModel is called itself (its own .model, the
    # LoraModel, would pass adapter_names on to transformers, which ignores unknown keywords)
    core = model.model if isinstance(model, ModelFacade) else model
    return hf_call(core, inputs.tokens, inputs.kv, None if inputs.position is None else inputs.position.view(1, 1),
                   **kwargs)


class Bank:
    """K adapters of one rank mix on the group's base, for one method: the mixed-batch call of any assignment of
    them, and each adapter's per-request reference."""

    def __init__(self, method: str, base, ranks: list[int], seed: int, device: str):
        self.method, self.ranks, self.device = method, ranks, device
        self._refs: dict[tuple[int, int], torch.Tensor] = {}
        if method == "peft":
            from perfsuite.hf.mixed import peft_bank

            self.model = peft_bank(base.model, ranks, seed)
        else:
            self.singles = single_adapters(base, ranks, seed)
            self.model, self.assignment = mixed_model(base, self.singles, method)

    def call(self, ids: list[int], inputs: Inputs):
        """The mixed batch whose row i uses adapter ``ids[i]``, as a function of nothing."""
        if self.method == "peft":
            from perfsuite.hf.mixed import names_of

            names = names_of(ids)
            return lambda: logits(self.model, inputs, adapter_names=names)
        index = torch.tensor(ids, device=self.device)

        def call():
            self.assignment.set(index, ids)
            return logits(self.model, inputs)

        return call

    def reference(self, k: int, row: int, inputs: Inputs) -> torch.Tensor:
        """Request ``row`` alone through adapter ``k`` alone (cached: rows and adapters recur across members)."""
        if (k, row) not in self._refs:
            if self.method == "peft":
                from perfsuite.hf.mixed import single

                self._refs[k, row] = logits(single(self.model, k), inputs.rows(row))
            else:
                self._refs[k, row] = logits(self.singles[k], inputs.rows(row))
        return self._refs[k, row]


def check(call, bank: Bank, ids: list[int], inputs: Inputs, plain_rows: torch.Tensor, dtype: str) -> dict:
    """The mixed batch's logits row by row against the per-request reference; raises MixedBatchMismatch."""
    out = call().float()
    refs = torch.cat([bank.reference(k, i, inputs) for i, k in enumerate(ids)]).float()
    tol = TOLERANCE[dtype] * max(1.0, float(refs.abs().max()))
    err = float((out - refs).abs().max())
    effect = float((refs - plain_rows.float()).abs().amax(dim=tuple(range(1, refs.dim()))).min())
    if not err <= tol:
        raise MixedBatchMismatch(f"mixed batch differs from the per-request reference: max |Δ logit| = {err:.3g} "
                                 f"> tolerance {tol:.3g}")
    if effect < MIN_EFFECT_OVER_TOLERANCE * tol:
        raise MixedBatchMismatch(f"an adapter moves the logits by {effect:.3g} only, under {MIN_EFFECT_OVER_TOLERANCE:g}"
                                 f" × the tolerance {tol:.3g}: the check could not tell adapters apart")
    return {"max_abs_err": err, "check_tolerance": tol, "adapter_effect": effect, "checked_rows": len(ids),
            "matches_per_request": True}


def measure_group(cell: Cell, ctx: CellContext) -> dict[tuple, dict]:
    """Check, then time, the plain model and every mixed batch of ``cell``'s shape in one loop."""
    cells = [c for c in ctx.cells if c.workload == "serving" and group_key(c) == group_key(cell)] or [cell]
    members = {member_key(c): c for c in cells}
    for c in cells:  # each method's K = 1 batch is timed too: every mixed batch is reported against it
        if member_key(c) != PLAIN:
            members.setdefault(member_key(k1_of(c)), k1_of(c))
    quant = (cell.quant,) if cell.quant != "none" else ()
    base = ctx.models.base(cell.model, cell.dtype, cell.device, *quant)
    inputs = make_inputs(cell, base)
    with torch.inference_mode():
        plain = lambda: logits(base, inputs)  # noqa: E731
        plain_out = plain()
        banks: dict[tuple, Bank] = {}
        forwards, out = {PLAIN: plain}, {PLAIN: {"bank_ranks": []}}
        for key, c in sorted(members.items(), key=lambda kv: str(kv[0])):
            if key == PLAIN:
                continue
            size = max(m.n_adapters for m in members.values() if member_key(m) != PLAIN
                       and (m.method, m.rank, m.rank_mix) == (c.method, c.rank, c.rank_mix))
            bank_key = (c.method, c.rank, c.rank_mix)
            if bank_key not in banks:
                banks[bank_key] = Bank(c.method, base, adapter_ranks(c.rank, size, c.rank_mix),
                                       _seed(ctx.models) + ADAPTER_SEED, cell.device)
            bank = banks[bank_key]
            ids = row_adapters(c.batch, c.n_adapters, c.order)
            forwards[key] = bank.call(ids, inputs)
            try:
                out[key] = check(forwards[key], bank, ids, inputs, plain_out, c.dtype)
            except MixedBatchMismatch as e:
                del forwards[key]
                out[key] = {"mismatch": str(e)}
                continue
            out[key] |= {"bank_ranks": bank.ranks, "adapter_ranks": sorted({bank.ranks[k] for k in ids}),
                         "rows_per_adapter": max(ids.count(k) for k in set(ids))}
        for key, fn in forwards.items():
            weights = tensor_bytes(banks[key[0], key[3], key[4]].model) if key != PLAIN else tensor_bytes(
                getattr(base, "model", base))
            out[key] |= {"host_syncs": sum(count_host_syncs(fn).values()), "flops": count_flops(fn),
                         "weights_bytes": weights, "peak_mem_bytes": peak_memory_above(fn, cell.device)}
        config = base.config
        probe = make_probe(ProbeShape.of_decode(config, cell.batch, 1) if inputs.kv is not None
                           else ProbeShape.of_forward(config, cell.batch, cell.seq_len),
                           dtype=torch_dtype(cell.dtype), device=cell.device)
        loop = forwards | {PROBE: probe}
        samples, gpu = watched(lambda: round_robin(loop, device=cell.device, policy=ctx.policy(cell)), ctx.gpu)
    members_text = ",".join(sorted(_member_name(k) for k in forwards) + ["probe"])  # who shared the loop
    for key in forwards:
        out[key] |= gpu | {"samples_ms": samples[key], "probe_samples_ms": samples[PROBE], "cycle": len(loop),
                           "loop_members": members_text}
    return out


def _member_name(key: tuple) -> str:
    """A loop member as its records name it: ``none``, or ``gathered-K4-shuffled-r8`` (``-hetero``)."""
    if key == PLAIN:
        return "none"
    method, k, order, rank, mix = key
    return f"{method}-K{k}-{order}-r{rank}" + (f"-{mix}" if mix else "")


def run_serving_cell(benchmark, cell: Cell, ctx: CellContext) -> CellRecord:
    """The cell's record from its group's loop (measured now if this is the group's first cell)."""
    group = ctx.group(group_key(cell), lambda: measure_group(cell, ctx))
    if isinstance(group, str):
        return not_run(cell, STATUS_OOM, f"its shape group ran out of memory: {group}")
    mine, ref = group[member_key(cell)], group[PLAIN]
    if "mismatch" in mine:
        benchmark.skipped = True  # failed before timing: pytest-benchmark must not add "fixture not used"
        raise MixedBatchMismatch(f"{cell.id}: {mine['mismatch']}")
    tokens = cell.batch * (1 if cell.phase == "decode" else cell.seq_len)
    metrics = {"requests": cell.batch, "tokens": tokens, "rounds": len(mine["samples_ms"]),
               **{k: v for k, v in mine.items() if k not in ("samples_ms", "probe_samples_ms", "cycle")}}
    if cell.quant != "none":
        from perfsuite.workloads.quant import library_version

        metrics["quant_library"] = library_version(cell.quant)
    if record_rounds(benchmark, mine["samples_ms"]):
        timing = PairedTiming(tuple(mine["samples_ms"]), tuple(ref["samples_ms"]), cycle=mine["cycle"])
        probed = PairedTiming(tuple(mine["samples_ms"]), tuple(mine["probe_samples_ms"]), cycle=mine["cycle"])
        metrics |= {"time_ms": timing.time_ms, "iqr_pct": timing.iqr_pct, "samples_ms": list(timing.adapter_ms),
                    "cycle": mine["cycle"], "flops_per_s": mine["flops"] / (timing.time_ms / 1e3),
                    "probe_time_ms": probed.ref_time_ms, "norm_time": statistics.median(probed.ratios),
                    "probe_samples_ms": list(probed.ref_ms)}
        if member_key(cell) != PLAIN:  # the plain model is not timed against itself
            metrics |= {"ref_time_ms": timing.ref_time_ms, "slowdown_pct": timing.slowdown_pct,
                        "ref_samples_ms": list(timing.ref_ms), "reference_cell": _plain_id(cell)}
            k1 = group.get(member_key(k1_of(cell)), {})
            if "samples_ms" in k1:
                vs_k1 = PairedTiming(tuple(mine["samples_ms"]), tuple(k1["samples_ms"]), cycle=mine["cycle"])
                metrics |= {"k1_time_ms": vs_k1.ref_time_ms, "slowdown_vs_k1_pct": vs_k1.slowdown_pct,
                            "k1_cell": k1_of(cell).id}
    base = ctx.models.base(cell.model, cell.dtype, cell.device, *((cell.quant,) if cell.quant != "none" else ()))
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(base), metrics=metrics)


def _seed(models) -> int:
    """The session's seed, from the reference model cache or its hf twin's (``ref``)."""
    return models.seed if hasattr(models, "seed") else models.ref.seed


def _plain_id(cell: Cell) -> str:
    return dataclasses.replace(cell, adapter="none", rank=0, method=None, n_adapters=None, order=None,
                               rank_mix=None).id
