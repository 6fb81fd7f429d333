"""One module per ``perfsuite`` subcommand (see perfsuite.cli)."""

from perfsuite.errors import PerfsuiteError


def comma_numbers(text: str, option: str, *, kind: str = "numbers", example: str = "",
                  positive: bool = False) -> tuple[float, ...]:
    """The numbers of an option such as ``--effects 2,5,10``, or one line naming the option and what it wants."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PerfsuiteError(f"{option} {text!r}: give comma-separated {kind}"
                             + (f", e.g. {example}" if example else "")) from None
    if not values:
        raise PerfsuiteError(f"{option}: give at least one of the {kind}")
    if positive and any(v <= 0 for v in values):
        raise PerfsuiteError(f"{option} {text!r}: give positive {kind}")
    return values
