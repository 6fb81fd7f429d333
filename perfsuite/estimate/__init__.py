"""What a selection of cells will cost before it runs: every step a night runs, and the expected wall time.

The estimate follows the code path of each workload, step by step, and prices each step with a cost model — one
module per workload: :mod:`~perfsuite.estimate.latency` (per shape group: builds, SVDs, FLOP counting, untimed
passes, warm-up, timed rounds with the probe, on a GPU the blocked device-time loop and a profiler session),
:mod:`~perfsuite.estimate.recompute` (per cell, rollbacks expected from a mismatch rate),
:mod:`~perfsuite.estimate.subspace`, and :mod:`~perfsuite.estimate.fixed` (each process's session; each GPU
shard's doctor and GPU tests; the night's comparison and report). :mod:`~perfsuite.estimate.night` is the ledger
they write to; :mod:`~perfsuite.estimate.counts` counts what a pass does, :mod:`~perfsuite.estimate.rates` prices it.

Time per pass is ``kernels × s_per_kernel + views × s_per_view + flops × s_per_flop``, kernels and FLOPs counted
from the code (per adapter), the rates from one of two device models:
  probe     on the device cells run on (with the threads a run uses there): the plain model's forward timed at a
            small and a large size, the two rates solved;
  modelled  for a GPU this machine does not have (a GPU profile's estimate on a CPU-only machine is always this:
            probing gpt2-medium in fp16 on a CPU takes longer than the night): ``launch_us`` per kernel and
            sustained TFLOP/s in the cell's precision — an H100 at 400 in fp16/bf16, 50 in fp32 (no TF32).
Host-side steps (SVDs, dispatch modes, model builds) are probed on this machine's CPU in both cases.

With ``shards`` the cells are split as ``perfsuite run --shard`` splits them, each shard priced as its own process
with its own builds, SVDs and fixed costs; the estimate gives the sum (one GPU running the whole night) and the
longest shard (the night's wall time when the shards run side by side).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from perfsuite.cells.grid import Cell, Profile, budget_violation, token_budget
from perfsuite.estimate.rates import (H100_TFLOPS, LAUNCH_US, DeviceRates, HostCosts, analytic_timer, probe_host,
                                      probe_timer)
from perfsuite.workloads.rollbacks import DEFAULT_MISMATCH_RATE

# Imported when first asked for: the counting modules import torch, and `perfsuite cells` lists cells without it.
_LAZY = {"count_ops": "counts", "forward_ops": "counts", "pass_cost": "counts", "ragged_ops": "counts",
         "count_latency": "latency"}
__all__ = ["DEFAULT_MISMATCH_RATE", "H100_TFLOPS", "LAUNCH_US", "DeviceRates", "Estimate", "HostCosts",
           "analytic_timer", "estimate", "probe_host", "probe_timer", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"perfsuite.estimate.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

SMOKE_TEST_ROUNDS = 5  # the GPU tests' smoke run (tests/unit/test_gpu.py): --perfsuite-rounds=5 --perfsuite-warmup=1


@dataclass(frozen=True)
class Estimate:
    forwards_min: int  # timed forward passes at the floor of rounds
    forwards_max: int  # ... at the ceiling
    seconds_min: float  # the whole night on one device (every shard in turn), rounds at the floor
    seconds_max: float  # ... at the ceiling
    groups: int
    how: str  # how time per forward was obtained
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)  # step → (seconds at floor, at ceiling)
    shards: tuple[tuple[float, float], ...] = ()  # each shard's (floor, ceiling), fixed costs included
    mismatch_rate: float = DEFAULT_MISMATCH_RATE  # what recompute cells were priced at, unless recorded
    recorded_rates: int = 0  # recompute cells priced at their own recorded mismatch_rate

    @property
    def wall_s(self) -> tuple[float, float]:
        """The night's wall time with its shards side by side: the longest shard, then the comparison and report."""
        tail = self.steps.get("comparison and report", (0.0, 0.0))
        return (max(s[0] for s in self.shards) + tail[0], max(s[1] for s in self.shards) + tail[1])


