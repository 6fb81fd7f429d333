"""``--perfsuite-compare[=BASELINE]``: the comparison at the end of a pytest session, failing it on a regression.

Registered as a plugin object when the option is given. At session end it builds the session's results
from the cells the perfsuite plugin saw timed (no reach into pytest-benchmark's session), compares them
with the baseline, re-measures suspects in a fresh pytest process, prints the table in the terminal
summary and makes the session fail on a confirmed regression. An error is reported as one, never as a
verdict.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsuite.errors import PerfsuiteError
from perfsuite.plugin.session import state_of


class SessionGate:
    def __init__(self, config: pytest.Config, baseline: str, baselines_dir: str | Path = "baselines"):
        self.config, self.baseline, self.baselines_dir = config, baseline, baselines_dir
        self.text: str | None = None

    def session_document(self) -> dict:
        from perfsuite.formats.results import results_document
        from perfsuite.plugin import run_header

        state = state_of(self.config)
        return results_document(run_header(self.config), list(state.benchmarks), state.settings(), state.not_run)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from perfsuite.compare.remeasure import node_ids_of, run_cells
        from perfsuite.compare.render import render_terminal
        from perfsuite.compare.verdicts import REMEASURE, CompareOptions, compare_with_reference, has_regression
        from perfsuite.formats.baseline import ran_any
        from perfsuite.formats.results import results_from_document

        try:
            doc = self.session_document()
            results = results_from_document(doc, "this session")
            if not ran_any(results):
                self.text = "perfsuite compare: no perfsuite cell ran in this session; nothing compared"
                return
            ids, run = node_ids_of(doc), results.runs[0]
            remeasured: list[int] = []

            def remeasure(cell_ids):
                remeasured.append(len(cell_ids))
                return run_cells([ids[c] for c in cell_ids], run, self.config.rootpath)

            found = compare_with_reference(results, None if self.baseline == "auto" else self.baseline,
                                           Path(self.config.rootpath) / self.baselines_dir,
                                           CompareOptions(remeasure=REMEASURE), remeasure=remeasure)
            if found is None:
                self.text = ("perfsuite compare: no baseline in baselines/ matches this run's device and profile; "
                             "nothing compared (make one with `perfsuite baseline update RESULTS.json`)")
                return
            comparison, _ = found
        except PerfsuiteError as e:
            self.text = f"perfsuite compare: error: {e}"
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        self.text = render_terminal(comparison)
        if remeasured:
            self.text += f"\nsuspect regressions re-measured before deciding: {', '.join(map(str, remeasured))} cells"
        if has_regression(comparison):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.text:
            terminalreporter.section("perfsuite comparison")
            terminalreporter.write_line(self.text)
