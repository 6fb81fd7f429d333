"""``perfsuite cells``: list a profile's cells without running them, and estimate what running them costs."""

from __future__ import annotations

from perfsuite.cells.grid import MODERN_MODELS, PROFILES, get_profile, no_match_message, selected_cells
from perfsuite.errors import PerfsuiteError
from perfsuite.estimate import H100_FP16_TFLOPS, LAUNCH_US
from perfsuite.plugin.options import at_least_one, at_least_zero

HELP = "list the cells of a profile (after --cells selection) without running anything; --estimate: their cost"


def add_arguments(p) -> None:
    p.add_argument("--profile", default="smoke", help=f"profile: {', '.join(PROFILES)} (default: smoke)")
    p.add_argument("--cells", default=None, metavar="EXPR", help="selection expression over cell fields")
    p.add_argument("--adapters", default=None, metavar="MODULE:OBJECT",
                   help="more adapters for the grid, as perfsuite run --adapters (installed packages add theirs "
                        "through the entry-point group perfsuite.adapters)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device written into the cells (default: cpu)")
    p.add_argument("--estimate", action="store_true",
                   help="print the timed forward passes and the expected wall time of the whole run, step by "
                        "step: the device probed on this machine, or modelled for a GPU this machine does not have "
                        "(--gpu-tflops, --launch-us); host steps probed on this CPU")
    p.add_argument("--rounds", type=at_least_one, default=None, metavar="N", help="as perfsuite run --rounds (fixed rounds)")
    p.add_argument("--warmup", type=at_least_zero, default=None, metavar="N", help="as perfsuite run --warmup")
    p.add_argument("--gpu-tflops", type=float, default=H100_FP16_TFLOPS, metavar="T",
                   help=f"the GPU model's sustained TFLOP/s (default: {H100_FP16_TFLOPS:g}, an H100 in fp16)")
    p.add_argument("--launch-us", type=float, default=LAUNCH_US, metavar="US",
                   help=f"the GPU model's µs per kernel launch (default: {LAUNCH_US:g})")


def run(args) -> int:
    if args.adapters:
        from perfsuite.extensions import add_adapters

        add_adapters(args.adapters)
    profile = get_profile(args.profile)
    cells = selected_cells(profile, args.cells, device=args.device)
    if args.cells and not cells:  # as perfsuite run refuses it: the field values the expression could have meant
        raise PerfsuiteError(no_match_message(profile, profile.cells(device=args.device, all_modes=True), args.cells))
    if not args.estimate:
        for c in cells:
            print(c.id)
        print(f"{len(cells)} cells in profile {profile.name!r} ({profile.description})")
        return 0
    modern = sorted({c.model for c in cells if c.model in MODERN_MODELS})
    if modern:  # the cost model counts GPT-2 blocks (perfsuite.estimate); these families are not modelled
        raise PerfsuiteError(f"--estimate models GPT-2 presets only, not {', '.join(modern)}; "
                             "select other cells or list them without --estimate")
    import torch

    from perfsuite.estimate import analytic_timer, estimate, probe_timer

    if args.device == "cuda" and not torch.cuda.is_available():
        timer = analytic_timer(args.gpu_tflops, args.launch_us)
        how = (f"modelled (no GPU here): {args.launch_us:g} µs per kernel launch, {args.gpu_tflops:g} TFLOP/s "
               "sustained")
    else:
        timer = probe_timer(args.device)
        how = f"probed on this machine's {args.device} (the plain model at two sizes)"
    from perfsuite.device import cpu_threads

    with cpu_threads(1 if args.device == "cpu" else None):  # as perfsuite run times CPU cells (--threads 1)
        e = estimate(profile, cells, timer, how=how, rounds=args.rounds, warmup=args.warmup)
    print(f"profile {profile.name!r}: {len(cells)} cells, {e.groups} latency shape groups on {args.device}")
    print(f"timed forward passes: {e.forwards_min:,} to {e.forwards_max:,} (rounds from the floor to the ceiling)")
    print(f"expected wall time of the whole run: {_minutes(e.seconds_min)} to {_minutes(e.seconds_max)} ({how}; "
          "host steps probed on this CPU)")
    width = max(len(k) for k in e.steps)
    for step, (low, high) in sorted(e.steps.items(), key=lambda kv: -kv[1][1]):
        print(f"  {step:<{width}}  {_minutes(low)}" + (f" to {_minutes(high)}" if high != low else ""))
    return 0


def _minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
