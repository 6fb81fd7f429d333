"""Latency: one inference forward pass of each adapter against the plain model (LoRA paper, Fig. 5).

The cells of one shape (model, dtype, device, batch, sequence length) are a *group*: the plain model and
every adapter of the group are timed together in one round-robin loop (:func:`perfsuite.measure.timing.round_robin`),
so each round has one plain-model measurement that every adapter is paired with — instead of re-timing the
plain model for every cell. The group is measured when its first cell runs; each cell then records its own
rounds. ``lora-merged`` has the plain model's shapes at every rank, so it is timed once per shape and its
rounds serve each rank's cell (``timed_as`` names the cell whose merged model was timed). FLOPs are counted once
per (model, adapter, rank, shape) on the meta device, a few blocks for the whole model
(:mod:`perfsuite.workloads.counting`): no arithmetic, no memory (hf models: on one real call).

A decode cell (``phase`` "decode") times one decode step of each model against the same KV cache of ``kv_len``
tokens (:mod:`perfsuite.workloads.decode`) instead of a forward over ``seq_len`` tokens; a cell with a quantized
base (``quant``) times the quantized plain model and its adapters (:mod:`perfsuite.workloads.quant`). Each is a
group of its own.
"""

from __future__ import annotations

import dataclasses
import statistics

import torch

from perfsuite.cells.grid import Cell
from perfsuite.measure.device_time import SOURCE_WALL_CPU, DeviceTimer, host_bound_pct, kernel_sums_ms
from perfsuite.formats.record import STATUS_OOM, STATUS_UNSUPPORTED, CellRecord, model_dims, not_run
from perfsuite.measure.gpu_state import watched
from perfsuite.measure.machine import machine_env
from perfsuite.measure.probe import ProbeShape, make_probe
from perfsuite.measure.syncs import count_host_syncs
from perfsuite.measure.paired import PairedTiming
from perfsuite.measure.bench_bridge import record_rounds
from perfsuite.measure.device import count_flops, peak_memory_above, tensor_bytes
from perfsuite.measure.timing import round_robin
from perfsuite.workloads.context import CellContext, torch_dtype
from perfsuite.workloads.counting import forward_flops
from perfsuite.workloads.decode import kv_cache, step_fn
from perfsuite.workloads.modes import CompileFallback, compiled_graphs, mode_context, prepare

BASE = ("none", 0)
PROBE = ("probe", -2)  # the loop's fixed torch probe (perfsuite.measure.probe): times the machine, not the code
ANY_RANK = -1  # in a timing key: the model's rank does not change its shapes (merged LoRA)


def group_key(cell: Cell) -> tuple:
    return (cell.impl, cell.model, cell.dtype, cell.device, cell.batch, cell.seq_len, cell.mode, cell.phase,
            cell.kv_len, cell.quant)


def timing_key(cell: Cell) -> tuple[str, int]:
    """Which timed model a cell's rounds come from: the plain model for r = 0; one merged LoRA per shape, whatever
    its rank (the first cell's, really merged and timed); else the cell's own adapter and rank."""
    if cell.adapter == "none" or cell.rank == 0:
        return BASE
    return (cell.adapter, ANY_RANK) if cell.adapter == "lora-merged" else (cell.adapter, cell.rank)


