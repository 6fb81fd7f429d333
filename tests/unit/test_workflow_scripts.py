"""The workflows' scripts (.github/scripts): the issue bodies GitHub accepts, one issue per change as its commit
range drifts night after night, the PR comment updated in place, the preflight's decision — run here against a
fake GitHub, so what the nightly posts is tested before a night posts it."""

import dataclasses
import json
from pathlib import Path

import pytest
from workflow_fakes import URL, FakeGitHub, change_point, github_issues, issue_body, night, preflight

from perfsuite.formats.comparison import Comparison, load_comparison, read_comparison

FIXTURE = Path(__file__).parents[2] / "tests" / "fixtures" / "results" / "comparison.json"


def big_comparison(cells: int, notable_every: int) -> dict:
    """The fixture's comparison grown to ``cells`` cells with long ids, one in ``notable_every`` not unchanged."""
    base = load_comparison(FIXTURE)
    template = next(c for c in base["cells"] if c["verdict"] == "regression")
    grown = []
    for k in range(cells):
        verdict = ("regression" if k % (3 * notable_every) == 0 else "inconclusive") if k % notable_every == 0 \
            else "unchanged"
        metrics = [m | {"verdict": verdict, "change": float(k % 50)} for m in template["metrics"]]
        grown.append(template | {"cell_id": f"recompute[spectral-r{k}-b32-s512-w16-with-a-long-variant-name]",
                                 "verdict": verdict, "metrics": metrics})
    summary = {v: sum(c["verdict"] == v for c in grown) for v in ("regression", "inconclusive", "unchanged")}
    return base | {"cells": grown, "summary": summary}


def test_a_full_nights_body_keeps_only_notable_rows_under_githubs_limit():
    comparison = big_comparison(cells=2_700, notable_every=2)  # ~1,350 notable rows: far over 65,536 characters
    body = issue_body.regression_body(Comparison.from_dict(comparison), URL)
    assert len(body) < issue_body.BODY_LIMIT_CHARS
    assert "unchanged" not in body.split("| cell |")[1], "no unchanged row"
    rows = [line for line in body.splitlines() if line.startswith("| ") and "recompute[" in line]
    more = next(line for line in body.splitlines() if line.startswith("… "))
    left_out = int(more.split()[1])
    assert len(rows) + left_out == 1_350 and left_out > 0 and URL in more
    assert "regression" in rows[0], "the most urgent verdicts first"


def test_a_small_comparison_keeps_every_notable_row_and_no_unchanged_one():
    comparison = load_comparison(FIXTURE)
    body = issue_body.regression_body(Comparison.from_dict(comparison), URL)
    notable = {c["cell_id"] for c in comparison["cells"] if c["verdict"] != "unchanged"}
    same = {c["cell_id"] for c in comparison["cells"] if c["verdict"] == "unchanged"}
    assert notable and same
    assert all(cell in body for cell in notable) and not any(cell in body for cell in same)
    assert "more row" not in body


def test_issues_written_by_the_script_for_each_compare_outcome(tmp_path, capsys):
    run = lambda code, comparison: issue_body.main(  # noqa: E731
        ["--compare-exit", str(code), "--comparison", str(comparison), "--artifact-url", URL,
         "--out", str(tmp_path / "issues.json")])
    keys = lambda: [i["key"] for i in json.loads((tmp_path / "issues.json").read_text())["issues"]]  # noqa: E731

    assert run(1, FIXTURE) == 0 and keys() == ["regression"]
    assert run(2, tmp_path / "absent.json") == 0 and keys() == ["gating-off"]
    assert "::warning" in capsys.readouterr().out, "an annotation says gating is off"
    reference = load_comparison(FIXTURE)
    reference["parts"][0] |= {"mode": "reference", "profile": "full", "differences": ["driver 550 → 560"]}
    reference["gating"] = False
    (tmp_path / "reference.json").write_text(json.dumps(reference | {"perfsuite_comparison": 2}))
    assert run(0, tmp_path / "reference.json") == 0 and keys() == ["gating-off"]
    body = json.loads((tmp_path / "issues.json").read_text())["issues"][0]["body"]
    assert "full" in body and "driver 550 → 560" in body
    clean = load_comparison(FIXTURE)
    clean["summary"] = {"unchanged": 1}
    (tmp_path / "clean.json").write_text(json.dumps(clean | {"perfsuite_comparison": 2}))
    assert run(0, tmp_path / "clean.json") == 0 and keys() == []
    assert run(3, FIXTURE) == 2, "a crash of compare is not read as an outcome"


def test_the_nightlys_regression_issue_is_one_issue_commented_night_after_night():
    api = FakeGitHub()
    issues = issue_body.nightly_issues(1, read_comparison(FIXTURE), URL)
    github_issues.nightly(api, issues, URL)
    github_issues.nightly(api, issues, URL)
    off = issue_body.nightly_issues(2, None, URL)
    github_issues.nightly(api, off, URL)
    github_issues.nightly(api, off, URL)
    assert api.calls == ["create", "comment", "create", "update"]
    assert [i["labels"] for i in api.items] == [["perfsuite-regression"], ["perfsuite-gating-off"]]
    assert all(len(i["body"]) < github_issues.BODY_LIMIT_CHARS and URL in i["body"] for i in api.items)


