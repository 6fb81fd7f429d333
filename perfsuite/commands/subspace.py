"""``perfsuite subspace DIR_A DIR_B``: φ(A, A′, i, j) between two peft LoRA checkpoints, layer by layer.

A thin layer: the comparison is :mod:`perfsuite.subspace.checkpoints`, the files :mod:`perfsuite.formats.subspace`.
"""

from __future__ import annotations

import re
from pathlib import Path

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.subspace import GRID_CSV, JSON_FILE, SUMMARY_CSV, results_json, write_outputs
from perfsuite.subspace.checkpoints import compare_checkpoints
from perfsuite.subspace.peft_io import read_lora_checkpoint
from perfsuite.subspace.phi import PhiGrid
from perfsuite.table import printable

HELP = "subspace similarity φ(A, A', i, j) of two peft LoRA checkpoints, layer by layer (LoRA paper §7.2)"


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


def summary_table(comparisons: list[PhiGrid]) -> list[str]:
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
    for line in summary_table(comparisons):  # matrix names from the checkpoints' tensor names
        print(printable(line))
    n = sum(c.comparison != "control" for c in comparisons)
    print(f"{n} matrices compared on lora_{args.factor}: φ(1,1) of unrelated directions is about 1/d; "
          f"top_agree = largest i with φ(i,i) > 0.5")
    for ckpt in (a, b):
        if ckpt.other_keys:
            print(printable(f"note: {ckpt.path}: {len(ckpt.other_keys)} tensors that are not LoRA factors were not "
                            f"read (e.g. {ckpt.other_keys[0]})"))
    if args.out:
        results = results_json(a, b, comparisons, factor=args.factor, control_seed=control_seed)
        from perfsuite.report import render_subspace

        files = write_outputs(Path(args.out), results)
        files += render_subspace(results["subspace"], Path(args.out))  # φ heatmaps, as the LoRA paper's Figs. 4, 7
        for p in files:
            print(f"wrote {p}")
    return 0
