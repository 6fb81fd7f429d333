"""The trust boundary, output side (issue 27, probes 5 and 8): no write follows a planted symlink; what perfsuite
prints, writes as CSV or as Markdown carries no live control character, spreadsheet formula, mention or raw HTML
from a recorded string."""

import json
import os
import re
from pathlib import Path

import pytest
import synthetic as syn

from perfsuite.formats.io import write_text_atomic
from perfsuite.formats.journal import Journal, JournalWriteError

FIXTURES = Path(__file__).parents[1] / "fixtures"
SMALL = FIXTURES / "results" / "latency_partial.json"  # one figure: a quick report


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


# --- probe 5: writes follow a planted symlink --------------------------------------------------------------------

def test_report_does_not_write_through_a_symlink_planted_at_the_temporary_name(tmp_path):
    """The issue's reproduction: `ln -s ../victim.txt out/.summary.md.$$.tmp`, then `perfsuite report --out out`."""
    target = victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("summary.md", "index.html", "results.csv"):  # the names main's writers used: .NAME.PID.tmp
        (out / f".{name}.{os.getpid()}.tmp").symlink_to(target)
    proc = syn.cli("report", str(SMALL), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "precious"
    assert (out / "summary.md").is_file() and not (out / "summary.md").is_symlink()


def test_a_temporary_name_already_taken_is_never_opened(tmp_path, monkeypatch):
    """O_CREAT | O_EXCL | O_NOFOLLOW: a name that exists (a planted link) is skipped for another, however it got
    there; the link's target is left alone."""
    target = victim(tmp_path)
    names = iter(["planted", "fresh"])
    monkeypatch.setattr("perfsuite.formats.io.secrets.token_hex", lambda n: next(names))
    (tmp_path / ".out.json.planted.tmp").symlink_to(target)
    write_text_atomic(tmp_path / "out.json", "{}")
    assert target.read_text() == "precious" and (tmp_path / "out.json").read_text() == "{}"
    assert (tmp_path / ".out.json.planted.tmp").is_symlink(), "the planted link is not ours to remove"


def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path):
    target = victim(tmp_path)
    link = tmp_path / "summary.md"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert target.read_text() == "precious" and link.read_text() == "new" and not link.is_symlink()


def test_doctor_json_is_written_atomically_and_not_through_a_symlink(tmp_path, monkeypatch):
    from perfsuite.doctor import OK, Check, DoctorReport

    monkeypatch.setattr("perfsuite.doctor.run_doctor",
                        lambda device, progress=None: DoctorReport(device, (Check("bracket", "1 ms", OK),), 0.1))
    target = victim(tmp_path)
    link = tmp_path / "doctor.json"
    link.symlink_to(target)
    proc = syn.cli("doctor", "--device", "cpu", "--json", str(link))
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "precious"
    assert json.loads(link.read_text())["checks"][0]["name"] == "bracket" and not link.is_symlink()


def test_a_journal_planted_as_a_symlink_is_refused_not_appended_to(tmp_path):
    target = victim(tmp_path)
    path = tmp_path / "out" / "journal.jsonl"
    path.parent.mkdir()
    path.symlink_to(target)
    with pytest.raises(JournalWriteError, match="symbolic link"):
        Journal(path).append("header", cells=[])
    assert target.read_text() == "precious"


# --- probe 8: output channels pass hostile text through -----------------------------------------------------------

HOSTILE_HOST = "host-a\x1b]0;pwned\x07\x1b[2J\n::error::forged annotation"
HTML = "<img src=https://tracker.example/p.png> @everyone"


def hostile_run(tmp_path: Path, *, host: str = HOSTILE_HOST, commit: str = "=HYPERLINK(\"https://x\")",
                reason: str = f"CUDA out of memory {HTML}") -> Path:
    cells = [syn.cell("none"), syn.cell("lora"), syn.cell("lora", batch=4)]
    records = [syn.record(c, seed=k, ratio=1.0 if c.adapter == "none" else 1.2, e=syn.env(host=host))
               for k, c in enumerate(cells[:2])] + [syn.skipped(cells[2], reason=reason)]
    doc = syn.document(records)
    doc["commit_info"] |= {"id": commit, "branch": "@SUM(1+1)*cmd|' /C calc'!A0"}
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    return path


