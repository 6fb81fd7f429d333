"""What a grid costs before it runs: every step a night runs, counted from the workloads' own code paths."""

import dataclasses

import pytest
import torch

from perfsuite.models.adapters import ADAPTERS
from perfsuite.cells.grid import Cell, get_profile, select
from perfsuite.measure.device import count_work
from perfsuite.estimate import (DeviceRates, HostCosts, analytic_timer, count_latency, count_ops, estimate,
                                forward_ops, ragged_ops)
from perfsuite.estimate.counts import token_flops
from perfsuite.models.model import get_config
from perfsuite.workloads.counting import forward_flops

HOST = HostCosts(svd_1024_s=0.5, dispatch_op_s=1e-5, meta_op_s=1e-4, init_param_s=1e-8)  # planted, not probed
RATES = lambda cell: DeviceRates(1e-5, 1e-12)  # noqa: E731 — a planted device


def test_the_paper_grid_shares_one_loop_per_shape_group_with_the_probe():
    paper = get_profile("paper")
    groups = count_latency(paper, paper.cells(device="cuda"))
    prefill = [g for g in groups if g[0].phase == "prefill"]
    assert len(prefill) == 18  # 6 batches × 3 sequence lengths
    assert {len(g[1]) for g in prefill} == {23}  # the plain model, 7 adapters × 3 ranks, one merged LoRA
    assert all(g[2] == 48 and g[3] == 72 for g in prefill)  # 30 → 60 rounds, in whole cycles of 24 (and the probe)
    decode = [g for g in groups if g[0].phase == "decode"]  # 3 batches × 3 cache lengths, the plain model + 8 at r10
    assert len(decode) == 9 and {len(g[1]) for g in decode} == {9} and all(g[2] == 30 and g[3] == 60 for g in decode)


SMOKE = get_profile("smoke")
SMOKE_LATENCY = select(SMOKE.cells(device="cpu"), "workload == 'latency' and phase == 'prefill'")


@pytest.fixture(scope="module")
def smoke_latency():
    return estimate(SMOKE, SMOKE_LATENCY, RATES, how="test", host=HOST)


def test_the_smoke_estimate_counts_every_model_of_each_group(smoke_latency):
    e = smoke_latency
    # 2 groups × 9 models (plain + 8 adapters) × rounds, in whole cycles of 10 (the probe is the tenth)
    assert e.groups == 2 and e.forwards_min == 2 * 9 * 30 and e.forwards_max == 2 * 9 * 100
    assert 0 < e.seconds_min < e.seconds_max
    assert {"model builds", "FLOP counting", "untimed passes (syncs, memory)", "warm-up",
            "timed rounds (models and the probe)", "spectral-r SVDs", "session and cells' overhead",
            "comparison and report"} <= set(e.steps)
    # a CPU night has no doctor, GPU tests, blocked device loop or profiler sessions
    assert not {"doctor (each shard)", "GPU tests (each shard)", "device time (blocked events)",
                "profiler sessions (kernel sums)"} & set(e.steps)


def test_each_base_weight_is_decomposed_once_in_the_estimate_too(smoke_latency):
    # spectral-r in both shape groups of the tiny model (2 blocks, width 64): W_q and W_v of each block, once
    assert smoke_latency.steps["spectral-r SVDs"][0] == pytest.approx(2 * 2 * 0.5 * (64 / 1024) ** 3)


def test_a_gpu_night_pays_each_shards_doctor_and_gpu_tests_and_its_device_loops():
    cells = select(get_profile("paper").cells(device="cuda"), "batch == 1 and seq_len == 128")
    one = estimate(get_profile("paper"), cells, analytic_timer(), how="test", host=HOST)
    assert {"doctor (each shard)", "GPU tests (each shard)", "device time (blocked events)",
            "profiler sessions (kernel sums)"} <= set(one.steps)
    more = get_profile("paper").cells(device="cuda")[:2 * len(cells)]
    two = estimate(get_profile("paper"), more, analytic_timer(), how="test", host=HOST, shards=2)
    assert len(two.shards) == 2 and two.steps["doctor (each shard)"][0] == pytest.approx(
        2 * one.steps["doctor (each shard)"][0])
    assert max(s[1] for s in two.shards) < two.seconds_max  # side by side, the night is its longest shard


def test_the_paper_night_is_modelled_within_ten_minutes_on_one_gpu():
    """The trimmed paper profile (docs/timing.md), its doctor and GPU tests included, on a modelled H100 with host costs
    as this project's VM probed them: the GPU runner's ceiling stays under 10 minutes."""
    host = HostCosts(svd_1024_s=0.9, dispatch_op_s=1e-5, meta_op_s=1.1e-3, init_param_s=1e-8,
                     meta_build_layer_s=3e-3, adapted_build_layer_s=3e-3, host_speed=1.0)
    paper = get_profile("paper")
    e = estimate(paper, paper.cells(device="cuda"), analytic_timer(), how="test", host=host)
    gpu_runner = e.seconds_max - e.steps["comparison and report"][1]
    assert 300 < gpu_runner <= 600


def recompute_cell(window: int, batch: int = 1) -> Cell:
    return Cell("recompute", "none", 0, batch=batch, seq_len=128, window=window, gen_len=512, model="gpt2-medium",
                dtype="bfloat16", device="cuda")


