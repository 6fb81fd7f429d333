"""perfsuite: a pytest-benchmark performance regression suite for transformer adapter layers.

The public API is ``__all__``; modules follow the data flow: grid → model + adapters → workloads → timing →
pytest-benchmark JSON → tidy DataFrame → baseline comparison → report.

PYTEST_DONT_REWRITE: ``perfsuite run`` imports this package before it starts pytest, which also loads it as a
plugin; the marker tells pytest not to try rewriting asserts in modules already imported (they use none).
"""

from perfsuite.adapters import ADAPTERS, attach, merge_lora
from perfsuite.errors import PerfsuiteError
from perfsuite.cells.grid import PROFILES, Cell, get_profile, select
from perfsuite.model import PRESETS, GPT2, GPT2Config, build_model
from perfsuite.formats.results import Results, load_results

__all__ = ["ADAPTERS", "PROFILES", "PRESETS", "Cell", "GPT2", "GPT2Config", "PerfsuiteError", "Results", "attach",
           "build_model", "get_profile", "load_results", "merge_lora", "select"]
