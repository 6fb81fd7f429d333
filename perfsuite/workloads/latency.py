"""Latency: one inference forward pass of each adapter against the plain model (LoRA paper, Fig. 5).

The cells of one shape (model, dtype, device, batch, sequence length) are a *group*: the plain model and
every adapter of the group are timed together in one round-robin loop (:func:`perfsuite.timing.round_robin`),
so each round has one plain-model measurement that every adapter is paired with — instead of re-timing the
plain model for every cell. The group is measured when its first cell runs; each cell then records its own
rounds. ``lora-merged`` has the plain model's shapes at every rank, so it is timed once per shape and its
rounds serve each rank's cell (``timed_as`` names the cell whose merged model was timed). FLOPs are counted once
per (model, adapter, rank, shape) on the meta device: no arithmetic, no memory (hf models: on one real call).
"""

from __future__ import annotations

import functools
import statistics

import torch

from perfsuite.adapters import adapted_copy, attach
from perfsuite.cells.grid import Cell
from perfsuite.device_time import SOURCE_WALL_CPU, DeviceTimer, host_bound_pct, kernel_sum_ms
from perfsuite.formats.record import STATUS_OOM, STATUS_UNSUPPORTED, CellRecord, model_dims, not_run
from perfsuite.gpu_state import watched
from perfsuite.machine import machine_env
from perfsuite.probe import ProbeShape, make_probe
from perfsuite.syncs import count_host_syncs
from perfsuite.paired import PairedTiming
from perfsuite.bench_bridge import record_rounds
from perfsuite.device import count_flops, peak_memory_above, tensor_bytes
from perfsuite.timing import round_robin
from perfsuite.workloads.context import CellContext, torch_dtype
from perfsuite.workloads.modes import compiled_graphs, mode_context, prepare

BASE = ("none", 0)
PROBE = ("probe", -2)  # the loop's fixed torch probe (perfsuite.probe): times the machine, not the code
ANY_RANK = -1  # in a timing key: the model's rank does not change its shapes (merged LoRA)


def group_key(cell: Cell) -> tuple:
    return cell.impl, cell.model, cell.dtype, cell.device, cell.batch, cell.seq_len, cell.mode


def timing_key(cell: Cell) -> tuple[str, int]:
    """Which timed model a cell's rounds come from: the plain model for r = 0; one merged LoRA per shape, whatever
    its rank (the first cell's, really merged and timed); else the cell's own adapter and rank."""
    if cell.adapter == "none" or cell.rank == 0:
        return BASE
    return (cell.adapter, ANY_RANK) if cell.adapter == "lora-merged" else (cell.adapter, cell.rank)


@functools.lru_cache(maxsize=64)
def _meta_model(config, adapter: str, rank: int, dtype: str):
    from perfsuite.model import GPT2

    with torch.device("meta"):
        m = GPT2(config).to(dtype=torch_dtype(dtype)).eval()
    return attach(adapted_copy(m), adapter, rank) if rank and adapter != "none" else m


def forward_flops(model, adapter: str, rank: int, batch: int, seq_len: int, dtype: str) -> int:
    """FLOPs of one forward pass of the reference model (``model``: a preset name or a GPT2Config):
    FlopCounterMode's count on the meta device (shapes only) at batch 1, times the batch (every counted op —
    matmuls, attention — is linear in it), once per (model, adapter, rank, length)."""
    from perfsuite.model import get_config

    config = get_config(model) if isinstance(model, str) else model
    return batch * _flops_at_batch_1(config, adapter, rank, seq_len, dtype)


@functools.lru_cache(maxsize=1024)
def _flops_at_batch_1(config, adapter: str, rank: int, seq_len: int, dtype: str) -> int:
    m = _meta_model(config, adapter, rank, dtype)
    with torch.inference_mode():
        tokens = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
        return count_flops(lambda: m(tokens))


