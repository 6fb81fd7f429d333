"""The nightly's issues from its comparison: a confirmed regression, or gating that is off — bodies GitHub accepts.

GitHub refuses an issue body or comment over 65,536 characters, and a `full` night's comparison.md is ~100 KB
(~900 verdict rows), so the body carries only the rows that need a look (every verdict but "unchanged", most
urgent first), cut to fit, with a line naming how many were left out and where the whole comparison is.

``compare`` exit 2, or a part compared with no baseline of this machine (a driver or torch upgrade changes the
fingerprint), means nothing tonight could fail the run: a warning annotation and an issue say so.

    python .github/scripts/issue_body.py --compare-exit N [--comparison comparison.json] --artifact-url URL --out issues.json

Writes {"issues": [{key, title, body, on_open}]} for github_issues.py (which needs no install, adds each issue's
marker and neutralises the body again before posting); needs perfsuite. Every recorded string in a body (a machine,
a baseline, a hint, a cell's note) is inert Markdown (perfsuite.table.markdown_text).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # perfsuite is imported where it is used
    from perfsuite.formats.comparison import Comparison, PartEntry

BODY_LIMIT_CHARS = 65_536  # GitHub's limit on an issue body or comment
BODY_BUDGET_CHARS = 60_000  # what this script fills: room under the limit for the run line github_issues.py adds
GATING_MODES = ("gating", "ab")


def fit_table(table, budget_chars: int, artifact_url: str) -> str:
    """The table in markdown with as many leading rows as fit in ``budget_chars``, then "… N more rows"."""
    from perfsuite.table import markdown_table

    def first(n: int):  # the table's first n rows, the strong ones among them still strong
        return replace(table, rows=table.rows[:n], strong_rows=frozenset(k for k in table.strong_rows if k < n))

    whole = markdown_table(table)
    if len(whole) <= budget_chars:
        return whole
    more = lambda n: f"\n\n… {n} more row{'s' * (n != 1)}, see the whole comparison in {artifact_url}"  # noqa: E731
    low, high = 0, len(table.rows)  # the most rows that fit, by bisection (render time is linear in rows)
    while low < high:
        mid = (low + high + 1) // 2
        text = markdown_table(first(mid)) + more(len(table.rows) - mid)
        low, high = (mid, high) if len(text) <= budget_chars else (low, mid - 1)
    return markdown_table(first(low)) + more(len(table.rows) - low)


def regression_body(comparison: Comparison, artifact_url: str, budget_chars: int = BODY_BUDGET_CHARS) -> str:
    """A confirmed regression, or baseline cells the run did not measure (both fail the nightly)."""
    from perfsuite.compare.render import part_lines, summary_line, unmeasured_line, verdict_tables
    from perfsuite.table import markdown_text

    what = "Confirmed regression" if comparison.has_regression else "Cells missing from the run"
    missing = unmeasured_line(comparison)
    head = [f"**{what}** — {markdown_text(summary_line(comparison))}.", "",
            *(f"- {markdown_text(line.strip())}" for line in part_lines(comparison)),
            *([f"- **{markdown_text(missing)}**"] if missing else []), ""]
    tail = ["", f"Whole comparison, report and shards' results: {artifact_url}",
            "Intended? Record a new baseline from the nightly's results (docs/verdicts.md, \"Baselines\") and close this issue."]
    notable = [t for t in verdict_tables(comparison) if not t.collapsed]
    room = budget_chars - len("\n".join(head)) - len("\n".join(tail)) - 2
    table = fit_table(replace(notable[0], lead=""), room, artifact_url) if notable else "(no verdict rows)"
    return "\n".join([*head, table, *tail])


def not_gating_parts(comparison: Comparison | None) -> list[PartEntry]:
    return [] if comparison is None else [p for p in comparison.parts if p.mode not in GATING_MODES]


def gating_off_body(compare_exit: int, comparison: Comparison | None, artifact_url: str) -> str:
    from perfsuite.table import markdown_text

    lines = ["**Gating is off**: tonight nothing could fail the nightly, so a regression would pass green.", ""]
    if comparison is None:
        lines.append(f"`perfsuite compare` exited {compare_exit} without a comparison: no baseline of this machine "
                     "for the profile (its fingerprint changed: a driver, CUDA or torch upgrade, another GPU), or "
                     "bad input — the merge job's log has its one-line error.")
    for p in not_gating_parts(comparison):
        lines.append(f"- part {markdown_text(p.profile)}: {p.mode} — machine {markdown_text(p.machine)}"
                     + (f"; differs in: {markdown_text('; '.join(p.differences))}" if p.differences else "")
                     + (f"; {markdown_text(p.hint)}" if p.hint else ""))
    lines += ["", "To gate again: record a baseline of this machine from a nightly's results "
              "(`perfsuite baseline record`, docs/verdicts.md, \"Baselines\"), commit it, and close this issue.",
              f"Artifacts: {artifact_url}"]
    return "\n".join(lines)


def nightly_issues(compare_exit: int, comparison: Comparison | None, artifact_url: str) -> list[dict]:
    """The issues tonight's comparison calls for (none when all gates held and nothing regressed)."""
    issues = []
    if compare_exit == 1 and comparison is not None:
        n, missing = comparison.count("regression"), len(comparison.unmeasured)
        title = ("perfsuite nightly: confirmed performance regression" if n else
                 "perfsuite nightly: baseline cells missing from the run")
        issues.append({"key": "regression", "title": title, "body": regression_body(comparison, artifact_url),
                       "on_open": "comment",
                       "summary": ", ".join([f"{n} confirmed regression{'s' * (n != 1)}"] * bool(n)
                                            + [f"{missing} missing cell{'s' * (missing != 1)}"] * bool(missing))})
    off = not_gating_parts(comparison)
    if compare_exit == 2 or off or (comparison is not None and not comparison.gating):
        what = ", ".join(str(p.profile) for p in off) or "the whole run"
        issues.append({"key": "gating-off", "title": "perfsuite nightly: gating is off (no baseline of this machine)",
                       "body": gating_off_body(compare_exit, comparison, artifact_url), "on_open": "update",
                       "summary": f"gating is off for {what}"})
    return issues


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compare-exit", type=int, required=True)
    p.add_argument("--comparison", type=Path, default=None, help="comparison.json (absent when compare failed)")
    p.add_argument("--artifact-url", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.compare_exit not in (0, 1, 2):
        print(f"issue_body: error: perfsuite compare exited {args.compare_exit} (a crash): no issue is written",
              file=sys.stderr)
        return 2
    comparison = None
    if args.comparison is not None and args.comparison.is_file():
        from perfsuite.formats.comparison import read_comparison

        comparison = read_comparison(args.comparison)
    issues = nightly_issues(args.compare_exit, comparison, args.artifact_url)
    for issue in issues:
        if issue["key"] == "gating-off":
            print(f"::warning title=perfsuite gating is off::{issue['summary']}: a regression tonight would pass; "
                  "record a baseline of this machine (docs/verdicts.md, Baselines)")
    too_long = [i["key"] for i in issues if len(i["body"]) >= BODY_BUDGET_CHARS]
    if too_long:  # a bug here, not an input to pass on: GitHub would refuse the issue
        print(f"issue_body: error: the {', '.join(too_long)} body is over {BODY_BUDGET_CHARS} characters",
              file=sys.stderr)
        return 2
    from perfsuite.formats.io import write_json_atomic

    write_json_atomic(args.out, {"issues": issues})  # never through a planted symlink
    print(f"{len(issues)} issue(s) → {args.out}: " + (", ".join(i["summary"] for i in issues) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
