"""Faults: hostile files and a hostile machine. Every reader is fuzzed with mutated real files (types, NaN, huge
numbers, truncation, nesting, unsafe names); what it accepts must be usable downstream, what it refuses is one
PerfsuiteError line. Non-regular files, a full disk (a small tmpfs where one can be mounted, else an injected
ENOSPC), torn journals and damaged stores end in one line and exit 2, with nothing half-written."""

import contextlib
import copy
import errno
import io
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic as syn
from hostile import mutated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfsuite.compare.baselines import add_runs
from perfsuite.compare.verdicts import CompareOptions, compare_results
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.baseline import load_baseline
from perfsuite.formats.io import write_text_atomic
from perfsuite.formats.journal import Journal, JournalWriteError
from perfsuite.formats.results import load_results, results_from_document
from perfsuite.history.rows import metric_rows
from perfsuite.history.store import add_files

ROOT = Path(__file__).parents[2]
FIXTURES = Path(__file__).parents[1] / "fixtures"
RESULTS = FIXTURES / "results" / "smoke_all_workloads.json"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def cli(*args: str) -> tuple[int, str, str]:
    """``perfsuite ARGS`` in this process (tests/synthetic.py): (exit code, stdout, stderr)."""
    proc = syn.cli(*args)
    return proc.returncode, proc.stdout, proc.stderr


def one_error_line(code: int, err: str, command: str) -> None:
    """Exit 2 and one error line (``report`` reads what it can: one line per unreadable file, then its verdict)."""
    lines = [line for line in err.splitlines() if line.strip()]
    most = 2 if command == "report" else 1
    assert code == 2 and 1 <= len(lines) <= most, err[-2000:]
    assert all(line.startswith(f"perfsuite {command}: error: ") for line in lines), err[-2000:]


# --- mutations of real files ---------------------------------------------------------------------------------------

def usable(results) -> None:
    """What a reader accepted is safe to use: every number a verdict, a store or a report takes."""
    for rec in results.records:
        if rec.ok:
            for _, value, *_ in metric_rows(rec):
                assert math.isfinite(value)
    compare_results(results, [], CompareOptions()).to_dict()


RESULTS_DOC = json.loads(RESULTS.read_text())


@FUZZ
@given(st.data())
def test_fuzzed_results_files_are_read_or_refused_in_one_line(tmp_path, data):
    path = tmp_path / "r.json"
    path.write_text(data.draw(mutated(RESULTS_DOC)))
    try:
        results = load_results([path])
    except PerfsuiteError as e:
        assert "\n" not in str(e)
        return
    usable(results)


@pytest.fixture(scope="module")
def baseline_doc(tmp_path_factory):
    (r,) = add_runs([syn.results([syn.record(c, seed=k) for k, c in enumerate([syn.cell("none"), syn.cell("lora")])])
                     for _ in range(2)], directory=tmp_path_factory.mktemp("b"), name="b")
    return json.loads(r.path.read_text())


@FUZZ
@given(st.data())
def test_fuzzed_baselines_are_read_or_refused_in_one_line(tmp_path, baseline_doc, data):
    path = tmp_path / "b.json"
    path.write_text(data.draw(mutated(baseline_doc)))
    try:
        load_baseline(path)
    except PerfsuiteError as e:
        assert "\n" not in str(e)
        return
    code, _, err = cli("baseline", "show", str(path))  # what the issue saw crash on wrongly typed numbers
    assert code == 0, err


def journal_lines() -> list[dict]:
    header = {"kind": "header", **{k: RESULTS_DOC[k] for k in ("machine_info", "commit_info", "datetime")},
              "perfsuite": {k: v for k, v in RESULTS_DOC["perfsuite"].items() if k != "not_run"},
              "cells": [b["extra_info"]["cell_id"] for b in RESULTS_DOC["benchmarks"]], "resumed": []}
    return [header] + [{"kind": "benchmark", "benchmark": b} for b in RESULTS_DOC["benchmarks"][:4]]


JOURNAL_JUNK = st.sampled_from([b"[]", b"NaN", b"\xff\xfe\xfd", b'{"kind": "header"}', b'{"kind": "what"}',
                                b'{"kind": "benchmark", "benchmark": []}', b"{", b"1e999", b'"text"'])


