"""Report, step 4 — the page: figures and tables → DIR/index.html (static, opens from disk) and DIR/summary.md.

:func:`render_report` is the whole report step: results (and optionally a baseline comparison) in,
files out. Both pages carry the same content in the same order. A compared run opens with the answer
(:mod:`perfsuite.report.answer`: what moved, what the comparison could detect), then the comparison's figures
drawn by verdict, then the method and every metric's verdict behind a fold; then run metadata, what is missing,
and every figure with the table of the numbers it was drawn from. The Markdown is meant to be posted as a
pull-request comment.
"""

from __future__ import annotations

import html
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence


from perfsuite.formats.comparison import Comparison, as_comparison
from perfsuite.formats.io import write_text_atomic
from perfsuite.formats.record import STATUS_OK, STATUS_OUTSIDE_BUDGET
from perfsuite.formats.results import Results
from perfsuite.report.data import any_numbers
from perfsuite.report.data import (CELL_NOTES, MAX_LISTED, ReportError, adapter_label, change_data, is_number,
                                   latency_data, recompute_data, report_frame, setup_label, setup_rows)
from perfsuite.report.answer import Answer, answer
from perfsuite.report.runs import RUNS_KEY
from perfsuite.report.phi_data import phi_frame, subspace_groups, subspace_records
from perfsuite.report.figures import drawn_adapters, latency_figure, recompute_figure, save_figure, subspace_figure
from perfsuite.report.verdict_figure import verdict_figure
from perfsuite.report.overhead import NOTE as OVERHEAD_NOTE
from perfsuite.report.modes import NOTE as MODES_NOTE
from perfsuite.report.modes import mode_gap_data, mode_gap_figure, mode_gap_tables
from perfsuite.report.overhead import has_numbers, overhead_data, overhead_figure, overhead_tables
from perfsuite.report.serving import serving_sections
from perfsuite.report.tables import (gpu_state_table, latency_tables, missing_lines, plain_label, recompute_tables,
                                     run_table, subspace_tables)
from perfsuite.table import Table, html_table, markdown_code, markdown_table, markdown_text, spreadsheet_safe

CSV_NAME = "results.csv"
BLANK_TEXTS = {STATUS_OUTSIDE_BUDGET: "blank by design (over the token budget)"}
PHI_CSV_NAME = "subspace_phi.csv"


