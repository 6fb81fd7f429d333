"""One table, three writers: a :class:`Table` as fixed-width text, Markdown or HTML — and the escaping every text
perfsuite writes from a recorded string goes through.

Everything perfsuite prints as a table (verdicts in the terminal, the pull-request comment, the report page)
is built once as a :class:`Table` and written by these functions, so the three cannot drift (pyperf's
``MarkDownTable`` idea). A recorded string (a host, a CPU, a version, a commit, a cell's note) is data from a
file anyone may have written: :func:`printable` for a terminal or a CI log, :func:`markdown_text` (or
:func:`markdown_code`) for a summary, a comment or an issue, :func:`spreadsheet_safe` for a CSV cell,
:func:`figure_text` for a figure, ``html.escape`` for a page.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, the bidirectional overrides and isolates.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MENTION = re.compile(r"(?<![\w`])@(?=[A-Za-z0-9])")  # where GitHub would see @user, @org/team, @everyone
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell starting so as a formula


def printable(text: object) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\n``, ``\\u202e``): one line that cannot move the
    cursor, recolour the terminal, hide text or forge a ``::error::`` annotation in a CI log."""
    def escape(m: re.Match) -> str:
        c = ord(m[0])
        return {9: "\\t", 10: "\\n", 13: "\\r"}.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")

    return _CONTROL.sub(escape, str(text))


def markdown_text(text: object) -> str:
    """``text`` as inert Markdown on GitHub, on one line: HTML (a tracking image, a script) escaped, no mention
    pings anyone, no link or image is formed, a backtick or a pipe cannot end a code span or a table cell."""
    out = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("\\", "\\\\").replace("`", "\\`").replace("|", "\\|")
    out = out.replace("![", "!\\[").replace("](", "]\\(")
    return _MENTION.sub("@\u200b", out)


def markdown_code(text: object) -> str:
    """``text`` as a Markdown code span, on one line: its fence longer than any run of backticks inside, so nothing
    in it can close the span (inside one, no HTML, mention or link is live)."""
    t = printable(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", t)), default=0) + 1)
    pad = " " if t.startswith("`") or t.endswith("`") else ""
    return f"{fence}{pad}{t}{pad}{fence}"


def figure_text(text: object) -> str:
    """``text`` as plain text in a matplotlib figure: every ``$`` escaped, so no recorded string (a model, a matrix,
    a contributed adapter's name) is parsed as mathtext — where ``$x^$`` or ``q}\\frac{`` raised and cost the
    report its figures."""
    return str(text).replace("$", "\\$")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet opens as text: a string starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return gets a leading ``'`` (OWASP's advice against CSV injection); numbers are left as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_LEADS) else value


HOLE_TEXTS = frozenset({"OOM", "no device", "missing", "no data"})  # what a grid position without a number reads


@dataclass(frozen=True)
class Table:
    """A table as text."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""  # printed under the table
    lead: str = ""  # printed above it
    strong_rows: frozenset[int] = frozenset()  # rows to emphasise (regressions)
    collapsed: bool = False  # show folded (HTML/Markdown <details>) — secondary numbers
    marks_holes: bool = True  # cells reading "OOM", "missing", … are grid holes (not so in the verdict table)

    def column(self, name: str) -> list[str]:
        k = self.columns.index(name)
        return [r[k] for r in self.rows]


def is_number_text(text: str) -> bool:
    if text.endswith(")") and " (" in text:  # "27.3 (25.1 to 29.0)": a median of runs and their range
        text = text.rsplit(" (", 1)[0]
    t = text.rstrip("%†").removesuffix(" pp").removesuffix(" ms").replace(",", "").replace("+", "")
    t = t.replace("−", "-").split(" → ")[-1].strip()
    try:
        float(t.rstrip("%"))
    except ValueError:
        return t.startswith("[") or t.startswith("<")
    return True


def _numeric_columns(t: Table) -> list[bool]:
    return [bool(t.rows) and all(is_number_text(r[k]) or not r[k] or r[k] in HOLE_TEXTS for r in t.rows)
            and any(is_number_text(r[k]) for r in t.rows) for k in range(len(t.columns))]


# --- text ---------------------------------------------------------------------------------------------------------

def text_table(t: Table) -> str:
    """Fixed-width columns, numbers right-aligned; title, lead and note as plain lines; every text printable."""
    right = _numeric_columns(t)
    columns, body = [printable(c) for c in t.columns], [[printable(c) for c in r] for r in t.rows]
    rows = [columns, *body]
    widths = [max(len(r[k]) for r in rows) for k in range(len(t.columns))]

    def line(r):
        return "  ".join(c.rjust(w) if right[k] else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [printable(t.title)] if t.title else []
    out += [printable(t.lead)] if t.lead else []
    out += [line(columns), line(["-" * w for w in widths]), *(line(r) for r in body)]
    out += [printable(t.note)] if t.note else []
    return "\n".join(out)


# --- Markdown -----------------------------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return markdown_text(text)


def markdown_table(t: Table, *, heading: str = "####") -> str:
    align = ["---:" if num else "---" for num in _numeric_columns(t)]
    lines = ["| " + " | ".join(_md_cell(c) for c in t.columns) + " |", "| " + " | ".join(align) + " |"]
    for k, row in enumerate(t.rows):
        cells = [_md_cell(c) for c in row]
        if k in t.strong_rows:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    body = ((f"{markdown_text(t.lead)}\n\n" if t.lead else "") + "\n".join(lines)
            + (f"\n\n{markdown_text(t.note)}" if t.note else ""))
    if t.collapsed:
        return f"<details><summary>{markdown_text(t.title)}</summary>\n\n{body}\n\n</details>"
    return f"{heading} {markdown_text(t.title)}\n\n{body}" if t.title else body


# --- HTML ---------------------------------------------------------------------------------------------------------

def html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for k, row in enumerate(t.rows):
        cells = []
        for text in row:
            cls = "num" if is_number_text(text) else "hole" if t.marks_holes and text in HOLE_TEXTS else ""
            td = f'<td class="{cls}">' if cls else "<td>"
            cells.append(f"{td}{html.escape(text)}</td>")
        tr = '<tr class="strong">' if k in t.strong_rows else "<tr>"
        body.append(f"{tr}{''.join(cells)}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    note = f"<p class=\"note\">{html.escape(t.note)}</p>" if t.note else ""
    lead = f"<p>{html.escape(t.lead)}</p>" if t.lead else ""
    if t.collapsed:
        return f"<details><summary>{html.escape(t.title)}</summary>{lead}{table}{note}</details>"
    return f"<h3>{html.escape(t.title)}</h3>{lead}{table}{note}"
