"""``perfsuite cells``: list a profile's cells without running them."""

from __future__ import annotations

from perfsuite.cells.grid import PROFILES, get_profile, select

HELP = "list the cells of a profile (after --cells selection) without running anything"


def add_arguments(p) -> None:
    p.add_argument("--profile", default="smoke", help=f"profile: {', '.join(PROFILES)} (default: smoke)")
    p.add_argument("--cells", default=None, metavar="EXPR", help="selection expression over cell fields")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device written into the cells (default: cpu)")


def run(args) -> int:
    profile = get_profile(args.profile)
    cells = select(profile.cells(device=args.device), args.cells)
    for c in cells:
        print(c.id)
    print(f"{len(cells)} cells in profile {profile.name!r} ({profile.description})")
    return 0