@FUZZ
@given(st.data())
def test_fuzzed_journals_are_read_or_refused_in_one_line(tmp_path, data):
    lines = [json.dumps(e).encode() for e in journal_lines()]
    k = data.draw(st.integers(0, len(lines) - 1))
    lines[k] = data.draw(st.one_of(JOURNAL_JUNK, mutated(json.loads(lines[k])).map(str.encode)))
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    journal = Journal(path)
    try:
        journal.done_cell_ids()
        usable(results_from_document(journal.to_results_json(), str(path)))
    except PerfsuiteError as e:
        assert "\n" not in str(e)


def test_json_nested_beyond_any_parser_is_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    for args, command in ((["report", str(deep), "--out", str(tmp_path / "o")], "report"),
                          (["baseline", "show", str(deep)], "baseline")):
        one_error_line(*cli(*args)[::2], command)
    journal = tmp_path / "j" / "journal.jsonl"
    journal.parent.mkdir()
    journal.write_text('{"kind": "header", "x": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    one_error_line(*cli("run", "--resume", "--out", str(journal.parent))[::2], "run")


# --- a torn journal ------------------------------------------------------------------------------------------------

def test_a_torn_last_line_is_cut_off_before_the_next_append(tmp_path, capsys):
    path = tmp_path / "journal.jsonl"
    whole = b"".join(json.dumps(e).encode() + b"\n" for e in journal_lines())
    path.write_bytes(whole[:-300])  # killed mid-write: the last cell's line is half there
    journal = Journal(path)
    assert len(journal.read()) == 4  # the torn line is not a cell
    journal.append("benchmark", benchmark=journal_lines()[-1]["benchmark"])
    assert "cut off a torn last line" in capsys.readouterr().err
    assert [e["kind"] for e in Journal(path).read()] == ["header"] + ["benchmark"] * 4
    assert path.read_bytes().endswith(b"\n") and Journal(path).is_complete() is False
    path.write_bytes(whole[:-1])  # only the newline lost: the line is whole and kept
    Journal(path).append("benchmark", benchmark=journal_lines()[-1]["benchmark"])
    assert len(Journal(path).read()) == 6


def test_a_torn_journal_then_resume_completes_every_cell(finished_run, tmp_path):
    """The issue's reproduction: `head -c -300` a finished run's journal (a copy of tests/conftest.py's shared run),
    then `perfsuite run --resume`."""
    assert finished_run.proc.returncode == 0, finished_run.proc.stderr[-2000:]
    out = tmp_path / "run"
    shutil.copytree(finished_run.out, out)
    every = sorted(b["extra_info"]["cell_id"] for b in json.loads((out / "results.json").read_text())["benchmarks"])
    journal = out / "journal.jsonl"
    journal.write_bytes(journal.read_bytes()[:-300])
    resumed = syn.cli("run", "--no-compare", "--no-report", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "cut off a torn last line" in resumed.stderr
    doc = json.loads((out / "results.json").read_text())
    assert sorted(b["extra_info"]["cell_id"] for b in doc["benchmarks"]) == every and len(every) == 8


# --- non-regular files, folders, damaged stores --------------------------------------------------------------------

def test_a_fifo_or_a_folder_as_any_input_is_one_line_not_a_hang(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    store = tmp_path / "h.sqlite"
    add_files(store, [syn.write(tmp_path / "n.json", [syn.record(syn.cell("lora"), seed=1)])])
    for bad in (fifo, tmp_path):
        for args, command in ((["compare", str(RESULTS), "--baseline", str(bad)], "compare"),
                              (["report", str(bad), "--out", str(tmp_path / "rep")], "report"),
                              (["baseline", "show", str(bad)], "baseline"),
                              (["history", "add", str(bad), "--store", str(store)], "history"),
                              (["history", "show", "--store", str(bad)], "history")):
            one_error_line(*cli(*args)[::2], command)
    journal_fifo = tmp_path / "out" / "journal.jsonl"
    journal_fifo.parent.mkdir()
    os.mkfifo(journal_fifo)
    one_error_line(*cli("run", "--resume", "--out", str(journal_fifo.parent))[::2], "run")


def test_out_naming_a_file_is_one_line(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("mine\n")
    one_error_line(*cli("run", "--out", str(afile), "--no-compare")[::2], "run")
    one_error_line(*cli("report", str(RESULTS), "--out", str(afile))[::2], "report")
    assert afile.read_text() == "mine\n"


def test_damaged_stores_are_one_line(tmp_path):
    store = tmp_path / "h.sqlite"
    add_files(store, [syn.write(tmp_path / "n.json", [syn.record(syn.cell("lora"), seed=1)])])
    dropped, negative = tmp_path / "dropped.sqlite", tmp_path / "negative.sqlite"
    shutil.copy(store, dropped)
    shutil.copy(store, negative)
    with contextlib.closing(sqlite3.connect(dropped)) as conn:
        conn.execute("DROP TABLE acks")
        conn.commit()
    with contextlib.closing(sqlite3.connect(negative)) as conn:
        conn.execute("PRAGMA user_version = -3")
        conn.commit()
    for bad in (dropped, negative):
        one_error_line(*cli("history", "show", "--store", str(bad))[::2], "history")
        one_error_line(*cli("history", "add", str(tmp_path / "n.json"), "--store", str(bad))[::2], "history")


def test_records_that_lie_about_their_types_are_refused_where_they_are_read(tmp_path):
    doc = syn.document([syn.record(syn.cell("lora"), seed=1)])
    extra = doc["benchmarks"][0]["extra_info"]
    cases = {"samples_ms": {"a": 1}, "time_ms": "3.2", "ref_samples_ms": [float("nan")] * 30,
             "slowdown_pct": 10 ** 400, "rounds": -5}
    for key, value in cases.items():
        bad = copy.deepcopy(doc)
        bad["benchmarks"][0]["extra_info"] = {**extra, key: value}
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(bad))
        for args, command in ((["baseline", "update", str(path), "--dir", str(tmp_path / "b")], "baseline"),
                              (["history", "add", str(path), "--store", str(tmp_path / "h.sqlite")], "history"),
                              (["compare", str(path), "--baseline", str(path)], "compare")):
            code, _, err = cli(*args)
            one_error_line(code, err, command)
            assert key in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "h.sqlite").exists()
    unsafe = copy.deepcopy(doc)
    unsafe["benchmarks"][0]["extra_info"]["cell"]["model"] = "../../outside"
    path = tmp_path / "unsafe.json"
    path.write_text(json.dumps(unsafe))
    one_error_line(*cli("report", str(path), "--out", str(tmp_path / "rep"))[::2], "report")
    assert not (tmp_path.parent / "outside").exists()


def test_numeric_options_and_selections_are_checked_at_the_command_line(tmp_path):
    for args in (["--rounds", "0"], ["--rounds", "-5"], ["--threads", "-1"], ["--warmup", "-1"], ["--rounds", "x"]):
        code, _, err = cli("run", *args, "--out", str(tmp_path / "o"))
        assert code == 2 and "Traceback" not in err and "argument --" in err
    import argparse

    from perfsuite.options import add_cell_options

    pytest_flags = argparse.ArgumentParser()  # the pytest plugin's flags are built by the same function
    add_cell_options(pytest_flags.add_argument)
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        pytest_flags.parse_args(["--perfsuite-rounds", "0"])
    assert pytest_flags.parse_args(["--perfsuite-threads", "0"]).perfsuite_threads == 0
    out = tmp_path / "finished"
    out.mkdir()
    (out / "journal.jsonl").write_text("kept\n")
    one_error_line(*cli("run", "--cells", "not " * 1000 + "batch", "--out", str(out), "--fresh")[::2], "run")
    one_error_line(*cli("run", "--cells", "batch <=", "--out", str(out), "--fresh")[::2], "run")
    assert (out / "journal.jsonl").read_text() == "kept\n"  # checked before anything was deleted


def test_an_unknown_profile_or_an_empty_selection_is_one_line_before_pytest_starts(tmp_path):
    """``run --profile nosuch`` printed pytest's usage error and then perfsuite's: two lines for one mistake."""
    code, out, err = cli("run", "--profile", "nosuch", "--out", str(tmp_path / "o"))
    one_error_line(code, err, "run")
    assert "unknown profile 'nosuch'; known: smoke, paper" in err and "ERROR" not in out + err
    code, out, err = cli("run", "--cells", "adapter == 'LoRA'", "--out", str(tmp_path / "o"))
    one_error_line(code, err, "run")
    assert "ERROR" not in out + err and "its cells have adapter: adapterdrop, houlsby, lin, lora, lora-merged" in err


def test_cells_hints_the_valid_names_of_a_selection_that_matches_nothing():
    """``cells --cells "adapter == 'LoRA'"`` printed "0 cells" and exit 0; now refused as run refuses it, with the
    values the profile has for each field the expression names."""
    code, out, err = cli("cells", "--cells", "adapter == 'LoRA' and batch > 2")
    one_error_line(code, err, "cells")
    assert "matches none of the cells of profile 'smoke'" in err
    assert "adapter: adapterdrop, houlsby, lin, lora, lora-merged, none, parallel, pfeiffer, spectral-r" in err
    assert "batch: 1, 4, 8, None" in err and "0 cells" not in out
    code, out, _ = cli("cells", "--cells", "adapter == 'lora'")
    assert code == 0 and out.splitlines()[-1].startswith("5 cells in profile 'smoke'")  # b1, b4, a decode step, recompute, subspace


def test_corrupt_weights_are_refused_before_the_first_cell(tmp_path):
    from perfsuite.models.checkpoint import save_checkpoint
    from perfsuite.models.model import GPT2, GPT2Config

    ckpt = tmp_path / "ckpt"
    save_checkpoint(GPT2(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=16)), ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-20])  # the data section cut short; config.json still fine
    code, out, err = cli("run", "--weights", str(ckpt), "--out", str(tmp_path / "o"), "--no-compare")
    one_error_line(code, err, "run")
    assert "model.safetensors" in err and not (tmp_path / "o").exists()


