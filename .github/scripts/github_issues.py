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

What this script posts came from jobs that ran PyPI code (and, for a pull request, the PR's own code), so it is
checked here, in the job that holds the write token: the PR comment it edits is found by its marker AND its author
(the workflow's bot; anyone can post the marker); an issue key is one it knows; a change point names hex commits
and ISO dates or is not posted; every body is neutralised (no mention pings, no HTML but the <details> fold, no
image); at most --max-issues new issues a night, the rest named in a warning.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
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
RANGE_MARKER = re.compile(r"<!-- perfsuite-change-point (\{[^<>]*?\}) -->")
ROOT = Path(__file__).resolve().parents[2]
BOT = "github-actions[bot]"  # who posts with the workflow's GITHUB_TOKEN
NIGHTLY_KEYS = {"regression": "comment", "gating-off": "update"}  # issue_body.py's issues, and what an open one gets
MAX_NEW_ISSUES = 5  # issues one night may open; more is a flood (a bug, or a crafted input), named in a warning
HEX_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_ALLOWED_TAG = re.compile(r"</?(details|summary)>")
_MENTION = re.compile(r"(?<![\w`])@(?=[A-Za-z0-9])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def neutralise(text: str) -> str:
    """``text`` as a body that does nothing but show: no mention pings anyone, no HTML renders but the <details>
    fold perfsuite's Markdown uses (a tracking image, a script, a fake marker comment are escaped), no Markdown
    image loads, no control character survives. Idempotent on perfsuite's own Markdown, which already escapes
    every recorded string (perfsuite.table.markdown_text)."""
    text = _CONTROL.sub("\ufffd", text)
    out, at = [], 0
    for m in re.finditer(r"<", text):
        out.append(text[at:m.start()])
        allowed = _ALLOWED_TAG.match(text, m.start())
        out.append(allowed[0] if allowed else "&lt;")
        at = m.start() + (len(allowed[0]) if allowed else 1)
    text = "".join(out) + text[at:]
    return _MENTION.sub("@\u200b", text.replace("![", "!\\["))


def _load(relative: str):
    """A stdlib-only module of this checkout, loaded by its path (nothing of perfsuite is installed here)."""
    spec = importlib.util.spec_from_file_location(f"perfsuite_{Path(relative).stem}", ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_TABLE = _load("perfsuite/table.py")  # markdown_code: the escaping perfsuite's own Markdown uses


def code(text: str) -> str:
    """``text`` as a Markdown code span nothing inside can close, in a table row (a pipe escaped: no new cell)."""
    return _TABLE.markdown_code(text).replace("|", "\\|")


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

def nightly(api, issues: list[dict], run_url: str, max_new: int = MAX_NEW_ISSUES) -> list[str]:
    """Each issue of issue_body.py: an open one with its marker gets a comment (a new night's regression) or its
    body updated (gating still off); none open → a new issue. Only the keys issue_body.py writes, each once; the
    marker is this script's, the body neutralised."""
    done, opened = [], 0
    for key in dict.fromkeys(i.get("key") for i in issues if isinstance(i, dict)):
        issue = next(i for i in issues if isinstance(i, dict) and i.get("key") == key)
        if key not in NIGHTLY_KEYS or not isinstance(issue.get("title"), str) or not isinstance(issue.get("body"), str):
            done.append(f"::warning::issues.json: an issue of key {str(key)[:40]!r} is not one issue_body.py writes: "
                        "not posted")
            continue
        marker = f"<!-- perfsuite-issue {key} -->"
        body = _fit(marker + "\n" + neutralise(issue["body"]), run_url)
        title = neutralise(" ".join(issue["title"].split()))[:200]
        label = f"perfsuite-{key}"  # perfsuite-regression, perfsuite-gating-off
        open_ = next((i for i in api.issues(label, "open") if marker in (i.get("body") or "")), None)
        if open_ is None:
            if opened >= max_new:
                done.append(f"::warning::not opened (at most {max_new} new issues a night): {title}")
                continue
            made = api.create_issue(title, body, label)
            opened += 1
            done.append(f"opened #{made['number']}: {title}")
        elif NIGHTLY_KEYS[key] == "comment":
            api.comment(open_["number"], body)
            done.append(f"commented on #{open_['number']}")
        else:
            api.update_issue(open_["number"], title, body)
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
        """The hidden marker that finds the issue again: hex commits and ISO dates only, so it cannot close early."""
        text = json.dumps({"good": self.good, "bad": self.bad, "start": self.start.isoformat(),
                           "end": self.end.isoformat()})
        return f"<!-- perfsuite-change-point {text} -->"


def _night(run: dict) -> datetime:
    """The night of a run: its ISO date-time (ValueError for anything else)."""
    text = run.get("datetime") if isinstance(run, dict) else None
    if not isinstance(text, str):
        raise ValueError(f"{str(text)[:40]!r} is not an ISO date-time")
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def filed_points(doc: dict) -> list:
    """The change points to file: format 1 filed all it listed, format 2 marks each (``filed``)."""
    version = doc.get("perfsuite_history_changes") if isinstance(doc, dict) else None
    points = doc.get("change_points") if isinstance(doc, dict) else None
    if not isinstance(points, list):
        return []
    if version == 1:
        return list(points)
    if version == 2:
        return [c for c in points if not isinstance(c, dict) or c.get("filed") is True]
    raise ValueError(f"change points of format {version!r}: this script reads formats 1 and 2")


def _problem(cp) -> str | None:
    """None for a change point this script may post (hex commits, ISO dates, finite numbers, texts), else why not. A
    behaviour change (``kind`` "behaviour": an exact outcome changed, perhaps from 0) has no step % nor p-value."""
    if not isinstance(cp, dict):
        return "not an object"
    for side in ("good", "bad"):
        run = cp.get(side)
        commit = run.get("commit") if isinstance(run, dict) else None
        if not (isinstance(commit, str) and HEX_COMMIT.fullmatch(commit)):
            return f"its {side} commit {str(commit)[:40]!r} is not a hex commit"
        try:
            _night(run)
        except (ValueError, AttributeError, TypeError):
            return f"its {side} run's date-time {str(run.get('datetime'))[:40]!r} is not ISO 8601"
    behaviour = cp.get("kind") == "behaviour"
    keys = ("before", "after") if behaviour else ("step_pct", "before", "after", "p_value", "noise_pct")
    for key in (*keys, *(("step_pct",) if behaviour and cp.get("step_pct") is not None else ())):
        if not isinstance(cp.get(key), (int, float)) or isinstance(cp.get(key), bool) or not math.isfinite(cp[key]):
            return f"its {key} is not a finite number"
    if not isinstance(cp.get("cell_id"), str) or not isinstance(cp.get("metric"), str) or not (
            isinstance(cp.get("software_changes"), list) and all(isinstance(x, str) for x in cp["software_changes"])):
        return "its cell, metric or software changes are not texts"
    return None


def changes(doc: dict, skipped: list[str] | None = None) -> list[Change]:
    """The night's filed change points clustered into changes: ranges that overlap are one change. A change point
    this script may not post (:func:`_problem`) is left out, named in ``skipped``."""
    found: list[Change] = []
    valid = []
    for cp in filed_points(doc):
        problem = _problem(cp)
        if problem:
            (skipped if skipped is not None else []).append(f"::warning::a change point not posted: {problem}")
        else:
            valid.append(cp)
    for cp in sorted(valid, key=lambda c: (_night(c["good"]), _night(c["bad"]))):
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
    """The range an issue's marker names; None for an issue without one, or with a marker that does not parse
    (one bad marker — an issue edited by hand, or written before commits were checked — never stops the job)."""
    m = RANGE_MARKER.search(issue.get("body") or "")
    if not m:
        return None
    try:
        r = json.loads(m.group(1))
        return _night({"datetime": r["start"]}), _night({"datetime": r["end"]})
    except (ValueError, KeyError, TypeError):
        return None


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
    software = code("; ".join(c["software_changes"])) if c["software_changes"] else ""
    return (f"| {code(c['cell_id'])} | {code(c['metric'])} | {step} | {c['before']:.4g} → {c['after']:.4g} "
            f"| {evidence} | {noise} | {software} |")  # recorded strings as code spans (neutralised)


def change_body(change: Change, run_url: str) -> tuple[str, str]:
    """The issue of one change: its marker, the commit range, a row per cell (recorded strings as code spans)."""
    rows = [_row(c) for c in sorted(change.points, key=lambda c: -_size(c))]
    head = [change.marker(),
            f"A step between `{change.good[:7]}` (last nightly at the old level) and `{change.bad[:7]}` (first nightly "
            f"certainly at the new one): suspects `git log {change.good}..{change.bad}`.", "",
            "| cell | metric | step | level | p | noise | software changed |", "|---|---|---|---|---|---|---|"]
    tail = ["", f"Trend figures: artifact `perfsuite-history` of {run_url} (`trends/index.html`).",
            f"Intended? `perfsuite history ack CELL... --commit {change.bad[:12]} --note \"why\"` on the store "
            "(docs/history.md, \"History and change points\"), then close this issue."]
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


def change_points(api, doc: dict, run_url: str, max_new: int = MAX_NEW_ISSUES) -> list[str]:
    known = api.issues(CHANGE_POINT_LABEL, "all")
    done: list[str] = []
    found = changes(doc, done)
    opened = 0
    for change in found:
        title, body = change_body(change, run_url)
        same = next((i for i in known if (r := _known_range(i)) and change.overlaps(*r)), None)
        if same is None:
            if opened >= max_new:
                done.append(f"::warning::not opened (at most {max_new} new issues a night): {title}")
                continue
            made = api.create_issue(title, body, CHANGE_POINT_LABEL)
            known.append(made)
            opened += 1
            done.append(f"opened #{made['number']}: {title}")
        elif same.get("state") == "open":
            api.update_issue(same["number"], title, body)
            same["body"] = body
            done.append(f"updated #{same['number']}: {title}")
        else:
            done.append(f"#{same['number']} is closed (decided): left alone")
    return done


# --- the PR comment -------------------------------------------------------------------------------------------

def pr_comment(api, pr: int, parts: list[str], run_url: str, author: str = BOT) -> str:
    """The PR's one comment, posted or updated in place: the comment found is ours only if it carries the marker
    AND was written by ``author`` (the workflow's bot) — anyone can post the marker. The parts (the A/B and the
    report's summary, written by jobs that ran the PR's code) are neutralised."""
    text = "\n\n".join(neutralise(part) for part in parts)
    body = _fit(PR_MARKER + "\n" + text + f"\n\n[A/B runs and full report (artifacts)]({run_url})", run_url)
    mine = next((c for c in api.comments(pr) if PR_MARKER in (c.get("body") or "")
                 and ((c.get("user") or {}).get("login") == author)), None)
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
    r.add_argument("--author", default=BOT, help=f"the login the comment is ours by (default: {BOT})")
    r.add_argument("files", type=Path, nargs="+")
    for q in (n, c, r):
        q.add_argument("--run-url", required=True)
    for q in (n, c):
        q.add_argument("--max-issues", type=int, default=MAX_NEW_ISSUES,
                       help=f"new issues this night may open at most (default: {MAX_NEW_ISSUES})")
    args = p.parse_args(argv)
    if api is None:
        api = GitHub(os.environ["GH_TOKEN"], os.environ["GITHUB_REPOSITORY"],
                     os.environ.get("GITHUB_API_URL", "https://api.github.com"))
    if args.what == "nightly":
        doc = _read_json(args.issues)
        issues = doc.get("issues") if isinstance(doc, dict) else None
        if not isinstance(issues, list):
            print(f"::error::{args.issues}: not the issues issue_body.py writes")
            return 2
        done = nightly(api, issues, args.run_url, args.max_issues)
    elif args.what == "change-points":
        doc = _read_json(args.changes)
        if not isinstance(doc, dict) or not isinstance(doc.get("change_points"), list):
            print(f"::error::{args.changes}: not the change points `perfsuite history show --json` writes")
            return 2
        done = change_points(api, doc, args.run_url, args.max_issues)
    else:
        parts = [f.read_text(encoding="utf-8", errors="replace") for f in args.files if f.is_file()]
        if not parts:
            print("::warning::nothing to post: neither the A/B nor the report was written")
            return 0
        done = [pr_comment(api, args.pr, parts, args.run_url, args.author)]
    for line in done:
        print(_CONTROL.sub("\ufffd", line))
    return 0


def _read_json(path: Path):
    """The file's JSON, or None when it is not (one ::error:: line follows, never a traceback)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


if __name__ == "__main__":
    sys.exit(main())
