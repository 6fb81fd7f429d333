"""The workflows' issues and PR comment, through GitHub's REST API — stdlib only, so the jobs that hold a write
token install nothing (no PyPI code ever runs beside it).

    github_issues.py nightly ISSUES.json --run-url URL         # issues.json from issue_body.py
    github_issues.py change-points CHANGES.json --run-url URL  # `perfsuite history show --json`
    github_issues.py pr-comment --pr N FILE...                 # one comment per PR, updated in place

Each issue carries a marker (an HTML comment) that finds it again. Change points: only the FILED ones open or
update issues (`history show --json` lists every step shown and marks each one's filing decision, made by
perfsuite.history.looks.decide: provisional and weak steps are shown on the trends page, never filed). A step's
commit range drifts as nights accumulate (its place is estimated anew each night), so an issue is found again by a
range that overlaps its own, not by an equal one: one change, one issue. A closed issue stays closed: someone
decided.
Environment: GH_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL (default https://api.github.com).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

BODY_LIMIT_CHARS = 65_536
CHANGE_POINT_LABEL = "perfsuite-change-point"
PR_MARKER = "<!-- perfsuite-pr-comment -->"
RANGE_MARKER = re.compile(r"<!-- perfsuite-change-point (\{.*?\}) -->")


class GitHub:
    """The few REST calls the workflows make (a test passes a fake with the same methods)."""

    def __init__(self, token: str, repo: str, api_url: str = "https://api.github.com"):
        self.token, self.repo, self.api_url = token, repo, api_url.rstrip("/")

    def _call(self, method: str, path: str, body: dict | None = None, query: dict | None = None):
        url = f"{self.api_url}/repos/{self.repo}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Accept": "application/vnd.github+json",
                                              "X-GitHub-Api-Version": "2022-11-28"})
        with urllib.request.urlopen(req, timeout=60) as r:  # an HTTP error raises: the step fails, visibly
            return json.loads(r.read() or b"null")

    def _all(self, path: str, query: dict) -> list[dict]:
        out, page = [], 1
        while True:
            got = self._call("GET", path, query=query | {"per_page": 100, "page": page})
            out += got
            if len(got) < 100:
                return out
            page += 1

    def issues(self, label: str, state: str) -> list[dict]:
        return [i for i in self._all("issues", {"labels": label, "state": state}) if "pull_request" not in i]

    def create_issue(self, title: str, body: str, label: str) -> dict:
        return self._call("POST", "issues", {"title": title, "body": body, "labels": [label]})

    def update_issue(self, number: int, title: str, body: str) -> dict:
        return self._call("PATCH", f"issues/{number}", {"title": title, "body": body})

    def comment(self, number: int, body: str) -> dict:
        return self._call("POST", f"issues/{number}/comments", {"body": body})

    def comments(self, number: int) -> list[dict]:
        return self._all(f"issues/{number}/comments", {})

    def update_comment(self, comment_id: int, body: str) -> dict:
        return self._call("PATCH", f"issues/comments/{comment_id}", {"body": body})


def _fit(body: str, run_url: str) -> str:
    """The body with the run's link, never over GitHub's limit (issue_body.py already cut it to fit)."""
    tail = f"\n\nRun: {run_url}"
    room = BODY_LIMIT_CHARS - 1 - len(tail)
    return (body if len(body) <= room else body[:room - 2] + " …") + tail


# --- the nightly's comparison ---------------------------------------------------------------------------------

def nightly(api, issues: list[dict], run_url: str) -> list[str]:
    """Each issue of issue_body.py: an open one with its marker gets a comment (a new night's regression) or its
    body updated (gating still off); none open → a new issue."""
    done = []
    for issue in issues:
        marker = f"<!-- perfsuite-issue {issue['key']} -->"
        body = _fit(issue["body"], run_url)
        label = f"perfsuite-{issue['key']}"  # perfsuite-regression, perfsuite-gating-off
        open_ = next((i for i in api.issues(label, "open") if marker in (i.get("body") or "")), None)
        if open_ is None:
            made = api.create_issue(issue["title"], body, label)
            done.append(f"opened #{made['number']}: {issue['title']}")
        elif issue["on_open"] == "comment":
            api.comment(open_["number"], body)
            done.append(f"commented on #{open_['number']}")
        else:
            api.update_issue(open_["number"], issue["title"], body)
            done.append(f"updated #{open_['number']}")
    return done


# --- the history's change points ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """Steps of one night whose commit ranges overlap: one change, one issue. Nights are (good, bad]."""

    good: str  # commit of the earliest last-night-at-the-old-level
    bad: str  # commit of the latest first-night-at-the-new-level
    start: datetime  # good's night
    end: datetime  # bad's night
    points: tuple[dict, ...]

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end

    def marker(self) -> str:
        return (f"<!-- perfsuite-change-point {json.dumps({'good': self.good, 'bad': self.bad, 'start': self.start.isoformat(), 'end': self.end.isoformat()})} -->")


def _night(run: dict) -> datetime:
    at = datetime.fromisoformat(run["datetime"].replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def filed_points(doc: dict) -> list[dict]:
    """The change points to file: format 1 filed all it listed, format 2 marks each (``filed``)."""
    version = doc.get("perfsuite_history_changes")
    if version == 1:
        return list(doc["change_points"])
    if version == 2:
        return [c for c in doc["change_points"] if c["filed"]]
    raise ValueError(f"change points of format {version!r}: this script reads formats 1 and 2")


def changes(doc: dict) -> list[Change]:
    """The night's filed change points clustered into changes: ranges that overlap are one change."""
    found: list[Change] = []
    for cp in sorted(filed_points(doc), key=lambda c: (_night(c["good"]), _night(c["bad"]))):
        start, end = _night(cp["good"]), _night(cp["bad"])
        last = found[-1] if found else None
        if last is not None and last.overlaps(start, end):
            good, g_at = (last.good, last.start) if last.start <= start else (cp["good"]["commit"], start)
            bad, b_at = (last.bad, last.end) if last.end >= end else (cp["bad"]["commit"], end)
            found[-1] = Change(good, bad, g_at, b_at, (*last.points, cp))
        else:
            found.append(Change(cp["good"]["commit"], cp["bad"]["commit"], start, end, (cp,)))
    return found


def _known_range(issue: dict) -> tuple[datetime, datetime] | None:
    m = RANGE_MARKER.search(issue.get("body") or "")
    if not m:
        return None
    r = json.loads(m.group(1))
    return _night({"datetime": r["start"]}), _night({"datetime": r["end"]})


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1f} %"


