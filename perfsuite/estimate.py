"""What a selection of cells will cost before it runs: every step a night runs, and the expected wall time.

The estimate follows the code path of each workload, step by step, and prices each step with a cost model:

latency, per shape group: the plain model built once per (model, dtype, device); each adapter model built
  (a copy sharing the plain weights, then its adapter) — spectral-r's SVDs once per base weight and process
  (:func:`perfsuite.adapters.top_singular_vectors`); FLOPs counted once per (model, adapter, rank, length) on
  the meta device; per model two untimed forwards (host syncs under a dispatch mode, peak memory); the
  warm-up; then the timed rounds, in whole cycles, between the profile's floor and ceiling.
recompute, per cell: the adapted model; one decode–verify–rollback observed under the sync counter and the FLOP
  counter (whose bookkeeping on every op of a long decode makes it the dearest untimed step of a recompute
  night); the fixed-schedule reference decode (a full ``rows × window`` pass for every output token); one plain
  decode; the warm-up and the timed rounds of both decoders. Decoder passes are priced from the ops of one
  ragged pass (counted on a narrow twin of the model) plus what each decoder adds around it (counted once,
  :data:`PLAIN_STEP_EXTRA` ...).
subspace, per cell: four students trained (probed: a few real Adam steps on the device; modelled: 4 forwards per
  step) and the analysis rounds (probed on the CPU, where it runs).
session: starting the process, importing torch, collecting the tests, the first cell's one-time
  initialisations, writing the results, the comparison and the report (constants measured on the project's
  2-core VM).

Time per forward pass is ``kernels × s_per_kernel + views × s_per_view + flops × s_per_flop``: kernels (aten
ops, counted on the meta device for each adapter, not a fixed number per layer) and arithmetic (FLOPs counted on
the meta device). The two rates come from one of two device models:
  probe     on the device cells run on (with the threads a run uses there): the plain model's forward timed at a
            small and a large size (the mean of a few calls — a run's wall time is a sum, preemptions on a
            loaded machine included), the two rates solved;
  analytic  for a GPU this machine does not have: ``launch_us`` per kernel and ``tflops`` sustained — for an
            H100 in fp16 400 TFLOP/s (about 40 % of its 989 dense peak) and 8 µs a launch.
Host-side steps (SVDs, the dispatch-mode passes, FLOP counting, model building) are probed on this machine's
CPU in both cases.

Over 350 lines on purpose: the cost model prices every step a night runs, step by step in the order the
workloads run them, so the estimate can be read against the code it models.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

from perfsuite.cells.grid import Cell, Profile, budget_violation, token_budget

H100_FP16_TFLOPS = 400.0
LAUNCH_US = 8.0
# `perfsuite run` outside its cells, measured on the project's 2-core VM when it was quiet (AMD EPYC family 25
# model 17, torch 2.13.0+cpu: a one-cell run 4.1 s, the smoke run 15.8 s without and 23.0 s with its comparison
# and report), where the tiny model's b1 × 8 forward took HOST_FORWARD_REF_S on one thread. These are host work
# (imports, pytest, pandas, matplotlib), so an estimate scales them by this machine's own time for that forward
# (HostCosts.host_speed): a slower or busier CPU gets proportionally more.
HOST_FORWARD_REF_S = 0.248e-3
SESSION_S = 3.0  # the run process and pytest's started, torch imported, tests collected, results written
COMPARE_S = 1.0  # the comparison with the baselines
REPORT_S = 4.0  # the report page and its figures: a fixed part ...
REPORT_S_PER_CELL = 0.09  # ... and per cell (tables, figure points)
FIRST_CELL_S = 1.0  # the first cell's first uses: lazy imports and initialisations (FLOP counter, SDPA, dispatch)
CELL_OVERHEAD_S = 0.05  # per cell: pytest's setup and teardown, the record, the journal line
# (kernels, ops) the decoders add around each ragged pass (argmax, where, gather, scatter; counted with count_ops
# on perfsuite.decoding at two output lengths and windows: independent of the model's size)
PLAIN_STEP_EXTRA = (2, 9)
FIXED_STEP_EXTRA = (4, 12)
VERIFIED_STEP_EXTRA = (8, 23)
WINDOW_EXTRA = (39, 53)  # per verified window: the verify pass's inputs, the rollback, the one read-back
SUBSPACE_STUDENTS = 4  # ranks r_a and r_b, seeds 0 and 1
TRAIN_FORWARDS_PER_STEP = 4.0  # an Adam step: the teacher's forward, the student's forward and backward (≈ 2)


@dataclass(frozen=True)
class HostCosts:
    """Seconds of the host-side steps, probed on this machine's CPU."""

    svd_1024_s: float  # one fp32 SVD of a 1024 × 1024 matrix (scaled by d³ for other widths)
    dispatch_op_s: float  # extra per op under a Python dispatch mode (the sync counter, the FLOP counter)
    meta_op_s: float  # per op under the FLOP counter (FlopCounterMode's bookkeeping; measured on the meta device)
    init_param_s: float  # per parameter of a plain model's random initialisation
    meta_build_layer_s: float = 0.0  # per block of a model built on the meta device (FLOPs are counted on one)
    adapted_build_layer_s: float = 0.0  # per block of an adapted copy: the copy sharing the weights, the adapter
    flop_mode_op_s: float = 0.0  # extra per op of real tensors under the FLOP counter (recompute's observed decode)
    host_speed: float = 1.0  # this CPU's time for the tiny b1 × 8 forward over HOST_FORWARD_REF_S (scales the constants)