def measure_group(cell: Cell, ctx: CellContext) -> dict[tuple, dict]:
    """Time the plain model and every adapter of ``cell``'s shape in one loop; per timed model its rounds (ms),
    host syncs, memory, and the GPU state around the loop."""
    members = [c for c in ctx.cells if c.workload == "latency" and group_key(c) == group_key(cell)] or [cell]
    base = ctx.models.base(cell.model, cell.dtype, cell.device)
    gen = torch.Generator().manual_seed(cell.batch * 100_003 + cell.seq_len)
    tokens = torch.randint(0, base.config.vocab_size, (cell.batch, cell.seq_len), generator=gen).to(cell.device)
    models, built_as = {BASE: base}, {BASE: BASE}
    for c in members:
        key = timing_key(c)
        if key not in models:  # built with this member's real adapter and rank
            models[key], built_as[key] = ctx.models.build_adapted(c.model, c.dtype, c.device, c.adapter, c.rank), (
                c.adapter, c.rank)
    forwards = {key: (lambda m=m: m(tokens)) for key, m in models.items()}
    members_text = loop_members_text(models)
    policy = ctx.policy(cell)
    probe = make_probe(ProbeShape.of_forward(base.config, cell.batch, cell.seq_len), dtype=torch_dtype(cell.dtype),
                       device=cell.device)
    with torch.inference_mode(), mode_context(cell.mode):
        extras = {key: {"host_syncs": sum(count_host_syncs(fn).values()), "weights_bytes": tensor_bytes(models[key]),
                        "peak_mem_bytes": peak_memory_above(fn, cell.device),
                        "flops": _flops(cell, *built_as[key], forwards[key], base.config),
                        "built_as": built_as[key]} for key, fn in forwards.items()}
        prepared = prepare(forwards, cell.mode, cell.device)  # compiled or captured here, outside the timed loop
        if BASE in prepared.failed:  # no reference to pair the adapters with: the whole group says why
            return {key: extras[key] | {"unsupported": prepared.failed[BASE]} for key in forwards}
        # the torch probe runs eagerly in every mode: one more member of the loop (perfsuite.probe)
        loop = prepared.forwards | {PROBE: probe}
        timer = DeviceTimer(cell.device, calls_per_fn=policy.warmup + policy.max_rounds + len(loop))
        timed = timer.wrap(loop)
        graphs_before = compiled_graphs()
        samples, gpu = watched(lambda: round_robin(timed, device=cell.device, policy=policy), ctx.gpu)
        recompiles = compiled_graphs() - graphs_before
        device_ms = timer.device_ms(samples)
        kernels = {key: kernel_sum_ms(fn) for key, fn in prepared.forwards.items()} if timer.on_device else {}
    mode_info = {"recompiles_in_loop": recompiles} if cell.mode == "compile" else {}
    out = {}
    for key in forwards:
        if key in prepared.failed:
            out[key] = extras[key] | {"unsupported": prepared.failed[key]}
            continue
        out[key] = extras[key] | gpu | mode_info | {
            "samples_ms": samples[key], "probe_samples_ms": samples[PROBE], "cycle": len(loop), "loop_members": members_text,
            "device_samples_ms": device_ms[key], "device_time_source": timer.source}
        if key in prepared.compile_s:
            out[key]["compile_s"] = prepared.compile_s[key]
        if key in kernels:
            out[key]["kernel_sum_ms"] = kernels[key]
    return out


def loop_members_text(models: dict) -> str:
    """Who shares a group's loop, as its records keep it: each timed model (``adapter-rRANK``; ``-r*`` for one model
    timed for every rank) and the probe. Comparisons judge in-loop ratios only between equal loops."""
    names = [f"{adapter}-r{'*' if rank == ANY_RANK else rank}" for adapter, rank in models]
    return ",".join(sorted(names) + ["probe"])


