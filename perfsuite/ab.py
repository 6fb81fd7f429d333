"""A/B runs: two commits' code measured alternately on one machine, each run in its own process.

How asv's ``continuous`` and pyperf's ``compare_to`` get trustworthy answers on noisy machines: the base
commit's code goes into a git worktree, the head is the working tree (or another commit's worktree); the
same cells run A B, B A, A B, … so slow drift of the machine hits both sides alike and each goes first
equally often; the verdict per cell comes from the differences within those blocks (a paired t test:
:func:`perfsuite.compare.verdicts.compare_runs`). A suspect regression is re-measured as one more block, both
sides in fresh processes with the same cell options (``--cells``, ``--shard``: the same loops), and must stay a
regression. No baseline of the machine is needed, which is why a pull request on a hosted runner is gated this way.

BASE's and HEAD's own code runs — their ``perfsuite`` package, their conftest.py and benchmarks, imported and
executed by each side's processes before and while any cell is timed: never ``ab`` a ref you would not run
(outside a sandbox). The worktrees ab makes are removed when it ends; one it finds in ``--out`` is removed only when
it is a worktree of this repository with no changes of anyone's (``git status``; the bytecode and caches a run
leaves aside): a symbolic link, a folder that is not a worktree, or a worktree with an edit is refused, never deleted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from perfsuite.errors import PerfsuiteError
from perfsuite.formats.results import Results
from perfsuite.formats.record import CellRecord
from perfsuite.locks import writer_lock
from perfsuite.processes import load_run, node_ids_of, run_benchmarks

if TYPE_CHECKING:
    from perfsuite.formats.comparison import Comparison

DEFAULT_RUNS = 5  # runs per side: 8 degrees of freedom for the between-run t test


class ABError(PerfsuiteError):
    pass


@dataclass
class Side:
    label: str  # "A" or "B"
    ref: str  # what the user named ("working tree" for the checkout as it is)
    commit: str | None  # the resolved commit, None for the working tree
    path: Path  # the checkout whose code runs
    worktree: bool = False  # made by us (removed at the end)
    runs: list[Path] = field(default_factory=list)  # result files, in order

    def describe(self) -> str:
        """What this side ran: "REF (commit)", or the ref alone for the working tree."""
        return self.ref + (f" ({self.commit[:10]})" if self.commit else "")


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ABError(f"git {' '.join(args)}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['failed']}")
    return proc.stdout.strip()


def repo_root(start: str | Path = ".") -> Path:
    try:
        return Path(_git(Path(start), "rev-parse", "--show-toplevel"))
    except ABError:
        raise ABError(f"{Path(start).resolve()} is not inside a git checkout; perfsuite ab compares commits") from None


def prepare_side(repo: Path, ref: str | None, label: str, workdir: Path, made: list[Side] | None = None) -> Side:
    """The checkout of ``ref`` (a git worktree) or, for None, the working tree as it is. A worktree is added to
    ``made`` as soon as it exists, so the caller removes it even when a check below fails."""
    if ref is None:
        side = Side(label, "working tree", None, repo)
    else:
        try:
            commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except ABError:
            raise ABError(f"{label}: {ref!r} is not a commit of {repo}") from None
        path = workdir / f"worktree-{label.lower()}"
        clear_stale_worktree(repo, path)
        _git(repo, "worktree", "add", "--detach", str(path), commit)
        side = Side(label, ref, commit, path, worktree=True)
        if made is not None:
            made.append(side)
    if not (side.path / "tests" / "benchmarks" / "test_latency.py").exists():
        raise ABError(f"{label} ({side.ref}) has no perfsuite benchmarks (tests/benchmarks/test_latency.py)")
    _check_own_code(side)
    return side


def _check_own_code(side: Side) -> None:
    """The side's runs must import its own perfsuite, not the installed one."""
    import os

    env = dict(os.environ, PYTHONPATH=str(side.path))
    proc = subprocess.run([sys.executable, "-c", "import perfsuite; print(perfsuite.__file__)"], cwd=side.path,
                          capture_output=True, text=True, env=env)
    where = Path(proc.stdout.strip() or "?").resolve()
    if proc.returncode != 0 or side.path.resolve() not in where.parents:
        raise ABError(f"{side.label} ({side.ref}) imports perfsuite from {where}, not from its checkout "
                      f"{side.path}: {proc.stderr.strip().splitlines()[-1:] or ''}")


RUN_LITTER = ("__pycache__", ".pytest_cache", ".benchmarks")  # what running a side's code leaves: no one's work


def _worktrees(repo: Path) -> set[Path]:
    listing = _git(repo, "worktree", "list", "--porcelain")
    return {Path(line[len("worktree "):]).resolve() for line in listing.splitlines() if line.startswith("worktree ")}


def worktree_changes(path: Path) -> list[str]:
    """What ``git status`` sees changed in the worktree at ``path`` (untracked files included, each one), the
    litter of running its code aside; ABError when git cannot say (then nothing may be removed)."""
    proc = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ABError(f"{path}: git status failed ({(proc.stderr.strip().splitlines() or ['?'])[-1]}): not removed")
    changed = [line[3:] for line in proc.stdout.splitlines() if line.strip()]
    return [f for f in changed if not any(part in RUN_LITTER for part in Path(f.strip('"')).parts)]


