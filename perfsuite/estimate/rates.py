"""What a step costs where it runs: a device's rates (per kernel launch, per FLOP in the cell's precision) and the
host's (SVDs, dispatch modes, model builds), probed on this machine or modelled for a GPU it does not have."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

# An H100 (SXM) sustaining about 40 % of its dense peak: fp16/bf16 on tensor cores (989 TFLOP/s peak); fp32 without
# TF32 (perfsuite.measure.machine.pin_precision sets matmul precision "highest") on the CUDA cores (67 TFLOP/s peak).
H100_TFLOPS = {"float16": 400.0, "bfloat16": 400.0, "float32": 50.0}
LAUNCH_US = 8.0  # host time to launch one kernel from eager PyTorch
# `perfsuite run` outside its cells was calibrated on the project's 2-core VM when quiet (AMD EPYC family 25 model
# 17, torch 2.13.0+cpu), where the tiny model's b1 × 8 forward took HOST_FORWARD_REF_S on one thread: host
# constants are scaled by this machine's own time for that forward (HostCosts.host_speed).
HOST_FORWARD_REF_S = 0.248e-3
# An op of a forward on the meta device under the work counter (the latency workload's FLOP count): the meta
# kernels of elementwise ops are Python references, and the first call imports dynamo. Measured on the 2-core VM
# (Intel Xeon family 6 model 167, torch 2.13.0+cpu) and scaled like the other host constants; not probed by the
# estimate, since probing it would import dynamo here too (seconds).
META_OP_S = 1.1e-3


@dataclass(frozen=True)
class HostCosts:
    """Seconds of the host-side steps, probed on this machine's CPU."""

    svd_1024_s: float  # one fp32 SVD of a 1024 × 1024 matrix (scaled by d³ for other widths)
    dispatch_op_s: float  # extra per op under a Python dispatch mode (the sync counter, the work counter)
    init_param_s: float  # per parameter of a plain model's random initialisation
    meta_op_s: float = META_OP_S  # per op of a meta forward under the work counter (FLOP counting; scaled)
    meta_build_layer_s: float = 0.0  # per block of a model built on the meta device (FLOPs are counted on one)
    adapted_build_layer_s: float = 0.0  # per block of an adapted copy: the copy sharing the weights, the adapter
    host_speed: float = 1.0  # this CPU's time for the tiny b1 × 8 forward over HOST_FORWARD_REF_S (scales constants)


@dataclass(frozen=True)
class DeviceRates:
    """What a forward pass costs on the device: per kernel, per view (host dispatch only) and per FLOP."""

    s_per_kernel: float
    s_per_flop: float
    s_per_view: float = 0.0
    s_per_decode_op: float | None = None  # an op of a ragged decoder pass (advanced indexing); None: s_per_kernel

    def seconds(self, kernels: int, ops: int, flops: float) -> float:
        return kernels * self.s_per_kernel + (ops - kernels) * self.s_per_view + flops * self.s_per_flop


def analytic_timer(tflops: float = H100_TFLOPS["float16"], launch_us: float = LAUNCH_US,
                   fp32_tflops: float = H100_TFLOPS["float32"]):
    """A GPU this machine does not have: a launch per kernel, FLOPs at the sustained speed of the cell's precision
    (``tflops`` for fp16/bf16, ``fp32_tflops`` for fp32: no TF32)."""
    rates = {dtype: DeviceRates(launch_us * 1e-6, 1.0 / ((fp32_tflops if dtype == "float32" else tflops) * 1e12))
             for dtype in H100_TFLOPS}

    def timer(cell) -> DeviceRates:
        return rates.get(cell.dtype, rates["float32"])

    timer.modelled = True
    return timer


def probe_timer(device: str, repeats: int = 30):
    """Time the plain model's forward at two sizes on ``device`` and solve its per-kernel and per-FLOP rates."""
    import torch

    from perfsuite.estimate.counts import forward_ops
    from perfsuite.measure.timing import timed_call
    from perfsuite.workloads.context import ModelCache
    from perfsuite.workloads.counting import forward_flops

    cache, fitted = ModelCache(), {}

    def timer(cell) -> DeviceRates:
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

    from perfsuite.models.decoding import KVBuffer, ragged_forward
    from perfsuite.estimate.counts import ragged_ops
    from perfsuite.measure.timing import timed_call

    cfg = model.config
    cache = KVBuffer(model, 1, 32)
    idx, starts = torch.zeros(1, 1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device)
    with torch.inference_mode():
        step = lambda: ragged_forward(model, cache, idx, starts, 16)  # noqa: E731
        step()
        t = statistics.fmean(timed_call(step, device) for _ in range(repeats))
    flops = 2 * (12 * cfg.n_layer * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd)
    return max(0.0, t - flops * s_per_flop) / ragged_ops(cfg, "none", 0)[1]


def probe_host(repeats: int = 7) -> HostCosts:
    """The host-side rates on this machine's CPU, one thread (an upper bound where the runner has more cores), each
    the least of a small timed sample (about a second in all): what a step costs when it has a core, as on a runner
    that nothing else shares; the constants calibrated on the quiet VM scale with the median of the tiny forward
    (``host_speed``)."""
    from perfsuite.measure.device import cpu_threads

    with cpu_threads(1):
        return _probe_host(repeats)


def _probe_host(repeats: int) -> HostCosts:
    import torch

    from perfsuite.models.adapters import adapted_copy, attach
    from perfsuite.measure.device import count_work
    from perfsuite.models.model import build_model, get_config
    from perfsuite.measure.syncs import count_host_syncs
    from perfsuite.workloads.counting import _meta_base

    def least(fn) -> float:  # the least of a few: what this CPU does when it has a core (a runner is not shared)
        fn()
        return min(seconds(fn) for _ in range(repeats))

    a = torch.randn(256, 256)
    svd = least(lambda: torch.linalg.svd(a, full_matrices=False)) * (1024 / 256) ** 3
    model = build_model("tiny")
    tokens = torch.zeros(1, 8, dtype=torch.long)
    with torch.inference_mode():
        plain = least(lambda: model(tokens))
        ops = count_work(lambda: model(tokens), flops=False).ops
        counted = least(lambda: count_host_syncs(lambda: model(tokens)))
        forward = statistics.median(seconds(lambda: model(tokens)) for _ in range(30))  # the host's speed
    block = torch.empty(2 ** 18)
    init = least(lambda: block.normal_()) / block.numel()
    n_layer = get_config("tiny").n_layer
    adapted = least(lambda: attach(adapted_copy(model), "houlsby", 8)) / n_layer
    meta_build = least(lambda: _meta_base.__wrapped__(get_config("tiny"), "float32")) / n_layer
    speed = forward / HOST_FORWARD_REF_S
    return HostCosts(svd_1024_s=svd, dispatch_op_s=max(0.0, counted - plain) / ops, init_param_s=init,
                     meta_op_s=speed * META_OP_S, meta_build_layer_s=meta_build, adapted_build_layer_s=adapted,
                     host_speed=speed)


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