def _flops(cell: Cell, adapter: str, rank: int, forward, config) -> int:
    """The reference model's FLOPs on the meta device; an hf model's counted on one real call."""
    if cell.impl == "ref":
        return forward_flops(config, adapter, rank, cell.batch, cell.seq_len, cell.dtype)
    return count_flops(forward)


def device_metrics(mine: dict, ref: dict, *, is_base: bool) -> dict:
    """Device time beside wall time (perfsuite.device_time): the median device ms, the share of wall time the
    device sat idle (CUDA only; on the CPU device time is the wall time), and the slow-down on device time."""
    device = PairedTiming(tuple(mine["device_samples_ms"]), tuple(ref["device_samples_ms"]), cycle=mine["cycle"])
    out = {"device_ms": device.time_ms, "device_samples_ms": list(device.adapter_ms)}
    if mine["device_time_source"] != SOURCE_WALL_CPU:
        out["host_bound_pct"] = host_bound_pct(mine["samples_ms"], mine["device_samples_ms"])
    if not is_base:
        out["device_slowdown_pct"] = device.slowdown_pct
    return out


def run_latency_cell(benchmark, cell: Cell, ctx: CellContext) -> CellRecord:
    """The cell's record from its group's loop (measured now if this is the group's first cell)."""
    key = group_key(cell)
    if key not in ctx.shared:
        try:
            ctx.shared[key] = measure_group(cell, ctx)
        except Exception as e:
            from perfsuite.device import is_out_of_memory

            if is_out_of_memory(e):  # the rest of the group must not try again: one OOM, not a cascade
                ctx.shared[key] = str(e).splitlines()[0]
            raise
    group = ctx.shared[key]
    if isinstance(group, str):
        return not_run(cell, STATUS_OOM, f"its shape group ran out of memory: {group}")
    mine, ref = group[timing_key(cell)], group[BASE]
    if "unsupported" in mine:
        return not_run(cell, STATUS_UNSUPPORTED, mine["unsupported"])
    flops = mine["flops"]
    metrics = {"tokens": cell.batch * cell.seq_len, "rounds": len(mine["samples_ms"]),
               **{k: v for k, v in mine.items()
                  if k not in ("samples_ms", "probe_samples_ms", "cycle", "built_as", "device_samples_ms")}}
    if timing_key(cell) != BASE and tuple(mine["built_as"]) != (cell.adapter, cell.rank):
        metrics["timed_as"] = Cell("latency", *mine["built_as"], batch=cell.batch, seq_len=cell.seq_len,
                                   impl=cell.impl, mode=cell.mode).id
    if record_rounds(benchmark, mine["samples_ms"]):
        timing = PairedTiming(tuple(mine["samples_ms"]), tuple(ref["samples_ms"]), cycle=mine["cycle"])
        metrics |= {"time_ms": timing.time_ms, "iqr_pct": timing.iqr_pct, "flops_per_s": flops / (timing.time_ms / 1e3),
                    "samples_ms": list(timing.adapter_ms), "cycle": mine["cycle"]}
        if mine.get("probe_samples_ms"):  # the cell's time in probe times: median of per-round ratios (perfsuite.probe)
            probed = PairedTiming(tuple(mine["samples_ms"]), tuple(mine["probe_samples_ms"]), cycle=mine["cycle"])
            metrics |= {"probe_time_ms": probed.ref_time_ms, "norm_time": statistics.median(probed.ratios),
                        "probe_samples_ms": list(probed.ref_ms)}
        if timing_key(cell) != BASE:  # the plain model is not timed against itself
            metrics |= {"ref_time_ms": timing.ref_time_ms, "slowdown_pct": timing.slowdown_pct,
                        "ref_samples_ms": list(timing.ref_ms)}
        metrics |= device_metrics(mine, ref, is_base=timing_key(cell) == BASE)
    base = ctx.models.base(cell.model, cell.dtype, cell.device)
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(base), metrics=metrics)