def measure_group(cell: Cell, ctx: CellContext) -> dict[tuple, dict]:
    """Time the plain model and every adapter of ``cell``'s shape in one loop; per timed model its rounds (ms),
    host syncs, memory, and the GPU state around the loop."""
    members = [c for c in ctx.cells if c.workload == "latency" and group_key(c) == group_key(cell)] or [cell]
    quant = (cell.quant,) if cell.quant != "none" else ()  # the hf cache has no quantized bases (grid: unsupported)
    base = ctx.models.base(cell.model, cell.dtype, cell.device, *quant)
    decode = cell.phase == "decode"
    gen = torch.Generator().manual_seed(cell.batch * 100_003 + (cell.kv_len if decode else cell.seq_len))
    tokens = torch.randint(0, base.config.vocab_size, (cell.batch, 1 if decode else cell.seq_len),
                           generator=gen).to(cell.device)
    models, built_as = {BASE: base}, {BASE: BASE}
    for c in members:
        key = timing_key(c)
        if key not in models:  # built with this member's real adapter and rank
            models[key], built_as[key] = ctx.models.build_adapted(c.model, c.dtype, c.device, c.adapter, c.rank,
                                                                  *quant), (c.adapter, c.rank)
    if decode:
        kv = kv_cache(base, cell.batch, cell.kv_len, dtype=torch_dtype(cell.dtype), device=cell.device)
        forwards = {key: step_fn(m, tokens, kv, cell.kv_len) for key, m in models.items()}
        shape = ProbeShape.of_decode(base.config, cell.batch, 1)
    else:
        forwards = {key: (lambda m=m: m(tokens)) for key, m in models.items()}
        shape = ProbeShape.of_forward(base.config, cell.batch, cell.seq_len)
    members_text = loop_members_text(models)
    policy = ctx.policy(cell)
    probe = make_probe(shape, dtype=torch_dtype(cell.dtype), device=cell.device)
    with torch.inference_mode(), mode_context(cell.mode):
        extras = {key: {"host_syncs": sum(count_host_syncs(fn).values()), "weights_bytes": tensor_bytes(models[key]),
                        "peak_mem_bytes": peak_memory_above(fn, cell.device),
                        "flops": _flops(cell, *built_as[key], forwards[key], base.config),
                        "built_as": built_as[key]} for key, fn in forwards.items()}
        prepared = prepare(forwards, cell.mode, cell.device)  # compiled or captured here, outside the timed loop
        if BASE in prepared.failed:  # no reference to pair the adapters with: the whole group says why
            return {key: extras[key] | {"unsupported": prepared.failed[BASE]} for key in forwards}
        prepared.check_compiled()  # compile mode: every model really compiled, none ran eagerly
        # the torch probe runs eagerly in every mode: one more member of the loop (perfsuite.measure.probe)
        loop = prepared.forwards | {PROBE: probe}
        timer = DeviceTimer(cell.device)
        graphs_before = compiled_graphs()
        samples, gpu = watched(lambda: round_robin(loop, device=cell.device, policy=policy, clock=timer.clock,
                                                   sync=timer.synchronize if timer.on_device else None), ctx.gpu)
        device = timer.measure(loop, samples)  # blocked events after the wall loop (perfsuite.measure.device_time)
        kernels = kernel_sums_ms(prepared.forwards) if timer.on_device else {}  # one profiler session per group
        recompiles = compiled_graphs() - graphs_before
        if cell.mode == "compile":
            prepared.check_compiled()
            if recompiles:
                raise CompileFallback(f"compile mode: dynamo compiled {recompiles} graph(s) during the timed loop "
                                      "of this shape group; its cells are not compiled timings")
        compile_s = dict(prepared.compile_s)
        prepared.release()  # graphs mode: the group's graphs and their pool freed before the next group
    mode_info = {"recompiles_in_loop": recompiles} if cell.mode == "compile" else {}
    out = {}
    for key in forwards:
        if key in prepared.failed:
            out[key] = extras[key] | {"unsupported": prepared.failed[key]}
            continue
        out[key] = extras[key] | gpu | mode_info | {
            "samples_ms": samples[key], "probe_samples_ms": samples[PROBE], "cycle": len(loop), "loop_members": members_text,
            "device_samples_ms": device[key].samples_ms, "device_time_source": timer.source}
        if timer.on_device:
            out[key] |= {"device_hold_ms": device[key].hold_ms, "device_rounds_uncovered": device[key].uncovered}
        if key in compile_s:
            out[key]["compile_s"] = compile_s[key]
        if key in kernels:
            out[key]["kernel_sum_ms"] = kernels[key]
    return out


def loop_members_text(models: dict) -> str:
    """Who shares a group's loop, as its records keep it: each timed model (``adapter-rRANK``; ``-r*`` for one model
    timed for every rank) and the probe. Comparisons judge in-loop ratios only between equal loops."""
    names = [f"{adapter}-r{'*' if rank == ANY_RANK else rank}" for adapter, rank in models]
    return ",".join(sorted(names) + ["probe"])


