"""The trust boundary, `perfsuite ab` (issue 27, probe 6): ab removes only worktrees it can remove without loss —
never a symbolic link, a folder that is not a worktree of the repository, or a worktree with changes — and says,
in --help, README and the docs, that BASE's and HEAD's code executes."""

import re
from pathlib import Path

import pytest
import synthetic as syn

import perfsuite.ab as ab_module
from perfsuite.cli import main

ROOT = Path(__file__).parents[2]
git = syn.git


@pytest.fixture
def planted(monkeypatch, tmp_path):
    """A checkout of two commits, runs planted (nothing measured), run from inside the checkout."""
    repo = syn.two_commit_checkout(tmp_path / "repo")
    monkeypatch.setattr(ab_module, "run_benchmarks", syn.planted_ab_runner({"A": 1.2, "B": 1.2}, []))
    monkeypatch.setattr(ab_module, "_check_own_code", lambda side: None)
    monkeypatch.chdir(repo)
    return repo


def ab(out: Path, *extra: str) -> int:
    return main(["ab", "HEAD~1", "--runs", "2", "--remeasure", "0", "--out", str(out), *extra])


def test_an_edit_in_a_kept_worktree_is_never_deleted_by_the_next_ab(planted, tmp_path, capsys):
    """The issue's reproduction: with --keep-worktrees, an edit in worktree-a was removed by the next `ab --out` on
    the same folder (`git worktree remove --force`, silently)."""
    out = tmp_path / "out"
    assert ab(out, "--keep-worktrees") == 0
    edited = out / "worktree-a" / "perfsuite" / "__init__.py"
    edited.write_text("VERSION = 'my experiment'\n")
    (out / "worktree-a" / "notes.txt").write_text("what I tried\n")
    capsys.readouterr()
    assert ab(out) == 2
    err = capsys.readouterr().err
    assert "has changes (2 file(s)" in err and "never deletes work" in err and len(err.strip().splitlines()) == 1
    assert edited.read_text() == "VERSION = 'my experiment'\n" and (out / "worktree-a" / "notes.txt").exists()


def test_an_unchanged_kept_worktree_is_reused(planted, tmp_path):
    out = tmp_path / "out"
    assert ab(out, "--keep-worktrees") == 0
    (out / "worktree-a" / "perfsuite" / "__pycache__").mkdir()  # what running its code leaves: no one's work
    (out / "worktree-a" / "perfsuite" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert ab(out) == 0 and not (out / "worktree-a").exists()


def test_a_symlink_to_another_worktree_is_refused_and_that_worktree_kept(planted, tmp_path, capsys):
    """The issue's reproduction: OUT/worktree-a, a symlink to another worktree of the repo, deleted that worktree
    with its uncommitted changes."""
    other = tmp_path / "my-feature"
    git(planted, "worktree", "add", "--detach", str(other), "HEAD")
    (other / "work.py").write_text("days of work\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "worktree-a").symlink_to(other)
    assert ab(out) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert (other / "work.py").read_text() == "days of work\n" and str(other) in git(planted, "worktree", "list")


def test_a_folder_that_is_not_a_worktree_is_refused_and_kept(planted, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "worktree-a").mkdir(parents=True)
    (out / "worktree-a" / "data.csv").write_text("1,2\n")
    assert ab(out) == 2
    assert "is not a worktree of" in capsys.readouterr().err and (out / "worktree-a" / "data.csv").exists()


def test_a_worktree_edited_during_the_run_is_left_with_a_warning(monkeypatch, planted, tmp_path, capsys):
    inner = syn.planted_ab_runner({"A": 1.2, "B": 1.2}, [])

    def editing(checkout, out_json, options, **kw):  # someone edits A's worktree while ab runs
        if "worktree-a" in str(checkout):
            (Path(checkout) / "perfsuite" / "__init__.py").write_text("VERSION = 'edited meanwhile'\n")
        return inner(checkout, out_json, options, **kw)

    monkeypatch.setattr(ab_module, "run_benchmarks", editing)
    out = tmp_path / "out"
    assert ab(out) == 0
    assert "[ab] left in place: " in capsys.readouterr().err
    assert (out / "worktree-a" / "perfsuite" / "__init__.py").read_text() == "VERSION = 'edited meanwhile'\n"


def test_help_and_readme_say_that_base_and_head_code_executes(capsys):
    with pytest.raises(SystemExit):
        main(["ab", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "BASE's and HEAD's own code executes" in help_text and "outside a sandbox" in help_text
    docs = (ROOT / "docs" / "verdicts.md").read_text()  # README's section "Baselines, verdicts and A/B runs" moved here
    section = docs[docs.index("perfsuite ab"):]
    assert re.search(r"BASE's and HEAD's (own )?code (runs|executes)", docs) and "sandbox" in section
    assert re.search(r"BASE's and HEAD's (own )?code (runs|executes)", (ROOT / "README.md").read_text())