@dataclass(frozen=True)
class DeviceRates:
    """What a forward pass costs on the device: per kernel, per view (host dispatch only) and per FLOP."""

    s_per_kernel: float
    s_per_flop: float
    s_per_view: float = 0.0
    s_per_decode_op: float | None = None  # an op of a ragged decoder pass (advanced indexing); None: s_per_kernel

    def seconds(self, kernels: int, ops: int, flops: float) -> float:
        return kernels * self.s_per_kernel + (ops - kernels) * self.s_per_view + flops * self.s_per_flop


@dataclass(frozen=True)
class Estimate:
    forwards_min: int  # timed forward passes at the floor of rounds
    forwards_max: int  # ... at the ceiling
    seconds_min: float  # the whole night's wall time, rounds at the floor
    seconds_max: float  # ... at the ceiling
    groups: int
    how: str  # how time per forward was obtained
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)  # step → (seconds at floor, at ceiling)


def _rounds(profile: Profile, cell: Cell, cycle: int, rounds: int | None, warmup: int | None) -> tuple[int, int, int]:
    low, high, w = profile.timing(cell)
    if rounds:
        low = high = rounds
    whole = lambda n: -(-n // cycle) * cycle  # noqa: E731 — loops run whole cycles
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


# --- counting what a pass does ------------------------------------------------------------------------

VIEW_OPS = frozenset({"aten.view", "aten._unsafe_view", "aten.transpose", "aten.t", "aten.permute", "aten.expand",
                      "aten.select", "aten.slice", "aten.split", "aten.split_with_sizes", "aten.unsqueeze",
                      "aten.squeeze", "aten.alias", "aten.detach", "aten.reshape", "aten.unbind", "aten.as_strided",
                      "aten.lift_fresh"})


def count_ops(fn) -> tuple[int, int]:
    """(kernels, ops) of one call of ``fn``: the aten ops torch dispatches, and those of them that launch a kernel
    (views change metadata only, but cost the host the same dispatch)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = [0, 0]

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counts[0] += str(func.overloadpacket) not in VIEW_OPS
            counts[1] += 1
            return func(*args, **(kwargs or {}))

    with Ops():
        fn()
    return counts[0], counts[1]


@functools.lru_cache(maxsize=256)
def forward_ops(config, adapter: str, rank: int, dtype: str) -> tuple[int, int]:
    """(kernels, ops) of one forward of the reference model with ``adapter`` (counted on the meta device)."""
    import torch

    from perfsuite.workloads.latency import _meta_model

    m = _meta_model(config, adapter, rank, dtype)
    with torch.inference_mode():
        tokens = torch.zeros(1, 8, dtype=torch.long, device="meta")
        return count_ops(lambda: m(tokens))


@functools.lru_cache(maxsize=64)
def ragged_ops(config, adapter: str, rank: int) -> tuple[int, int]:
    """(kernels, ops) of one ragged decoder pass (:func:`perfsuite.decoding.ragged_forward`) of a model with
    ``config``'s blocks and ``adapter``: counted on a narrow twin on the CPU (the count does not depend on width)."""
    import dataclasses

    import torch

    from perfsuite.adapters import attach
    from perfsuite.decoding import KVBuffer, ragged_forward
    from perfsuite.model import GPT2

    narrow = dataclasses.replace(config, n_embd=64, n_head=4, n_inner=256, vocab_size=64, n_positions=64)
    with torch.random.fork_rng(devices=[]):
        model = GPT2(narrow).eval()
        if adapter != "none" and rank:
            attach(model, adapter, min(rank, 8))
    cache = KVBuffer(model, 2, 16)
    with torch.inference_mode():
        return count_ops(lambda: ragged_forward(model, cache, torch.zeros(2, 1, dtype=torch.long),
                                                torch.zeros(2, dtype=torch.long), 8))


def _config(cell: Cell):
    from perfsuite.model import get_config

    return get_config(cell.model)


def pass_cost(cell: Cell, adapter: str, rank: int, rows: int, tokens: int, ctx: int) -> tuple[tuple[int, int], float]:
    """((kernels, ops), FLOPs) of one pass of ``rows × tokens`` new tokens attending to ``ctx`` key slots."""
    from perfsuite.workloads.latency import forward_flops

    cfg = _config(cell)
    per_token = forward_flops(cfg, adapter, rank, 1, 1, cell.dtype)  # every linear layer and the head, 1 slot
    attention = 4 * cfg.n_layer * cfg.n_embd * max(0, ctx - 1)  # QKᵀ and AV over the other slots, per token
    return forward_ops(cfg, adapter, rank, cell.dtype), rows * tokens * (per_token + attention)


# --- the cost models ----------------------------------------------------------------------------

def analytic_timer(tflops: float = H100_FP16_TFLOPS, launch_us: float = LAUNCH_US):
    """A GPU this machine does not have: a launch per kernel and FLOPs at a sustained speed."""
    rates = DeviceRates(launch_us * 1e-6, 1.0 / (tflops * 1e12))
    return lambda cell: rates


def probe_timer(device: str, repeats: int = 30):
    """Time the plain model's forward at two sizes on ``device`` and solve its per-kernel and per-FLOP rates."""
    import torch

    from perfsuite.timing import timed_call
    from perfsuite.workloads.latency import forward_flops
    from perfsuite.workloads.context import ModelCache

    cache, fitted = ModelCache(), {}

    def timer(cell: Cell) -> DeviceRates:
        key = (cell.model, cell.dtype)
        if key not in fitted:
            model = cache.base(cell.model, cell.dtype, device)
            ops = forward_ops(model.config, "none", 0, cell.dtype)[1]  # on a CPU a view costs what an op does
            points = []
            for batch, seq in ((1, 8), (8, 128)):
                tokens = torch.zeros(batch, seq, dtype=torch.long, device=device)
                with torch.inference_mode():
                    model(tokens)
                    t = statistics.fmean(timed_call(lambda: model(tokens), device) for _ in range(repeats))
                points.append((forward_flops(model.config, "none", 0, batch, seq, cell.dtype), t))
            (f0, t0), (f1, t1) = points
            per_flop = max(0.0, (t1 - t0) / (f1 - f0))
            per_op = max(0.0, t0 - per_flop * f0) / ops
            fitted[key] = DeviceRates(per_op, per_flop, per_op, _decode_op_s(model, device, per_flop, repeats))
        return fitted[key]

    timer.device = device
    return timer


def _decode_op_s(model, device: str, s_per_flop: float, repeats: int) -> float:
    """Seconds per op of a one-token ragged decoder pass of ``model`` on ``device``, its arithmetic taken out."""
    import torch

    from perfsuite.decoding import KVBuffer, ragged_forward
    from perfsuite.timing import timed_call

    cfg = model.config
    cache = KVBuffer(model, 1, 32)
    idx, starts = torch.zeros(1, 1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device)
    with torch.inference_mode():
        step = lambda: ragged_forward(model, cache, idx, starts, 16)  # noqa: E731
        step()
        t = statistics.fmean(timed_call(step, device) for _ in range(repeats))
    flops = 2 * (12 * cfg.n_layer * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd)
    return max(0.0, t - flops * s_per_flop) / ragged_ops(cfg, "none", 0)[1]


def probe_host(repeats: int = 5) -> HostCosts:
    """The host-side rates on this machine's CPU, one thread (an upper bound where the runner has more cores), each
    from a small timed sample (a few seconds in all)."""
    from perfsuite.device import cpu_threads

    with cpu_threads(1):
        return _probe_host(repeats)


def _probe_host(repeats: int) -> HostCosts:
    import torch

    from perfsuite.adapters import adapted_copy, attach
    from perfsuite.model import build_model, get_config
    from perfsuite.syncs import count_host_syncs
    from perfsuite.device import count_flops

    def best(fn) -> float:
        fn()
        return statistics.fmean(_seconds(fn) for _ in range(repeats))

    a = torch.randn(512, 512)
    svd = best(lambda: torch.linalg.svd(a, full_matrices=False)) * (1024 / 512) ** 3
    model = build_model("tiny")
    tokens = torch.zeros(1, 8, dtype=torch.long)
    ops = forward_ops(get_config("tiny"), "none", 0, "float32")[1]
    with torch.inference_mode():
        plain = best(lambda: model(tokens))
        counted = best(lambda: count_host_syncs(lambda: model(tokens)))
        flop_counted = best(lambda: count_flops(lambda: model(tokens)))
    meta = build_model("tiny", device="meta")
    meta_tokens = torch.zeros(1, 8, dtype=torch.long, device="meta")
    meta_s = best(lambda: count_flops(lambda: meta(meta_tokens)))
    block = torch.empty(2 ** 22)
    init = best(lambda: block.normal_()) / block.numel()
    n_layer = get_config("tiny").n_layer
    adapted = best(lambda: attach(adapted_copy(model), "houlsby", 8)) / n_layer
    meta_build = best(lambda: build_model("tiny", device="meta")) / n_layer
    with torch.inference_mode():  # the host's speed: a median of many, as the constants' reference was taken
        forward = statistics.median(_seconds(lambda: model(tokens)) for _ in range(50))
    return HostCosts(svd_1024_s=svd, dispatch_op_s=max(0.0, counted - plain) / ops, meta_op_s=meta_s / ops,
                     init_param_s=init, meta_build_layer_s=meta_build, adapted_build_layer_s=adapted,
                     flop_mode_op_s=max(0.0, flop_counted - plain) / ops, host_speed=forward / HOST_FORWARD_REF_S)


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- the night, step by step --------------------------------------------------------------------------

class _Night:
    """Seconds per step, at the floor and at the ceiling of rounds."""

    def __init__(self, timer, host: HostCosts):
        self.timer, self.host = timer, host
        self.steps: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.forwards = [0, 0]
        self._built: set = set()
        self._decomposed: set = set()
        self._flops_counted: set = set()

    def add(self, step: str, low_s: float, high_s: float | None = None) -> None:
        self.steps[step][0] += low_s
        self.steps[step][1] += low_s if high_s is None else high_s

    def pass_s(self, cell: Cell, adapter: str, rank: int, rows: int, tokens: int, ctx: int,
               counted: bool = False) -> float:
        """A model forward of ``rows × tokens`` tokens attending to ``ctx`` slots."""
        (kernels, ops), flops = pass_cost(cell, adapter, rank, rows, tokens, ctx)
        return self.timer(cell).seconds(kernels, ops, flops) + (ops * self.host.dispatch_op_s if counted else 0.0)

    def ragged_s(self, cell: Cell, rows: int, tokens: int, ctx: int, extra: tuple[int, int],
                 counted: bool = False) -> float:
        """A ragged decoder pass and what its decoder adds around it (:data:`PLAIN_STEP_EXTRA` ...)."""
        _, flops = pass_cost(cell, cell.adapter, cell.rank, rows, tokens, ctx)
        kernels, ops = ragged_ops(_config(cell), cell.adapter, cell.rank)
        kernels, ops = kernels + extra[0], ops + extra[1]
        rates = self.timer(cell)
        per_op = rates.s_per_decode_op if rates.s_per_decode_op is not None else rates.s_per_kernel
        device_s = per_op * kernels + rates.s_per_view * (ops - kernels) + flops * rates.s_per_flop
        return device_s + (ops * self.host.dispatch_op_s if counted else 0.0)

    def base_model(self, cell: Cell) -> None:
        key = (cell.model, cell.dtype, cell.device)
        if key not in self._built:
            self._built.add(key)
            cfg = _config(cell)
            params = 12 * cfg.n_layer * cfg.n_embd ** 2 + (cfg.vocab_size + cfg.n_positions) * cfg.n_embd
            self.add("model builds", params * self.host.init_param_s)

    def adapted_model(self, cell: Cell, adapter: str, rank: int) -> None:
        if adapter == "none" or rank == 0:
            return
        cfg = _config(cell)
        self.add("model builds", cfg.n_layer * self.host.adapted_build_layer_s)
        key = (cell.model, cell.dtype, cell.device)
        if adapter == "spectral-r" and key not in self._decomposed:
            self._decomposed.add(key)
            self.add("spectral-r SVDs", 2 * cfg.n_layer * self.host.svd_1024_s * (cfg.n_embd / 1024) ** 3)

    def flop_count(self, cell: Cell, adapter: str, rank: int, seq_len: int) -> None:
        key = (cell.model, cell.dtype, adapter, rank, seq_len)
        if (cell.model, cell.dtype, adapter, rank) not in self._flops_counted:  # its meta model, built once
            self._flops_counted.add((cell.model, cell.dtype, adapter, rank))
            self.add("FLOP counting", _config(cell).n_layer * self.host.meta_build_layer_s)
        if key not in self._flops_counted:
            self._flops_counted.add(key)
            meta_ops = forward_ops(_config(cell), adapter, rank, cell.dtype)[1]
            self.add("FLOP counting", meta_ops * self.host.meta_op_s)  # one forward counted on the meta model

    def latency_group(self, cell: Cell, models, low: int, high: int, warmup: int) -> None:
        self.base_model(cell)
        per_round = 0.0
        for adapter, rank in models:
            rank = max(rank, 1) if adapter != "none" else 0
            self.adapted_model(cell, adapter, rank)
            self.flop_count(cell, adapter, rank, cell.seq_len)
            forward = self.pass_s(cell, adapter, rank, cell.batch, cell.seq_len, cell.seq_len)
            counted = self.pass_s(cell, adapter, rank, cell.batch, cell.seq_len, cell.seq_len, counted=True)
            self.add("untimed passes (syncs, memory)", counted + forward)
            per_round += forward
        self.add("warm-up", warmup * per_round)
        self.add("timed rounds", low * per_round, high * per_round)
        self.forwards[0] += len(models) * low
        self.forwards[1] += len(models) * high

    def decodes(self, c: Cell, counted: bool = False) -> dict[str, float]:
        """Seconds of one verified, plain and fixed-schedule decode of cell ``c`` (no mismatches assumed)."""
        budget, W, B, P, G = token_budget(c), c.window, c.batch, c.seq_len, c.gen_len
        rows, ctx = budget // W, P + G
        p = lambda n_rows, n_tok, slots, extra: self.ragged_s(c, n_rows, n_tok, slots, extra, counted)  # noqa: E731
        prefill = math.ceil(P / W) * p(rows, W, ctx, (0, 0))
        windows = math.ceil((G - 1) / W)
        verified = (prefill + windows * p(rows, W, ctx, WINDOW_EXTRA)
                    + windows * W * p(B, 1, ctx, VERIFIED_STEP_EXTRA))  # every request steps through whole windows
        plain = p(B, P, P, (0, 0)) + (G - 1) * p(B, 1, ctx, PLAIN_STEP_EXTRA)
        fixed = prefill + (G - 1) * p(rows, W, ctx, FIXED_STEP_EXTRA)
        return {"verified": verified, "plain": plain, "fixed": fixed}

    def decode_ops(self, c: Cell) -> int:
        """Ops of one verified decode of cell ``c`` (no mismatches assumed)."""
        W, G = c.window, c.gen_len
        _, ops = ragged_ops(_config(c), c.adapter, c.rank)
        windows = math.ceil((G - 1) / W)
        return (math.ceil(c.seq_len / W) * ops + windows * (ops + WINDOW_EXTRA[1])
                + windows * W * (ops + VERIFIED_STEP_EXTRA[1]))

    def recompute_cell(self, c: Cell, low: int, high: int, warmup: int) -> None:
        self.base_model(c)
        self.adapted_model(c, c.adapter, c.rank)
        d = self.decodes(c)
        # one decode under the sync counter and the FLOP counter, nested: the FLOP counter's bookkeeping per op
        # dwarfs the decode itself
        observed = self.decodes(c, counted=True)["verified"] + self.decode_ops(c) * self.host.flop_mode_op_s
        self.add("untimed decodes (syncs, FLOPs, memory, plain)", observed + d["plain"])
        self.add("fixed-schedule reference decodes", d["fixed"])
        per_round = d["verified"] + d["plain"]
        self.add("warm-up", warmup * per_round)
        self.add("timed rounds", low * per_round, high * per_round)
        passes = lambda n: n * (math.ceil(c.seq_len / c.window) + 2 * c.gen_len)  # noqa: E731
        self.forwards[0] += passes(low)
        self.forwards[1] += passes(high)

    def subspace_cell(self, c: Cell, low: int, high: int, warmup: int) -> None:
        from perfsuite.workloads.subspace import train_config

        cfg = train_config(c.model)
        self.base_model(c)
        if getattr(self.timer, "device", None):  # the device is here: a few real training steps, timed
            step = probe_train_step(c, self.timer.device)
        else:
            train = Cell("latency", "lora", max(c.rank, c.rank_b or c.rank), batch=cfg.batch, seq_len=cfg.seq_len,
                         dtype="float32", device=c.device, model=c.model)
            step = TRAIN_FORWARDS_PER_STEP * self.pass_s(train, "lora", train.rank, cfg.batch, cfg.seq_len,
                                                         cfg.seq_len)
        self.add("subspace training", SUBSPACE_STUDENTS * cfg.steps * step)
        analysis = probe_analysis(c)
        self.add("subspace analysis (timed rounds)", (low + warmup + 1) * analysis, (high + warmup + 1) * analysis)


@functools.lru_cache(maxsize=16)
def probe_train_step(cell: Cell, device: str, steps: int = 5) -> float:
    """Seconds of one Adam step of a subspace cell's student on ``device``: a few real steps, timed."""
    import dataclasses

    from perfsuite.model import build_model
    from perfsuite.workloads.subspace import PlantedTask, train_config, train_lora

    cfg = dataclasses.replace(train_config(cell.model), steps=steps)
    task = PlantedTask(build_model(cell.model, device=device), cfg)
    train_lora(task, cell.rank, 0, float(cell.rank))  # warm
    return train_lora(task, cell.rank, 0, float(cell.rank)).train_time_s / steps


@functools.lru_cache(maxsize=16)
def probe_analysis(cell: Cell) -> float:
    """Seconds of one φ analysis of a subspace cell (on the CPU, where it runs), on random factors of its shapes."""
    import torch

    from perfsuite.workloads.subspace import SEEDS, TrainedLoRA, analyse

    cfg = _config(cell)
    gen = torch.Generator().manual_seed(0)
    ranks = (cell.rank, cell.rank_b or cell.rank)
    students = {(r, s): TrainedLoRA(r, s, *(tuple(torch.randn(r, cfg.n_embd, generator=gen)
                                                  for _ in range(cfg.n_layer)) for _ in range(2)), 1.0, 0.1, 0.0)
                for r in dict.fromkeys(ranks) for s in SEEDS}
    analyse(students, *ranks, cfg.n_layer, cfg.n_embd)
    return statistics.fmean(_seconds(lambda: analyse(students, *ranks, cfg.n_layer, cfg.n_embd)) for _ in range(3))


def estimate(profile: Profile, cells: list[Cell], timer, *, how: str, rounds: int | None = None,
             warmup: int | None = None, host: HostCosts | None = None) -> Estimate:
    """The night's cost, step by step (see the module docstring); ``host`` None: probed on this CPU now."""
    host = host or probe_host()
    night = _Night(timer, host)
    groups = count_latency(profile, cells, rounds, warmup)
    from perfsuite.workloads.serving_cost import price_decode_group, price_serving  # serving-time cells

    for cell, models, low, high, w, members in groups:
        if cell.phase == "decode":
            price_decode_group(night, cell, models, low, high, w, forward_ops=forward_ops)
        else:
            night.latency_group(cell, models, low, high, w)
    price_serving(night, cells, lambda c, cycle: _rounds(profile, c, cycle, rounds, warmup), count_ops=count_ops)
    for c in cells:
        if c.workload == "recompute" and not budget_violation(c.batch, c.window, token_budget(c)):
            night.recompute_cell(c, *_rounds(profile, c, 2, rounds, warmup))
        elif c.workload == "subspace":
            night.subspace_cell(c, *_rounds(profile, c, 1, rounds, warmup))
    night.add("session and cells' overhead",
              host.host_speed * (SESSION_S + FIRST_CELL_S + CELL_OVERHEAD_S * len(cells)))
    night.add("comparison and report", host.host_speed * (COMPARE_S + REPORT_S + REPORT_S_PER_CELL * len(cells)))
    steps = {k: (v[0], v[1]) for k, v in night.steps.items()}
    return Estimate(night.forwards[0], night.forwards[1], sum(v[0] for v in steps.values()),
                    sum(v[1] for v in steps.values()), len(groups), how, steps)
