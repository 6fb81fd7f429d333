"""What a selection of cells will cost before it runs: timed forward passes, and expected wall time.

Counts follow the loops the workloads run: a latency shape group times its plain model and each distinct
adapter model once per round, in whole rotations, between the profile's floor and ceiling of rounds (the
adaptive stop lands in between), plus two untimed passes per model (host syncs, memory). The per-cell
design it replaced re-timed the plain model for every cell at a fixed round count (the same as today's ceiling:
100 for ``paper``); both are printed. Subspace cells (training dominates) are not estimated.

Time per forward pass, ``t = floor + work / speed``, comes from one of two models:
  probe     on the device cells run on: the plain model's forward timed at a small and a large token count,
            a line fitted through them (work: tokens × the adapter's FLOPs over the plain model's);
  analytic  for a GPU this machine does not have: ``floor`` = kernel launches × ``launch_us`` (eager PyTorch
            issues about LAUNCHES_PER_LAYER per transformer block), ``work / speed`` = FLOPs (counted on the meta
            device) / ``tflops`` sustained. For an H100 in fp16 the defaults are 400 TFLOP/s sustained (about
            40 % of its 989 dense peak, what large fp16 matmuls in eager PyTorch reach) and 8 µs a launch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from perfsuite.cells.grid import Cell, Profile, budget_violation, token_budget

LAUNCHES_PER_LAYER = 25  # kernels of one eager GPT-2 block: 2 layer norms, 4 matmuls, attention, GELU, adds, views
H100_FP16_TFLOPS = 400.0
LAUNCH_US = 8.0


@dataclass(frozen=True)
class Estimate:
    forwards_min: int  # timed forward passes at the floor of rounds
    forwards_max: int  # ... at the ceiling
    forwards_per_cell_design: int  # the old design: every cell re-timed the plain model, fixed rounds
    seconds_min: float
    seconds_max: float
    groups: int
    how: str  # how time per forward was obtained


def _rounds(profile: Profile, cell: Cell, cycle: int, rounds: int | None, warmup: int | None) -> tuple[int, int, int]:
    low, high, w = profile.timing(cell)
    if rounds:
        low = high = rounds
    whole = lambda n: -(-n // cycle) * cycle  # noqa: E731 — loops run whole rotations
    return whole(low), whole(high), w if warmup is None else warmup


def count_latency(profile: Profile, cells: list[Cell], rounds: int | None = None, warmup: int | None = None):
    """Per shape group: (a cell of the group, the models it times, rounds floor/ceiling, warm-up, cells)."""
    from perfsuite.workloads.latency import group_key, timing_key

    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for c in cells:
        if c.workload == "latency":
            groups[group_key(c)].append(c)
    out = []
    for members in groups.values():
        models = {("none", 0)} | {timing_key(c) for c in members}
        low, high, w = _rounds(profile, members[0], len(models), rounds, warmup)
        out.append((members[0], sorted(models), low, high, w, members))
    return out


def forward_time(cell: Cell, adapter: str, rank: int, timer) -> float:
    """Seconds per forward of ``adapter`` at ``cell``'s shape, from ``timer(cell) -> (floor_s, s_per_flop)``."""
    from perfsuite.workloads.latency import forward_flops

    floor, per_flop = timer(cell)
    return floor + per_flop * forward_flops(cell.model, adapter, rank, cell.batch, cell.seq_len, cell.dtype)


def analytic_timer(tflops: float = H100_FP16_TFLOPS, launch_us: float = LAUNCH_US):
    from perfsuite.model import get_config

    def timer(cell: Cell) -> tuple[float, float]:
        return LAUNCHES_PER_LAYER * get_config(cell.model).n_layer * launch_us * 1e-6, 1.0 / (tflops * 1e12)

    return timer


def probe_timer(device: str, repeats: int = 5):
    """Time the plain model's forward at two token counts on ``device`` and fit floor + FLOPs / speed."""
    import torch

    from perfsuite.timing import timed_call
    from perfsuite.workloads.latency import forward_flops
    from perfsuite.workloads.context import ModelCache

    cache, fitted = ModelCache(), {}

    def timer(cell: Cell) -> tuple[float, float]:
        key = (cell.model, cell.dtype)
        if key not in fitted:
            model = cache.base(cell.model, cell.dtype, device)
            points = []
            for batch, seq in ((1, 16), (4, 128)):
                tokens = torch.zeros(batch, seq, dtype=torch.long, device=device)
                with torch.inference_mode():
                    model(tokens)
                    t = min(timed_call(lambda: model(tokens), device) for _ in range(repeats))
                points.append((forward_flops(cell.model, "none", 0, batch, seq, cell.dtype), t))
            (f0, t0), (f1, t1) = points
            per_flop = max(0.0, (t1 - t0) / (f1 - f0))
            fitted[key] = (max(0.0, t0 - per_flop * f0), per_flop)
        return fitted[key]

    return timer


def estimate(profile: Profile, cells: list[Cell], timer, *, how: str, rounds: int | None = None,
             warmup: int | None = None) -> Estimate:
    f_min = f_max = f_old = 0
    s_min = s_max = 0.0
    groups = count_latency(profile, cells, rounds, warmup)
    for cell, models, low, high, w, members in groups:
        per_round = sum(forward_time(cell, a, max(r, 1) if a != "none" else 0, timer) for a, r in models)
        f_min += len(models) * (low + w + 2)
        f_max += len(models) * (high + w + 2)
        s_min += per_round * (low + w + 2)
        s_max += per_round * (high + w + 2)
        fixed = rounds or profile.timing(cell)[1]
        f_old += sum(2 * (fixed + (profile.timing(c)[2] if warmup is None else warmup)) for c in members)
    for c in cells:
        if c.workload == "recompute" and not budget_violation(c.batch, c.window, token_budget(c)):
            low, high, w = _rounds(profile, c, 2, rounds, warmup)
            passes = (c.gen_len or 1) * 2 + math.ceil((c.gen_len or 1) / (c.window or 1)) + 2  # fast + verify + plain
            t = forward_time(Cell("latency", c.adapter, c.rank, batch=c.batch, seq_len=1, dtype=c.dtype,
                                  device=c.device, model=c.model), c.adapter, c.rank, timer)
            f_min += passes * (low + w + 4)
            f_max += passes * (high + w + 4)
            f_old += passes * 2 * (high + w)
            s_min += passes * t * (low + w + 4)
            s_max += passes * t * (high + w + 4)
    return Estimate(f_min, f_max, f_old, s_min, s_max, len(groups), how)
