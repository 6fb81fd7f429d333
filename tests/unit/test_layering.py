"""The package's layering, read from its source with ``ast``: no import cycle, no upward import, one seam.

Every ``import`` and ``from … import`` counts, at module level and inside functions (a function-level import
is still a dependency, only a later one); imports under ``if TYPE_CHECKING:`` do not (they never run). A
module's layer is the longest prefix of its name in ``LAYERS``; a module may import its own layer or any
layer below it, never one above. The order (lowest first), as docs/layout.md states it:

  base      errors (PerfsuiteError, the exit codes), extensions, table; measure/paired.py and measure/machine.py
            (torch-free records that files keep)
  cells     cells/ (the grid, shards), subspace/ (φ of two checkpoints: pure linear algebra)
  formats   formats/, locks — files only: never compare, report, plugin or workloads
  measure   models/ (what is measured), measure/ (how), hf/, workloads/, estimate/
  compare   compare/, history/ (store, rows, change points)
  report    report/, history/trends.py (history drawn as pages)
  options   options (the flags that choose and time cells): the seam below both the job and the plugin
  commands  perfsuite (the lazy root), plugin/, processes, job, ab, selftest/, doctor/, api, commands/, cli,
            benchmarks/

The pytest plugin is loaded by its entry point and imported by no other module: the job and the plugin meet
at ``options`` and ``errors``, below both.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "perfsuite"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("perfsuite.errors", "perfsuite.extensions", "perfsuite.table", "perfsuite.measure.paired",
              "perfsuite.measure.machine")),
    ("cells", ("perfsuite.cells", "perfsuite.subspace")),
    ("formats", ("perfsuite.formats", "perfsuite.locks", "perfsuite.subspace.peft_io")),
    ("measure", ("perfsuite.models", "perfsuite.measure", "perfsuite.hf", "perfsuite.workloads", "perfsuite.estimate",
                 "perfsuite.subspace.checkpoints")),
    ("compare", ("perfsuite.compare", "perfsuite.history")),
    ("report", ("perfsuite.report", "perfsuite.history.trends")),
    ("options", ("perfsuite.options",)),
    ("commands", ("perfsuite", "perfsuite.plugin", "perfsuite.processes", "perfsuite.job", "perfsuite.ab",
                  "perfsuite.selftest", "perfsuite.doctor", "perfsuite.api", "perfsuite.commands", "perfsuite.cli",
                  "perfsuite.benchmarks")),
)
PLUGIN = "perfsuite.plugin"  # loaded by pytest through its entry point; no other module imports it


def modules_of(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package's __init__)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (anywhere in it, TYPE_CHECKING blocks aside)."""
    modules = modules_of(package_dir)
    root = package_dir.name
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skipped = _type_checking_nodes(tree)
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.add(module)
                targets |= {f"{module}.{alias.name}" for alias in node.names}  # from a package import a module
        edges = set()
        for target in targets:
            if target != root and not target.startswith(root + "."):
                continue
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the module's layer: the longest prefix that names it (the root package only by its own name)."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            root_only = "." not in prefix
            if (module == prefix or (not root_only and module.startswith(prefix + "."))) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            mine, theirs = layer_of(module, layers), layer_of(target, layers)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{module} ({layers[mine][0]}) imports {target} ({layers[theirs][0]})")
    return out


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports_into(graph: dict[str, set[str]], package: str) -> list[str]:
    """Imports of ``package`` or any of its modules from a module outside it."""
    return [f"{module} imports {target}" for module, targets in sorted(graph.items()) if not _inside(module, package)
            for target in sorted(targets) if _inside(target, package)]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR)


def test_the_package_has_no_import_cycle(graph):
    assert cycles(graph) == []


def test_no_module_imports_a_layer_above_its_own(graph):
    assert upward_imports(graph) == []


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if layer_of(m) is None] == []


def test_the_job_and_the_plugin_meet_below_both(graph):
    """No module imports the plugin's package (the job least of all): what the job and the plugin both need, the
    option builders and the exit codes, lives in ``perfsuite.options`` and ``perfsuite.errors``, below both."""
    assert imports_into(graph, PLUGIN) == []
    assert layer_of("perfsuite.options") < layer_of("perfsuite.job") and layer_of("perfsuite.errors") == 0


