"""The trust boundary, the workflows' write jobs (issue 27, probes 1, 3 and 4): .github/scripts/github_issues.py holds
a write token and posts what jobs that ran PyPI code (and the PR's own code) wrote. It edits only its own PR comment
(marker AND author), posts only known issues and change points with hex commits and ISO dates, neutralises every
body, opens at most --max-issues issues a night, and one bad marker on an old issue never stops it."""

import json
from pathlib import Path

import pytest
import yaml
from workflow_fakes import URL, FakeGitHub, change_point, github_issues, issue_body

from perfsuite.formats.comparison import read_comparison

ROOT = Path(__file__).parents[2]
BOT = "github-actions[bot]"


# --- probe 1: anyone who can comment could take over the PR's perf comment --------------------------------------

def pr_with_strangers_marker() -> FakeGitHub:
    api = FakeGitHub(login="stranger")
    api._new(title="PR", body="", labels=[])
    api.comment(1, github_issues.PR_MARKER + "\n### perfsuite A/B: 0 regressions (trust me)")
    api.login = BOT  # from here on, the workflow posts
    return api


def test_the_pr_comment_is_found_by_marker_and_author_never_a_strangers(tmp_path):
    """The issue's reproduction: a stranger posts the marker first; the bot then edited the stranger's comment,
    which the stranger could rewrite afterwards (or GitHub refused the edit and the job failed on every push)."""
    api = pr_with_strangers_marker()
    (tmp_path / "ab.md").write_text("### perfsuite A/B: **1 regression**\n")
    argv = ["pr-comment", "--pr", "1", "--run-url", URL, str(tmp_path / "ab.md")]
    assert github_issues.main(argv, api=api) == 0
    assert github_issues.main(argv, api=api) == 0
    stranger, mine = api.items[0]["comments"]
    assert "trust me" in stranger["body"], "the stranger's comment is left as it was"
    assert mine["user"]["login"] == BOT and "1 regression" in mine["body"]
    assert api.calls == ["comment", "comment", "update_comment"], "posted once, then updated in place"


def test_the_pr_comment_is_neutralised(tmp_path):
    """The A/B and the report ran the PR's code: a mention, raw HTML, an image or a second marker in them does
    nothing; the <details> fold of perfsuite's own Markdown stays."""
    api = FakeGitHub()
    api._new(title="PR", body="", labels=[])
    (tmp_path / "ab.md").write_text("### ok @everyone cc @org/team <img src=https://tracker.example/p.png>\n"
                                    "![x](https://tracker.example/q.png) " + github_issues.PR_MARKER + "\n"
                                    "<details><summary>3 unchanged cells</summary>\n\nrows\n\n</details>\n"
                                    "<script>alert(1)</script>\n")
    assert github_issues.main(["pr-comment", "--pr", "1", "--run-url", URL, str(tmp_path / "ab.md")], api=api) == 0
    body = api.items[0]["comments"][0]["body"]
    assert body.count(github_issues.PR_MARKER) == 1 and body.startswith(github_issues.PR_MARKER)
    assert "@everyone" not in body and "@org/team" not in body and "@\u200beveryone" in body
    assert "<img" not in body and "<script" not in body and "![x](" not in body
    assert "<details><summary>3 unchanged cells</summary>" in body and "</details>" in body


# --- probe 4: one bad marker stopped the change-point job for good -----------------------------------------------

def test_a_commit_string_that_closes_the_marker_is_never_posted_and_breaks_nothing():
    """The issue's reproduction: a commit string with `} -->` landed inside the marker; the next night's
    `_known_range` raised JSONDecodeError, also on closed issues, so the job failed every night after."""
    api = FakeGitHub()
    crafted = change_point("a", 4, 11)
    crafted["bad"]["commit"] = 'deadbeef"} --> `@everyone` <img src=x>'
    done = github_issues.change_points(api, {"perfsuite_history_changes": 2, "change_points": [crafted, change_point("b", 20, 22)]}, URL)
    assert any("not a hex commit" in line for line in done) and len(api.items) == 1
    assert "@everyone" not in api.items[0]["body"] and "-->" not in api.items[0]["body"].split("-->", 1)[1]
    # an issue of the old code, its marker already broken, closed by someone: the job goes on, night after night
    api._new(title="old", labels=[github_issues.CHANGE_POINT_LABEL], state="closed",
             body='<!-- perfsuite-change-point {"good": "a", "bad": "x"} --> `@everyone`", "start": "x"} -->')
    assert github_issues.change_points(api, {"perfsuite_history_changes": 2, "change_points": [change_point("c", 24, 26)]}, URL)[-1].startswith(
        "opened #3")