@dataclass(frozen=True)
class Section:
    """One figure of the page with the tables of its numbers."""

    title: str
    figures: tuple[Path, ...]  # PNG first, then its vector twin; empty when there was nothing to draw
    tables: tuple[Table, ...]
    note: str = ""
    drawn: bool = True  # a section meant to have a figure (says so when it has none)
    html: str = ""  # an interactive chart: shown on the HTML page instead of the PNG (kept for Markdown, linked)
    script: str = ""  # what the chart needs at the end of the page (a page carries each distinct script once)


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`render_report` wrote."""

    out_dir: Path
    index: Path  # index.html
    summary: Path  # summary.md
    csv: Path  # results.csv: the tidy frame with run metadata
    figures: tuple[Path, ...]  # every PNG and vector file
    missing: tuple[str, ...]  # one line per thing the report could not show


def _coverage(statuses: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    total = sum(counts.values())
    ok = counts.pop(STATUS_OK, 0)
    rest = ", ".join(f"{v} {CELL_NOTES.get(k) or BLANK_TEXTS.get(k) or k.replace('_', ' ')}"
                     for k, v in sorted(counts.items()))
    return f"{ok} of {total} cells measured" + (f"; {rest}" if rest else "") + "."


def recompiled_note(rows: list[dict]) -> str:
    """Compiled cells whose timed loop compiled again (``recompiles_in_loop`` > 0), named: their times hold it."""
    ids = sorted(r["cell_id"] for r in rows if is_number(r.get("recompiles_in_loop")) and r["recompiles_in_loop"] > 0)
    if not ids:
        return ""
    return (f" Recompiled inside the timed loop (times include compilation): {', '.join(ids[:MAX_LISTED])}"
            + (f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else "") + ".")


def build_sections(results: Results, out_dir: Path, *, vector: str | None) -> tuple[list[Section], list[str]]:
    """Draw and save every figure the results allow; returns the sections and the missing-lines."""
    frame = results.frame
    sections, drawn = [], {}
    for data in latency_data(frame):
        grids = [data.panels[p] for p in data.panels if p[0] in drawn_adapters(data)]
        paths = save_figure(latency_figure(data), out_dir, data.stem, vector=vector) if any_numbers(grids) else []
        gpu = gpu_state_table(setup_rows(frame, "latency", data.setup))
        sections.append(Section(f"Latency — {setup_label(data.setup)}", tuple(paths),
                                tuple(latency_tables(data)) + ((gpu,) if gpu else ()),
                                "Slow-down of one forward pass against the plain model (r = 0), after LoRA "
                                "(Hu et al. 2021) Fig. 5. " + _coverage(data.cell_statuses()) + " "
                                + names_legend(drawn_adapters(data))
                                + recompiled_note(setup_rows(frame, "latency", data.setup))))
        drawn |= data.cell_statuses()
    for data in overhead_data(frame):  # hf over ref, where latency cells ran on both implementations
        paths = save_figure(overhead_figure(data), out_dir, data.stem, vector=vector) if has_numbers(data) else []
        sections.append(Section(f"Implementation overhead — {setup_label(data.setup)}", tuple(paths),
                                tuple(overhead_tables(data)), OVERHEAD_NOTE))
    for gap in mode_gap_data(frame):  # eager against graphs (or compile), where latency cells ran in both
        paths = save_figure(mode_gap_figure(gap), out_dir, gap.stem, vector=vector) if any_numbers(
            list(gap.gap.values())) else []
        sections.append(Section(f"Eager vs {gap.other} — {setup_label(gap.setup)}", tuple(paths),
                                tuple(mode_gap_tables(gap)), MODES_NOTE))
    for data in recompute_data(frame):
        grids = [p.cost for p in data.panels]
        paths = save_figure(recompute_figure(data), out_dir, data.stem, vector=vector) if any_numbers(grids) else []
        sections.append(Section(f"Recompute — {setup_label(data.setup)}", tuple(paths), tuple(recompute_tables(data)),
                                "Share of output tokens rolled back and recomputed by verified decoding, and "
                                "throughput relative to the best cell, after LLM-42 (Gond et al. 2026) Fig. 13. "
                                + _coverage(data.cell_statuses())))
        drawn |= data.cell_statuses()
    sections += [Section(*s) for s in serving_sections(frame, out_dir, vector=vector)]  # perfsuite.report.serving
    phis = subspace_records(frame)
    for group in subspace_groups(phis):
        paths = save_figure(subspace_figure(group), out_dir, group.stem, vector=vector)
        sections.append(Section(f"Subspace similarity — {plain_label(group.title)}", tuple(paths),
                                tuple(subspace_tables(group)),
                                "φ(A, A′, i, j) = ‖U_A^i⊤ U_A′^j‖²_F / min(i, j): how much of the top-i directions of one "
                                "adapter's A lie in the top-j of the other's, after LoRA (Hu et al. 2021) Figs. 4 and 7."))
    if phis:
        write_text_atomic(out_dir / PHI_CSV_NAME, phi_frame(phis).map(spreadsheet_safe).to_csv(index=False))
    return sections, missing_lines(results, drawn)


def combined_note(results: Results) -> str:
    """The line a report of several runs opens with: its numbers are medians over the runs."""
    counts = [r.metrics.get(RUNS_KEY) for r in results.records]
    most = max((c for c in counts if isinstance(c, int)), default=0)
    if not most:
        return ""
    return (f"{len(results.runs)} result files, {most} runs: each cell is drawn as its median over the runs that "
            "measured it; the tables give the lowest and highest run in brackets.")


def render_report(results: Results, out_dir: str | Path, *, comparison: Comparison | dict | None = None,
                  vector: str | None = "svg", title: str | None = None,
                  trends: Sequence[Section] = ()) -> ReportFiles:
    """The report step: results.csv, a figure per workload and setup present, index.html and summary.md
    in ``out_dir``. ``comparison`` is a ``perfsuite compare`` verdict document (its table goes on top);
    ``vector`` is "svg", "pdf" or None (PNG only); ``trends``: sections already drawn into ``out_dir``
    (:func:`perfsuite.history.trends.trend_sections`), added at the end. Renders whatever the results
    hold, and lists the rest."""
    out_dir = Path(out_dir)
    if comparison is not None:
        comparison = as_comparison(comparison)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out_dir}: cannot create the output folder: {e.strerror or e}") from None
    csv = out_dir / CSV_NAME
    write_text_atomic(csv, report_frame(results).map(spreadsheet_safe).to_csv(index=False))  # no cell a formula
    sections, missing = build_sections(results, out_dir, vector=vector)
    sections += list(trends)
    profiles = sorted({r.profile for r in results.runs if r.profile})
    title = title or "perfsuite report" + (f" — {', '.join(profiles)}" if profiles else "")
    head = [run_table(results)]
    compared = comparison_sections(results, comparison, out_dir, vector=vector) if comparison is not None else []
    lead = answer(comparison) if comparison is not None else None
    notes = [combined_note(results)] if combined_note(results) else []
    index = out_dir / "index.html"
    summary = out_dir / "summary.md"
    extra = [p.name for p in (csv, out_dir / PHI_CSV_NAME) if p.exists()]
    write_text_atomic(index, html_page(title, head, compared, missing, sections, extra, lead=lead, notes=notes))
    write_text_atomic(summary, markdown_page(title, head, compared, missing, sections, extra, lead=lead, notes=notes))
    return ReportFiles(out_dir, index, summary, csv, tuple(p for s in compared + sections for p in s.figures),
                       tuple(missing))


def comparison_sections(results: Results, comparison: Comparison, out_dir: Path, *,
                        vector: str | None) -> list[Section]:
    """The comparison's figures, drawn by verdict in the latency layout (slow-down change in pp, then the judged speed
    metric's change in %); the answer above them and the method behind a fold are :mod:`perfsuite.report.answer`'s."""
    sections = []
    for d in change_data(results.frame, comparison):
        paths = tuple(save_figure(verdict_figure(d), out_dir, d.stem, vector=vector))
        legend = names_legend(a for a in d.adapters if a != "none")
        if d.metric == "slowdown":
            sections.append(Section("Change of the slow-down, by verdict", paths, (),
                                    "Colour and ▲/▼ only where the comparison confirmed a change; grey cells moved "
                                    "less than it could tell from noise (their change in small print). " + legend,
                                    drawn=False))
        else:
            sections.append(Section("Change of the time, by verdict", paths, (),
                                    "The same comparison on the cells' times (probe-normalised where recorded, as "
                                    "judged): a change that slows the plain model and the adapters alike shows here, "
                                    "not in the slow-down. " + legend, drawn=False))
    return sections


def names_legend(adapters) -> str:
    """"Figure names: Adapter^H = houlsby, …": the papers' names the figures use, and the command line's."""
    pairs = [f"{plain_label(adapter_label(a))} = {a}" for a in adapters if adapter_label(a) != a]
    return f"Figure names: {', '.join(pairs)}." if pairs else ""


# --- HTML ------------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: 12.5px; }
th, td { border: 1px solid #d5d5d5; padding: 2px 7px; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } td.hole { color: #888; font-style: italic;
         text-align: center; background: repeating-linear-gradient(135deg, #f3f3f3 0 4px, #fff 4px 8px); }
tr.strong td { font-weight: 600; background: #fff0f0; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #555; } .files { color: #555; font-size: 12.5px; }
p.headline { font-size: 1.15em; font-weight: 600; margin: .6em 0; } p.detect { max-width: 60em; }
details.method { margin: 1.5em 0; } details.method > summary { font-weight: 600; cursor: pointer; }
ul.missing li { font-family: ui-monospace, monospace; font-size: 12.5px; }
"""


