"""Device timing, memory and syncs on CUDA (marked ``gpu``, skipped with a reason where no GPU exists), each with its
CPU twin: the same code and the same assertions through a seam — a fake allocator, a fake GPU's spin and clock, the
dispatcher's sync counter, the CPU's own fp16/bf16 kernels, the smoke run on the CPU."""

import copy

import pytest
import torch
from fake_gpu import FakeCudaMemory, FakeGpu

from perfsuite.models.adapters import attach
from perfsuite.measure.device import peak_memory_above, tensor_bytes
from perfsuite.measure.device_time import CudaTiming
from perfsuite.models.model import build_model
from perfsuite.measure.timing import timed_call

ON = [pytest.param("cuda", marks=pytest.mark.gpu, id="cuda"), pytest.param("seam", id="cpu-seam")]


@pytest.mark.parametrize("on", ON)
@torch.inference_mode()
def test_peak_memory_is_the_calls_own_above_the_resident_weights(on, monkeypatch):
    device = "cuda" if on == "cuda" else "cpu"
    model = build_model("tiny", device=device)
    x = torch.randint(0, model.config.vocab_size, (4, 64), device=device)
    if on == "cuda":
        def forward(x):
            return model(x)
    else:  # a caching allocator's counters over the CPU forward: activations grow with the batch
        mem = FakeCudaMemory()
        mem.install(monkeypatch)
        mem.alloc(tensor_bytes(model))

        def forward(x):
            act = x.numel() * model.config.n_inner * 4 * 2  # the MLP's hidden activations, allocated then freed
            mem.alloc(act)
            mem.matmul()
            out = model(x)
            mem.free(act)
            return out
    peak = peak_memory_above(lambda: forward(x), "cuda")
    bigger = peak_memory_above(lambda: forward(torch.cat([x] * 8)), "cuda")
    assert 0 < peak < bigger  # activations grow with the batch; the weights (resident) are not counted
    assert peak < tensor_bytes(model) * 8


@pytest.mark.parametrize("on", ON)
@torch.inference_mode()
def test_synchronized_timing_covers_the_kernel(on):
    """A timed call must include the GPU work: a spin of ~50 ms (timed by events) takes at least that long by the
    host clock. Without the synchronize the host would be back in microseconds."""
    api = CudaTiming() if on == "cuda" else FakeGpu()
    start, end = api.event(), api.event()
    start.record()
    api.hold(50.0)
    end.record()
    end.synchronize()
    gpu_ms = start.elapsed_time(end)
    host_s = timed_call(lambda: api.hold(50.0), "cuda" if on == "cuda" else "cpu", clock=api.clock,
                        sync=api.synchronize)
    assert gpu_ms > 5 and host_s * 1e3 > 0.8 * gpu_ms


def _syncs(on: str, fn, *, strict: bool = False) -> int:
    """Host syncs of one call of ``fn``: CUDA's own report (sync debug mode; ``strict``: an error) on a GPU, the
    dispatcher's counter (perfsuite.measure.syncs) on the CPU."""
    if on == "seam":
        from perfsuite.measure.syncs import count_host_syncs

        return sum(count_host_syncs(fn).values())
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error" if strict else "warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("on", ON)
@torch.inference_mode()
def test_timed_regions_do_not_sync(on):
    """A latency forward must not make the host wait; verified decoding only at its one read-back per window."""
    from perfsuite.models.decoding import Schedule, decode_verified
    from perfsuite.workloads.recompute import untied_head

    device = "cuda" if on == "cuda" else "cpu"
    model = attach(build_model("tiny", device=device), "lora", 8)
    x = torch.randint(0, model.config.vocab_size, (2, 32), device=device)
    model(x)
    assert _syncs(on, lambda: model(x), strict=True) == 0
    head = untied_head(model)
    prompts = [torch.randint(0, 512, (n,), device=device) for n in (16, 9)]
    schedule = Schedule(window=8, context=16 + 24, token_budget=64)
    result = decode_verified(model, prompts, 24, schedule, head=head)  # warm
    assert _syncs(on, lambda: decode_verified(model, prompts, 24, schedule, head=head)) <= result.windows


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("on", ON)
@torch.inference_mode()
def test_merged_lora_matches_unmerged(on, dtype):
    device = "cuda" if on == "cuda" else "cpu"  # the CPU's own half-precision kernels on the twin
    base = build_model("tiny", dtype=dtype, device=device)
    unmerged = attach(copy.deepcopy(base), "lora", 8, seed=1)
    merged = attach(copy.deepcopy(base), "lora-merged", 8, seed=1)
    x = torch.randint(0, base.config.vocab_size, (2, 16), device=device)
    a, b = unmerged(x)[0].double(), merged(x)[0].double()
    assert (a - b).norm() / a.norm() < 5e-2


@pytest.mark.parametrize("on", ON)
def test_every_smoke_workload_runs(on, tmp_path):
    """The smoke profile end to end on the device: latency, recompute and subspace cells, timing and memory (on the
    CPU twin memory is not tracked and reads null; its CUDA path is the fake allocator's twin above)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    device = "cuda" if on == "cuda" else "cpu"
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/benchmarks", f"--perfsuite-device={device}", "-q",
                           "--perfsuite-rounds=5", "--perfsuite-warmup=1", "-p", "no:cacheprovider",
                           f"--benchmark-json={out}"], cwd=Path(__file__).parents[2], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert {b["extra_info"]["cell"]["workload"] for b in doc["benchmarks"]} == {"latency", "recompute", "subspace"}
    assert all(b["extra_info"]["cell"]["device"] == device for b in doc["benchmarks"])
    latency = [b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["cell"]["workload"] == "latency"]
    # every cell's peak memory: the CUDA allocator's on a GPU, torch.profiler's allocator events on the CPU
    assert all(e["peak_mem_bytes"] > 0 and e["weights_bytes"] > 0 and e["host_syncs"] == 0 for e in latency)
