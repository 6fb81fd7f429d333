"""The typed API: the docs' example (docs/api.md) runs as written; options are checked; a comparison and a report from it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from perfsuite import api
from perfsuite.errors import PerfsuiteError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def docs_example() -> str:
    section = (ROOT / "docs" / "api.md").read_text().split("# Python API", 1)[1]
    return re.search(r"```python\n(.+?)\n```", section, re.S).group(1)


def test_the_docs_example_is_short_and_runs_as_written(tmp_path):
    code = docs_example()
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


def test_compare_re_measures_a_suspect_in_the_checkout_it_is_given(monkeypatch, tmp_path):
    """What ``perfsuite compare --remeasure 1 --rootdir DIR`` does, through the API: the suspect's node id read from
    the results file, a fresh run asked of ``checkout``, written to ``workdir``."""
    import synthetic as syn

    import perfsuite.processes as processes
    from perfsuite.compare.baselines import add_runs

    lora = syn.cell("lora")
    add_runs([syn.results([syn.record(lora, seed=k, ratio=1.2, run_sd=0.01)]) for k in range(5)],
             directory=tmp_path / "baselines")
    current = syn.write(tmp_path / "run" / "results.json", [syn.record(lora, seed=9, ratio=2.4, run_sd=0.01)])
    asked = []

    def fake_remeasurer(results, node_ids, checkout, workdir):
        def remeasure(cell_ids):
            asked.append((cell_ids, node_ids, Path(checkout), Path(workdir)))
            return {lora.id: syn.record(lora, seed=10, ratio=2.4, run_sd=0.01)}
        return remeasure

    monkeypatch.setattr(processes, "remeasurer", fake_remeasurer)
    compared = api.compare(current, baselines_dir=tmp_path / "baselines", remeasure=1, checkout=tmp_path / "co")
    assert compared.regression and compared.comparison.cells[0].remeasured == 1
    (cell_ids, node_ids, checkout, workdir), = asked
    assert cell_ids == [lora.id] and lora.id in node_ids and checkout == tmp_path / "co"
    assert workdir == tmp_path / "run"  # beside the results, unless told
    with pytest.raises(PerfsuiteError, match="needs the results files"):
        api.compare(api.RunResult(0, tmp_path, current, None, None, ()).load_results(),
                    baselines_dir=tmp_path / "baselines", remeasure=1)


def test_ab_re_measures_a_suspect_as_the_command_does(monkeypatch, tmp_path):
    """api.ab's default is the command's: a suspect is re-measured on both sides (one more block) before it counts."""
    import synthetic as syn

    import perfsuite.ab as ab_module

    calls = []
    monkeypatch.setattr(ab_module, "run_benchmarks", syn.planted_ab_runner({"A": 1.2, "B": 2.4}, calls))
    monkeypatch.setattr(ab_module, "_check_own_code", lambda side: None)
    repo = syn.two_commit_checkout(tmp_path / "repo")
    result = api.ab("HEAD~1", options=api.RunOptions(), runs=3, out_dir=tmp_path / "ab", repo=repo)
    assert result.comparison.regression and len(calls) == 3 * 2 + 2 and result.runs == 3
    assert result.a.startswith("HEAD~1 (") and result.b == "working tree"
    assert len(api.ab("HEAD~1", runs=3, out_dir=tmp_path / "ab2", repo=repo, remeasure=0).a_runs) == 3