def _flops(cell: Cell, adapter: str, rank: int, forward, config) -> int:
    """The reference model's FLOPs on the meta device; an hf model's, a decode step's and a quantized base's
    counted on one real call."""
    if cell.impl == "ref" and cell.phase == "prefill" and cell.quant == "none":
        return forward_flops(config, adapter, rank, cell.batch, cell.seq_len, cell.dtype)
    return count_flops(forward)


def device_metrics(mine: dict, ref: dict, *, is_base: bool) -> dict:
    """Device time beside wall time (perfsuite.measure.device_time): the median device ms, the share of wall time the
    device sat idle (CUDA only; on the CPU device time is the wall time), and the slow-down on device time (the
    blocked rounds paired round by round; on the CPU the wall loop's, cycle by cycle)."""
    cycle = mine["cycle"] if mine["device_time_source"] == SOURCE_WALL_CPU else 1
    device = PairedTiming(tuple(mine["device_samples_ms"]), tuple(ref["device_samples_ms"]), cycle=cycle)
    out = {"device_ms": device.time_ms, "device_samples_ms": list(device.adapter_ms)}
    if mine["device_time_source"] != SOURCE_WALL_CPU:
        out["host_bound_pct"] = host_bound_pct(mine["samples_ms"], mine["device_samples_ms"])
    if not is_base:
        out["device_slowdown_pct"] = device.slowdown_pct
    return out


def run_latency_cell(benchmark, cell: Cell, ctx: CellContext) -> CellRecord:
    """The cell's record from its group's loop (measured now if this is the group's first cell)."""
    key = group_key(cell)
    try:
        group = ctx.group(key, lambda: measure_group(cell, ctx))
    except CompileFallback as e:  # every cell of the group fails with it, without compiling again
        ctx.shared[key] = e
        raise
    if isinstance(group, CompileFallback):
        raise CompileFallback(str(group))
    if isinstance(group, str):
        return not_run(cell, STATUS_OOM, f"its shape group ran out of memory: {group}")
    mine, ref = group[timing_key(cell)], group[BASE]
    if "unsupported" in mine:
        return not_run(cell, STATUS_UNSUPPORTED, mine["unsupported"])
    flops = mine["flops"]
    metrics = {"tokens": cell.batch * (1 if cell.phase == "decode" else cell.seq_len), "rounds": len(mine["samples_ms"]),
               **{k: v for k, v in mine.items()
                  if k not in ("samples_ms", "probe_samples_ms", "cycle", "built_as", "device_samples_ms")}}
    if timing_key(cell) != BASE and tuple(mine["built_as"]) != (cell.adapter, cell.rank):
        adapter, rank = mine["built_as"]
        metrics["timed_as"] = dataclasses.replace(cell, adapter=adapter, rank=rank, dtype="float32", device="cpu",
                                                  model="tiny").id  # the id: its dtype, device, model are not in it
    if record_rounds(benchmark, mine["samples_ms"]):
        timing = PairedTiming(tuple(mine["samples_ms"]), tuple(ref["samples_ms"]), cycle=mine["cycle"])
        metrics |= {"time_ms": timing.time_ms, "iqr_pct": timing.iqr_pct, "flops_per_s": flops / (timing.time_ms / 1e3),
                    "samples_ms": list(timing.adapter_ms), "cycle": mine["cycle"]}
        if mine.get("probe_samples_ms"):  # the cell's time in probe times: median of per-round ratios (perfsuite.measure.probe)
            probed = PairedTiming(tuple(mine["samples_ms"]), tuple(mine["probe_samples_ms"]), cycle=mine["cycle"])
            metrics |= {"probe_time_ms": probed.ref_time_ms, "norm_time": statistics.median(probed.ratios),
                        "probe_samples_ms": list(probed.ref_ms)}
        if timing_key(cell) != BASE:  # the plain model is not timed against itself
            metrics |= {"ref_time_ms": timing.ref_time_ms, "slowdown_pct": timing.slowdown_pct,
                        "ref_samples_ms": list(timing.ref_ms)}
        metrics |= device_metrics(mine, ref, is_base=timing_key(cell) == BASE)
    base = ctx.models.base(cell.model, cell.dtype, cell.device, *((cell.quant,) if cell.quant != "none" else ()))
    return CellRecord(cell, env=machine_env(cell.device), model_dims=model_dims(base), metrics=metrics)