def estimate(profile: Profile, cells: list[Cell], timer, *, how: str, rounds: int | None = None,
             warmup: int | None = None, host: HostCosts | None = None, shards: int = 1,
             mismatch_rate: float = DEFAULT_MISMATCH_RATE, mismatch_rates: dict[str, float] | None = None,
             fixed_costs: bool = True) -> Estimate:
    """The night's cost, step by step (see the module docstring); ``host`` None: probed on this CPU now;
    ``mismatch_rates``: recorded rates by cell id (others at ``mismatch_rate``); ``fixed_costs`` False: the cells'
    process only (no doctor, GPU tests, comparison or report)."""
    from perfsuite.cells.shard import shard_cells
    from perfsuite.estimate.fixed import compare_and_report_s, price_doctor, price_gpu_tests, price_session
    from perfsuite.estimate.latency import count_latency, price_group
    from perfsuite.estimate.night import Night
    from perfsuite.workloads import estimated_cost

    host = host or probe_host()
    rates = mismatch_rates or {}
    on_gpu = any(c.device.startswith("cuda") for c in cells)
    smoke_s = _smoke_on_gpu(timer, host) if fixed_costs and on_gpu else 0.0
    parts = [shard_cells(cells, i, shards, cost=estimated_cost) for i in range(1, shards + 1)] if shards > 1 \
        else [cells]
    steps: dict[str, list[float]] = {}
    shard_s, forwards, groups = [], [0, 0], 0
    from perfsuite.estimate.counts import count_ops, forward_ops
    from perfsuite.estimate.latency import rounds_of
    from perfsuite.workloads.serving_cost import price_decode_group, price_serving  # serving-time cells

    for part in parts:
        night = Night(timer, host)
        for cell, models, low, high, w, _ in count_latency(profile, part, rounds, warmup):
            if cell.phase == "decode":
                price_decode_group(night, cell, models, low, high, w, forward_ops=forward_ops)
            else:
                price_group(night, cell, models, low, high, w)
            groups += 1
        groups += price_serving(night, part, lambda c, cycle: rounds_of(profile, c, cycle, rounds, warmup),
                                count_ops=count_ops)
        _price_others(night, profile, part, rounds, warmup, mismatch_rate, rates)
        price_session(night, part, on_gpu)
        if fixed_costs and on_gpu:
            price_doctor(night, Cell("latency", "none", 0, batch=8, seq_len=512, dtype="float16", device="cuda",
                                     model="gpt2-medium"))
            price_gpu_tests(night, smoke_s)
        shard_s.append(tuple(sum(v[i] for v in night.steps.values()) for i in (0, 1)))
        forwards = [forwards[i] + night.forwards[i] for i in (0, 1)]
        for k, v in night.steps.items():
            steps[k] = [a + b for a, b in zip(steps.get(k, [0.0, 0.0]), v)]
    if fixed_costs:
        tail = compare_and_report_s(host.host_speed, len(cells))
        steps["comparison and report"] = [tail, tail]
    out = {k: (v[0], v[1]) for k, v in steps.items()}
    recompute = [c for c in cells if c.workload == "recompute"]
    return Estimate(forwards[0], forwards[1], sum(v[0] for v in out.values()), sum(v[1] for v in out.values()),
                    groups, how, out, tuple(shard_s), mismatch_rate, sum(c.id in rates for c in recompute))


def _price_others(night, profile: Profile, cells: list[Cell], rounds, warmup, mismatch_rate: float,
                  rates: dict[str, float]) -> None:
    from perfsuite.estimate import recompute, subspace
    from perfsuite.estimate.latency import rounds_of

    for c in cells:
        if c.workload == "recompute" and not budget_violation(c.batch, c.window, token_budget(c)):
            low, high, w = rounds_of(profile, c, 3, rounds, warmup)  # verified, plain and the probe
            recompute.price_cell(night, c, low, high, w, rates.get(c.id, mismatch_rate))
        elif c.workload == "subspace":
            subspace.price_cell(night, c, *rounds_of(profile, c, 1, rounds, warmup))


def _smoke_on_gpu(timer, host: HostCosts) -> float:
    """The GPU tests' smoke run on the GPU, priced by the same model (its session included)."""
    from perfsuite.cells.grid import get_profile

    smoke = get_profile("smoke")
    e = estimate(smoke, smoke.cells(device="cuda"), timer, how="", rounds=SMOKE_TEST_ROUNDS, warmup=1, host=host,
                 fixed_costs=False)
    return e.seconds_max
