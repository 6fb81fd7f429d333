"""The GitHub workflows: valid YAML, the expected triggers and jobs, and every perfsuite command they
call parses with the real command line (actionlint's PyPI wrapper downloads its binary, which this
project's machines cannot, so structure is checked here)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from perfsuite.cli import build_parser

WORKFLOWS = Path(__file__).parents[2] / ".github" / "workflows"


def load(name):
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def run_lines(doc):
    for job in doc["jobs"].values():
        for step in job["steps"]:
            yield from step.get("run", "").replace("\\\n", " ").splitlines()


def perfsuite_commands(doc):
    for line in run_lines(doc):
        line = re.sub(r"\$\{\{[^}]*\}\}", "1", line).replace('"$PROFILE"', "full").replace("$SHARDS", "4")
        line = re.sub(r'"\$\(git merge-base [^)]*\)"', "main", line)
        if line.strip().startswith("perfsuite "):
            yield shlex.split(line)[1:]


def test_pull_request_workflow():
    doc = load("pr.yml")
    assert set(doc["on"]) == {"pull_request", "workflow_dispatch"}
    assert doc["permissions"]["pull-requests"] == "write"
    steps = doc["jobs"]["smoke"]["steps"]
    text = yaml.safe_dump(steps)
    assert "torch==2.13.0" in text and "pytest" in text and "GITHUB_STEP_SUMMARY" in text
    assert any("github-script" in s.get("uses", "") for s in steps), "posts or updates one PR comment"
    assert steps[0]["with"]["fetch-depth"] == 0, "the A/B run needs the merge base"
    ab = next(s for s in steps if s.get("id") == "ab")
    assert "perfsuite ab \"$(git merge-base" in ab["run"], "gates on A/B against the merge base"
    assert "steps.ab.outputs.exit != '0'" in steps[-1]["if"], "fails the check on a confirmed A/B regression"


def test_nightly_workflow():
    doc = load("nightly.yml")
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"}
    shard = doc["jobs"]["shard"]
    assert "self-hosted" in shard["runs-on"] and "gpu" in shard["runs-on"]
    assert doc["concurrency"]["group"] == "perfsuite-nightly" and doc["env"]["PERFSUITE_MACHINE_ID"]
    gpu_tests = next(s for s in shard["steps"] if "-m gpu" in s.get("run", ""))
    assert not gpu_tests.get("continue-on-error"), "GPU tests gate the nightly"
    install = next(s for s in shard["steps"] if "venv" in s.get("run", ""))
    assert "--system-site-packages" in install["run"] and "CUDA_VISIBLE_DEVICES" in install["run"]
    upload = next(s for s in shard["steps"] if "upload-artifact" in s.get("uses", ""))
    assert "journal.jsonl" in upload["with"]["path"] and upload["if"] == "always()"
    assert shard["strategy"]["matrix"]["shard"] == list(range(1, int(doc["env"]["SHARDS"]) + 1))
    merge = doc["jobs"]["merge"]
    assert merge["needs"] == "shard"
    assert any("issues.create" in s.get("with", {}).get("script", "") for s in merge["steps"])


@pytest.mark.parametrize("name", ["pr.yml", "nightly.yml"])
def test_every_perfsuite_command_in_the_workflows_parses(name):
    commands = list(perfsuite_commands(load(name)))
    assert commands, f"{name} calls no perfsuite command"
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (a failed test) on an unknown command or option
