"""``perfsuite subspace DIR_A DIR_B``: φ(A, A′, i, j) between two peft LoRA checkpoints, layer by layer.

Pure functions (:func:`compare_checkpoints`, :func:`write_outputs`) under a thin argparse layer.

Format history of ``subspace.json`` (``perfsuite_subspace_format``; bump on any change a reader must know about):
  1 — first version: a, b (checkpoint path and peft config summary), factor, control_seed, and ``subspace``,
      the list of comparisons of :meth:`perfsuite.subspace.Comparison.to_dict` (the benchmark's extra_info shape).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from perfsuite.errors import PerfsuiteError
from perfsuite.subspace.peft_io import LoraCheckpoint, module_names, read_lora_checkpoint
from perfsuite.subspace.phi import Comparison, compare, gaussian_pair

HELP = "subspace similarity φ(A, A', i, j) of two peft LoRA checkpoints, layer by layer (LoRA paper §7.2)"

FORMAT_VERSION = 1
JSON_FILE = "subspace.json"
GRID_CSV = "subspace.csv"  # tidy: one row per (comparison, i, j)
SUMMARY_CSV = "subspace_summary.csv"  # one row per comparison
CONFIG_SUMMARY_KEYS = ("r", "lora_alpha", "target_modules", "base_model_name_or_path", "rank_pattern")


def add_arguments(p) -> None:
    p.add_argument("dir_a", metavar="DIR_A", help="peft adapter directory (adapter_config.json + "
                                                  "adapter_model.safetensors): A")
    p.add_argument("dir_b", metavar="DIR_B", help="peft adapter directory: A'")
    p.add_argument("--layers", default=None, metavar="LIST",
                   help="layer indices to compare, e.g. 0,5,10-12 (default: every layer)")
    p.add_argument("--matrices", default=None, metavar="NAMES",
                   help="module names to compare, comma-separated, e.g. c_attn or q_proj,v_proj (default: all)")
    p.add_argument("--factor", default="A", choices=("A", "B"),
                   help="A: row spaces of lora_A, the input directions (the paper's analysis; default); "
                        "B: column spaces of lora_B, the output directions")
    p.add_argument("--comparison", default="auto", choices=("auto", "seed", "rank"),
                   help="what the two adapters differ in, written into the results; auto: rank if the ranks "
                        "differ, else seed (default: auto)")
    p.add_argument("--control-seed", default=0, type=int, metavar="N",
                   help="seed of the Gaussian control of each comparison's shape (default: 0)")
    p.add_argument("--no-control", action="store_true", help="leave out the Gaussian control")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"write {JSON_FILE}, {GRID_CSV} and {SUMMARY_CSV} into DIR (created if missing)")


def parse_layers(spec: str) -> list[int]:
    """'0,5,10-12' → [0, 5, 10, 11, 12]."""
    layers: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(-?\d+)(?:-(\d+))?", part)
        if m is None:
            raise PerfsuiteError(f"--layers: cannot read {part!r} in {spec!r}; use e.g. 0,5,10-12")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise PerfsuiteError(f"--layers: empty range {part!r}")
        layers += range(lo, hi + 1)
    return list(dict.fromkeys(layers))


def compare_checkpoints(a: LoraCheckpoint, b: LoraCheckpoint, *, layers: list[int] | None = None,
                        matrices: list[str] | None = None, factor: str = "A", comparison: str = "auto",
                        control_seed: int | None = 0) -> list[Comparison]:
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


def results_json(a: LoraCheckpoint, b: LoraCheckpoint, comparisons: list[Comparison], *, factor: str,
                 control_seed: int | None) -> dict[str, Any]:
    def side(c: LoraCheckpoint) -> dict[str, Any]:
        return {"path": str(c.path), "peft_config": {k: c.config.get(k) for k in CONFIG_SUMMARY_KEYS}}

    return {"perfsuite_subspace_format": FORMAT_VERSION, "a": side(a), "b": side(b), "factor": factor,
            "control_seed": control_seed, "subspace": [c.to_dict() for c in comparisons]}


def read_results_json(path: str | Path) -> dict[str, Any]:
    """A ``subspace.json`` written by this command; refuses unknown format versions."""
    data = json.loads(Path(path).read_text())
    version = data.get("perfsuite_subspace_format") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise PerfsuiteError(f"{path}: perfsuite_subspace_format {version!r} is not one this version reads "
                             f"({FORMAT_VERSION})")
    return data


def write_outputs(out: Path, results: dict[str, Any]) -> list[Path]:
    """subspace.json, the tidy grid CSV and the summary CSV; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(results, indent=1) + "\n")
    keys = ("layer", "matrix", "comparison", "label", "r_a", "r_b")
    with open(out / GRID_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys + ("i", "j", "phi"))
        for c in results["subspace"]:
            for i, row in enumerate(c["phi"], start=1):
                for j, value in enumerate(row, start=1):
                    w.writerow([c[k] for k in keys] + [i, j, value])
    with open(out / SUMMARY_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys + ("phi_11", "top_agree"))
        for c in results["subspace"]:
            w.writerow([c[k] for k in keys] + [f"{c['phi_11']:.6f}", c["top_agree"]])
    from perfsuite.report import render_subspace

    figures = render_subspace(results["subspace"], out)  # the φ heatmaps, like the LoRA paper's Figs. 4 and 7
    return [out / JSON_FILE, out / GRID_CSV, out / SUMMARY_CSV, *figures]


def summary_table(comparisons: list[Comparison]) -> list[str]:
    """One line per (layer, matrix): φ(1,1) and top_agree of the comparison, and φ(1,1) of its control."""
    rows = [("layer", "matrix", "r_a", "r_b", "phi_11", "top_agree", "control_phi_11")]
    controls = {(c.layer, c.matrix): c for c in comparisons if c.comparison == "control"}
    for c in comparisons:
        if c.comparison == "control":
            continue
        ctl = controls.get((c.layer, c.matrix))
        rows.append((str(c.layer), c.matrix, str(c.r_a), str(c.r_b), f"{c.phi_11:.3f}", str(c.top_agree),
                     f"{ctl.phi_11:.3f}" if ctl else "-"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) if k == 1 else v.rjust(w) for k, (v, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def run(args) -> int:
    layers = parse_layers(args.layers) if args.layers else None
    matrices = [m.strip() for m in args.matrices.split(",") if m.strip()] if args.matrices else None
    a, b = read_lora_checkpoint(args.dir_a), read_lora_checkpoint(args.dir_b)
    control_seed = None if args.no_control else args.control_seed
    comparisons = compare_checkpoints(a, b, layers=layers, matrices=matrices, factor=args.factor,
                                      comparison=args.comparison, control_seed=control_seed)
    for line in summary_table(comparisons):
        print(line)
    n = sum(c.comparison != "control" for c in comparisons)
    print(f"{n} matrices compared on lora_{args.factor}: φ(1,1) of unrelated directions is about 1/d; "
          f"top_agree = largest i with φ(i,i) > 0.5")
    for ckpt in (a, b):
        if ckpt.other_keys:
            print(f"note: {ckpt.path}: {len(ckpt.other_keys)} tensors that are not LoRA factors were not read "
                  f"(e.g. {ckpt.other_keys[0]})")
    if args.out:
        results = results_json(a, b, comparisons, factor=args.factor, control_seed=control_seed)
        for p in write_outputs(Path(args.out), results):
            print(f"wrote {p}")
    return 0
