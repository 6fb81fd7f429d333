"""The package as its users meet it: a light import, the CLI's per-command imports."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "pandas", "matplotlib")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("code", [
    "import perfsuite",
    "import perfsuite.plugin",  # the pytest11 entry point: every pytest process of a project that installs us
    "import perfsuite.cells.grid, perfsuite.cells.shard, perfsuite.formats.results, perfsuite.formats.journal",
    "from perfsuite.cli import build_parser; build_parser(only='history'); build_parser(only='cells')",
    "import perfsuite; perfsuite.Cell, perfsuite.PROFILES, perfsuite.PerfsuiteError, perfsuite.RunOptions, perfsuite.api.RunResult",
])
def test_a_light_start_imports_neither_torch_nor_pandas(code):
    assert _loaded_after(code) == []


def test_lazy_exports_resolve_to_their_modules():
    import perfsuite
    from perfsuite.cells.grid import Cell

    assert perfsuite.Cell is Cell
    assert set(perfsuite.__all__) <= set(dir(perfsuite))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        perfsuite.nope  # noqa: B018


def test_the_full_parser_still_lists_every_command():
    from perfsuite.cli import build_parser, command_names

    parser = build_parser()
    help_text = parser.format_help()
    assert all(name in help_text for name in command_names())
    assert {"run", "history", "cells", "compare"} <= set(command_names())


@pytest.mark.parametrize("module", ["perfsuite.measure.paired", "perfsuite.compare.verdicts", "perfsuite.report.tables",
                                    "perfsuite.report.data", "perfsuite.history.store"])
def test_statistics_verdicts_and_tables_load_no_torch(module):
    """They read timings (perfsuite.measure.paired), they do not measure: no torch (pandas for the report is fine)."""
    assert "torch" not in _loaded_after(f"import {module}")


def test_the_paired_statistics_are_one_implementation():
    """measure/timing.py's stopping rule uses paired's interval (one implementation); the median interval's ranks are
    shared with the history's bands."""
    import perfsuite.measure.paired as paired
    import perfsuite.measure.timing as timing
    from perfsuite.history.rows import median_interval

    assert timing.median_ci_pct is paired.median_ci_pct and not hasattr(timing, "PairedTiming")
    samples = [float(x) for x in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]  # sorted: 1..10, ranks (1, 8) for n = 10
    assert paired.median_interval_ranks(10) == (1, 8)
    assert median_interval(samples) == (2.0, 9.0)
    assert paired.median_ci_pct(samples) == 100.0 * (9.0 - 2.0) / (2 * 5.5)


def test_the_checkouts_conftest_loads_on_a_core_install():
    """Every benchmark run in a checkout (``pip install -e . && perfsuite run``, README's first command) loads
    tests/conftest.py: it may import nothing from the test extras (it once imported hypothesis: exit 2)."""
    from pathlib import Path

    root = Path(__file__).parents[2]
    extras = ("hypothesis", "yaml", "transformers", "peft", "zizmor")
    probe = (f"import runpy, sys\nfor m in {extras!r}: sys.modules[m] = None  # as on a core install\n"
             f"sys.path.insert(0, {str(root / 'tests')!r})\nrunpy.run_path({str(root / 'tests' / 'conftest.py')!r})")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