def test_formats_import_no_comparison_report_plugin_or_workload(graph):
    banned = ("perfsuite.compare", "perfsuite.report", "perfsuite.plugin", "perfsuite.workloads")
    assert {m: sorted(t for t in ts if t.startswith(banned))
            for m, ts in graph.items() if m.startswith("perfsuite.formats") and any(t.startswith(banned) for t in ts)} == {}


def test_the_checker_finds_a_planted_cycle_and_an_upward_import(tmp_path):
    """The checks above are only as good as the graph: a function-level cycle and an upward import are found."""
    pkg = tmp_path / "demo"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from demo.high import g\n    return g\n")
    (pkg / "high.py").write_text("from demo.low.a import f\n\ndef g():\n    return f\n")
    (pkg / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from demo import high\n")
    demo = import_graph(pkg)
    assert demo["demo.low.a"] == {"demo.high"} and demo["demo.typed"] == set()
    assert cycles(demo) == [["demo.high", "demo.low.a"]]
    layers = (("low", ("demo.low",)), ("high", ("demo.high", "demo.typed")))
    assert upward_imports(demo, layers) == ["demo.low.a (low) imports demo.high (high)"]


def test_the_seam_check_finds_a_planted_import_of_the_plugin(tmp_path):
    """The job importing the plugin's exit code or options (as perfsuite.job did before the seam) is found, at
    module level and inside a function; the plugin importing the seam, and its own modules, is not."""
    pkg = tmp_path / "demo"
    (pkg / "plugin").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "options.py").write_text("def cell_option_args(values):\n    return []\n")
    (pkg / "plugin" / "__init__.py").write_text("from demo.options import cell_option_args\nEXIT = 74\n")
    (pkg / "plugin" / "options.py").write_text("from demo.plugin import EXIT\n")
    (pkg / "job.py").write_text("from demo.plugin import EXIT\n\ndef run():\n    from demo.plugin.options import EXIT\n")
    (pkg / "api.py").write_text("from demo.options import cell_option_args\n")
    assert imports_into(import_graph(pkg), "demo.plugin") == ["demo.job imports demo.plugin",
                                                              "demo.job imports demo.plugin.options"]


MAX_LINES = 350  # a longer module says why in its docstring ("Over 350 lines …")


def test_a_module_over_350_lines_says_why():
    long = {}
    for name, (path, _) in modules_of(PACKAGE_DIR).items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES and f"Over {MAX_LINES} lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            long[name] = text.count("\n")
    assert long == {}


LAYOUT_PAGE = PACKAGE_DIR.parent / "docs" / "layout.md"
MAX_TOP_MODULES = 12  # beside the step folders, the package's own __init__ included


def top_level_entries(package_dir: Path) -> list[str]:
    """The package's folders (``name/``) and modules (``name.py``) at its top, its own ``__init__`` aside."""
    return sorted(p.name + "/" if p.is_dir() else p.name for p in package_dir.iterdir()
                  if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.name != "__init__.py"))


def map_entries(page: str) -> list[str]:
    """The folders and modules named in the page's "Where things live" map, in order, repeats kept."""
    section = page.split("## Where things live", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return re.findall(r"\w+/|\w+\.py", section)


def test_the_docs_map_of_where_things_live_is_the_tree():
    named = map_entries(LAYOUT_PAGE.read_text(encoding="utf-8"))
    assert sorted(named) == top_level_entries(PACKAGE_DIR)  # each once, none missing, none that is not there
    assert len(list(PACKAGE_DIR.glob("*.py"))) <= MAX_TOP_MODULES


def test_the_map_check_finds_a_missing_a_repeated_and_a_stale_entry(tmp_path):
    (tmp_path / "pkg" / "step").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "step/__init__.py"):
        (tmp_path / "pkg" / name).write_text("")
    assert top_level_entries(tmp_path / "pkg") == ["a.py", "step/"]
    page = "## Where things live\n\n```text\nfirst   step/  a.py\nthen    a.py  gone/\n```\n"
    assert map_entries(page) == ["step/", "a.py", "a.py", "gone/"]


def test_each_folder_says_its_step_in_its_first_line():
    """A folder's ``__init__`` docstring opens with one line that stands alone (a blank line or nothing after it)."""
    long = {}
    for folder in sorted(p for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()):
        lines = (ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or "").splitlines()
        if not lines or (len(lines) > 1 and lines[1].strip()):
            long[folder.name] = lines[:2]
    assert long == {}
