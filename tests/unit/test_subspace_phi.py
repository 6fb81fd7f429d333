"""φ(A, A′, i, j): properties (hypothesis), the Gaussian chance level, the record shape, and a short training run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from perfsuite.cells.grid import Cell
from perfsuite.models.model import build_model
from perfsuite.subspace.phi import (
    PhiGrid,
    SubspaceError,
    chance_level,
    gaussian_pair,
    phi,
    phi_grid,
    right_singular_vectors,
    top_agree,
)
from perfsuite.workloads import subspace as workload
from perfsuite.measure.timing import RoundPolicy
from perfsuite.workloads.context import CellContext

TOL = 1e-9
# No per-example deadline: the suite runs on shared, busy CPUs, where a 200 ms deadline flakes.
PROPERTY = settings(deadline=None)
CONTRACT_KEYS = {"layer", "matrix", "comparison", "label", "r_a", "r_b", "phi", "phi_11", "top_agree"}


@st.composite
def any_matrix(draw, d=None):
    """Any finite r × d matrix with r ≤ d (not all zero): degenerate spectra included."""
    d = d or draw(st.integers(1, 12))
    r = draw(st.integers(1, d))
    m = draw(arrays(np.float64, (r, d), elements=st.floats(-100, 100, allow_subnormal=False)))
    assume(np.any(m))
    return m


@st.composite
def matrix_pair(draw):
    d = draw(st.integers(1, 12))
    return draw(any_matrix(d)), draw(any_matrix(d))


def spread_matrix(r: int, d: int, seed: int) -> np.ndarray:
    """An r × d matrix of full rank whose singular values are 1.5× apart: every top-i subspace well defined."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((r, r)))[0]
    v = np.linalg.qr(rng.standard_normal((d, r)))[0]
    return (u * 1.5 ** -np.arange(r)) @ v.T


@st.composite
def spread_pair(draw):
    d = draw(st.integers(2, 16))
    r_a, r_b = draw(st.integers(1, d)), draw(st.integers(1, d))
    return (spread_matrix(r_a, d, draw(st.integers(0, 2**32 - 1))),
            spread_matrix(r_b, d, draw(st.integers(0, 2**32 - 1))))


@PROPERTY
@given(matrix_pair())
def test_phi_is_in_unit_interval(pair):
    grid = phi_grid(*pair)
    assert grid.shape == (pair[0].shape[0], pair[1].shape[0])
    assert grid.dtype == np.float64
    assert np.all((grid >= 0) & (grid <= 1))


@PROPERTY
@given(any_matrix())
def test_phi_of_a_matrix_with_itself_is_one_on_the_diagonal(a):
    np.testing.assert_allclose(np.diagonal(phi_grid(a, a)), 1.0, atol=TOL)


@PROPERTY
@given(matrix_pair())
def test_phi_is_symmetric_under_swapping_the_pair(pair):
    a, b = pair
    np.testing.assert_allclose(phi_grid(a, b), phi_grid(b, a).T, atol=TOL)


@PROPERTY
@given(spread_pair(), st.floats(1e-3, 1e3), st.integers(0, 2**32 - 1))
def test_phi_is_invariant_to_scaling_and_to_rotating_the_rows(pair, scale, seed):
    a, b = pair
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((a.shape[0],) * 2))[0]
    np.testing.assert_allclose(phi_grid(scale * a, b), phi_grid(a, b), atol=1e-7)
    np.testing.assert_allclose(phi_grid(q @ a, b), phi_grid(a, b), atol=1e-7)


def _projector(m: np.ndarray) -> np.ndarray:
    """Orthogonal projector onto the row space of a full-rank m, without an SVD: mᵀ (m mᵀ)⁻¹ m."""
    return m.T @ np.linalg.solve(m @ m.T, m)


@PROPERTY
@given(spread_pair())
def test_phi_at_full_rank_is_the_subspace_overlap(pair):
    a, b = pair
    overlap = np.trace(_projector(a) @ _projector(b)) / min(a.shape[0], b.shape[0])
    assert phi_grid(a, b)[-1, -1] == pytest.approx(overlap, abs=1e-8)


@settings(max_examples=25, deadline=None)
@given(spread_pair())
def test_grid_matches_the_definition_cell_by_cell(pair):
    a, b = pair
    grid = phi_grid(a, b)
    for i in range(1, a.shape[0] + 1):
        for j in range(1, b.shape[0] + 1):
            assert grid[i - 1, j - 1] == pytest.approx(phi(a, b, i, j), abs=1e-10)


def test_nested_subspaces_give_one_and_orthogonal_ones_zero():
    eye = np.eye(6)
    grid = phi_grid(np.diag([3.0, 2.0, 1.0]) @ eye[:3], np.diag([5.0, 4.0]) @ eye[:2])
    assert grid[0, 0] == 1.0 and grid[1, 1] == 1.0 and grid[2, 1] == 1.0
    assert grid[2, 0] == 1.0  # span(e1) ⊂ span(e1, e2, e3)
    assert phi_grid(eye[:2], eye[3:5]).max() == 0.0


def test_gaussian_control_sits_at_chance_level():
    d, r = 40, 6
    grids = [phi_grid(*gaussian_pair(r, r, d, seed=(3, k))) for k in range(300)]
    mean = np.mean(grids, axis=0)
    np.testing.assert_allclose(mean, chance_level(r, r, d), rtol=0.2)
    assert chance_level(2, 3, 10).tolist() == [[0.1, 0.2, 0.3], [0.2, 0.2, 0.3]]


