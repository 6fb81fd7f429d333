"""The options that choose and time cells, built once for the pytest plugin's flags and the ``perfsuite`` commands.

In pytest-benchmark's shape: ``add_cell_options(addoption, prefix="--perfsuite-")`` adds the options that
choose and time cells; ``perfsuite run``, ``baseline record`` and ``ab`` add the same ones with
``prefix="--"`` and pass them on to pytest with :func:`cell_option_args`. This module is the seam where the
plugin (:mod:`perfsuite.plugin`) and the job (:mod:`perfsuite.job`, :mod:`perfsuite.processes`, the commands)
meet, below both: neither imports the other (the exit codes they share are in :mod:`perfsuite.errors`).
"""

from __future__ import annotations

from typing import Any, Callable

PREFIX = "--perfsuite-"
DEVICES = ("auto", "cpu", "cuda")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# The options that choose and time cells (their dest names without the prefix), in the order they are added.
CELL_OPTIONS = ("profile", "device", "dtype", "cells", "rounds", "warmup", "threads", "shard", "weights", "adapters")


ALLOW_MISSING_HELP = ("let the baseline's cells this run did not measure pass: by default a cell of the baseline "
                      "that the run set out to measure (its --cells and --shard scope that) and did not fails it "
                      "(exit 1, named), as a PR that drops or renames a slow cell would otherwise pass")

MAX_COUNT = 10_000_000  # rounds, warm-up, threads, runs: a bound far above any real run, below any overflow


def count_type(minimum: int, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """An argparse ``type`` for an integer option in [minimum, maximum]: a bad value is refused at the command
    line (one line, exit 2) instead of failing inside every cell, or being taken for "the default" (0 rounds)."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum} and {maximum}, not {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


at_least_one, at_least_zero, at_least_two = count_type(1), count_type(0), count_type(2)


def add_cell_options(addoption: Callable[..., Any], prefix: str = PREFIX) -> None:
    """Which cells run and how they are timed."""
    from perfsuite.cells.grid import PROFILES  # torch-free

    addoption(f"{prefix}profile", default="smoke", metavar="NAME",
              help=f"grid of cells to run: {', '.join(PROFILES)} (default: smoke)")
    addoption(f"{prefix}device", default="auto", choices=DEVICES,
              help="device to run cells on; auto picks cuda when a GPU is visible (default: auto)")
    addoption(f"{prefix}dtype", default=None, choices=DTYPE_NAMES, help="override the profile's dtype")
    addoption(f"{prefix}cells", default=None, metavar="EXPR",
              help="run only cells matching a Python-like expression over cell fields, "
                   "e.g. \"adapter in ('lora', 'houlsby') and batch <= 4\"")
    addoption(f"{prefix}rounds", default=None, type=at_least_one, metavar="N",
              help="timed rounds per cell (default: the profile's)")
    addoption(f"{prefix}warmup", default=None, type=at_least_zero, metavar="N",
              help="untimed warm-up rounds per cell (default: the profile's)")
    addoption(f"{prefix}threads", default=None, type=at_least_zero, metavar="N",
              help="CPU threads for torch while cells run (default: 1 on the CPU, where a second thread stalls "
                   "calls by hundreds of ms on shared runners; 0: torch's own default)")
    addoption(f"{prefix}shard", default=None, metavar="I/N",
              help="run only shard I of N (1-based): disjoint, balanced by estimated cost, deterministic")
    addoption(f"{prefix}weights", default=None, metavar="DIR",
              help="trained weights: a GPT-2 checkpoint folder in the Hugging Face layout (config.json + "
                   "model.safetensors); every cell runs on it, its model recorded as FOLDER@HASH (nothing is "
                   "downloaded)")
    addoption(f"{prefix}adapters", default=None, metavar="MODULE:OBJECT",
              help="more adapters for the grid: an AdapterPlugin or a list of them in an importable module "
                   "(comma-separated; installed packages contribute theirs through the entry-point group "
                   "perfsuite.adapters without this option)")


def add_wait_argument(parser: Any, what: str) -> None:
    """``--wait``: wait for another perfsuite writing to ``what`` instead of being refused (see perfsuite.locks)."""
    parser.add_argument("--wait", action="store_true",
                        help=f"when another perfsuite process writes to {what}, wait for it to finish instead of "
                             "being refused at once")


def add_session_options(addoption: Callable[..., Any], prefix: str = PREFIX) -> None:
    """What a pytest session does around the cells: journal, resume, progress, the comparison gate."""
    addoption(f"{prefix}compare", nargs="?", const="auto", default=None, metavar="BASELINE",
              help="at the end of the session, compare the cells with BASELINE (a baseline file or a results JSON; "
                   "default: this machine's baseline in baselines/), re-measure suspects, fail on a confirmed "
                   "regression")
    addoption(f"{prefix}allow-missing", action="store_true", default=False,
              help=f"with {prefix}compare: {ALLOW_MISSING_HELP}")
    addoption(f"{prefix}journal", default=None, metavar="FILE",
              help="append each finished cell to FILE (JSON lines) as it is measured, so an interrupted run keeps it")
    addoption(f"{prefix}resume", action="store_true", default=False,
              help="with --perfsuite-journal: skip cells the journal already holds")
    addoption(f"{prefix}progress", action="store_true", default=False,
              help="show progress: a live bar (current cell, elapsed, time left) on a terminal, a line per cell "
                   "otherwise")


def cell_option_args(values: dict[str, Any]) -> list[str]:
    """``{"profile": "smoke", "rounds": 50, ...}`` → pytest's ``--perfsuite-profile=smoke --perfsuite-rounds=50``
    (unset values are left out)."""
    unknown = set(values) - set(CELL_OPTIONS)
    if unknown:
        raise ValueError(f"not cell options: {sorted(unknown)}")
    return [f"{PREFIX}{name}={values[name]}" for name in CELL_OPTIONS if values.get(name) is not None]


def cell_option_values(args: Any) -> dict[str, Any]:
    """The cell options of an argparse namespace made with ``add_cell_options(..., prefix="--")``."""
    return {name: getattr(args, name) for name in CELL_OPTIONS}
