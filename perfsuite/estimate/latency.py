"""A latency night priced step by step as :func:`perfsuite.workloads.latency.measure_group` runs it, per shape
group: the plain model and each adapter built (spectral-r's SVDs once per base weight), FLOPs counted, two untimed
passes per model (host syncs, peak memory), the warm-up and the timed rounds — every model and the probe, in whole
cycles between the profile's floor and ceiling — and on a GPU the blocked device-time loop and one profiler
session with every model once under it."""

from __future__ import annotations

from collections import defaultdict

from perfsuite.cells.grid import Cell, Profile
from perfsuite.estimate.counts import config_of
from perfsuite.estimate.night import Night
from perfsuite.measure.timing import whole_cycles

# On a GPU only, assumed (no GPU was available to measure them; docs/timing.md, "What a grid costs"): a torch.profiler
# session's start, stop and post-processing; CUPTI's first initialisation in a process; each op a forward
# dispatches while the profiler records it (CPU and CUDA activity).
PROFILER_SESSION_S = 1.0
PROFILER_FIRST_S = 3.0
PROFILED_OP_S = 20e-6
# compile mode, assumed: inductor's compilation of one model (the tiny GPT-2 took 2.8 to 26 s on the 2-core VM,
# docs/timing.md, "Execution modes"); graphs mode pays its warm-up calls and one capture per model (counted below).
COMPILE_S = 20.0


def rounds_of(profile: Profile, cell: Cell, cycle: int, rounds: int | None, warmup: int | None
              ) -> tuple[int, int, int]:
    """(floor, ceiling, warm-up) rounds of ``cell``'s loop of ``cycle`` members, in whole cycles as the loop runs."""
    low, high, w = profile.timing(cell)
    if rounds:
        low = high = rounds
    return whole_cycles(low, cycle), whole_cycles(high, cycle), w if warmup is None else warmup


def count_latency(profile: Profile, cells: list[Cell], rounds: int | None = None, warmup: int | None = None):
    """Per shape group: (a cell of the group, the models it times, rounds floor/ceiling, warm-up, cells). The loop
    also times the probe: its cycle is one more than the models."""
    from perfsuite.workloads.latency import group_key, timing_key

    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for c in cells:
        if c.workload == "latency":
            groups[group_key(c)].append(c)
    out = []
    for members in groups.values():
        models = {("none", 0)} | {timing_key(c) for c in members}
        low, high, w = rounds_of(profile, members[0], len(models) + 1, rounds, warmup)
        out.append((members[0], sorted(models), low, high, w, members))
    return out


def probe_s(night: Night, cell: Cell, rows: int, repeats: int = 1) -> float:
    """One call of the loop's probe (perfsuite.measure.probe): per layer a product, a tanh and a product, ``repeats``
    times."""
    cfg = config_of(cell)
    kernels = 3 * cfg.n_layer * repeats
    flops = 4.0 * rows * cfg.n_embd * cfg.n_inner * cfg.n_layer * repeats
    return night.timer(cell).seconds(kernels, kernels, flops)


def price_group(night: Night, cell: Cell, models, low: int, high: int, warmup: int) -> None:
    """One shape group's loop and everything around it (see the module docstring)."""
    from perfsuite.measure.device_time import DEVICE_ROUNDS, HOLD_EXTRA_MS, HOLD_MARGIN

    night.base_model(cell)
    probe = probe_s(night, cell, cell.batch * cell.seq_len)
    device_loop = DEVICE_ROUNDS * ((1 + HOLD_MARGIN) * probe + HOLD_EXTRA_MS / 1e3)
    per_round, profiled = probe, 0.0
    for adapter, rank in models:
        rank = max(rank, 1) if adapter != "none" else 0
        night.adapted_model(cell, adapter, rank)
        night.flop_count(cell, adapter, rank, cell.seq_len)
        forward = night.pass_s(cell, adapter, rank, cell.batch, cell.seq_len, cell.seq_len)
        counted = night.pass_s(cell, adapter, rank, cell.batch, cell.seq_len, cell.seq_len, counted=True)
        night.add("untimed passes (syncs, memory)", counted + forward)
        per_round += forward
        # the blocked device-time loop: each call held by a spin of HOLD_MARGIN × its wall time first
        device_loop += DEVICE_ROUNDS * ((1 + HOLD_MARGIN) * forward + HOLD_EXTRA_MS / 1e3)
        profiled += forward + _profiled_ops(cell, adapter, rank)  # one call under the profiler
    if cell.mode == "graphs":
        from perfsuite.workloads.modes import GRAPH_WARMUP_CALLS

        night.add("compilation and capture", (GRAPH_WARMUP_CALLS + 1) * (per_round - probe))
    elif cell.mode == "compile":
        night.add("compilation and capture", COMPILE_S * len(models))
    night.add("warm-up", warmup * per_round)
    night.add("timed rounds (models and the probe)", low * per_round, high * per_round)
    night.timed(len(models) * low, len(models) * high)
    if cell.device.startswith("cuda"):
        night.add("device time (blocked events)", device_loop)
        first = 0.0 if night.once("profiler") else PROFILER_FIRST_S
        night.add("profiler sessions (kernel sums)", PROFILER_SESSION_S + first + profiled)


def _profiled_ops(cell: Cell, adapter: str, rank: int) -> float:
    from perfsuite.estimate.counts import forward_ops

    return PROFILED_OP_S * forward_ops(config_of(cell), adapter, rank, cell.dtype)[1]