def test_recompute_is_priced_with_rollbacks_at_the_rate_it_says():
    profile = get_profile("recompute")
    price = lambda cell, **kw: estimate(profile, [cell], analytic_timer(), how="test", host=HOST,  # noqa: E731
                                        fixed_costs=False, **kw)
    calm, rough = price(recompute_cell(64), mismatch_rate=0.0), price(recompute_cell(64), mismatch_rate=0.1)
    assert rough.seconds_max > 1.5 * calm.seconds_max and rough.mismatch_rate == 0.1
    assert price(recompute_cell(512)).seconds_max > price(recompute_cell(16)).seconds_max  # once priced cheaper
    own = price(recompute_cell(64), mismatch_rates={recompute_cell(64).id: 0.1})
    assert own.recorded_rates == 1 and own.seconds_max == pytest.approx(rough.seconds_max)
    steps = calm.steps
    assert steps["fixed-schedule reference decodes"][0] > 0
    assert steps["untimed decodes (memory, syncs on two windows, FLOPs, plain)"][0] > 0


def test_the_analytic_gpu_model_prices_each_precision_at_its_own_speed():
    """fp16/bf16 on tensor cores at 400 TFLOP/s; fp32 at 50: pin_precision forbids TF32."""
    timer = analytic_timer(tflops=400, launch_us=8, fp32_tflops=50)
    half, full = (timer(Cell("latency", "none", 0, batch=1, seq_len=8, dtype=d)) for d in ("float16", "float32"))
    assert half.seconds(kernels=100, ops=150, flops=4e12) == pytest.approx(100 * 8e-6 + 4e12 / 400e12)
    assert full.seconds(kernels=0, ops=0, flops=4e12) == pytest.approx(4e12 / 50e12)
    assert timer(Cell("latency", "none", 0, batch=1, seq_len=8, dtype="bfloat16")) == half


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_kernels_are_counted_per_adapter_on_the_narrow_twin_as_on_a_wider_model(adapter):
    """The twin is 64 wide; a 12-block model 256 wide (on the CPU, as the twin) dispatches the same ops."""
    from perfsuite.models.adapters import attach
    from perfsuite.models.model import GPT2

    cfg = dataclasses.replace(get_config("gpt2"), n_embd=256, n_head=8, n_inner=1024, vocab_size=1000)
    with torch.random.fork_rng(devices=[]):
        model = attach(GPT2(cfg).eval(), adapter, 16)
    tokens = torch.zeros(1, 8, dtype=torch.long)
    with torch.inference_mode():
        whole = count_work(lambda: model(tokens))
    assert forward_ops(cfg, adapter, 16, "float32") == (whole.kernels, whole.ops)


def test_kernels_differ_by_adapter_and_the_decoder_adds_its_cache():
    cfg = get_config("tiny")
    plain, houlsby = forward_ops(cfg, "none", 0, "float32"), forward_ops(cfg, "houlsby", 8, "float32")
    assert houlsby[0] > plain[0] and plain[1] >= plain[0]  # views are ops, not kernels
    assert ragged_ops(cfg, "none", 0)[0] > plain[0]  # the decoder's pass writes and gathers its cache
    assert count_ops(lambda: None) == (0, 0)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("model", ["tiny", "gpt2-medium"])
def test_a_tokens_flops_from_the_matrices_are_the_counted_ones(adapter, model):
    cfg = get_config(model)
    assert token_flops(cfg, adapter, 10, "float16") == forward_flops(cfg, adapter, 10, 1, 1, "float16")


def test_flops_are_exactly_linear_in_the_batch():
    assert forward_flops("tiny", "houlsby", 8, 6, 32, "float32") == 6 * forward_flops("tiny", "houlsby", 8, 1, 32,
                                                                                       "float32")
    assert forward_flops("tiny", "lora-merged", 8, 2, 32, "float32") == forward_flops("tiny", "none", 0, 2, 32,
                                                                                      "float32")


def test_the_fixed_host_steps_scale_with_this_cpus_speed():
    """Session, comparison and report are host work calibrated on one quiet VM: a CPU twice as slow (its tiny
    forward twice HOST_FORWARD_REF_S) gets them twice as long; the device-priced steps do not move."""
    quick = estimate(SMOKE, SMOKE_LATENCY, RATES, how="test", host=HOST)
    slow = estimate(SMOKE, SMOKE_LATENCY, RATES, how="test", host=dataclasses.replace(HOST, host_speed=2.0))
    for step in ("session and cells' overhead", "comparison and report"):
        assert slow.steps[step][0] == pytest.approx(2 * quick.steps[step][0])
    assert slow.steps["timed rounds (models and the probe)"] == quick.steps["timed rounds (models and the probe)"]


def test_the_doctors_priced_work_is_the_doctors():
    """perfsuite.estimate.fixed cannot import the doctor (a layer above): its figures are kept in step here."""
    from perfsuite.doctor import gpu, harness
    from perfsuite.estimate import fixed

    assert fixed.DOCTOR_SPINS_S == pytest.approx((harness.BRACKET_REPEATS + 1) * harness.BRACKET_MS / 1e3
                                                 + gpu.NVML_BUSY_MS / 1e3 + gpu.NVML_SETTLE_S)
    assert fixed.DOCTOR_PROBE_TOKENS == harness.DEVICE_BOUND_SHAPE[0] * harness.DEVICE_BOUND_SHAPE[1]
    assert fixed.DOCTOR_PROBE_CALLS == 2 * 2 * (harness.REPEAT_ROUNDS + 10)


def test_a_gpu_profiles_estimate_on_a_machine_without_one_models_the_gpu(monkeypatch, capsys):
    import perfsuite.estimate as estimate_module
    from perfsuite.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(estimate_module, "probe_host", lambda: HOST)
    assert main(["cells", "--profile", "recompute", "--cells", "batch == 1 and window == 64", "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "on cuda" in out and "modelled GPU (none here)" in out and "on the GPU runner" in out
    assert "mismatch rate of 0.05 per checked decision" in out
    assert main(["cells", "--profile", "paper", "--device", "cpu", "--estimate"]) == 2
    assert "its estimate models one (--device cuda)" in capsys.readouterr().err
