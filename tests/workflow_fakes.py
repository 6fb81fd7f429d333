"""The workflows' scripts (.github/scripts) loaded by their paths, and a GitHub in memory to run them against:
what the jobs that hold a write token post is tested before a night posts it."""

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[1] / ".github" / "scripts"
URL = "https://github.com/o/r/actions/runs/42"


def script(name):
    spec = importlib.util.spec_from_file_location(f"workflow_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


issue_body, github_issues, preflight = script("issue_body"), script("github_issues"), script("preflight")


class FakeGitHub:
    """Issues and comments in memory, with the methods of github_issues.GitHub; what it posts is by ``login`` (the
    workflow's bot, as GitHub records a GITHUB_TOKEN's comments)."""

    def __init__(self, login: str = "github-actions[bot]"):
        self.items, self.calls, self.login = [], [], login

    def _new(self, **kw):
        item = {"number": len(self.items) + 1, "state": "open", "comments": [], **kw}
        self.items.append(item)
        return item

    def issues(self, label, state):
        return [i for i in self.items if label in i["labels"] and state in ("all", i["state"])]

    def create_issue(self, title, body, label):
        self.calls.append("create")
        return self._new(title=title, body=body, labels=[label])

    def update_issue(self, number, title, body):
        self.calls.append("update")
        self.items[number - 1] |= {"title": title, "body": body}

    def comment(self, number, body):
        self.calls.append("comment")
        self.items[number - 1]["comments"].append({"id": 100 + len(self.calls), "body": body,
                                                   "user": {"login": self.login, "type": "Bot"}})

    def comments(self, number):
        return self.items[number - 1]["comments"]

    def update_comment(self, comment_id, body):
        self.calls.append("update_comment")
        for i in self.items:
            for c in i["comments"]:
                if c["id"] == comment_id:
                    c["body"] = body


def change_point(cell, good_night, bad_night, step_pct=8.0, filed=True, kind="step"):
    run = lambda n: {"run_id": n, "datetime": f"2026-02-{n:02d}T02:30:00+00:00",  # noqa: E731
                     "commit": f"{n:02d}" + "a" * 38, "branch": "main"}
    return {"cell_id": cell, "metric": "slowdown", "step_pct": step_pct, "before": 20.0, "after": 21.6,
            "p_value": 1e-4, "noise_pct": 1.5, "good": run(good_night), "at": run(good_night + 1),
            "bad": run(bad_night), "software_changes": [], "kind": kind, "filed": filed, "filing": ""}


def night(*points, version=2):
    """A history changes document (format 2: each change point says whether it is filed)."""
    return {"perfsuite_history_changes": version, "change_points": list(points)}
