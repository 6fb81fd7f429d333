"""The trust boundary, output side (issue 27, probes 5 and 8): no write follows a planted symlink; what perfsuite
prints, writes as CSV or as Markdown carries no live control character, spreadsheet formula, mention or raw HTML
from a recorded string."""

import json
import os
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