def _size(c: dict) -> float:
    """How big a change point is, for ordering: |step %|; a behaviour change (exact, perhaps from 0) first."""
    return float("inf") if c.get("kind") == "behaviour" else abs(c["step_pct"])


def _row(c: dict) -> str:
    if c.get("kind") == "behaviour":
        step, evidence, noise = f"behaviour changed {_pct(c['step_pct'])}", "exact", "—"
    else:
        step, evidence, noise = _pct(c["step_pct"]), f"{c['p_value']:.0e}", f"{c['noise_pct']:.1f} %"
    return (f"| `{c['cell_id']}` | {c['metric']} | {step} | {c['before']:.4g} → {c['after']:.4g} | {evidence} "
            f"| {noise} | {'; '.join(c['software_changes'])} |")


def change_body(change: Change, run_url: str) -> tuple[str, str]:
    rows = [_row(c) for c in sorted(change.points, key=lambda c: -_size(c))]
    head = [change.marker(),
            f"A step between `{change.good[:7]}` (last nightly at the old level) and `{change.bad[:7]}` (first nightly "
            f"certainly at the new one): suspects `git log {change.good}..{change.bad}`.", "",
            "| cell | metric | step | level | p | noise | software changed |", "|---|---|---|---|---|---|---|"]
    tail = ["", f"Trend figures: artifact `perfsuite-history` of {run_url} (`trends/index.html`).",
            f"Intended? `perfsuite history ack CELL... --commit {change.bad[:12]} --note \"why\"` on the store "
            "(README, \"History and change points\"), then close this issue."]
    room = BODY_LIMIT_CHARS - 2_000 - len("\n".join(head + tail))
    kept, used = [], 0
    for row in rows:
        if used + len(row) + 1 > room:
            kept.append(f"… {len(rows) - len(kept)} more cells: `perfsuite history show` on the store")
            break
        kept.append(row)
        used += len(row) + 1
    steps = [c["step_pct"] for c in change.points if c.get("kind") != "behaviour"]
    cells = len({c["cell_id"] for c in change.points})
    what = [f"{_pct(max(steps, key=abs))} step"] if steps else []
    what += ["behaviour change"] if len(steps) < len(change.points) else []
    title = (f"perfsuite nightly: {' and '.join(what)} in {cells} cell(s), commits "
             f"{change.good[:7]}..{change.bad[:7]}")
    return title, "\n".join(head + kept + tail)


def change_points(api, doc: dict, run_url: str) -> list[str]:
    known = api.issues(CHANGE_POINT_LABEL, "all")
    done = []
    for change in changes(doc):
        title, body = change_body(change, run_url)
        same = next((i for i in known if (r := _known_range(i)) and change.overlaps(*r)), None)
        if same is None:
            made = api.create_issue(title, body, CHANGE_POINT_LABEL)
            known.append(made)
            done.append(f"opened #{made['number']}: {title}")
        elif same.get("state") == "open":
            api.update_issue(same["number"], title, body)
            same["body"] = body
            done.append(f"updated #{same['number']}: {title}")
        else:
            done.append(f"#{same['number']} is closed (decided): left alone")
    return done


# --- the PR comment -------------------------------------------------------------------------------------------

def pr_comment(api, pr: int, parts: list[str], run_url: str) -> str:
    body = _fit(PR_MARKER + "\n" + "\n\n".join(parts) + f"\n\n[A/B runs and full report (artifacts)]({run_url})",
                run_url)
    mine = next((c for c in api.comments(pr) if PR_MARKER in (c.get("body") or "")), None)
    if mine:
        api.update_comment(mine["id"], body)
        return f"updated comment {mine['id']}"
    api.comment(pr, body)
    return "commented"


def main(argv: list[str] | None = None, api=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    n = sub.add_parser("nightly")
    n.add_argument("issues", type=Path)
    c = sub.add_parser("change-points")
    c.add_argument("changes", type=Path)
    r = sub.add_parser("pr-comment")
    r.add_argument("--pr", type=int, required=True)
    r.add_argument("files", type=Path, nargs="+")
    for q in (n, c, r):
        q.add_argument("--run-url", required=True)
    args = p.parse_args(argv)
    if api is None:
        api = GitHub(os.environ["GH_TOKEN"], os.environ["GITHUB_REPOSITORY"],
                     os.environ.get("GITHUB_API_URL", "https://api.github.com"))
    if args.what == "nightly":
        done = nightly(api, json.loads(args.issues.read_text())["issues"], args.run_url)
    elif args.what == "change-points":
        done = change_points(api, json.loads(args.changes.read_text()), args.run_url)
    else:
        parts = [f.read_text() for f in args.files if f.is_file()]
        if not parts:
            print("::warning::nothing to post: neither the A/B nor the report was written")
            return 0
        done = [pr_comment(api, args.pr, parts, args.run_url)]
    for line in done:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