def csv_cells(path: Path) -> list[str]:
    import csv

    return [cell for row in csv.reader(path.read_text().splitlines()) for cell in row]


def formula(cell: str) -> bool:
    """A cell a spreadsheet would evaluate: it starts like a formula and is not a plain number."""
    if not cell.startswith(("=", "+", "-", "@", "\t", "\r")):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


def test_results_csv_has_no_cell_a_spreadsheet_would_evaluate(tmp_path):
    out = tmp_path / "report"
    proc = syn.cli("report", str(hostile_run(tmp_path)), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    cells = csv_cells(out / "results.csv")
    assert any(c.startswith("'=HYPERLINK") for c in cells), "the commit is kept, as text"
    assert not [c for c in cells if formula(c)]


def test_trends_csv_has_no_cell_a_spreadsheet_would_evaluate(tmp_path):
    from perfsuite.history.store import add_files

    store = tmp_path / "h.sqlite"
    base = json.loads((FIXTURES / "results" / "latency_smoke.json").read_text())
    for k, commit in enumerate(["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)"]):
        base["commit_info"]["id"], base["datetime"] = commit, f"2026-11-0{k + 1}T02:30:00+00:00"
        (tmp_path / f"n{k}.json").write_text(json.dumps(base))
        add_files(store, [tmp_path / f"n{k}.json"])
    proc = syn.cli("history", "report", "--store", str(store), "--out", str(tmp_path / "trends"))
    assert proc.returncode == 0, proc.stderr
    cells = csv_cells(tmp_path / "trends" / "trends.csv")
    assert "'=1+1" in cells and not [c for c in cells if formula(c)]


def no_live_control(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("::") for line in text.splitlines()), "a forged workflow command"


def test_compare_and_baseline_find_print_recorded_strings_inert(tmp_path):
    from perfsuite.compare.baselines import add_runs

    cells = [syn.cell("none"), syn.cell("lora")]
    add_runs([syn.results([syn.record(c, seed=10 * i + k, e=syn.env(host="elsewhere")) for k, c in enumerate(cells)])
              for i in range(2)], directory=tmp_path / "baselines")
    run = hostile_run(tmp_path, commit="0123456789abcdef")
    proc = syn.cli("compare", str(run), "--baselines-dir", str(tmp_path / "baselines"))
    assert proc.returncode == 0, proc.stderr
    assert "REFERENCE ONLY" in proc.stdout
    no_live_control(proc.stdout + proc.stderr)
    proc = syn.cli("baseline", "find", str(run), "--dir", str(tmp_path / "nothing"))
    assert proc.returncode == 1 and "\\x1b" in proc.stdout, "the host is shown, escaped"
    no_live_control(proc.stdout + proc.stderr)


def test_history_add_refuses_a_commit_with_control_characters_in_one_inert_line(tmp_path):
    proc = syn.cli("history", "add", str(hostile_run(tmp_path, commit="abc\x1b[2J\n::error::forged")),
                   "--store", str(tmp_path / "h.sqlite"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    no_live_control(proc.stdout + proc.stderr)
    assert not (tmp_path / "h.sqlite").exists()


def test_summary_and_comparison_markdown_carry_no_raw_html_or_mention(tmp_path):
    from perfsuite.compare.baselines import add_runs

    cells = [syn.cell("none"), syn.cell("lora"), syn.cell("lora", batch=4)]
    add_runs([syn.results([syn.record(c, seed=10 * i + k, e=syn.env(host=HOSTILE_HOST)) for k, c in enumerate(cells)])
              for i in range(2)], directory=tmp_path / "baselines")
    run = hostile_run(tmp_path, commit="0123456789abcdef")
    md = tmp_path / "comparison.md"
    proc = syn.cli("compare", str(run), "--baselines-dir", str(tmp_path / "baselines"), "--markdown", str(md),
                   "--json", str(tmp_path / "comparison.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = syn.cli("report", str(run), "--comparison", str(tmp_path / "comparison.json"), "--out",
                     str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    for text in (md.read_text(), (tmp_path / "report" / "summary.md").read_text()):
        assert "tracker.example" in text, "the note is kept, as text"
        live = re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", text)  # a code span shows its text as it is: inert
        assert "<img" not in live and "@everyone" not in live
        assert "\x1b" not in text
