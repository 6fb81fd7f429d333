"""The timing loop: one round-robin loop times every model of a group, close in time, until it is precise.

GPU work is asynchronous, so every timed call ends with a device synchronize (:func:`perfsuite.measure.device.synchronize`)
and the clock is read on the host around it. :func:`round_robin` times several functions once per round — the
plain model and every adapter of one shape, or verified and plain decoding — in a balanced order (a Williams
design), so drift hits all of them alike, each takes every position equally often and follows every other function
equally often; a *cycle* is len(fns) rounds (every position once per function), and a cell's
slow-down is the median over cycles of the geometric mean of its per-round ratios to its reference (for two
functions, a cycle is the pair of rounds with the reference first and then second). The loop stops once the
confidence interval of every median is within ``RoundPolicy.target_ci_pct`` (torch.utils.benchmark's
``adaptive_autorange`` and nvbench's noise target), between a floor and a ceiling of rounds.

The device, its threads and its memory live in :mod:`perfsuite.measure.device`; handing a cell's rounds to
pytest-benchmark in :mod:`perfsuite.measure.bench_bridge`.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from perfsuite.measure.device import synchronize
from perfsuite.measure.paired import median_ci_pct  # the pure statistics live in perfsuite.measure.paired (no torch)


def timed_call(fn: Callable[[], object], device: str, clock: Callable[[], float] = time.perf_counter,
               sync: Callable[[], None] | None = None) -> float:
    """Seconds for one synchronized call of ``fn`` (``sync``: the device's synchronize, a seam for a fake GPU)."""
    sync = sync or (lambda: synchronize(device))
    sync()
    t0 = clock()
    fn()
    sync()
    return clock() - t0


def whole_cycles(rounds: int, cycle: int) -> int:
    """``rounds`` rounded up to whole cycles of ``cycle``: what a loop of ``cycle`` functions runs."""
    return -(-rounds // cycle) * cycle


@dataclass(frozen=True)
class RoundPolicy:
    """How many rounds a loop runs: at least ``min_rounds``, at most ``max_rounds``, stopping in between once every
    median's 95 % confidence interval is within ``target_ci_pct`` of it (checked after whole cycles)."""

    min_rounds: int
    max_rounds: int
    warmup: int = 0
    target_ci_pct: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.min_rounds <= self.max_rounds or self.warmup < 0:
            raise ValueError(f"need 1 <= min_rounds <= max_rounds and warmup >= 0, not {self}")

    @classmethod
    def fixed(cls, rounds: int, warmup: int = 0) -> "RoundPolicy":
        return cls(rounds, rounds, warmup)


_AFTER_WARMUP: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("after_warmup", default=None)


@contextlib.contextmanager
def after_warmup(callback: Callable[[], None]):
    """Have every :func:`round_robin` loop in the block call ``callback()`` once its warm-up is done, before its
    first timed round (the GPU monitor reads the clocks and violation counters there: :mod:`perfsuite.measure.gpu_state`)."""
    token = _AFTER_WARMUP.set(callback)
    try:
        yield
    finally:
        _AFTER_WARMUP.reset(token)


def williams_orders(k: int) -> list[list[int]]:
    """A Williams design for ``k`` functions: orders in which each function takes every position equally often and
    follows every other function equally often (k orders for an even k, 2k for an odd one), so no function always
    runs after the same predecessor (carry-over: caches, clocks, allocator state it leaves behind). Each run of k
    consecutive orders from the start is a Latin square: every position once per function."""
    if k == 1:
        return [[0]]
    first, lo, hi = [0], 1, k - 1
    for j in range(1, k):
        if j % 2:
            first.append(lo)
            lo += 1
        else:
            first.append(hi)
            hi -= 1
    rows = [[(x + i) % k for x in first] for i in range(k)]
    return rows + ([row[::-1] for row in rows] if k % 2 else [])


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector collected, then off for the block (a collection inside a timed call is a
    pause no model owns), and back on after it, whatever happens inside."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def round_robin(fns: Mapping[str, Callable[[], object]], *, device: str, policy: RoundPolicy,
                clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] | None = None
                ) -> dict[str, list[float]]:
    """Each function timed once per round (ms), in a Williams-design order (:func:`williams_orders`): every position
    once per function in each cycle of len(fns) rounds, and every predecessor equally often. Rounds run in whole
    cycles from the policy's floor to its ceiling, stopping early once every median is precise enough. The garbage
    collector is off while the loop runs. ``clock`` and ``sync`` are seams (a fake GPU's host clock and synchronize)."""
    keys = list(fns)
    k = len(keys)
    if not k:
        raise ValueError("nothing to time")
    orders = [[keys[i] for i in row] for row in williams_orders(k)]
    floor, ceiling = (whole_cycles(n, k) for n in (policy.min_rounds, policy.max_rounds))
    samples: dict[str, list[float]] = {key: [] for key in keys}
    with gc_paused():
        for _ in range(policy.warmup):
            for key in keys:
                timed_call(fns[key], device, clock, sync)
        warm = _AFTER_WARMUP.get()
        if warm is not None:
            warm()
        rounds = 0
        while rounds < ceiling:
            for _ in range(k):  # one cycle: every position once for every function
                for key in orders[rounds % len(orders)]:
                    samples[key].append(1e3 * timed_call(fns[key], device, clock, sync))
                rounds += 1
            if rounds >= floor and all(median_ci_pct(s) <= policy.target_ci_pct for s in samples.values()):
                break
    return samples
