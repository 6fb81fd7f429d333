"""Subspace similarity of adapters, φ(A, A′, i, j) (Hu et al. 2021, LoRA, §7.2 and eq. 4).

For adapter down-projections A (r_A × d) and A′ (r_B × d) acting on the same input
space R^d, let U_A^i be the top-i right-singular vectors of A as a d × i matrix. Then

    φ(A, A′, i, j) = ‖U_A^{i⊤} U_{A′}^{j}‖_F² / min(i, j)   ∈ [0, 1],

the mean squared cosine of the principal angles between the two subspaces: 1 when
the smaller one lies inside the larger, 0 when they are orthogonal. Two random
subspaces of R^d give E[φ] = max(i, j)/d (:func:`chance_level`).

Everything is float64. :func:`phi_grid` gets the whole i × j grid from one SVD of
each matrix: with M = V_A^⊤ V_{A′} (r_A × r_B), ‖U_A^{i⊤}U_{A′}^j‖_F² is the sum of M²
over its top-left i × j block, i.e. a 2-D cumulative sum.

Directions whose singular value is zero (or tied with another) are not determined by
the matrix; φ over them reflects the SVD routine, not the adapter. Trained LoRA
factors have distinct non-zero singular values, and an all-zero matrix is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from perfsuite.errors import PerfsuiteError

AGREE_THRESHOLD = 0.5  # top_agree: the largest i with φ(i, i) above this
COMPARISONS = ("seed", "rank", "control")  # what differs between the two adapters of a comparison
GRID_DIGITS = 6  # decimals kept for φ grids in JSON records (summaries keep full precision)


class SubspaceError(PerfsuiteError, ValueError):
    pass


def as_float64_matrix(a: Any, name: str = "matrix") -> np.ndarray:
    """``a`` (numpy array, torch tensor or nested list) as a finite 2-D float64 numpy array."""
    if hasattr(a, "detach"):  # a torch tensor, on any device, in any dtype
        a = a.detach().to("cpu").double().numpy()
    m = np.asarray(a, dtype=np.float64)
    if m.ndim != 2:
        raise SubspaceError(f"{name} must be 2-D (rank × input dim), got shape {m.shape}")
    if 0 in m.shape:
        raise SubspaceError(f"{name} is empty (shape {m.shape})")
    if not np.all(np.isfinite(m)):
        raise SubspaceError(f"{name} has non-finite values")
    return m


def right_singular_vectors(a: Any, name: str = "matrix") -> np.ndarray:
    """The right-singular vectors of ``a`` (r × d, r ≤ d) as the columns of a d × r matrix, largest first."""
    m = as_float64_matrix(a, name)
    r, d = m.shape
    if r > d:
        raise SubspaceError(f"{name} has rank dimension {r} above its input dimension {d}; "
                            "expected an adapter down-projection of shape (r, d) with r <= d")
    if not np.any(m):
        raise SubspaceError(f"{name} is all zeros: its singular vectors are undefined (an untrained factor?)")
    _, _, vh = np.linalg.svd(m, full_matrices=False)  # vh: (r, d), rows ordered by singular value
    return vh.T


def phi_grid(a: Any, b: Any, *, names: tuple[str, str] = ("A", "A'")) -> np.ndarray:
    """φ(a, b, i, j) for all 1 ≤ i ≤ r_a, 1 ≤ j ≤ r_b: an r_a × r_b float64 array (row i-1, column j-1)."""
    va = right_singular_vectors(a, names[0])
    vb = right_singular_vectors(b, names[1])
    if va.shape[0] != vb.shape[0]:
        raise SubspaceError(f"{names[0]} acts on R^{va.shape[0]} but {names[1]} on R^{vb.shape[0]}: "
                            "the input dimensions must match")
    return phi_grid_from_bases(va, vb)


def phi_grid_from_bases(va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """The φ grid from orthonormal bases (d × r_a and d × r_b, columns ordered by importance)."""
    overlap = np.cumsum(np.cumsum((va.T @ vb) ** 2, axis=0), axis=1)  # ‖U_a^{i⊤} U_b^j‖_F² for all i, j
    i = np.arange(1, va.shape[1] + 1)
    j = np.arange(1, vb.shape[1] + 1)
    return np.clip(overlap / np.minimum.outer(i, j), 0.0, 1.0)  # clip: rounding can overshoot by ~1e-16


def phi(a: Any, b: Any, i: int, j: int) -> float:
    """φ(a, b, i, j) for one (i, j), straight from the definition (two SVDs; use :func:`phi_grid` for grids)."""
    va = right_singular_vectors(a, "A")
    vb = right_singular_vectors(b, "A'")
    if not (1 <= i <= va.shape[1] and 1 <= j <= vb.shape[1]):
        raise SubspaceError(f"(i, j) = ({i}, {j}) is outside [1, {va.shape[1]}] × [1, {vb.shape[1]}]")
    if va.shape[0] != vb.shape[0]:
        raise SubspaceError(f"A acts on R^{va.shape[0]} but A' on R^{vb.shape[0]}")
    return float(np.linalg.norm(va[:, :i].T @ vb[:, :j], "fro") ** 2 / min(i, j))


def chance_level(r_a: int, r_b: int, d: int) -> np.ndarray:
    """E[φ(i, j)] for independent uniformly random subspaces of R^d: max(i, j)/d, as an r_a × r_b grid."""
    return np.maximum.outer(np.arange(1, r_a + 1), np.arange(1, r_b + 1)) / d


def gaussian_pair(r_a: int, r_b: int, d: int, seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard-Gaussian matrices, r_a × d and r_b × d: the random control (LoRA paper Fig. 4).

    ``seed`` is anything ``numpy.random.default_rng`` takes, e.g. (seed, layer, matrix index).
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((r_a, d)), rng.standard_normal((r_b, d))


def top_agree(grid: np.ndarray, threshold: float = AGREE_THRESHOLD) -> int:
    """The largest i with φ(i, i) > ``threshold``; 0 if there is none."""
    diag = np.diagonal(grid)
    above = np.nonzero(diag > threshold)[0]
    return int(above[-1]) + 1 if above.size else 0


@dataclass(frozen=True)
class PhiGrid:
    """The φ grid of one pair of adapter matrices, and what the pair is."""

    layer: int
    matrix: str  # "q", "v" (the suite's LoRA), or a checkpoint's module name such as "c_attn"
    comparison: str  # one of COMPARISONS
    label: str  # human-readable, e.g. "A_r=8 seed 0 vs A'_r=8 seed 1"
    phi: np.ndarray  # (r_a, r_b) float64

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison must be one of {COMPARISONS}, not {self.comparison!r}")

    @property
    def r_a(self) -> int:
        return self.phi.shape[0]

    @property
    def r_b(self) -> int:
        return self.phi.shape[1]

    @property
    def phi_11(self) -> float:
        return float(self.phi[0, 0])

    @property
    def top_agree(self) -> int:
        return top_agree(self.phi)

    def to_dict(self, digits: int = GRID_DIGITS) -> dict[str, Any]:
        """The record of the results data contract (the same in benchmark ``extra_info`` and CLI JSON)."""
        return {
            "layer": int(self.layer),
            "matrix": self.matrix,
            "comparison": self.comparison,
            "label": self.label,
            "r_a": self.r_a,
            "r_b": self.r_b,
            "phi": np.round(self.phi, digits).tolist(),
            "phi_11": self.phi_11,
            "top_agree": self.top_agree,
        }


def compare(layer: int, matrix: str, comparison: str, label: str, a: Any, b: Any) -> PhiGrid:
    """The :class:`PhiGrid` of ``a`` and ``b`` (both r × d, same d)."""
    names = (f"layer {layer} {matrix}: A", f"layer {layer} {matrix}: A'")
    return PhiGrid(layer, matrix, comparison, label, phi_grid(a, b, names=names))