def test_torch_tensors_are_read_in_float64():
    a = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.bfloat16)
    np.testing.assert_allclose(phi_grid(a, a.float().numpy()), phi_grid(a.double(), a.double()), atol=TOL)
    assert right_singular_vectors(a).dtype == np.float64


def test_top_agree_is_the_largest_i_above_one_half():
    grid = np.diag([0.4, 0.9, 0.51, 0.2])
    assert top_agree(grid) == 3
    assert top_agree(np.full((2, 3), 0.5)) == 0  # strictly above


@pytest.mark.parametrize("a, b, match", [
    (np.ones((2, 4)), np.ones((2, 5)), "input dimensions must match"),
    (np.ones((5, 4)), np.ones((2, 4)), "above its input dimension"),
    (np.zeros((2, 4)), np.ones((2, 4)), "all zeros"),
    (np.full((2, 4), np.nan), np.ones((2, 4)), "non-finite"),
    (np.ones(4), np.ones((2, 4)), "must be 2-D"),
])
def test_bad_inputs_are_refused(a, b, match):
    with pytest.raises(SubspaceError, match=match):
        phi_grid(a, b)


def test_phi_checks_its_indices():
    with pytest.raises(SubspaceError, match="outside"):
        phi(np.eye(3), np.eye(3), 4, 1)


def test_comparison_record_follows_the_data_contract():
    c = PhiGrid(2, "q", "seed", "A_r=2 seed 0 vs A'_r=3 seed 1", np.array([[0.9, 0.5, 0.4], [0.3, 0.6, 0.2]]))
    d = c.to_dict()
    assert set(d) == CONTRACT_KEYS
    assert (d["r_a"], d["r_b"], d["phi_11"], d["top_agree"]) == (2, 3, 0.9, 2)
    assert d["phi"] == [[0.9, 0.5, 0.4], [0.3, 0.6, 0.2]]
    with pytest.raises(ValueError, match="comparison must be"):
        dataclasses.replace(c, comparison="other")


# --- the training workload, on a budget ---------------------------------------------------------------

QUICK = dataclasses.replace(workload.train_config("tiny"), steps=3, batch=2, seq_len=8, eval_batch=2)


def test_teacher_differs_from_the_base_by_a_planted_low_rank_update_of_q_and_v_only():
    base = build_model("tiny", seed=0)
    teacher = workload.planted_teacher(base, QUICK)
    d = base.config.n_embd
    for b_base, b_teacher in zip(base.h, teacher.h):
        delta = (b_teacher.attn.c_attn.weight - b_base.attn.c_attn.weight).detach().double()
        assert torch.linalg.matrix_rank(delta[:d], rtol=1e-4).item() == QUICK.planted_rank
        assert torch.linalg.matrix_rank(delta[2 * d :], rtol=1e-4).item() == QUICK.planted_rank
        assert torch.count_nonzero(delta[d : 2 * d]).item() == 0


def test_training_is_reproducible_from_its_seeds():
    base = build_model("tiny", seed=0)
    runs = [workload.train_students(base, (2,), QUICK) for _ in range(2)]
    for key in runs[0]:
        for x, y in zip(runs[0][key].a_q + runs[0][key].a_v, runs[1][key].a_q + runs[1][key].a_v):
            assert torch.equal(x, y)
    assert not torch.equal(runs[0][(2, 0)].a_q[0], runs[0][(2, 1)].a_q[0])  # the seeds do differ


class FakeBenchmark:
    """Enough of pytest-benchmark's fixture for perfsuite.measure.bench_bridge.record_rounds."""

    disabled = False

    def __init__(self):
        self.stats = None

    def pedantic(self, fn, rounds, iterations):
        self.stats = type("S", (), {"stats": type("D", (), {"data": [0.0] * rounds})()})()


def test_cell_record_carries_every_comparison_of_the_data_contract():
    cell = Cell("subspace", "lora", 2, rank_b=3, model="tiny")
    bench = FakeBenchmark()
    context = CellContext(policy=lambda c: RoundPolicy.fixed(3, 1))
    record = workload.run_subspace_cell(bench, cell, context, config=QUICK).to_dict()
    assert record["rounds"] == 3 and record["time_ms"] == pytest.approx(sorted(record["samples_ms"])[1])
    assert bench.stats.stats.data == pytest.approx([t / 1e3 for t in record["samples_ms"]])
    assert record["status"] == "ok" and record["cell_id"] == "subspace[lora-r2-R3]"
    assert record["train_time_s"] > 0 and len(record["train_runs"]) == 4
    subspace = record["subspace"]
    # 2 layers × (q, v) × (seed r_a, seed r_b, rank, control)
    assert len(subspace) == 16
    assert all(set(c) == CONTRACT_KEYS for c in subspace)
    shapes = {(c["comparison"], c["r_a"], c["r_b"]) for c in subspace}
    assert shapes == {("seed", 2, 2), ("seed", 3, 3), ("rank", 2, 3), ("control", 3, 3)}
    assert {(c["layer"], c["matrix"]) for c in subspace} == {(0, "q"), (0, "v"), (1, "q"), (1, "v")}
    for c in subspace:
        assert len(c["phi"]) == c["r_a"] and all(len(row) == c["r_b"] for row in c["phi"])


def test_a_cell_without_rank_b_is_refused():
    with pytest.raises(ValueError, match="rank_b"):
        workload.run_subspace_cell(FakeBenchmark(), Cell("subspace", "lora", 2), CellContext())
