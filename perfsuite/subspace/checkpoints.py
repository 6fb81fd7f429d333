"""φ between two peft LoRA checkpoints, module by module: which modules match, and their φ grids with controls."""

from __future__ import annotations

from perfsuite.errors import PerfsuiteError
from perfsuite.subspace.peft_io import LoraCheckpoint, module_names
from perfsuite.subspace.phi import PhiGrid, compare, gaussian_pair


def compare_checkpoints(a: LoraCheckpoint, b: LoraCheckpoint, *, layers: list[int] | None = None,
                        matrices: list[str] | None = None, factor: str = "A", comparison: str = "auto",
                        control_seed: int | None = 0) -> list[PhiGrid]:
    """φ grids of every module the two checkpoints adapt (after the layer/matrix selection), in file order.

    The two must adapt the same modules with the same input (``factor="A"``) or output (``"B"``) dimension;
    ranks may differ. With ``control_seed``, each comparison is followed by a Gaussian control of its shape.
    """
    if factor not in ("A", "B"):
        raise PerfsuiteError(f"factor must be 'A' or 'B', not {factor!r}")
    names = module_names(list(a.modules) + list(b.modules))

    def selected(path: str) -> bool:
        layer, matrix = names[path]
        return (layers is None or layer in layers) and (matrices is None or matrix in matrices)

    for what, wanted, have in (("layer", layers, {n[0] for n in names.values()}),
                               ("matrix", matrices, {n[1] for n in names.values()})):
        missing = [w for w in wanted or () if w not in have]
        if missing:
            raise PerfsuiteError(f"no {what} {', '.join(map(str, missing))} in either checkpoint; "
                                 f"they have: {', '.join(map(str, sorted(have)))}")
    paths_a = [p for p in a.modules if selected(p)]
    paths_b = [p for p in b.modules if selected(p)]
    only_a = [p for p in paths_a if p not in b.modules]
    only_b = [p for p in paths_b if p not in a.modules]
    if only_a or only_b:
        def show(paths):
            return ", ".join(f"layer {names[p][0]} {names[p][1]}" for p in paths[:5]) + (" …" if len(paths) > 5
                                                                                        else "")
        raise PerfsuiteError("the checkpoints adapt different modules: "
                             + "; ".join(f"only in {d}: {show(ps)}" for d, ps in ((a.path, only_a), (b.path, only_b))
                                         if ps)
                             + " (select common ones with --layers / --matrices)")
    out = []
    for k, path in enumerate(paths_a):
        layer, matrix = names[path]
        ma, mb = a.modules[path], b.modules[path]
        fa, fb = (ma.lora_A, mb.lora_A) if factor == "A" else (ma.lora_B.T, mb.lora_B.T)
        if fa.shape[1] != fb.shape[1]:
            space = "input" if factor == "A" else "output"
            raise PerfsuiteError(f"layer {layer} {matrix}: the {space} dimensions differ: {fa.shape[1]} in "
                                 f"{a.path} but {fb.shape[1]} in {b.path} (not adapters of the same model?)")
        r_a, r_b = fa.shape[0], fb.shape[0]
        kind = comparison if comparison != "auto" else ("rank" if r_a != r_b else "seed")
        out.append(compare(layer, matrix, kind, f"{a.path.name} r={r_a} vs {b.path.name} r={r_b}", fa, fb))
        if control_seed is not None:
            g_a, g_b = gaussian_pair(r_a, r_b, fa.shape[1], seed=(control_seed, k))
            d = fa.shape[1]
            out.append(compare(layer, matrix, "control", f"Gaussian {r_a}×{d} vs Gaussian {r_b}×{d}", g_a, g_b))
    return out


