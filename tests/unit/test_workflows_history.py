"""The nightly's history steps (.github/scripts/history_store.sh + `perfsuite history add`), run as the workflow
runs them against a local bare repository standing for GitHub: the first night creates the branch, the next
night adds to the store it restored, and a fetch that fails (or a branch that moved) never costs a night."""

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from perfsuite.cli import main as perfsuite

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / ".github" / "scripts" / "history_store.sh"
FIXTURE = ROOT / "tests" / "fixtures" / "results" / "latency_smoke.json"
BRANCH = "perfsuite-history"
STORE = "history/perfsuite-history.sqlite"

pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                                reason="needs git and bash")


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def night_results(tmp_path: Path, night: int) -> Path:
    """The fixture's run as the results of night ``night``: another commit, another date."""
    doc = json.loads(FIXTURE.read_text())
    doc["commit_info"]["id"] = f"{night:02d}" + doc["commit_info"]["id"][2:]
    doc["datetime"] = f"2026-11-{night:02d}T02:30:00+00:00"
    path = tmp_path / f"night-{night}" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def remote(tmp_path):
    path = tmp_path / "remote.git"
    git("init", "--quiet", "--bare", str(path), cwd=tmp_path)
    return path


def workspace(tmp_path: Path, name: str, remote: Path) -> Path:
    """A fresh job's checkout: a repository whose origin is the remote."""
    ws = tmp_path / name
    ws.mkdir()
    git("init", "--quiet", cwd=ws)
    git("remote", "add", "origin", str(remote), cwd=ws)
    return ws


def step(action: str, ws: Path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GH_"))}
    environ |= {"STORE": STORE, "HISTORY_BRANCH": BRANCH, "GITHUB_RUN_ID": "7", **env}
    return subprocess.run(["bash", str(SCRIPT), action], cwd=ws, env=environ, capture_output=True, text=True)


def night(tmp_path: Path, name: str, remote: Path, number: int) -> Path:
    """restore → history add → keep, as the history and history-keep jobs run them."""
    ws = workspace(tmp_path, name, remote)
    restored = step("restore", ws)
    assert restored.returncode == 0, restored.stderr
    assert perfsuite(["history", "add", str(night_results(tmp_path, number)), "--store", str(ws / STORE)]) == 0
    kept = step("keep", ws)
    assert kept.returncode == 0, kept.stderr
    return ws


def branch_runs(remote: Path, tmp_path: Path) -> list[str]:
    """The commits of the runs in the store on the remote's branch (one-commit branch: no parent)."""
    head = git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote)
    assert git("rev-list", "--count", head, cwd=remote) == "1", "the branch is one commit"
    out = tmp_path / f"from-remote-{head[:8]}.sqlite"
    out.write_bytes(subprocess.run(["git", "cat-file", "blob", f"{head}:perfsuite-history.sqlite"], cwd=remote,
                                   check=True, capture_output=True).stdout)
    with sqlite3.connect(out) as conn:
        return [r[0][:2] for r in conn.execute("SELECT commit_sha FROM runs ORDER BY datetime")]


def test_first_night_creates_the_branch_and_the_next_night_keeps_both(tmp_path, remote, capsys):
    ws1 = night(tmp_path, "night1", remote, 1)
    assert (ws1 / f"{STORE}.lease").read_text() == "", "no branch yet: the lease says it must still be absent"
    assert branch_runs(remote, tmp_path) == ["01"]
    first_head = git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote)

    ws2 = night(tmp_path, "night2", remote, 2)
    assert (ws2 / f"{STORE}.lease").read_text().strip() == first_head, "the lease is the commit restored"
    assert branch_runs(remote, tmp_path) == ["01", "02"], "nothing lost: night 1 is still in the store"
    capsys.readouterr()


def test_a_failed_fetch_fails_the_step_and_nothing_is_pushed(tmp_path, remote):
    night(tmp_path, "night1", remote, 1)
    before = git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote)
    ws = workspace(tmp_path, "unreachable", remote)
    failed = step("restore", ws, HISTORY_REMOTE=str(tmp_path / "no-such-remote.git"))
    assert failed.returncode == 1 and "cannot read branch" in failed.stderr, failed.stderr
    assert not (ws / STORE).exists() and not (ws / f"{STORE}.lease").exists(), "no empty store in its place"
    # Even if a later step ran anyway, keep refuses without a restore, so the one-night store never lands.
    (ws / STORE).write_bytes(b"a one-night store")
    refused = step("keep", ws)
    assert refused.returncode == 1 and "restore did not run" in refused.stderr
    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote) == before
    assert branch_runs(remote, tmp_path) == ["01"]


def test_a_branch_without_the_store_is_not_read_as_a_new_history(tmp_path, remote):
    ws = workspace(tmp_path, "odd", remote)
    (ws / "README").write_text("not a store")
    git("add", "README", cwd=ws)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "x", cwd=ws)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{BRANCH}", cwd=ws)
    failed = step("restore", workspace(tmp_path, "next", remote))
    assert failed.returncode == 1 and "has no perfsuite-history.sqlite" in failed.stderr


def test_a_branch_that_moved_since_restore_is_not_overwritten(tmp_path, remote):
    night(tmp_path, "night1", remote, 1)
    slow = workspace(tmp_path, "slow", remote)
    assert step("restore", slow).returncode == 0
    assert perfsuite(["history", "add", str(night_results(tmp_path, 3)), "--store", str(slow / STORE)]) == 0
    night(tmp_path, "night2", remote, 2)  # another writer keeps its store meanwhile
    refused = step("keep", slow)
    assert refused.returncode != 0 and "not at the lease" in refused.stderr, refused.stderr
    assert branch_runs(remote, tmp_path) == ["01", "02"]