def test_a_non_iso_datetime_is_skipped_with_a_warning_not_a_traceback(tmp_path):
    bad = change_point("a", 4, 11)
    bad["good"]["datetime"] = "last tuesday"
    (tmp_path / "changes.json").write_text(json.dumps({"perfsuite_history_changes": 2, "change_points": [bad, change_point("b", 20, 22)]}))
    api = FakeGitHub()
    assert github_issues.main(["change-points", str(tmp_path / "changes.json"), "--run-url", URL], api=api) == 0
    assert [i["title"][-16:] for i in api.items] == ["20aaaaa..22aaaaa"], "the other change is posted, alone"


def test_recorded_strings_in_a_change_issue_are_inert():
    cp = change_point("latency[lora`@everyone`|x]", 4, 11)
    cp["software_changes"] = ["torch 2.13 → 2.14 <img src=https://tracker.example/p.png> @everyone"]
    title, body = github_issues.change_body(github_issues.changes({"perfsuite_history_changes": 2, "change_points": [cp]})[0], URL)
    row = next(line for line in body.splitlines() if "latency[" in line)
    assert "``latency[lora`@everyone`\\|x]``" in row, "a code span nothing inside can close; the pipe escaped"
    assert row.count(" | ") == 6, "one row of seven cells, whatever the strings hold"
    software = row.rsplit(" | ", 1)[1].removesuffix(" |")
    assert software.startswith("`") and software.endswith("`"), "HTML and mentions shown as code, inert"


def test_the_marker_is_one_json_object_the_next_night_reads_back():
    change = github_issues.changes({"perfsuite_history_changes": 2, "change_points": [change_point("a", 4, 11)]})[0]
    issue = {"body": change.marker() + "\nrest"}
    assert github_issues._known_range(issue) == (change.start, change.end)


# --- probe 3: the write jobs post what they are handed, without a cap ---------------------------------------------

def flood_point(k: int) -> dict:
    """A change point of its own range (days 3k + 1 to 3k + 2 of 2026), commits of its own."""
    from datetime import datetime, timedelta

    cp = change_point(f"c{k}", 1, 2)
    for side, day in (("good", 3 * k + 1), ("bad", 3 * k + 2)):
        at = datetime(2026, 1, 1) + timedelta(days=day)
        cp[side] = cp[side] | {"datetime": at.isoformat() + "+00:00", "commit": f"{k:04x}{day:04x}" + "b" * 32}
    return cp


def test_a_night_opens_at_most_max_issues_new_change_issues():
    api = FakeGitHub()
    flood = {"perfsuite_history_changes": 2, "change_points": [flood_point(k) for k in range(1, 21)]}
    done = github_issues.change_points(api, flood, URL, max_new=5)
    assert len(api.items) == 5 and sum(line.startswith("::warning::not opened") for line in done) == 15


def test_the_nightly_posts_only_the_issues_issue_body_writes_each_once(tmp_path):
    good = issue_body.nightly_issues(1, read_comparison(ROOT / "tests/fixtures/results/comparison.json"), URL)
    junk = [{"key": f"spam-{k}", "title": "x", "body": "y", "on_open": "comment"} for k in range(50)]
    (tmp_path / "issues.json").write_text(json.dumps({"issues": junk + good + good}))
    api = FakeGitHub()
    assert github_issues.main(["nightly", str(tmp_path / "issues.json"), "--run-url", URL], api=api) == 0
    assert [i["labels"] for i in api.items] == [["perfsuite-regression"]] and api.calls == ["create"]
    assert api.items[0]["body"].startswith("<!-- perfsuite-issue regression -->"), "the script's own marker"


@pytest.mark.parametrize("text", ["{", "[]", '{"issues": {}}', '{"change_points": 3}'])
def test_a_malformed_input_file_is_one_error_line(tmp_path, capsys, text):
    (tmp_path / "in.json").write_text(text)
    for what in ("nightly", "change-points"):
        assert github_issues.main([what, str(tmp_path / "in.json"), "--run-url", URL], api=FakeGitHub()) == 2
        assert capsys.readouterr().out.startswith("::error::")


def test_the_workflows_wire_the_checks():
    def job(name, key):
        return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())["jobs"][key]

    keep = job("nightly.yml", "history-keep")
    assert keep["env"]["HISTORY_COMMIT"] == "${{ github.sha }}" and keep["env"]["MAX_NEW_RUNS"] == 1
    comment = "".join(step.get("run", "") for step in job("pr.yml", "comment")["steps"])
    assert '--author "github-actions[bot]"' in comment
    ab = next(s for s in job("pr.yml", "ab")["steps"] if s.get("id") == "ab")
    assert "perfsuite-allow-missing" in ab["env"]["ALLOW_MISSING"] and "--allow-missing" in ab["run"]
