"""``perfsuite cells``: list a profile's cells without running them, and estimate what running them costs."""

from __future__ import annotations

from perfsuite.cells.grid import MODERN_MODELS, PROFILES, get_profile, no_match_message, selected_cells
from perfsuite.errors import PerfsuiteError
from perfsuite.estimate.rates import H100_TFLOPS, LAUNCH_US
from perfsuite.options import at_least_one, at_least_zero
from perfsuite.workloads.rollbacks import DEFAULT_MISMATCH_RATE

HELP = "list the cells of a profile (after --cells selection) without running anything; --estimate: their cost"


def add_arguments(p) -> None:
    p.add_argument("--profile", default="smoke", help=f"profile: {', '.join(PROFILES)} (default: smoke)")
    p.add_argument("--cells", default=None, metavar="EXPR", help="selection expression over cell fields")
    p.add_argument("--adapters", default=None, metavar="MODULE:OBJECT",
                   help="more adapters for the grid, as perfsuite run --adapters (installed packages add theirs "
                        "through the entry-point group perfsuite.adapters)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="device written into the cells (default: cuda for a GPU profile, else cpu)")
    p.add_argument("--estimate", action="store_true",
                   help="print the timed forward passes and the expected wall time of the whole run, step by "
                        "step: the device probed on this machine, or modelled for a GPU this machine does not have "
                        "(--gpu-tflops, --gpu-fp32-tflops, --launch-us); host steps probed on this CPU")
    p.add_argument("--rounds", type=at_least_one, default=None, metavar="N", help="as perfsuite run --rounds (fixed rounds)")
    p.add_argument("--warmup", type=at_least_zero, default=None, metavar="N", help="as perfsuite run --warmup")
    p.add_argument("--shards", type=at_least_one, default=1, metavar="N",
                   help="price the night as N shards (perfsuite run --shard I/N), each with its own builds and, on "
                        "a GPU, its doctor and GPU tests (default: 1)")
    p.add_argument("--mismatch-rate", type=_rate, default=DEFAULT_MISMATCH_RATE, metavar="P",
                   help="recompute: fast-path decisions the verification rejects, per checked decision, that the "
                        f"rollbacks are priced from (default: {DEFAULT_MISMATCH_RATE:g})")
    p.add_argument("--mismatch-from", default=None, metavar="RESULTS",
                   help="recompute: price each cell at the mismatch_rate it recorded in this results file (others "
                        "at --mismatch-rate)")
    p.add_argument("--gpu-tflops", type=float, default=H100_TFLOPS["float16"], metavar="T",
                   help=f"the GPU model's sustained fp16/bf16 TFLOP/s (default: {H100_TFLOPS['float16']:g}, an H100)")
    p.add_argument("--gpu-fp32-tflops", type=float, default=H100_TFLOPS["float32"], metavar="T",
                   help=f"... and fp32 without TF32 (default: {H100_TFLOPS['float32']:g})")
    p.add_argument("--launch-us", type=float, default=LAUNCH_US, metavar="US",
                   help=f"the GPU model's µs per kernel launch (default: {LAUNCH_US:g})")


def _rate(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate in [0, 1)")
    return value


def run(args) -> int:
    if args.adapters:
        from perfsuite.extensions import add_adapters

        add_adapters(args.adapters)
    profile = get_profile(args.profile)
    device = args.device or ("cuda" if profile.needs_gpu else "cpu")
    cells = selected_cells(profile, args.cells, device=device)
    if args.cells and not cells:  # as perfsuite run refuses it: the field values the expression could have meant
        raise PerfsuiteError(no_match_message(profile, profile.cells(device=device, all_modes=True), args.cells))
    if not args.estimate:
        for c in cells:
            print(c.id)
        print(f"{len(cells)} cells in profile {profile.name!r} ({profile.description})")
        return 0
    import torch

    analytic = device == "cuda" and not torch.cuda.is_available()
    # the cost model counts GPT-2 blocks (perfsuite.estimate); the families are modelled for serving cells on a GPU
    # this machine does not have (perfsuite.workloads.serving_cost), where no probe of their forward is needed
    modern = sorted({c.model for c in cells if c.model in MODERN_MODELS and not (c.workload == "serving" and analytic)})
    if modern:
        raise PerfsuiteError(f"--estimate models GPT-2 presets only, not {', '.join(modern)}; "
                             "select other cells or list them without --estimate")
    if profile.needs_gpu and device == "cpu":
        raise PerfsuiteError(f"profile {profile.name!r} runs on a GPU: its estimate models one (--device cuda); on a "
                             "CPU its cells are skipped as no_device")

    from perfsuite.estimate import analytic_timer, estimate, probe_timer

    if analytic:
        timer = analytic_timer(args.gpu_tflops, args.launch_us, args.gpu_fp32_tflops)
        how = (f"modelled GPU (none here): {args.launch_us:g} µs per kernel launch, {args.gpu_tflops:g} TFLOP/s "
               f"sustained in fp16/bf16, {args.gpu_fp32_tflops:g} in fp32")
    else:
        timer = probe_timer(device)
        how = f"probed on this machine's {device} (the plain model at two sizes)"
    from perfsuite.measure.device import cpu_threads

    rates = _recorded_rates(args.mismatch_from) if args.mismatch_from else {}
    modelled = getattr(timer, "modelled", False)
    # one thread: as perfsuite run times CPU cells (--threads 1), and for the host work of a modelled GPU (counting
    # on small tensors, where a second thread of a loaded CPU only spins)
    with cpu_threads(1 if device == "cpu" or modelled else None):
        e = estimate(profile, cells, timer, how=how, rounds=args.rounds, warmup=args.warmup, shards=args.shards,
                     mismatch_rate=args.mismatch_rate, mismatch_rates=rates)
    _print(profile, cells, device, e, args.shards)
    return 0


def _recorded_rates(path: str) -> dict[str, float]:
    from perfsuite.formats.results import load_results

    return {r.id: float(r.get("mismatch_rate")) for r in load_results([path]).ok()
            if r.cell.workload == "recompute" and r.get("mismatch_rate") is not None}


def _print(profile, cells, device: str, e, shards: int) -> None:
    print(f"profile {profile.name!r}: {len(cells)} cells, {e.groups} latency shape groups on {device}")
    print(f"timed forward passes: {e.forwards_min:,} to {e.forwards_max:,} (rounds from the floor to the ceiling)")
    print(f"expected wall time of the whole run: {_minutes(e.seconds_min)} to {_minutes(e.seconds_max)} ({e.how}; "
          "host steps probed on this CPU)")
    if "comparison and report" in e.steps and device == "cuda":
        tail = e.steps["comparison and report"]
        print(f"  on the GPU runner: {_minutes(e.seconds_min - tail[0])} to {_minutes(e.seconds_max - tail[1])} "
              "(the comparison and the report run after it, on CPU runners)")
    if shards > 1:
        low, high = e.wall_s
        print(f"  as {shards} shards side by side: {_minutes(low)} to {_minutes(high)} (the longest shard, then the "
              "comparison and report); each shard: " + ", ".join(_minutes(s[1]) for s in e.shards))
    if any(c.workload == "recompute" for c in cells):
        own = f"; {e.recorded_rates} cell(s) at their own recorded rate" if e.recorded_rates else ""
        print(f"recompute rollbacks priced at a mismatch rate of {e.mismatch_rate:.3g} per checked decision{own} "
              "(--mismatch-rate, --mismatch-from)")
    width = max(len(k) for k in e.steps)
    for step, (low, high) in sorted(e.steps.items(), key=lambda kv: -kv[1][1]):
        print(f"  {step:<{width}}  {_minutes(low)}" + (f" to {_minutes(high)}" if high != low else ""))


def _minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
