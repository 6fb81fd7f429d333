"""The typed API: the README's example runs as written; options are checked; a comparison and a report from it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from perfsuite import api
from perfsuite.errors import PerfsuiteError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.+?)\n```", section, re.S).group(1)


def test_the_readme_example_is_short_and_runs_as_written(tmp_path):
    code = readme_example()
    assert len(code.splitlines()) <= 10
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()  # nothing but what the example prints: pytest's output is kept, not shown
    assert sorted(line.split()[0] for line in lines[:2]) == ["latency[lora-r8-b1-s32]", "latency[none-r0-b1-s32]"]
    assert lines[-1].endswith(str(Path("perfsuite-out/api/report/index.html")))
    assert (tmp_path / "perfsuite-out" / "api" / "results.json").exists()


@pytest.mark.parametrize("field, value", [("rounds", 0), ("warmup", -1), ("threads", 1.5)])
def test_run_options_refuse_what_the_command_line_refuses(field, value):
    with pytest.raises(PerfsuiteError, match=f"^{field} = .*: expected a whole number"):
        api.RunOptions(**{field: value})


def test_run_options_carry_the_cell_options_and_the_out_folder():
    options = api.RunOptions(profile="paper", cells="batch == 1", shard="2/4", adapters="mine:ADAPTERS")
    assert options.cell_options() == {"profile": "paper", "device": "auto", "dtype": None, "cells": "batch == 1",
                                      "rounds": None, "warmup": None, "threads": None, "shard": "2/4",
                                      "weights": None, "adapters": "mine:ADAPTERS"}
    assert options.default_out_dir() == Path("perfsuite-out/paper-shard2of4")


def test_compare_and_report_from_files(tmp_path):
    results = FIXTURES / "baselines" / "results_smoke_cpu_a.json"
    compared = api.compare(results, baseline=results)
    assert not compared.regression and sum(compared.summary.values()) == 4
    assert "|" in compared.markdown()
    written = api.report(results, tmp_path / "report", comparison=compared)
    assert written.index.exists() and written.csv.exists() and written.figures


def test_history_add_then_changes(tmp_path):
    store = tmp_path / "history.sqlite"
    added = api.history_add(store, FIXTURES / "baselines" / "results_smoke_cpu_a.json")
    assert added.run is not None and added.cells == 4
    assert api.history_add(store, FIXTURES / "baselines" / "results_smoke_cpu_a.json").run is None
    assert api.history_changes(store) == []  # one night: no change point
