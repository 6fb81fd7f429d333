"""Faults: `perfsuite ab` cleans up after itself. A side that fails its checks, an error in a run, or a SIGKILL
(which skips every cleanup) never leaves a worktree that breaks the next ab into the same --out."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synthetic as syn

import perfsuite.ab as ab_module
from perfsuite.ab import ABError, ab, prepare_side, remove_side
from perfsuite.processes import RunError


git = syn.git


@pytest.fixture
def repo(tmp_path):
    """A tiny git repository shaped like a perfsuite checkout: two commits (as in test_ab)."""
    return syn.two_commit_checkout(tmp_path / "repo")


def worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


def test_a_side_that_fails_its_checks_leaves_no_worktree(repo, tmp_path, monkeypatch):
    def broken(side):
        raise ABError(f"{side.label} ({side.ref}) imports perfsuite from elsewhere")

    monkeypatch.setattr(ab_module, "_check_own_code", broken)
    with pytest.raises(ABError, match="imports perfsuite from elsewhere"):
        ab("HEAD~1", "HEAD", {}, runs=2, out_dir=tmp_path / "out", start=repo)
    assert len(worktrees(repo)) == 1 and not (tmp_path / "out" / "worktree-a").exists()


def test_an_error_in_a_run_leaves_no_worktree(repo, tmp_path, monkeypatch):
    def failing(*a, **kw):
        raise RunError("pytest exited with 5")

    monkeypatch.setattr(ab_module, "run_benchmarks", failing)
    with pytest.raises(RunError, match="exited with 5"):
        ab("HEAD~1", "HEAD", {}, runs=2, out_dir=tmp_path / "out", start=repo)
    assert len(worktrees(repo)) == 1 and not list((tmp_path / "out").glob("worktree-*"))


def test_a_stale_worktree_of_a_killed_ab_is_cleared_before_reuse(repo, tmp_path):
    out = tmp_path / "out"
    stale = out / "worktree-a"
    git(repo, "worktree", "add", "--detach", str(stale), "HEAD~1")  # what a SIGKILLed ab leaves
    side = prepare_side(repo, "HEAD~1", "A", out)
    assert (side.path / "perfsuite" / "__init__.py").read_text() == "VERSION = 'base'\n"
    remove_side(repo, side)
    git(repo, "worktree", "add", "--detach", str(stale), "HEAD~1")
    subprocess.run(["rm", "-rf", str(stale)], check=True)  # its folder gone, git still lists it
    side = prepare_side(repo, "HEAD", "A", out)
    assert (side.path / "perfsuite" / "__init__.py").read_text() == "VERSION = 'head'\n"
    remove_side(repo, side)
    assert len(worktrees(repo)) == 1


def test_a_sigkilled_ab_does_not_break_the_next_one(repo, tmp_path):
    """A real `perfsuite ab` process killed once its worktree exists; the next ab into the same --out gets past
    `git worktree add` (it fails later, on the stand-in benchmarks, with one line) and removes its worktree."""
    out = tmp_path / "out"
    # the installed perfsuite, not the stand-in package of the repository it runs in (python -P is 3.11+)
    boot = "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; from perfsuite.cli import main; " \
           "sys.exit(main())"
    cmd = [sys.executable, "-c", boot, "ab", "HEAD~1", "--runs", "2", "--out", str(out)]
    first = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "worktree-a" / ".git").exists():
        assert time.monotonic() < deadline and first.poll() is None, "ab never made its worktree"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("perfsuite ab: error: ")]
    assert len(errors) == 1 and "git worktree" not in second.stderr, second.stderr[-2000:]
    assert "[ab 1/4] A = HEAD~1: run 1/2" in second.stderr  # past the worktree, into the runs
    assert len(worktrees(repo)) == 1 and not (out / "worktree-a").exists()