# --- a full disk ---------------------------------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size_bytes)``: a fresh tmpfs of that size when this process may mount one (root in a container), else
    None; unmounted at the end."""
    mounted: list[Path] = []

    def mount(size_bytes: int) -> Path | None:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            return None
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
                          capture_output=True).returncode != 0:
            return None
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill ``disk`` up to ``leave_bytes`` of free space."""
    with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(b"\0" * 4096):
            pass
    os.truncate(disk / "filler", max(0, (disk / "filler").stat().st_size - leave_bytes))


def test_a_full_disk_leaves_whole_files_and_one_line(tmp_path, tmpfs, monkeypatch):
    out, small = tmp_path / "report", FIXTURES / "results" / "latency_partial.json"  # one figure: quick to draw
    assert cli("report", str(small), "--out", str(out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    disk = tmpfs(sum(len(b) for b in before.values()) + (1 << 20))
    if disk is not None:  # a real full disk: the old report, and 16 KiB free for the new one
        shutil.copytree(out, disk / "report")
        fill(disk, 16 << 10)
        out = disk / "report"
    else:  # no tmpfs here: the disk fills while the SVG is being written
        from matplotlib.figure import Figure

        real = Figure.savefig

        def full(self, fname, *a, **kw):
            if kw.get("format") == "svg":
                Path(fname).write_bytes(b"<svg half")
                raise OSError(errno.ENOSPC, "No space left on device", str(fname))
            return real(self, fname, *a, **kw)

        monkeypatch.setattr(Figure, "savefig", full)
    code, _, err = cli("report", str(small), "--out", str(out))
    one_error_line(code, err, "report")
    assert "No space left on device" in err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    for p in out.iterdir():  # every file is the old one or a whole new one
        if p.suffix == ".svg":
            assert p.read_bytes().rstrip().endswith(b"</svg>")
        if p.name in before and p.suffix in (".html", ".md", ".csv"):
            assert p.read_bytes() == before[p.name]


def test_a_full_disk_mid_append_is_healed_by_the_next_append(tmp_path, tmpfs, monkeypatch, capsys):
    disk = tmpfs(1 << 20)
    path = (disk or tmp_path) / "journal.jsonl"
    lines = journal_lines()
    journal = Journal(path)
    for e in lines[:2]:
        journal.append(**e)
    if disk is not None:
        fill(disk, 0)  # what is left of the journal's last page takes part of the next line, no more
    else:
        real_open = open

        class HalfWriter:  # the disk fills halfway through the line
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, text):
                self.f.write(text[: len(text) // 2])
                self.f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        def opener(file, mode="r", *a, **kw):
            f = real_open(file, mode, *a, **kw)
            return HalfWriter(f) if "a" in mode else f

        monkeypatch.setattr("perfsuite.formats.journal.open", opener, raising=False)
    big = {**lines[2]["benchmark"], "note": "x" * 20_000}  # longer than a page: it cannot fit
    with pytest.raises(JournalWriteError, match="No space left on device"):
        journal.append("benchmark", benchmark=big)
    monkeypatch.undo()
    if disk is not None:
        (disk / "filler").unlink()
    assert not path.read_bytes().endswith(b"\n")  # the torn line is on disk
    Journal(path).append(**lines[3])
    assert "cut off a torn last line" in capsys.readouterr().err
    assert [e["benchmark"]["name"] for e in Journal(path).read()[1:]] == [lines[1]["benchmark"]["name"],
                                                                          lines[3]["benchmark"]["name"]]


def _small_files() -> None:
    """In the child: no file may grow past 2000 bytes (EFBIG, "File too large": Python ignores SIGXFSZ)."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))


def test_a_run_on_a_full_disk_is_one_line_and_exit_2_not_1(tmp_path, tmpfs):
    disk = tmpfs(4096)  # the journal's header does not fit; without a tmpfs, a file-size limit does the same
    args = ["run", "--cells", "adapter == 'lora' and batch == 1 and workload == 'latency'", "--rounds", "2",
            "--no-compare", "--out", str((disk or tmp_path) / "run")]
    proc = (syn.cli(*args) if disk  # a full tmpfs: in this process; a file-size limit: in a child of its own
            else subprocess.run([sys.executable, "-m", "perfsuite.cli", *args], cwd=ROOT, capture_output=True,
                                text=True, preexec_fn=_small_files))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("perfsuite run: error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "journal.jsonl" in errors[0] and "INTERNALERROR" not in proc.stdout + proc.stderr


def test_os_errors_at_the_cli_edge_are_one_line_and_exit_2(tmp_path, monkeypatch):
    """Disk full while `baseline update` writes; a store that SQLite cannot write: one line, exit 2, never 1."""
    results = syn.write(tmp_path / "r.json", [syn.record(syn.cell("lora"), seed=1)])
    assert cli("baseline", "update", str(results), "--dir", str(tmp_path / "b"), "--name", "b")[0] == 0
    kept = (tmp_path / "b" / "b.json").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("perfsuite.formats.io.os.fsync", full)
    code, _, err = cli("baseline", "update", str(results), "--dir", str(tmp_path / "b"), "--name", "b")
    one_error_line(code, err, "baseline")
    assert "No space left on device" in err and (tmp_path / "b" / "b.json").read_bytes() == kept
    monkeypatch.undo()

    def disk_full(*a, **kw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("perfsuite.history.store.HistoryStore.add", disk_full)
    one_error_line(*cli("history", "add", str(results), "--store", str(tmp_path / "h.sqlite"))[::2], "history")


def test_write_text_atomic_leaves_the_old_file_on_a_failed_write(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "x.csv", "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("perfsuite.formats.io.os.fsync", full)
    with pytest.raises(OSError):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["x.csv"]


@pytest.mark.parametrize("key, value", [("selection", "A"), ("selection", "adapter =="), ("shard", "3/2"),
                                        ("shard", "x")])
def test_run_settings_a_comparison_relies_on_are_checked_where_the_file_is_read(tmp_path, key, value):
    """Found by the fuzzer: a results file whose selection names no cell field was read, then broke the comparison
    that scopes the baseline by it."""
    doc = json.loads(json.dumps(RESULTS_DOC))  # a deep copy of the real results file
    doc["perfsuite"][key] = value
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PerfsuiteError, match="perfsuite settings: ") as e:
        load_results([path])
    assert "\n" not in str(e.value)