def clear_stale_worktree(repo: Path, path: Path) -> None:
    """A worktree left at ``path`` by an ab that was killed (SIGKILL skips every cleanup) or kept
    (``--keep-worktrees``): removed from git's list and from the disk, so ``git worktree add`` can make it again —
    only when nothing of anyone's is lost. A symbolic link, a folder that is not a worktree of ``repo`` (an empty
    one aside), or a worktree with changes is refused with one line (ABError), and left as it is."""
    if path.is_symlink():
        raise ABError(f"{path} is a symbolic link, not a worktree perfsuite ab made: not removed (remove the link "
                      "yourself, or choose another --out)")
    if path.exists():
        if path.resolve() not in _worktrees(repo):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            else:
                raise ABError(f"{path} exists and is not a worktree of {repo}: not removed (choose another --out)")
        else:
            changed = worktree_changes(path)
            if changed:
                raise ABError(f"{path} has changes ({len(changed)} file(s), e.g. {changed[0]}): perfsuite ab never "
                              f"deletes work; save them, then `git worktree remove --force {path}`, or choose "
                              "another --out")
            _git(repo, "worktree", "remove", "--force", str(path))
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)


def remove_side(repo: Path, side: Side, warn: Callable[[str], None] = lambda line: None) -> None:
    """The worktree ab made for ``side``, removed; one with changes since (an edit during the run) is left, said."""
    if side.worktree:
        try:
            clear_stale_worktree(repo, side.path)
        except ABError as e:
            warn(f"[ab] left in place: {e}")


def run_alternately(a: Side, b: Side, options: dict, runs: int, out_dir: Path,
                    progress: Callable[[str], None] = lambda s: None) -> tuple[list[Results], list[Results]]:
    """``runs`` runs of each side, alternating A B, B A, …; each side's results, in order."""
    if runs < 2:
        raise ABError("--runs must be at least 2: a verdict needs a spread between runs on each side")
    t0 = time.monotonic()
    total = 2 * runs
    for i in range(runs):
        for side in ((a, b) if i % 2 == 0 else (b, a)):
            done = len(a.runs) + len(b.runs)
            left = "" if not done else f", ~{(time.monotonic() - t0) / done * (total - done):.0f} s left"
            progress(f"[ab {done + 1}/{total}] {side.label} = {side.ref}: run {len(side.runs) + 1}/{runs} "
                     f"(elapsed {time.monotonic() - t0:.0f} s{left})")
            out = out_dir / f"{side.label.lower()}-{len(side.runs) + 1}.json"
            side.runs.append(run_benchmarks(side.path, out, options, own_code=True))
    return [load_run(p) for p in a.runs], [load_run(p) for p in b.runs]


def remeasure_both(a: Side, b: Side, options: dict, out_dir: Path, progress: Callable[[str], None] = lambda s: None):
    """A function re-measuring suspect cells as one more block: a fresh process of each side, in alternating order,
    with the run's cell options (so each cell is timed in the loop it was timed in)."""
    from perfsuite.formats.io import read_json

    blocks = [0]

    def remeasure(cell_ids: list[str]) -> tuple[dict[str, CellRecord], dict[str, CellRecord]]:
        blocks[0] += 1
        fresh = {}
        for side in ((a, b) if (len(a.runs) + blocks[0]) % 2 else (b, a)):
            node_ids = node_ids_of(read_json(side.runs[-1], ABError))
            unknown = [c for c in cell_ids if c not in node_ids]
            if unknown:
                raise ABError(f"cannot re-measure {unknown[0]} on {side.label}: no pytest node id for it")
            progress(f"[ab] re-measuring {len(cell_ids)} suspect cell(s) on {side.label} = {side.ref} "
                     f"(block {len(a.runs) + blocks[0]})")
            out = out_dir / f"{side.label.lower()}-remeasure-{blocks[0]}.json"
            fresh[side.label] = load_run(run_benchmarks(side.path, out, options, own_code=True,
                                                        node_ids=[node_ids[c] for c in cell_ids])).by_id()
        return fresh[a.label], fresh[b.label]

    return remeasure


def ab(base: str, head: str | None, options: dict, *, runs: int = DEFAULT_RUNS, out_dir: str | Path,
       compare_options=None, keep_worktrees: bool = False, start: str | Path = ".",
       progress: Callable[[str], None] = lambda s: None, wait: bool = False) -> tuple[Comparison, Side, Side, float]:
    """Run the A/B comparison; (the comparison, side A, side B, seconds).

    ``out_dir`` is locked while ab runs (a second ab there is refused, or waits with ``wait``); the worktrees it
    makes are removed whatever happens (an error, Ctrl-C), and one a killed ab left behind is cleared first."""
    from perfsuite.compare.verdicts import CompareOptions, compare_runs

    repo, out_dir = repo_root(start), Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ABError(f"--out {out_dir}: is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    made: list[Side] = []  # worktrees made, removed in the finally whatever happens
    with writer_lock(out_dir, f"output folder {out_dir}", folder=True, wait=wait):
        try:
            a = prepare_side(repo, base, "A", out_dir, made)
            b = prepare_side(repo, head, "B", out_dir, made)
            a_runs, b_runs = run_alternately(a, b, options, runs, out_dir, progress)
            doc = compare_runs(a_runs, b_runs, compare_options or CompareOptions(),
                               labels=(f"A: {a.describe()}", f"B: {b.describe()}"),
                               remeasure=remeasure_both(a, b, options, out_dir, progress))
        finally:  # the worktrees serve the re-measurements too: removed once the verdicts are in
            if not keep_worktrees:
                for side in made:
                    remove_side(repo, side, warn=lambda line: print(line, file=sys.stderr, flush=True))
    return doc, a, b, time.monotonic() - t0