def test_a_first_night_that_races_another_does_not_overwrite_it(tmp_path, remote):
    late = workspace(tmp_path, "late", remote)
    assert step("restore", late).returncode == 0  # no branch yet
    assert perfsuite(["history", "add", str(night_results(tmp_path, 5)), "--store", str(late / STORE)]) == 0
    night(tmp_path, "night1", remote, 1)  # the branch appears meanwhile
    assert step("keep", late).returncode != 0
    assert branch_runs(remote, tmp_path) == ["01"]


def test_the_token_goes_in_a_header_for_github_only_and_never_into_the_repository(tmp_path, remote):
    ws = workspace(tmp_path, "token", remote)
    restored = step("restore", ws, GH_TOKEN="s3cret-token")
    assert restored.returncode == 0, restored.stderr
    assert "::add-mask::" in restored.stdout, "the header value is masked in the log"
    assert "s3cret" not in (ws / ".git" / "config").read_text()


# --- issue 27, probe 3: the write job trusts nothing the history job (PyPI code) hands it --------------------------

def planted(tmp_path: Path, remote: Path, name: str, *sql: str, nights: tuple[int, ...] = (3,)) -> Path:
    """A history job that restored the branch's store, added tonight's run, then (a compromised package, a crafted
    input) changed the store before uploading it."""
    ws = workspace(tmp_path, name, remote)
    assert step("restore", ws).returncode == 0
    for n in nights:
        assert perfsuite(["history", "add", str(night_results(tmp_path / name, n)), "--store", str(ws / STORE)]) == 0
    conn = sqlite3.connect(ws / STORE)
    for statement in sql:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return ws


@pytest.mark.parametrize("sql, nights, why", [
    (["CREATE TRIGGER eat AFTER INSERT ON measurements BEGIN DELETE FROM measurements; END"], (3,),
     "a trigger perfsuite did not create: 'eat'"),
    (["DELETE FROM measurements WHERE run_id = 1", "DELETE FROM runs WHERE run_id = 1"], (3,),
     "row(s) of runs on the branch are missing or changed"),
    (["UPDATE measurements SET value = value * 0.5 WHERE run_id = 2"], (3,),
     "row(s) of measurements on the branch are missing or changed"),
    ([], (3, 4), "2 new runs; a night adds at most 1"),
    (["INSERT INTO acks SELECT cell_key, 1, 'hush', '2026-11-03T00:00:00+00:00' FROM cells LIMIT 1"], (3,),
     "new acknowledgement"),
])
def test_a_store_the_history_job_tampered_with_is_never_pushed(tmp_path, remote, sql, nights, why):
    night(tmp_path, "night1", remote, 1)
    night(tmp_path, "night2", remote, 2)
    before = git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote)
    ws = planted(tmp_path, remote, "tampered", *sql, nights=nights)
    refused = step("keep", ws)
    assert refused.returncode == 1 and why in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote) == before
    assert branch_runs(remote, tmp_path) == ["01", "02"]


def test_tonights_run_must_be_of_the_commit_the_nightly_measured(tmp_path, remote):
    night(tmp_path, "night1", remote, 1)
    ws = planted(tmp_path, remote, "other-commit")
    measured = json.loads(night_results(tmp_path / "x", 3).read_text())["commit_info"]["id"]
    refused = step("keep", ws, HISTORY_COMMIT="f" * 40)
    assert refused.returncode == 1 and "is not the commit this nightly measured" in refused.stdout
    kept = step("keep", ws, HISTORY_COMMIT=measured)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "verified: 1 kept run(s) unchanged, 1 new" in kept.stdout and branch_runs(remote, tmp_path) == ["01", "03"]


def test_a_forged_lease_pushes_nothing(tmp_path, remote):
    night(tmp_path, "night1", remote, 1)
    before = git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote)
    ws = planted(tmp_path, remote, "forged", "DELETE FROM measurements", "DELETE FROM runs")
    for lease in ("", "HEAD --force", before[:-1] + ("0" if before[-1] != "0" else "1")):
        (ws / f"{STORE}.lease").write_text(lease + "\n")  # "first night", an option, another commit
        assert step("keep", ws).returncode == 1
    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=remote) == before and branch_runs(remote, tmp_path) == ["01"]


def test_a_person_keeps_their_own_acknowledgement_only_when_they_say_so(tmp_path, remote):
    night(tmp_path, "night1", remote, 1)
    ws = workspace(tmp_path, "ack", remote)
    assert step("restore", ws).returncode == 0
    commit = json.loads(night_results(tmp_path / "c", 1).read_text())["commit_info"]["id"]
    assert perfsuite(["history", "ack", "latency[lora-r8-b1-s32]", "--store", str(ws / STORE), "--commit", commit,
                      "--note", "intended"]) == 0
    assert step("keep", ws, MAX_NEW_RUNS="0").returncode == 1, "the nightly never adds an acknowledgement"
    kept = step("keep", ws, MAX_NEW_RUNS="0", ALLOW_ACKS="1")
    assert kept.returncode == 0 and "0 new" in kept.stdout, kept.stdout + kept.stderr
