"""Subspace cells: LoRA trained from two seeds at two ranks on a planted low-rank task, φ analysis timed.

Besides the timing, each cell checks the LoRA paper's finding (§7.2, Figs. 3-4) on its real, seeded run:
the seeds agree on the top direction far above the Gaussian control, and not on most of the rest.
"""

import pytest

from perfsuite.workloads.subspace import run_subspace_cell

SEED_PHI_11_MIN = 0.5  # every layer and matrix: the two seeds' top directions agree (φ(1,1) above one half)
CONTROL_PHI_11_MAX = 0.15  # the Gaussian control stays near chance (1/d: 0.016 on the tiny model, d = 64)
SEED_PHI_FULL_MAX = 0.75  # φ(r, r) of seeds at the larger rank: most directions are not shared
FINAL_LOSS_MAX = 0.05  # the students learned the planted update (the untrained student's loss is 1)


@pytest.mark.perfsuite(workload="subspace")
def test_subspace(benchmark, perfsuite_cell, perfsuite_measure):
    benchmark.group = f"subspace-{perfsuite_cell.model}"
    record = perfsuite_measure(run_subspace_cell)
    assert record.get("final_loss") < FINAL_LOSS_MAX, record.get("train_runs")
    comparisons = record.get("subspace")
    seeds = [c for c in comparisons if c["comparison"] == "seed"]
    controls = [c for c in comparisons if c["comparison"] == "control"]
    assert seeds and controls
    low = [(c["layer"], c["matrix"], c["label"], round(c["phi_11"], 3)) for c in seeds
           if c["phi_11"] <= SEED_PHI_11_MIN]
    assert not low, f"seeds disagree on the top direction: {low}"
    high = [(c["layer"], c["matrix"], round(c["phi_11"], 3)) for c in controls if c["phi_11"] >= CONTROL_PHI_11_MAX]
    assert not high, f"Gaussian control above chance: {high}"
    r_big = max(c["r_a"] for c in seeds)
    shared = [(c["layer"], c["matrix"], c["phi"][-1][-1]) for c in seeds
              if c["r_a"] == r_big and c["phi"][-1][-1] >= SEED_PHI_FULL_MAX]
    assert not shared, f"seeds share nearly all {r_big} directions: {shared}"
