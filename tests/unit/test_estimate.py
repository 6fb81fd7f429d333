"""What a grid costs before it runs: timed forwards of the shared loops against the per-cell design, and time."""

import pytest

from perfsuite.cells.grid import get_profile, select
from perfsuite.estimate import analytic_timer, count_latency, estimate
from perfsuite.workloads.latency import forward_flops


def test_the_paper_grid_times_at_most_60_percent_of_the_per_cell_designs_forwards():
    paper = get_profile("paper")
    groups = count_latency(paper, paper.cells(device="cuda"))
    assert len(groups) == 18  # 6 batches × 3 sequence lengths
    models = {len(g[1]) for g in groups}
    assert models == {23}  # the plain model, 7 adapters × 3 ranks, one merged LoRA for every rank
    shared = sum(len(g[1]) * (g[3] + g[4]) for g in groups)  # at the ceiling: 100 rounds → whole rotations
    per_cell = sum(2 * (100 + 10) for g in groups for _ in g[5])
    assert per_cell == 99_000 and shared / per_cell <= 0.60


def test_the_smoke_estimate_counts_every_model_of_each_group():
    smoke = get_profile("smoke")
    cells = select(smoke.cells(device="cpu"), "workload == 'latency'")
    e = estimate(smoke, cells, lambda cell: (1e-4, 1e-12), how="test")
    # 2 groups × 9 models (plain + 8 adapters) × (rounds + 3 warm-up + 2 untimed), rounds in whole rotations
    assert e.groups == 2 and e.forwards_min == 2 * 9 * (36 + 3 + 2) and e.forwards_max == 2 * 9 * (108 + 3 + 2)
    assert e.forwards_per_cell_design == 18 * 2 * (100 + 3)
    assert 0 < e.seconds_min < e.seconds_max


def test_the_analytic_gpu_model_is_a_launch_floor_plus_flops_over_speed():
    floor, per_flop = analytic_timer(tflops=400, launch_us=8)(get_profile("paper").cells(device="cuda")[0])
    assert floor == pytest.approx(25 * 24 * 8e-6) and per_flop == pytest.approx(1 / 400e12)


def test_flops_are_exactly_linear_in_the_batch():
    assert forward_flops("tiny", "houlsby", 8, 6, 32, "float32") == 6 * forward_flops("tiny", "houlsby", 8, 1, 32,
                                                                                       "float32")
    assert forward_flops("tiny", "lora-merged", 8, 2, 32, "float32") == forward_flops("tiny", "none", 0, 2, 32,
                                                                                      "float32")
