"""A/B runs: worktrees of real commits, alternation A B, B A, …, and verdicts from planted runs."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import synthetic as syn

import perfsuite.ab as ab_module
from perfsuite.ab import ABError, Side, prepare_side, remove_side, run_alternately
from perfsuite.cli import main
from perfsuite.compare.verdicts import CompareOptions

git = syn.git


@pytest.fixture
def repo(tmp_path):
    """A tiny git repository shaped like a perfsuite checkout: two commits."""
    return syn.two_commit_checkout(tmp_path / "repo")


def test_a_side_is_a_worktree_of_its_commit_importing_its_own_code(repo, tmp_path):
    side = prepare_side(repo, "HEAD~1", "A", tmp_path / "out")
    assert side.worktree and side.commit == git(repo, "rev-parse", "HEAD~1")
    assert (side.path / "perfsuite" / "__init__.py").read_text() == "VERSION = 'base'\n"
    remove_side(repo, side)
    assert not side.path.exists() and str(side.path) not in git(repo, "worktree", "list")
    here = prepare_side(repo, None, "B", tmp_path / "out")
    assert here.path == repo and not here.worktree and here.ref == "working tree"


def test_bad_refs_and_checkouts_are_one_line_errors(repo, tmp_path):
    with pytest.raises(ABError, match="A: 'no-such-branch' is not a commit of "):
        prepare_side(repo, "no-such-branch", "A", tmp_path)
    (repo / "tests" / "benchmarks" / "test_latency.py").unlink()
    with pytest.raises(ABError, match=r"B \(working tree\) has no perfsuite benchmarks"):
        prepare_side(repo, None, "B", tmp_path)
    with pytest.raises(ABError, match="is not inside a git checkout"):
        ab_module.repo_root(tmp_path)


def test_runs_alternate_a_b_then_b_a(monkeypatch, tmp_path):
    calls, lines = [], []
    monkeypatch.setattr(ab_module, "run_benchmarks", syn.planted_ab_runner({"A": 1.2, "B": 1.2}, calls))
    a = Side("A", "main", "abc", tmp_path / "worktree-a")
    b = Side("B", "working tree", None, tmp_path / "here")
    a_runs, b_runs = run_alternately(a, b, {"profile": "smoke"}, 3, tmp_path, lines.append)
    assert calls == ["A", "B", "B", "A", "A", "B"] and len(a_runs) == len(b_runs) == 3
    assert [p.name for p in a.runs] == ["a-1.json", "a-2.json", "a-3.json"]
    assert lines[0].startswith("[ab 1/6] A = main: run 1/3") and "left)" in lines[-1]
    with pytest.raises(ABError, match="--runs must be at least 2"):
        run_alternately(a, b, {}, 1, tmp_path)


def test_cli_ab_flags_the_planted_lora_slowdown_and_nothing_else(monkeypatch, repo, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(ab_module, "run_benchmarks", syn.planted_ab_runner({"A": 1.2, "B": 1.2 * 2.0}, calls))
    monkeypatch.setattr(ab_module, "_check_own_code", lambda side: None)
    monkeypatch.chdir(repo)
    code = main(["ab", "HEAD~1", "--runs", "4", "--out", str(tmp_path / "ab"), "--json", str(tmp_path / "ab.json"),
                 "--markdown", str(tmp_path / "ab.md")])
    assert code == 1 and len(calls) == 10  # 4 blocks, then the suspect re-measured on both sides: one block more
    doc = json.loads((tmp_path / "ab.json").read_text())
    verdicts = {c["cell_id"]: c["verdict"] for c in doc["cells"]}
    assert verdicts.pop("latency[lora-r8-b1-s32]") == "regression"
    assert "regression" not in verdicts.values() and len(verdicts) == 2
    assert doc["parts"][0]["mode"] == "ab" and doc["parts"][0]["baseline"].startswith("A: HEAD~1 (")
    out = capsys.readouterr()
    a = f"HEAD~1 ({git(repo, 'rev-parse', 'HEAD~1')[:10]})"
    assert out.out.startswith(f"perfsuite ab: A = {a}, B = working tree, 4 runs each")
    assert "[ab 8/8]" in out.err and (tmp_path / "ab.md").read_text().startswith(f"### perfsuite A/B: {a} →")
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # A's worktree is removed afterwards


def test_cli_ab_of_identical_code_flags_nothing(monkeypatch, repo, tmp_path):
    monkeypatch.setattr(ab_module, "run_benchmarks", syn.planted_ab_runner({"A": 1.2, "B": 1.2}, []))
    monkeypatch.setattr(ab_module, "_check_own_code", lambda side: None)
    monkeypatch.chdir(repo)
    assert main(["ab", "HEAD", "HEAD", "--runs", "4", "--out", str(tmp_path / "ab"), "--json",
                 str(tmp_path / "ab.json")]) == 0
    assert "regression" not in {c["verdict"] for c in json.loads((tmp_path / "ab.json").read_text())["cells"]}


def test_ab_re_measures_a_suspect_on_both_sides_with_the_same_cell_options(monkeypatch, repo, tmp_path):
    seen = []
    inner = syn.planted_ab_runner({"A": 1.2, "B": 1.2 * 2.0}, [])

    def run(checkout, out_json, options, *, own_code=False, node_ids=None, **kw):
        seen.append((Path(out_json).name, dict(options), node_ids))
        return inner(checkout, out_json, options, own_code=own_code)

    monkeypatch.setattr(ab_module, "run_benchmarks", run)
    monkeypatch.setattr(ab_module, "_check_own_code", lambda side: None)
    monkeypatch.chdir(repo)
    doc, *_ = ab_module.ab("HEAD~1", None, {"profile": "smoke", "cells": "batch == 1", "shard": "1/2"}, runs=3,
                           out_dir=tmp_path / "ab", compare_options=CompareOptions(remeasure=1))
    again = [s for s in seen if "remeasure" in s[0]]
    assert sorted(name for name, _, _ in again) == ["a-remeasure-1.json", "b-remeasure-1.json"]
    assert all(opts["cells"] == "batch == 1" and opts["shard"] == "1/2" for _, opts, _ in again)
    assert all(ids == ["tests/benchmarks/test_latency.py::test_latency[lora-r8-b1-s32]"] for _, _, ids in again)
    lora = next(c for c in doc.cells if c.cell_id == "latency[lora-r8-b1-s32]")
    assert lora.verdict == "regression" and lora.remeasured == 1
    slowdown = lora.metric("slowdown")
    assert slowdown.baseline_runs == slowdown.current_runs == 4  # the re-measure block joined both sides


def test_a_re_measurement_repeats_the_runs_selection_and_each_files_shard(monkeypatch, tmp_path):
    """The loop a suspect is timed in holds every selected cell of its shape: the fresh process must select the same
    cells (--cells) and the suspect's own shard, not only the suspect's test."""
    import perfsuite.processes as runs
    from perfsuite.formats.results import Results

    seen = []

    def fake_run(cmd, **_):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "stopped here")

    monkeypatch.setattr(runs.subprocess, "run", fake_run)
    lora, houlsby = syn.record(syn.cell("lora"), seed=1), syn.record(syn.cell("houlsby"), seed=2)
    results = Results(records=[lora, houlsby], sources=["s1.json", "s2.json"],
                      runs=[{"source": "s1.json", "profile": "smoke", "selection": "batch == 1", "shard": "1/2"},
                            {"source": "s2.json", "profile": "smoke", "selection": "batch == 1", "shard": "2/2"}])
    remeasure = runs.remeasurer(results, {lora.id: "t.py::a", houlsby.id: "t.py::b"}, tmp_path, tmp_path)
    with pytest.raises(runs.RunError):
        remeasure([houlsby.id])
    assert "--perfsuite-cells=batch == 1" in seen[0] and "--perfsuite-shard=2/2" in seen[0] and "t.py::b" in seen[0]
    with pytest.raises(runs.RunError):
        remeasure([lora.id])
    assert "--perfsuite-shard=1/2" in seen[1] and "t.py::a" in seen[1]


def test_ab_gives_both_sides_the_adapters_option_and_the_module_from_where_it_started(monkeypatch, repo, tmp_path):
    """``ab --adapters MODULE:OBJECT``: every run of both sides gets the option, and the module (untracked, so in
    neither worktree) is importable from the folder ab was started in."""
    import perfsuite.processes as processes

    seen = []
    inner = syn.planted_ab_runner({"A": 1.2, "B": 1.2}, [])

    def run(checkout, out_json, options, *, own_code=False, **kw):
        seen.append(options.get("adapters"))
        return inner(checkout, out_json, options, own_code=own_code)

    monkeypatch.setattr(ab_module, "run_benchmarks", run)
    monkeypatch.setattr(ab_module, "_check_own_code", lambda side: None)
    monkeypatch.chdir(repo)
    assert main(["ab", "HEAD~1", "--runs", "2", "--adapters", "my_adapters:MINE", "--out", str(tmp_path / "ab")]) == 0
    assert seen == ["my_adapters:MINE"] * 4

    commands = []

    def fake_run(cmd, cwd, env, **kw):
        commands.append((cmd, env["PYTHONPATH"].split(os.pathsep)))
        Path(cmd[cmd.index("--benchmark-json") + 1]).write_text("{}")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(processes.subprocess, "run", fake_run)
    processes.run_benchmarks(tmp_path / "worktree-a", tmp_path / "a.json", {"adapters": "my_adapters:MINE"},
                             own_code=True)
    (cmd, path), = commands
    assert "--perfsuite-adapters=my_adapters:MINE" in cmd
    assert path[:2] == [str(tmp_path / "worktree-a"), str(repo)]  # its own code first, then where ab started
