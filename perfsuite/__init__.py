"""perfsuite: a pytest-benchmark performance regression suite for transformer adapter layers.

The public API is ``__all__`` (the grid, model and record types, and the option and result types of
:mod:`perfsuite.api`) and :mod:`perfsuite.api` itself: ``from perfsuite import api; api.run(api.RunOptions(...))``.
The functions stay in ``perfsuite.api``: ``compare``, ``report`` and ``ab`` are also the names of
perfsuite's own modules, which an import would put over a top-level function of that name. Modules follow the data flow: grid → model +
adapters → workloads → timing → pytest-benchmark JSON → tidy DataFrame → baseline comparison → report.

Every name is loaded on first use (PEP 562 ``__getattr__``), as pyperf does "to limit imports on 'import
pyperf'": ``import perfsuite`` — and the pytest plugin, which every pytest process of a project that installs
perfsuite loads — imports neither torch nor pandas until a cell runs or a report is drawn (a test checks it).

PYTEST_DONT_REWRITE: ``perfsuite run`` imports this package before it starts pytest, which also loads it as a
plugin; the marker tells pytest not to try rewriting asserts in modules already imported (they use none).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name → the module that defines it (imported on first access)
_EXPORTS = {
    "ADAPTERS": "perfsuite.models.adapters", "attach": "perfsuite.models.adapters", "merge_lora": "perfsuite.models.adapters",
    "PerfsuiteError": "perfsuite.errors",
    "PROFILES": "perfsuite.cells.grid", "Cell": "perfsuite.cells.grid", "get_profile": "perfsuite.cells.grid",
    "select": "perfsuite.cells.grid",
    "PRESETS": "perfsuite.models.model", "GPT2": "perfsuite.models.model", "GPT2Config": "perfsuite.models.model",
    "build_model": "perfsuite.models.model",
    "Results": "perfsuite.formats.results", "load_results": "perfsuite.formats.results",
    "RunInfo": "perfsuite.formats.results", "CellRecord": "perfsuite.formats.record",
    **{name: "perfsuite.formats.comparison" for name in (
        "Comparison", "PartEntry", "CellVerdict", "MetricVerdict", "read_comparison")},
    "AdapterPlugin": "perfsuite.extensions",
    **{name: "perfsuite.api" for name in (
        "RunOptions", "RunResult", "CompareResult", "ReportResult", "ABResult")},
}

__all__ = sorted([*_EXPORTS, "api"])


def __getattr__(name: str) -> Any:
    if name == "api":
        return importlib.import_module("perfsuite.api")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'perfsuite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see (nothing is imported at run time)
    from perfsuite.models.adapters import ADAPTERS, attach, merge_lora
    from perfsuite.api import ABResult, CompareResult, ReportResult, RunOptions, RunResult
    from perfsuite.cells.grid import PROFILES, Cell, get_profile, select
    from perfsuite.errors import PerfsuiteError
    from perfsuite.extensions import AdapterPlugin
    from perfsuite.formats.comparison import CellVerdict, Comparison, MetricVerdict, PartEntry, read_comparison
    from perfsuite.formats.record import CellRecord
    from perfsuite.formats.results import Results, RunInfo, load_results
    from perfsuite.models.model import PRESETS, GPT2, GPT2Config, build_model
