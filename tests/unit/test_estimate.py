"""What a grid costs before it runs: every step a night runs, counted from the workloads' own code paths."""

import pytest

from perfsuite.cells.grid import Cell, get_profile, select
from perfsuite.estimate import (DeviceRates, HostCosts, analytic_timer, count_latency, count_ops, estimate,
                                forward_ops, ragged_ops)
from perfsuite.workloads.latency import forward_flops

HOST = HostCosts(svd_1024_s=0.5, dispatch_op_s=1e-5, meta_op_s=1e-4, init_param_s=1e-8)  # planted, not probed


def test_the_paper_grid_shares_one_loop_per_shape_group():
    paper = get_profile("paper")
    groups = count_latency(paper, paper.cells(device="cuda"))
    prefill = [g for g in groups if g[0].phase == "prefill"]
    assert len(prefill) == 18  # 6 batches × 3 sequence lengths
    assert {len(g[1]) for g in prefill} == {23}  # the plain model, 7 adapters × 3 ranks, one merged LoRA
    assert all(g[2] == 46 and g[3] == 115 for g in prefill)  # 30 → 100 rounds, in whole cycles of 23
    decode = [g for g in groups if g[0].phase == "decode"]  # 3 batches × 3 cache lengths, the plain model + 8 at r10
    assert len(decode) == 9 and {len(g[1]) for g in decode} == {9} and all(g[2] == 36 and g[3] == 108 for g in decode)


SMOKE = get_profile("smoke")
SMOKE_LATENCY = select(SMOKE.cells(device="cpu"), "workload == 'latency' and phase == 'prefill'")


@pytest.fixture(scope="module")
def smoke_latency():
    return estimate(SMOKE, SMOKE_LATENCY, lambda cell: DeviceRates(1e-5, 1e-12), how="test", host=HOST)


def test_the_smoke_estimate_counts_every_model_of_each_group(smoke_latency):
    e = smoke_latency
    # 2 groups × 9 models (plain + 8 adapters) × rounds, in whole cycles of 9
    assert e.groups == 2 and e.forwards_min == 2 * 9 * 36 and e.forwards_max == 2 * 9 * 108
    assert 0 < e.seconds_min < e.seconds_max
    assert {"model builds", "FLOP counting", "untimed passes (syncs, memory)", "warm-up", "timed rounds",
            "spectral-r SVDs", "session and cells' overhead", "comparison and report"} <= set(e.steps)


def test_each_base_weight_is_decomposed_once_in_the_estimate_too(smoke_latency):
    # spectral-r in both shape groups of the tiny model (2 blocks, width 64): W_q and W_v of each block, once
    assert smoke_latency.steps["spectral-r SVDs"][0] == pytest.approx(2 * 2 * 0.5 * (64 / 1024) ** 3)


def test_recompute_counts_the_fixed_schedule_reference_and_the_observed_decode():
    cell = select(SMOKE.cells(device="cpu"), "workload == 'recompute' and batch == 1 and window == 4")[0]
    rates = lambda c: DeviceRates(1e-5, 1e-12)  # noqa: E731
    one = estimate(SMOKE, [cell], rates, how="test", host=HOST)
    assert one.steps["fixed-schedule reference decodes"][0] > 0
    assert one.steps["untimed decodes (syncs, FLOPs, memory, plain)"][0] > 0
    longer = Cell("recompute", "none", 0, batch=1, seq_len=cell.seq_len, window=4, gen_len=2 * cell.gen_len,
                  model="tiny")
    two = estimate(SMOKE, [longer], rates, how="test", host=HOST)
    assert two.steps["fixed-schedule reference decodes"][0] > 1.5 * one.steps["fixed-schedule reference decodes"][0]


def test_the_analytic_gpu_model_is_launches_plus_flops_over_speed():
    rates = analytic_timer(tflops=400, launch_us=8)(get_profile("paper").cells(device="cuda")[0])
    assert rates.seconds(kernels=100, ops=150, flops=4e12) == pytest.approx(100 * 8e-6 + 4e12 / 400e12)


def test_kernels_are_counted_per_adapter_not_assumed():
    from perfsuite.model import get_config

    cfg = get_config("tiny")
    plain, houlsby = forward_ops(cfg, "none", 0, "float32"), forward_ops(cfg, "houlsby", 8, "float32")
    assert houlsby[0] > plain[0] and plain[1] >= plain[0]  # views are ops, not kernels
    assert ragged_ops(cfg, "none", 0)[0] > plain[0]  # the decoder's pass writes and gathers its cache
    assert count_ops(lambda: None) == (0, 0)


def test_flops_are_exactly_linear_in_the_batch():
    assert forward_flops("tiny", "houlsby", 8, 6, 32, "float32") == 6 * forward_flops("tiny", "houlsby", 8, 1, 32,
                                                                                       "float32")
    assert forward_flops("tiny", "lora-merged", 8, 2, 32, "float32") == forward_flops("tiny", "none", 0, 2, 32,
                                                                                      "float32")


def test_the_fixed_host_steps_scale_with_this_cpus_speed():
    """Session, comparison and report are host work calibrated on one quiet VM: a CPU twice as slow (its tiny
    forward twice HOST_FORWARD_REF_S) gets them twice as long; the device-priced steps do not move."""
    from dataclasses import replace

    rates = lambda cell: DeviceRates(1e-5, 1e-12)  # noqa: E731
    quick = estimate(SMOKE, SMOKE_LATENCY, rates, how="test", host=HOST)
    slow = estimate(SMOKE, SMOKE_LATENCY, rates, how="test", host=replace(HOST, host_speed=2.0))
    for step in ("session and cells' overhead", "comparison and report"):
        assert slow.steps[step][0] == pytest.approx(2 * quick.steps[step][0])
    assert slow.steps["timed rounds"] == quick.steps["timed rounds"]
