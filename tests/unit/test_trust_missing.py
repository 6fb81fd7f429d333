"""The trust boundary, probe 2 (issue 27): a run cannot pass its gate by dropping the cells it slows. A cell of the
baseline that the run set out to measure (its --cells and --shard scope that) and did not fails the run, named,
unless --allow-missing; a cell the run recorded as not run (oom, no_device, ...) stays apart: reported with its
reason, failing only in A/B, where both sides ran on one machine with the same options."""

import json

import pytest
import synthetic as syn

import perfsuite.ab as ab_module
from perfsuite import api
from perfsuite.cli import main
from perfsuite.compare.baselines import add_runs
from perfsuite.compare.verdicts import compare_runs
from perfsuite.formats.comparison import Comparison

PLAIN, LORA, LORA4, HOULSBY = syn.cell("none"), syn.cell("lora"), syn.cell("lora", batch=4), syn.cell("houlsby")
FULL = (PLAIN, LORA, LORA4, HOULSBY)


def records(cells, seed=0, skipped=()):
    return [syn.record(c, seed=seed + k, ratio=1.0 if c.adapter == "none" else 1.2, run_sd=0.01)
            for k, c in enumerate(cells)] + [syn.skipped(c) for c in skipped]


@pytest.fixture
def baselines(tmp_path):
    directory = tmp_path / "baselines"
    add_runs([syn.results(records(FULL, seed=100 * i)) for i in range(3)], directory=directory)
    return directory


def compare(tmp_path, baselines, run_records, *extra, **settings):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(syn.document(run_records, **settings)))
    return syn.cli("compare", str(path), "--baselines-dir", str(baselines), "--json", str(tmp_path / "cmp.json"),
                   *extra)


def test_a_run_without_its_lora_cells_fails_the_gate_naming_them(tmp_path, baselines):
    """The issue's reproduction: `perfsuite compare` of a run without its LoRA cells against a full baseline said
    "2 missing" and exited 0."""
    proc = compare(tmp_path, baselines, records((PLAIN, HOULSBY)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MISSING: "))
    assert LORA.id in line and LORA4.id in line and "--allow-missing" in line
    doc = json.loads((tmp_path / "cmp.json").read_text())
    assert doc["allow_missing"] is False and doc["summary"]["missing"] == 2


def test_allow_missing_lets_an_intended_removal_pass(tmp_path, baselines):
    proc = compare(tmp_path, baselines, records((PLAIN, HOULSBY)), "--allow-missing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISSING: " not in proc.stdout and json.loads((tmp_path / "cmp.json").read_text())["allow_missing"]


def test_a_selection_scopes_what_is_expected(tmp_path, baselines):
    proc = compare(tmp_path, baselines, records((PLAIN, HOULSBY)), selection="adapter in ('none', 'houlsby')")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_cell_the_gating_run_recorded_as_not_run_is_reported_apart_and_does_not_fail(tmp_path, baselines):
    """An OOM (or no_device, outside_budget) is the run's own record of why: shown with its reason, distinct from
    a cell that vanished, and not a failure of the gate (the baseline's machine is this one; an OOM on a shared
    GPU is not the code's doing more than the run says)."""
    proc = compare(tmp_path, baselines, records((PLAIN, LORA, HOULSBY), skipped=(LORA4,)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "did not run (oom: CUDA out of memory)" in proc.stdout and "MISSING: " not in proc.stdout
    cell = next(c for c in json.loads((tmp_path / "cmp.json").read_text())["cells"] if c["cell_id"] == LORA4.id)
    assert cell["verdict"] == "missing" and cell["not_run"] == "oom"


def ab_runs(cells, skipped=(), start=0):
    return [syn.results(records(cells, seed=start + 10 * i, skipped=skipped)) for i in range(4)]


def test_in_ab_a_cell_head_drops_or_skips_fails_unless_allowed():
    """HEAD is measured with HEAD's own benchmark code: a cell it removes, renames, or marks not run (a budget, a
    device check, an OOM) is the change's doing, on the same machine and options as BASE."""
    dropped = compare_runs(ab_runs(FULL), ab_runs((PLAIN, LORA4, HOULSBY), start=1))
    assert [c.cell_id for c in dropped.unmeasured] == [LORA.id] and dropped.exit_code == 1
    skipped = compare_runs(ab_runs(FULL), ab_runs((PLAIN, LORA4, HOULSBY), skipped=(LORA,), start=1))
    assert [(c.cell_id, c.not_run) for c in skipped.unmeasured] == [(LORA.id, "oom")] and skipped.fails
    assert not dropped.allowing_missing(True).fails and dropped.allowing_missing(True).exit_code == 0


def test_cli_ab_fails_when_head_drops_a_cell_and_allow_missing_passes(monkeypatch, tmp_path):
    repo = syn.two_commit_checkout(tmp_path / "repo")
    inner = syn.planted_ab_runner({"A": 1.2, "B": 1.2}, [])

    def drop_lora_on_b(checkout, out_json, options, **kw):  # HEAD's benchmarks no longer have the LoRA cell
        path = inner(checkout, out_json, options, **kw)
        if "worktree-a" not in str(checkout):
            doc = json.loads(path.read_text())
            doc["benchmarks"] = [b for b in doc["benchmarks"] if b["extra_info"]["cell_id"] != LORA.id]
            path.write_text(json.dumps(doc))
        return path

    monkeypatch.setattr(ab_module, "run_benchmarks", drop_lora_on_b)
    monkeypatch.setattr(ab_module, "_check_own_code", lambda side: None)
    monkeypatch.chdir(repo)
    args = ["ab", "HEAD~1", "--runs", "3", "--out", str(tmp_path / "ab"), "--markdown", str(tmp_path / "ab.md")]
    assert main(args) == 1
    assert "**1 missing**" in (tmp_path / "ab.md").read_text() and LORA.id in (tmp_path / "ab.md").read_text()
    assert main([*args, "--allow-missing"]) == 0


def test_the_api_and_an_older_document_read_the_same_rule(tmp_path, baselines):
    run = tmp_path / "run.json"
    run.write_text(json.dumps(syn.document(records((PLAIN, HOULSBY)))))
    result = api.compare(run, baselines_dir=baselines)
    assert result.fails and not result.regression
    assert not api.compare(run, baselines_dir=baselines, allow_missing=True).fails
    old = result.document | {"perfsuite_comparison": 3}  # a format-3 file: no not_run, no allow_missing
    del old["allow_missing"]
    for c in old["cells"]:
        c.pop("not_run", None)
    assert Comparison.from_dict(old).fails


def test_the_pytest_plugin_and_run_take_the_option():
    from perfsuite.cli import build_parser

    assert build_parser().parse_args(["run", "--allow-missing"]).allow_missing
    assert build_parser().parse_args(["ab", "main", "--allow-missing"]).allow_missing
    assert api.RunOptions(allow_missing=True).allow_missing
