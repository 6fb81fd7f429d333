"""GPU-only checks: device timing and memory on CUDA. Skipped with a reason where no GPU exists."""

import copy

import pytest
import torch

from perfsuite.adapters import attach
from perfsuite.model import build_model
from perfsuite.timing import peak_memory_bytes, timed_call

pytestmark = pytest.mark.gpu


@torch.inference_mode()
def test_peak_memory_is_measured_on_cuda():
    model = build_model("tiny", device="cuda")
    x = torch.randint(0, model.config.vocab_size, (4, 64), device="cuda")
    peak = peak_memory_bytes(lambda: model(x), "cuda")
    assert peak is not None and peak > sum(p.numel() * p.element_size() for p in model.parameters())


@torch.inference_mode()
def test_synchronized_timing_covers_the_kernel():
    """A timed call must include the GPU work: 20 products take clearly longer than 1."""
    a = torch.randn(2048, 2048, device="cuda")
    one = min(timed_call(lambda: a @ a, "cuda") for _ in range(5))
    many = min(timed_call(lambda: [a @ a for _ in range(20)], "cuda") for _ in range(5))
    assert many > 5 * one


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
    assert all(b["extra_info"]["peak_mem_bytes"] > 0 for b in doc["benchmarks"]
               if b["extra_info"]["cell"]["workload"] == "latency")
