"""GPU-only checks: device timing and memory on CUDA. Skipped with a reason where no GPU exists."""

import copy

import pytest
import torch

from perfsuite.adapters import attach
from perfsuite.model import build_model
from perfsuite.device import peak_memory_above, tensor_bytes
from perfsuite.timing import timed_call

pytestmark = pytest.mark.gpu


@torch.inference_mode()
def test_peak_memory_is_the_calls_own_above_the_resident_weights():
    model = build_model("tiny", device="cuda")
    x = torch.randint(0, model.config.vocab_size, (4, 64), device="cuda")
    peak = peak_memory_above(lambda: model(x), "cuda")
    bigger = peak_memory_above(lambda: model(torch.cat([x] * 8)), "cuda")
    assert 0 < peak < bigger  # activations grow with the batch; the weights (resident) are not counted
    assert peak < tensor_bytes(model) * 8


@torch.inference_mode()
def test_synchronized_timing_covers_the_kernel():
    """A timed call must include the GPU work: a spin kernel of ~50 ms (timed by CUDA events) takes at least that
    long by the host clock. Without the synchronize the host would be back in microseconds."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(50_000_000)
    end.record()
    end.synchronize()
    gpu_ms = start.elapsed_time(end)
    host_s = timed_call(lambda: torch.cuda._sleep(50_000_000), "cuda")
    assert gpu_ms > 5 and host_s * 1e3 > 0.8 * gpu_ms


@torch.inference_mode()
def test_timed_regions_do_not_sync_under_cuda_sync_debug_mode():
    """A latency forward must not make the host wait; verified decoding only at its one read-back per window."""
    import warnings

    from perfsuite.decoding import Schedule, decode_verified
    from perfsuite.workloads.recompute import untied_head

    model = attach(build_model("tiny", device="cuda"), "lora", 8)
    x = torch.randint(0, model.config.vocab_size, (2, 32), device="cuda")
    model(x)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    head = untied_head(model)
    prompts = [torch.randint(0, 512, (n,), device="cuda") for n in (16, 9)]
    schedule = Schedule(window=8, context=16 + 24, token_budget=64)
    decode_verified(model, prompts, 24, schedule, head=head)  # warm
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = decode_verified(model, prompts, 24, schedule, head=head)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= result.windows


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.inference_mode()
def test_merged_lora_matches_unmerged_on_gpu(dtype):
    base = build_model("tiny", dtype=dtype, device="cuda")
    unmerged = attach(copy.deepcopy(base), "lora", 8, seed=1)
    merged = attach(copy.deepcopy(base), "lora-merged", 8, seed=1)
    x = torch.randint(0, base.config.vocab_size, (2, 16), device="cuda")
    a, b = unmerged(x)[0].double(), merged(x)[0].double()
    assert (a - b).norm() / a.norm() < 5e-2


def test_every_smoke_workload_runs_on_cuda(tmp_path):
    """The smoke profile end to end on the GPU: latency, recompute and subspace cells, CUDA timing and memory."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "cuda.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/benchmarks", "--perfsuite-device=cuda", "-q",
                           "--perfsuite-rounds=5", "--perfsuite-warmup=1", "-p", "no:cacheprovider",
                           f"--benchmark-json={out}"], cwd=Path(__file__).parents[2], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert {b["extra_info"]["cell"]["workload"] for b in doc["benchmarks"]} == {"latency", "recompute", "subspace"}
    assert all(b["extra_info"]["cell"]["device"] == "cuda" for b in doc["benchmarks"])
    latency = [b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["cell"]["workload"] == "latency"]
    assert all(e["peak_mem_bytes"] > 0 and e["weights_bytes"] > 0 and e["host_syncs"] == 0 for e in latency)
