"""One table, three writers: a :class:`Table` as fixed-width text, Markdown or HTML.

Everything perfsuite prints as a table (verdicts in the terminal, the pull-request comment, the report page)
is built once as a :class:`Table` and written by these functions, so the three cannot drift (pyperf's
``MarkDownTable`` idea).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

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
    """Fixed-width columns, numbers right-aligned; title, lead and note as plain lines."""
    right = _numeric_columns(t)
    rows = [t.columns, *t.rows]
    widths = [max(len(r[k]) for r in rows) for k in range(len(t.columns))]

    def line(r):
        return "  ".join(c.rjust(w) if right[k] else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [t.title] if t.title else []
    out += [t.lead] if t.lead else []
    out += [line(t.columns), line(["-" * w for w in widths]), *(line(r) for r in t.rows)]
    out += [t.note] if t.note else []
    return "\n".join(out)


# --- Markdown -----------------------------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(t: Table, *, heading: str = "####") -> str:
    align = ["---:" if num else "---" for num in _numeric_columns(t)]
    lines = ["| " + " | ".join(_md_cell(c) for c in t.columns) + " |", "| " + " | ".join(align) + " |"]
    for k, row in enumerate(t.rows):
        cells = [_md_cell(c) for c in row]
        if k in t.strong_rows:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    body = (f"{t.lead}\n\n" if t.lead else "") + "\n".join(lines) + (f"\n\n{t.note}" if t.note else "")
    if t.collapsed:
        return f"<details><summary>{html.escape(t.title)}</summary>\n\n{body}\n\n</details>"
    return f"{heading} {t.title}\n\n{body}" if t.title else body


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
