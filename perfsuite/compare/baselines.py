"""The baseline store: which baseline a run is compared with, and how separate runs get into baselines.

A run's cells are split into :class:`Part`\\ s — one per profile part (``full`` has three: paper, recompute,
subspace, each with its own dtype) and machine fingerprint — and each part has its own baseline file,
named after the part, the setup and a short hash of the fingerprint. A baseline of the same fingerprint
*gates* (its verdicts can fail the run); one of another machine with the same part and setup is only a
*reference* (shown, labelled, never failing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from perfsuite.cells.grid import PROFILES
from perfsuite.formats.baseline import KEEP_RUNS, Baseline, BaselineError, BaselineRun, boot_of, \
    is_baseline_document, load_baseline, save_baseline
from perfsuite.formats.io import read_json
from perfsuite.formats.io import utc_now as _now
from perfsuite.formats.record import CellRecord
from perfsuite.locks import writer_lock
from perfsuite.formats.results import Results, ResultsError, load_results, results_from_document
from perfsuite.measure.machine import SOFTWARE_FIELDS, Fingerprint

BASELINE_DIR = Path("baselines")


@dataclass(frozen=True)
class Part:
    """The cells of one run that one baseline covers: a profile part on one machine fingerprint."""

    profile: str | None
    fingerprint: Fingerprint
    records: tuple[CellRecord, ...]  # the cells that ran
    not_run: tuple[CellRecord, ...] = ()  # cells of this part that did not run (oom, no device, ...)
    source: dict = field(default_factory=dict)  # the run's results files, commit, datetime

    @property
    def key(self) -> tuple:
        return self.profile, self.fingerprint

    def by_id(self) -> dict[str, CellRecord]:
        return {r.id: r for r in self.records}


def part_name(profile: str | None, cell) -> str | None:
    """The profile part a cell belongs to (a composite profile's part, else the profile itself), with ``/hf``
    for cells on transformers + peft and ``/compile`` or ``/graphs`` for cells in those modes: implementations and
    execution modes of one profile are kept, gated and named apart (a compiled run has its own baseline)."""
    name = PROFILES[profile].part_of(cell) if profile in PROFILES else profile
    if not name:
        return name
    name = f"{name}/hf" if getattr(cell, "impl", "ref") == "hf" else name
    mode = getattr(cell, "mode", "eager")
    return name if mode == "eager" else f"{name}/{mode}"


def parts_of(results: Results) -> list[Part]:
    """The results' cells split by profile part and fingerprint, in a stable order. Cells that did not run have no
    fingerprint: they join the part of their profile part and setup."""
    run_of = {r.source: r for r in results.runs}
    groups: dict[tuple, list[CellRecord]] = {}
    skipped: list[tuple[str | None, CellRecord]] = []
    for rec, src in zip(results.records, results.sources or [None] * len(results.records)):
        part = part_name(run_of[src].profile if src in run_of else None, rec.cell)
        if rec.ok:
            groups.setdefault((part, Fingerprint.of(rec.env, rec.cell)), []).append(rec)
        else:
            skipped.append((part, rec))
    source = {"results": [r.source for r in results.runs],
              "commit": next((r.commit for r in results.runs if r.commit), None),
              "datetime": next((r.datetime for r in results.runs if r.datetime), None)}
    parts = []
    for (part, fp), recs in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1].setup, kv[0][1].short_id())):
        lost = tuple(r for p, r in skipped if p == part and Fingerprint.of({}, r.cell).setup == fp.setup)
        parts.append(Part(part, fp, tuple(recs), lost, source))
    return parts


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower()


def default_name(part: Part | tuple[str | None, Fingerprint]) -> str:
    """E.g. ``smoke_cpu-intel-r-xeon-r-processor_float32_tiny_3f9a2c1d``: the part, the device, the setup, and a
    hash of the whole fingerprint (machines of one setup get different files)."""
    profile, fp = part.key if isinstance(part, Part) else part
    device = (fp.gpu or "").split(",")[0] if fp.device == "cuda" else (fp.cpu or "").split(": ", 1)[-1]
    return "_".join([_slug(profile or "any"), _slug(f"{fp.device}-{device}")[:40].strip("-"), _slug(fp.dtype),
                     _slug(fp.model), fp.short_id()])


# --- finding the baseline of a part ------------------------------------------------------------------------------

def load_all(directory: str | Path) -> list[Baseline]:
    """Every baseline in ``directory``; a file there that is not a readable baseline is an error, not a skip."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [load_baseline(p) for p in sorted(directory.glob("*.json"))]


def find(part: Part, baselines: list[Baseline]) -> tuple[Baseline | None, Baseline | None]:
    """(the baseline of this part's machine, or None; else the newest baseline of the same part and setup from
    another machine, a reference, or None)."""
    same = [b for b in baselines if b.profile == part.profile and b.fingerprint == part.fingerprint]
    if len(same) > 1:
        raise BaselineError(f"several baselines match {part.profile} on {part.fingerprint.describe()}: "
                            f"{', '.join(str(b.path) for b in same)}; remove all but one")
    if same:
        return same[0], None
    others = [b for b in baselines if b.profile == part.profile and b.fingerprint.setup == part.fingerprint.setup]
    others.sort(key=lambda b: (b.updated or "", str(b.path)))
    return None, (others[-1] if others else None)


def software_changes(old: Fingerprint, new: Fingerprint) -> list[str]:
    """``torch_version 2.12.0 → 2.13.0`` for each software field that differs."""
    return [f"{f} {getattr(old, f)} → {getattr(new, f)}" for f in SOFTWARE_FIELDS if getattr(old, f) != getattr(new, f)]


def find_environment(part: Part, baselines: list[Baseline]) -> Baseline | None:
    """The newest baseline of this part on this very machine and setup whose software differs (a torch, CUDA, driver
    or library upgrade), or None."""
    from dataclasses import replace

    def hardware(fp: Fingerprint) -> Fingerprint:
        return replace(fp, **{f: None for f in SOFTWARE_FIELDS})

    same = [b for b in baselines if b.profile == part.profile and b.fingerprint != part.fingerprint
            and hardware(b.fingerprint) == hardware(part.fingerprint)]
    same.sort(key=lambda b: (b.updated or "", str(b.path)))
    return same[-1] if same else None


def load_reference(path: str | Path) -> list[Baseline]:
    """What to compare against when named on the command line: a baseline file, or another run's results file
    (one single-run baseline per part)."""
    path = Path(path)
    doc = read_json(path, BaselineError)
    if is_baseline_document(doc):
        return [load_baseline(path)]
    try:
        results = results_from_document(doc, str(path))
    except ResultsError as e:
        raise BaselineError(str(e)) from None
    return [baseline_of([p], name=str(path), path=path) for p in parts_of(results)]


def baseline_of(runs: list[Part], *, name: str, keep: int = KEEP_RUNS, note: str | None = None,
                path: Path | None = None) -> Baseline:
    """A baseline made of these runs of one part (oldest first)."""
    if not runs or len({p.key for p in runs}) != 1:
        raise BaselineError("a baseline holds runs of one part on one machine fingerprint")
    when = [p.source.get("datetime") for p in runs if p.source.get("datetime")]
    return Baseline(name=name, profile=runs[0].profile, fingerprint=runs[0].fingerprint,
                    runs=[BaselineRun(p.by_id(), dict(p.source), _recorded(p)) for p in runs][-keep:],
                    created=min(when) if when else _now(), updated=_now(), note=note, keep=keep, path=path)


def _recorded(part: Part) -> dict:
    """When and on which boot a run was made: its results' datetime, its records' boot."""
    env = next((r.env for r in part.records if r.env), {})
    return {"datetime": part.source.get("datetime"), "boot": boot_of(dict(env))}


# --- writing ------------------------------------------------------------------------------------------------------

@dataclass
class UpdateReport:
    path: Path
    created: bool
    runs_before: int
    runs_added: int
    runs_kept: int
    cells: int
    not_run: list[str] = field(default_factory=list)
    replaced_other: str | None = None  # with force: the fingerprint/profile that was overwritten
    quality: list[str] = field(default_factory=list)  # what the baseline can confirm (perfsuite.compare.quality)

    def lines(self) -> list[str]:
        out = [f"{'created' if self.created else 'updated'} {self.path}: {self.runs_kept} run(s) kept "
               f"({self.runs_added} added, {self.runs_before + self.runs_added - self.runs_kept} dropped), "
               f"{self.cells} cells"]
        if self.replaced_other:
            out.append(f"  replaced a baseline of another setup: {self.replaced_other}")
        out += [f"  ! {cid}: did not run, not stored" for cid in self.not_run]
        return out + self.quality


def add_runs(runs: list[Results], *, directory: str | Path = BASELINE_DIR, name: str | None = None,
             keep: int | None = None, replace: bool = False, force: bool = False, note: str | None = None,
             prune: bool = False, wait: bool = False) -> list[UpdateReport]:
    """Store separate runs (one Results each: a run, or the shards of one run) in their parts' baselines.

    A part's file gains the runs and keeps the last ``keep`` (the file's own setting, else KEEP_RUNS);
    ``replace`` starts it afresh with these runs. Refuses, leaving the file untouched, an unreadable file or
    one of another fingerprint or part (unless ``force``). ``prune`` drops, from the kept runs, cells the
    newest run lacks. Each file is locked while it is read, merged and written (:mod:`perfsuite.locks`): a
    second update of it is refused at once, or waits its turn with ``wait``, so no run is lost.
    """
    by_part: dict[tuple, list[Part]] = {}
    for results in runs:
        for part in parts_of(results):
            by_part.setdefault(part.key, []).append(part)
    if not by_part:
        raise BaselineError("no cell ran in these results (status ok), so there is nothing to store")
    if name and len(by_part) > 1:
        raise BaselineError(f"--name names one file, but these results have {len(by_part)} parts; leave it out")
    reports = []
    for new in by_part.values():
        file_name = name or default_name(new[0])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", file_name):
            raise BaselineError(f"baseline name {file_name!r}: use letters, digits, '.', '_', '+', '-'")
        path = Path(directory) / f"{file_name}.json"
        with writer_lock(path, f"baseline {path}", folder=False, wait=wait):  # read, merge, write: one writer
            old = load_baseline(path) if path.exists() else None  # an unreadable file stops here, untouched
            other = None
            if old and (old.fingerprint != new[0].fingerprint or old.profile != new[0].profile):
                other = f"{old.fingerprint.describe()}, part {old.profile}"
                if not force:
                    diffs = old.fingerprint.differences(new[0].fingerprint)
                    raise BaselineError(f"{path} is the baseline of another setup ({'; '.join(diffs) or 'another part'}); "
                                        "refusing to replace it: pass another --name, or --force to overwrite it")
            kept_before = [] if (replace or other or old is None) else old.runs
            keep_n = keep or (old.keep if old else KEEP_RUNS)
            merged = baseline_of(new, name=file_name, keep=keep_n, path=path,
                                 note=note if note is not None else (old.note if old else None))
            all_runs = (list(kept_before) + merged.runs)[-keep_n:]
            if prune:
                newest = set(all_runs[-1].cells)
                all_runs = [BaselineRun({c: r for c, r in run.cells.items() if c in newest}, run.source, run.recorded)
                            for run in all_runs]
            merged.runs = all_runs
            if old and not (replace or other) and old.created:
                merged.created = old.created
            save_baseline(merged, path)
        from perfsuite.compare.quality import assess

        reports.append(UpdateReport(path, old is None, len(kept_before), len(new), len(all_runs),
                                    len(merged.cell_ids()), sorted({r.id for p in new for r in p.not_run}), other,
                                    assess(merged).lines()))
    return reports


def add_result_files(paths_per_run: list[list[str]], **kw) -> list[UpdateReport]:
    """:func:`add_runs` over result files: one list of files (a run or its shards) per separate run."""
    return add_runs([load_results(paths) for paths in paths_per_run], **kw)