def _html_section(s: Section) -> list[str]:
    parts = [f"<h2>{html.escape(s.title)}</h2><p class=\"note\">{html.escape(s.note)}</p>"]
    if s.html:
        parts.append(s.html + "<p class=\"files\">Static image: " + " · ".join(
            f"<a href=\"{html.escape(p.name)}\">{html.escape(p.name)}</a>" for p in s.figures) + "</p>")
    elif s.figures:
        png = s.figures[0].name
        parts.append(f"<a href=\"{html.escape(png)}\"><img src=\"{html.escape(png)}\" alt=\"{html.escape(s.title)}\""
                     f"{_display_width(s.figures[0])}>"
                     f"</a><p class=\"files\">" + " · ".join(f"<a href=\"{html.escape(p.name)}\">{html.escape(p.name)}</a>"
                                                              for p in s.figures) + "</p>")
    elif s.drawn:
        parts.append("<p class=\"note\">No cell has a number to draw.</p>")
    return parts + [html_table(t) for t in s.tables]


def _html_answer(lead: Answer) -> list[str]:
    parts = [f"<p class=\"headline\">{html.escape(lead.headline)}</p>"]
    if lead.moved is not None:
        parts.append(html_table(lead.moved))
    parts += [f"<p class=\"note\">{html.escape(line)}</p>" for line in lead.others]
    parts.append(f"<p class=\"detect\">{html.escape(lead.detectable)}</p>")
    return parts


