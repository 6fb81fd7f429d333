"""``--perfsuite-compare[=BASELINE]``: the comparison at the end of a pytest session, failing it on a regression.

Registered as a plugin object when the option is given. It reads the baselines first: one that cannot be read
is a usage error before anything is measured, not after a night of cells. At session end it builds the
session's results from the cells the perfsuite plugin saw timed (no reach into pytest-benchmark's session),
compares each part with this machine's baseline (or, for information only, another machine's), re-measures
suspects in a fresh pytest process, prints the table in the terminal summary and fails the session on a
confirmed regression, or on a baseline cell within the session's --perfsuite-cells/--perfsuite-shard that it did
not measure (a cell deselected with -k counts: narrow with --perfsuite-cells, or pass --perfsuite-allow-missing).
An error is reported as one, never as a verdict.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from perfsuite.errors import PerfsuiteError
from perfsuite.plugin.session import run_header, state_of


class SessionGate:
    def __init__(self, config: pytest.Config, baseline: str, baselines_dir: str | Path = "baselines"):
        """Reads the baselines now (``baseline``: a file, or "auto": every baseline in ``baselines_dir`` under the
        rootdir); pytest.UsageError, one line, when one cannot be read."""
        from perfsuite.compare.baselines import load_all, load_reference

        self.config, self.text = config, None
        try:
            self.baselines = (load_all(Path(config.rootpath) / baselines_dir) if baseline == "auto"
                              else load_reference(baseline))
        except PerfsuiteError as e:
            raise pytest.UsageError(f"perfsuite compare: {e}") from None

    def session_document(self) -> dict:
        from perfsuite.formats.results import results_document

        state = state_of(self.config)
        return results_document(run_header(self.config), list(state.benchmarks), state.settings(), state.not_run)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from perfsuite.compare.render import render_terminal
        from perfsuite.compare.verdicts import REMEASURE, CompareOptions, compare_results
        from perfsuite.formats.results import results_from_document
        from perfsuite.processes import node_ids_of, remeasurer

        rootdir = Path(self.config.rootpath)
        try:
            doc = self.session_document()
            results = results_from_document(doc, "this session")
            if not results.ok():
                self.text = "perfsuite compare: no perfsuite cell ran in this session; nothing compared"
                return
            with tempfile.TemporaryDirectory(prefix="perfsuite-remeasure-") as tmp:
                remeasure = remeasurer(results, node_ids_of(doc), rootdir, tmp)
                comparison = compare_results(results, self.baselines, CompareOptions(remeasure=REMEASURE),
                                             remeasure=remeasure).allowing_missing(
                    self.config.getoption("perfsuite_allow_missing"))
        except PerfsuiteError as e:
            self.text = f"perfsuite compare: error: {e}"
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        self.text = render_terminal(comparison, "perfsuite compare (end of session)")
        if comparison.fails:  # a confirmed regression, or a baseline cell the session did not measure
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.text:
            terminalreporter.section("perfsuite comparison")
            terminalreporter.write_line(self.text)
