"""``perfsuite cells``: list a profile's cells without running them, and estimate what running them costs."""

from __future__ import annotations

from perfsuite.cells.grid import PROFILES, get_profile, select
from perfsuite.estimate import H100_FP16_TFLOPS, LAUNCH_US
from perfsuite.plugin.options import at_least_one, at_least_zero

HELP = "list the cells of a profile (after --cells selection) without running anything; --estimate: their cost"


def add_arguments(p) -> None:
    p.add_argument("--profile", default="smoke", help=f"profile: {', '.join(PROFILES)} (default: smoke)")
    p.add_argument("--cells", default=None, metavar="EXPR", help="selection expression over cell fields")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device written into the cells (default: cpu)")
    p.add_argument("--estimate", action="store_true",
                   help="print the timed forward passes and the expected wall time: probed on this machine's "
                        "device, or modelled for a GPU this machine does not have (--gpu-tflops, --launch-us)")
    p.add_argument("--rounds", type=at_least_one, default=None, metavar="N", help="as perfsuite run --rounds (fixed rounds)")
    p.add_argument("--warmup", type=at_least_zero, default=None, metavar="N", help="as perfsuite run --warmup")
    p.add_argument("--gpu-tflops", type=float, default=H100_FP16_TFLOPS, metavar="T",
                   help=f"the GPU model's sustained TFLOP/s (default: {H100_FP16_TFLOPS:g}, an H100 in fp16)")
    p.add_argument("--launch-us", type=float, default=LAUNCH_US, metavar="US",
                   help=f"the GPU model's µs per kernel launch (default: {LAUNCH_US:g})")


def run(args) -> int:
    profile = get_profile(args.profile)
    cells = select(profile.cells(device=args.device), args.cells)
    if not args.estimate:
        for c in cells:
            print(c.id)
        print(f"{len(cells)} cells in profile {profile.name!r} ({profile.description})")
        return 0
    import torch

    from perfsuite.estimate import analytic_timer, estimate, probe_timer

    if args.device == "cuda" and not torch.cuda.is_available():
        timer = analytic_timer(args.gpu_tflops, args.launch_us)
        how = (f"modelled (no GPU here): {args.launch_us:g} µs per kernel launch, {args.gpu_tflops:g} TFLOP/s "
               "sustained")
    else:
        timer = probe_timer(args.device)
        how = f"probed on this machine's {args.device} (the plain model at two sizes)"
    e = estimate(profile, cells, timer, how=how, rounds=args.rounds, warmup=args.warmup)
    print(f"profile {profile.name!r}: {len(cells)} cells, {e.groups} latency shape groups on {args.device}")
    print(f"timed forward passes: {e.forwards_min:,} to {e.forwards_max:,} (rounds from the floor to the ceiling); "
          f"the per-cell design (plain model re-timed for every cell, ceiling rounds): {e.forwards_per_cell_design:,} "
          f"({100 * e.forwards_max / max(1, e.forwards_per_cell_design):.0f} % of it at the ceiling)")
    print(f"expected wall time of the timed work: {e.seconds_min / 60:.1f} to {e.seconds_max / 60:.1f} min ({how}); "
          "add model building, warm-up of new shapes and, for subspace cells, training")
    return 0
