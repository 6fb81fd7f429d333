"""Progress of a long run: one live bar on a terminal, a plain line per cell otherwise (CI logs).

Registered as a plugin object by ``--perfsuite-progress``. The bar (tqdm) shows the current cell, the
cells done, the elapsed time and the time left, estimated from the cells' relative costs
(:func:`perfsuite.workloads.estimated_cost`) once enough of the grid has run (:data:`ETA_MIN_SHARE`): the first
cells carry the run's start-up (imports, models built, the first shape's warm-up), and a rate taken from them
alone promised minutes for a run of seconds. It is drawn from ``pytest_runtest_logstart``/``logfinish``,
which pytest calls outside a test's output capture, through pytest's public terminal writer.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import pytest

from perfsuite.cells.grid import Cell
from perfsuite.plugin.session import SessionState

ETA_MIN_SHARE = 0.25  # share of the grid's estimated cost done before a time left is shown
ETA_MIN_CELLS = 2  # and at least this many cells
UNKNOWN_LEFT = "time left: estimating"


class _TerminalFile:
    """A file-like front of pytest's terminal writer, for tqdm."""

    def __init__(self, tw):
        self.tw = tw

    def write(self, text: str) -> None:
        self.tw.write(text, flush=True)

    def flush(self) -> None:
        self.tw.flush()


class Progress:
    """Cells done / total, elapsed, time left; ``live``: a tqdm bar redrawn in place, else a line per cell."""

    def __init__(self, cells: list[Cell], cost: Callable[[Cell], float], tw, *, live: bool,
                 clock: Callable[[], float] = time.monotonic):
        self.cost, self.tw, self.live, self.clock = cost, tw, live, clock
        self.total, self.total_cost = len(cells), sum(map(cost, cells))
        self.done, self.done_cost = 0, 0.0
        self.t0 = clock()
        self.bar = None
        if live and self.total:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total_cost, file=_TerminalFile(tw), leave=True, dynamic_ncols=True,
                            bar_format="{desc} {bar} {percentage:3.0f}% [{elapsed}, {postfix}]")
            self.bar.set_postfix_str(UNKNOWN_LEFT, refresh=False)

    def left(self) -> str:
        """"~1m05s left", from the rate so far, once ETA_MIN_SHARE of the grid's cost and ETA_MIN_CELLS cells are
        done; before that, UNKNOWN_LEFT."""
        if self.done < ETA_MIN_CELLS or self.done_cost < ETA_MIN_SHARE * self.total_cost or not self.done_cost:
            return UNKNOWN_LEFT
        elapsed = self.clock() - self.t0
        return f"~{fmt_seconds(elapsed * (self.total_cost - self.done_cost) / self.done_cost)} left"

    def starting(self, cell: Cell) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"[perfsuite {self.done + 1}/{self.total}] {cell.id}", refresh=True)
            return
        elapsed = self.clock() - self.t0
        if self.tw.width_of_current_line:  # after pytest's progress dots
            self.tw.line()
        self.tw.line(f"[perfsuite {self.done + 1}/{self.total}] {cell.id}  elapsed {fmt_seconds(elapsed)}, {self.left()}")

    def finished(self, cell: Cell) -> None:
        self.done += 1
        self.done_cost += self.cost(cell)
        if self.bar is not None:
            self.bar.set_postfix_str(self.left(), refresh=False)
            self.bar.update(self.cost(cell))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"[perfsuite {self.done}/{self.total}] done", refresh=True)
            self.bar.close()
            self.bar = None


def fmt_seconds(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def is_terminal() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return False


class ProgressPlugin:
    """The pytest hooks that drive :class:`Progress` for one session."""

    def __init__(self, state: SessionState, live: bool | None = None):
        self.state = state
        self.live = is_terminal() if live is None else live
        self.progress: Progress | None = None

    @pytest.hookimpl(trylast=True)  # after the perfsuite plugin has mapped node ids to cells
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from perfsuite.workloads import estimated_cost

        cells = list(self.state.cell_nodeids.values())
        if cells:
            self.progress = Progress(cells, estimated_cost, session.config.get_terminal_writer(), live=self.live)

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        if self.progress and nodeid in self.state.cell_nodeids:
            self.progress.starting(self.state.cell_nodeids[nodeid])

    def pytest_runtest_logfinish(self, nodeid: str, location) -> None:
        if self.progress and nodeid in self.state.cell_nodeids:
            self.progress.finished(self.state.cell_nodeids[nodeid])

    def pytest_report_teststatus(self, report, config: pytest.Config):
        """Under the live bar, a cell that passed or was skipped prints no letter of its own (the bar shows it);
        failures keep theirs."""
        if not (self.progress and self.progress.bar is not None and report.nodeid in self.state.cell_nodeids):
            return None
        if report.when == "call" and report.outcome == "passed":
            return "passed", "", "PASSED"
        if report.outcome == "skipped":
            return "skipped", "", "SKIPPED"
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.progress:
            self.progress.close()
