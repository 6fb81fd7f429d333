"""The nightly's preflight: run the GPU jobs only when GPU runners are registered, else skip them cleanly.

Without a registered runner the shard jobs would queue for a day, be cancelled, and nights would pile up.
GitHub's API lists runners only to a token with administration rights, which no job of this workflow should
hold, so the registration is declared instead: the repository (or organisation) variable
PERFSUITE_GPU_RUNNERS says how many self-hosted GPU runners serve this repository (docs/ci.md, "Continuous
integration"). Unset or 0: the GPU jobs are skipped with a warning; not a whole number: the preflight fails.

Writes ``gpu=true|false`` and ``runners=N`` to $GITHUB_OUTPUT; stdlib only (it runs before any install).
"""

from __future__ import annotations

import os
import sys

VARIABLE = "PERFSUITE_GPU_RUNNERS"


def registered_runners(value: str | None) -> int:
    """The declared number of GPU runners; ValueError (one line) for anything but a whole number ≥ 0."""
    text = (value or "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"{VARIABLE}={text!r} is not a whole number of GPU runners")
    return int(text)


def main(environ: dict[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        runners = registered_runners(environ.get(VARIABLE))
    except ValueError as e:
        print(f"::error::preflight: {e}")
        return 2
    if runners:
        print(f"preflight: {runners} GPU runner(s) declared in {VARIABLE}: the GPU jobs run")
    else:
        print(f"::warning::no self-hosted GPU runner declared ({VARIABLE} unset or 0): tonight's GPU jobs are "
              "skipped, nothing is measured or compared; set the variable once the runners are registered")
    out = environ.get("GITHUB_OUTPUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"gpu={'true' if runners else 'false'}\nrunners={runners}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
