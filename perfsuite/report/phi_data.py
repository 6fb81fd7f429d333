"""Report, step 1 for the subspace section: φ grids from the frame's subspace cells, checked and grouped into
the figures of LoRA Figs. 3-4 and 6-7 (a panel per layer and matrix, one random-Gaussian control each)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from perfsuite.formats.record import STATUS_OK
from perfsuite.report.data import ReportError, as_int
from perfsuite.subspace.phi import PhiGrid
from perfsuite.table import figure_text

MAX_INLINE_PHI_CELLS = 1024  # φ grids larger than this are only in subspace_phi.csv, not printed on the page
_SUBSCRIPT = re.compile(r"[A-Za-z0-9_.\-]{1,40}")  # what mathtext sets as a subscript as it is


def matrix_label(matrix: str) -> str:
    """ΔW with the matrix as its subscript (ΔW_q); a name mathtext could not set so (a brace, a backslash, a
    dollar: a crafted record) follows as plain text instead, so no record can break the figure."""
    name = str(matrix)
    if _SUBSCRIPT.fullmatch(name):
        return "$\\Delta W_{" + name.replace("_", "\\_") + "}$"
    return f"ΔW {figure_text(name)}"


def panel_title(p: PhiGrid) -> str:
    """A φ panel's title: its layer and matrix, or "random Gaussian" for the control."""
    if p.comparison == "control":
        return "random Gaussian"
    return f"Layer {p.layer}  {matrix_label(p.matrix)}"


@dataclass(frozen=True)
class SubspaceGroup:
    """The panels of one subspace figure (LoRA Figs. 3-4, 6-7): same kind of comparison, same ranks."""

    stem: str
    title: str
    panels: tuple[PhiGrid, ...]
    controls: tuple[PhiGrid, ...] = field(default_factory=tuple)  # at most one: the random-Gaussian panel


def check_phi(c: Any, where: str) -> PhiGrid:
    """A comparison record (dict of the data contract, or an object with ``to_dict()``) → :class:`~perfsuite.subspace.phi.PhiGrid`."""
    if hasattr(c, "to_dict") and not isinstance(c, dict):
        c = c.to_dict()
    if not isinstance(c, dict):
        raise ReportError(f"{where}: expected a comparison record, found {type(c).__name__}")
    try:
        phi = np.asarray(c["phi"], dtype=float)
    except KeyError:
        raise ReportError(f"{where}: comparison record has no 'phi' grid") from None
    except (TypeError, ValueError):
        raise ReportError(f"{where}: 'phi' is not a grid of numbers") from None
    if phi.ndim != 2 or phi.size == 0:
        raise ReportError(f"{where}: 'phi' must be r_a lists of r_b numbers, found shape {phi.shape}")
    for k in ("r_a", "r_b"):
        want = phi.shape[0 if k == "r_a" else 1]
        if c.get(k) is not None and c.get(k) != want:
            raise ReportError(f"{where}: {k} = {c.get(k)} but 'phi' has {want} {'rows' if k == 'r_a' else 'columns'}")
    try:
        return PhiGrid(layer=as_int(c.get("layer")) if as_int(c.get("layer")) is not None else -1,
                          matrix=str(c.get("matrix", "?")), comparison=str(c.get("comparison", "seed")),
                          label=str(c.get("label") or ""), phi=phi)
    except ValueError as e:
        raise ReportError(f"{where}: {e}") from None


def subspace_records(frame: pd.DataFrame) -> list[PhiGrid]:
    """Every φ grid in the frame's subspace rows (the ``subspace`` column of ok cells), checked."""
    sub = frame[frame["workload"] == "subspace"]
    out = []
    if "subspace" not in sub.columns:
        return out
    for rec in sub.to_dict("records"):
        items = rec.get("subspace")
        if rec.get("status") != STATUS_OK or not isinstance(items, list):
            continue
        out += [check_phi(c, f"{rec.get('source')}: {rec['cell_id']} comparison {k}") for k, c in enumerate(items)]
    return out


_MATRIX_ORDER = ("q", "k", "v", "o")


def subspace_groups(phis: Iterable[PhiGrid]) -> list[SubspaceGroup]:
    """Group φ grids into figures: one per (kind of comparison, r_a, r_b), with one random-Gaussian control.

    The control is one of the same shape if there is one, else the top-left corner of a larger one: the
    top-i right-singular subspace of a Gaussian matrix is uniformly random whatever its rank, so the corner
    is the chance level for the smaller ranks too. Results with controls only get a figure of controls.
    """
    phis = list(phis)
    main = [p for p in phis if p.comparison != "control"]
    controls = sorted((p for p in phis if p.comparison == "control"), key=lambda p: (p.r_a * p.r_b, _order(p)))
    keys = sorted({(p.comparison, p.r_a, p.r_b) for p in main}, key=lambda k: (k[0] != "seed", k))
    groups = []
    for kind, ra, rb in keys:
        mine = sorted((p for p in main if (p.comparison, p.r_a, p.r_b) == (kind, ra, rb)), key=_order)
        fits = [c for c in controls if c.r_a >= ra and c.r_b >= rb]
        ctrl = ()
        if fits:
            c = fits[0]
            if (c.r_a, c.r_b) != (ra, rb):
                c = PhiGrid(c.layer, c.matrix, c.comparison, f"{c.label} (top-left {ra} × {rb} of {c.r_a} × {c.r_b})",
                        c.phi[:ra, :rb])
            ctrl = (c,)
        groups.append(SubspaceGroup(f"subspace-{kind}-r{ra}-r{rb}", phi_title(kind, ra, rb), tuple(mine), ctrl))
    if not main:
        for ra, rb in sorted({(c.r_a, c.r_b) for c in controls}):
            mine = tuple(c for c in controls if (c.r_a, c.r_b) == (ra, rb))
            groups.append(SubspaceGroup(f"subspace-control-r{ra}-r{rb}", phi_title("control", ra, rb), mine))
    return groups


def _order(p: PhiGrid) -> tuple:
    return p.layer, _MATRIX_ORDER.index(p.matrix) if p.matrix in _MATRIX_ORDER else 9, p.matrix


def phi_title(kind: str, r_a: int, r_b: int) -> str:
    """φ(A_{r=8}, A′_{r=64}, i, j) as in the LoRA paper; A vs A (no prime) when only the rank differs."""
    second = "A" if kind == "rank" else "A'"
    return f"$\\phi({{A}}_{{r={r_a}}}, {second}_{{r={r_b}}}, i, j)$"


def phi_frame(phis: Iterable[PhiGrid]) -> pd.DataFrame:
    """Every φ(i, j) in long form: one row per (comparison, i, j), 1-based like the paper."""
    rows = [{"layer": p.layer, "matrix": p.matrix, "comparison": p.comparison, "label": p.label, "r_a": p.r_a,
             "r_b": p.r_b, "i": i + 1, "j": j + 1, "phi": float(p.phi[i, j])}
            for p in phis for i in range(p.r_a) for j in range(p.r_b)]
    return pd.DataFrame(rows, columns=["layer", "matrix", "comparison", "label", "r_a", "r_b", "i", "j", "phi"])