def _html_fold(lead: Answer) -> str:
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in lead.method)
    return ("<details class=\"method\"><summary>Method, and every metric's verdict</summary>"
            f"<ul>{lines}</ul>" + "".join(html_table(t) for t in lead.verdicts) + "</details>")


def _display_width(png: Path) -> str:
    """A figure shown at 100 px per inch, from the resolution its PNG records (matplotlib writes it; PNG_DPI for the
    report's figures), so the first screen holds the verdicts and a figure; a PNG that records none as it is."""
    try:
        from PIL import Image  # matplotlib's own dependency

        with Image.open(png) as im:
            dpi = im.info.get("dpi")
            return f" width=\"{round(im.width * 100 / float(dpi[0]))}\"" if dpi and float(dpi[0]) > 0 else ""
    except (OSError, ValueError, TypeError):
        return ""


def html_page(title: str, head: list[Table], comparison: list[Section], missing: list[str], sections: list[Section],
              extra_files: list[str], *, lead: Answer | None = None, notes: Sequence[str] = (),
              body_end: str = "") -> str:
    """The page: the answer first (when compared), the comparison's figures, the method folded, then the runs,
    what is missing and every other figure with its numbers. ``body_end``: HTML (a script) closing the body."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p class=\"note\">{html.escape(n)}</p>" for n in notes]
    if lead is not None:
        parts += _html_answer(lead)
    for s in comparison:
        parts += _html_section(s)
    if lead is not None:
        parts.append(_html_fold(lead))
    parts += [html_table(t) for t in head]
    if missing:
        parts.append("<h2>Missing</h2><ul class=\"missing\">"
                     + "".join(f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>")
    for s in sections:
        parts += _html_section(s)
    if extra_files:
        parts.append("<p class=\"files\">Data: " + " · ".join(f"<a href=\"{html.escape(f)}\">{html.escape(f)}</a>"
                                                              for f in extra_files) + "</p>")
    scripts = list(dict.fromkeys(sec.script for sec in (*comparison, *sections) if sec.script))
    parts.append(f"{''.join(scripts)}{body_end}</body></html>\n")
    return "\n".join(parts)


# --- Markdown --------------------------------------------------------------------------------------


def _link(name: str) -> str:
    """A file of the report as a Markdown link target: percent-encoded, so no name can end it or add HTML."""
    return urllib.parse.quote(name)


def _markdown_section(s: Section) -> list[str]:
    """A section in Markdown; titles and notes carry recorded strings (models, machines): inert text."""
    parts = [f"### {markdown_text(s.title)}\n\n{markdown_text(s.note)}"]
    if s.figures:
        alt = markdown_text(s.title).replace("[", "\\[").replace("]", "\\]")
        parts.append(f"![{alt}]({_link(s.figures[0].name)})\n\n"
                     + " · ".join(f"[{markdown_text(p.name)}]({_link(p.name)})" for p in s.figures))
    elif s.drawn:
        parts.append("_No cell has a number to draw._")
    # φ grids stay on the HTML page (and in subspace_phi.csv): too long for a pull-request comment.
    return parts + [markdown_table(t) for t in s.tables if not t.title.startswith("φ(i, j)")]


def markdown_page(title: str, head: list[Table], comparison: list[Section], missing: list[str],
                  sections: list[Section], extra_files: list[str], *, lead: Answer | None = None,
                  notes: Sequence[str] = ()) -> str:
    """The page in Markdown (summary.md, a pull-request comment); every recorded string in it is inert text."""
    parts = [f"## {markdown_text(title)}", *map(markdown_text, notes)]
    if lead is not None:
        parts.append(f"**{markdown_text(lead.headline)}**")
        if lead.moved is not None:
            parts.append(markdown_table(lead.moved))
        parts += [f"- {markdown_text(line)}" for line in lead.others]
        parts.append(markdown_text(lead.detectable))
    for s in comparison:
        parts += _markdown_section(s)
    if lead is not None:
        body = "\n".join(f"- {markdown_text(line)}" for line in lead.method) + "\n\n" + "\n\n".join(
            markdown_table(replace(t, collapsed=False)) for t in lead.verdicts)
        parts.append(f"<details><summary>Method, and every metric's verdict</summary>\n\n{body}\n\n</details>")
    parts += [markdown_table(t) for t in head]
    if missing:
        parts.append("### Missing\n\n" + "\n".join(f"- {markdown_code(m)}" for m in missing))
    for s in sections:
        parts += _markdown_section(s)
    if extra_files:
        parts.append("Data: " + " · ".join(f"[{f}]({f})" for f in extra_files))
    return "\n\n".join(parts) + "\n"