def test_ranges_that_overlap_are_one_change_and_a_later_step_is_another():
    api = FakeGitHub()
    nights = [[change_point("a", 4, 11)],
              [change_point("a", 4, 11), change_point("b", 9, 13)],  # a second cell, its range overlapping
              [change_point("a", 5, 12), change_point("b", 8, 14)]]  # both ranges drift
    for points in nights:
        github_issues.change_points(api, night(*points), URL)
    assert api.calls == ["create", "update", "update"] and "2 cell(s)" in api.items[0]["title"]
    github_issues.change_points(api, night(change_point("a", 20, 22, -5.0)), URL)
    assert len(api.items) == 2, "a step that does not overlap the first is a new change"
    api.items[0]["state"] = "closed"  # someone decided
    github_issues.change_points(api, night(change_point("a", 6, 12)), URL)
    assert len(api.items) == 2 and api.calls[-1] == "create", "a closed change is left closed, not reopened"


def test_only_filed_change_points_open_issues_and_a_behaviour_change_is_named():
    api = FakeGitHub()
    github_issues.change_points(api, night(change_point("a", 4, 11, filed=False), change_point("b", 20, 22)), URL)
    assert api.calls == ["create"] and "`b`" in api.items[0]["body"] and "`a`" not in api.items[0]["body"]
    behaviour = change_point("r", 25, 26, step_pct=None, kind="behaviour") | {"before": 0.0, "after": 31.25}
    github_issues.change_points(api, night(behaviour), URL)
    title, body = api.items[1]["title"], api.items[1]["body"]
    assert "behaviour change in 1 cell(s)" in title and "| behaviour changed — | 0 → 31.25 | exact |" in body
    github_issues.change_points(api, night(change_point("c", 16, 18, filed=False), version=1), URL)
    assert len(api.items) == 3, "format 1 had no filing decision: everything it listed was filed"
    with pytest.raises(ValueError, match="formats 1 and 2"):
        github_issues.changes(night(version=3))


def test_a_synthetic_history_with_one_step_opens_one_issue_however_its_range_drifts(tmp_path):
    """The issue's case: 60 synthetic nightlies, a step at night 40; the change points of each night from 41
    on, as the nightly computes them, posted night after night."""
    from perfsuite.cells.grid import get_profile
    from perfsuite.history.changes import changes_document, series_changes
    from perfsuite.history.store import open_store
    from perfsuite.history.synthetic import build_store

    cells = get_profile("smoke").cells(device="cpu")[:4]
    build_store(tmp_path / "h.sqlite", cells, 60, steps={c.id: (40, 8.0) for c in cells[:2]}, seed=0)
    with open_store(tmp_path / "h.sqlite") as store:
        series, acks = store.series(None, "auto"), store.acks()
    api, ranges = FakeGitHub(), set()
    for nights in range(41, 61):
        found = [series_changes(dataclasses.replace(s, points=s.points[:nights], software=s.software[:nights]), acks)
                 for s in series]
        doc = json.loads(json.dumps(changes_document(found, "h.sqlite")))
        ranges |= {g["commit_range"] for g in doc["by_commit_range"]}
        github_issues.change_points(api, doc, URL)
    assert len(ranges) >= 2, "the filed ranges drift (an issue keyed on the exact range would open one per range)"
    assert len(api.items) == 1 and "2 cell(s)" in api.items[0]["title"]


def test_the_pr_comment_is_posted_once_and_updated_in_place(tmp_path):
    api = FakeGitHub()
    api._new(title="PR", body="", labels=[])
    (tmp_path / "ab.md").write_text("### perfsuite ab: no regression\n" + "x" * 80_000)
    argv = ["pr-comment", "--pr", "1", "--run-url", URL, str(tmp_path / "ab.md"), str(tmp_path / "missing.md")]
    assert github_issues.main(argv, api=api) == 0
    assert github_issues.main(argv, api=api) == 0
    assert api.calls == ["comment", "update_comment"]
    body = api.items[0]["comments"][0]["body"]
    assert len(body) < github_issues.BODY_LIMIT_CHARS and body.startswith(github_issues.PR_MARKER) and URL in body


@pytest.mark.parametrize(("value", "gpu", "code"), [(None, "false", 0), ("", "false", 0), ("0", "false", 0),
                                                    ("4", "true", 0), ("two", None, 2)])
def test_the_preflight_runs_the_gpu_jobs_only_when_runners_are_declared(tmp_path, capsys, value, gpu, code):
    out = tmp_path / "output"
    env = {"GITHUB_OUTPUT": str(out)} | ({} if value is None else {"PERFSUITE_GPU_RUNNERS": value})
    assert preflight.main(env) == code
    assert (f"gpu={gpu}" in out.read_text()) if gpu else not out.exists()
    printed = capsys.readouterr().out
    assert ("::warning" in printed) == (gpu == "false") and ("::error" in printed) == (code == 2)
