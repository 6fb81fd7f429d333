"""Report, step 2 — the tables under each figure, from the same grids (:mod:`perfsuite.report.data`), and
the run metadata and what the report cannot show. Written by :mod:`perfsuite.table`'s writers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perfsuite.cells.grid import PAPER_WORKLOADS
from perfsuite.formats.record import STATUS_OK, STATUS_OUTSIDE_BUDGET
from perfsuite.formats.results import Results
from perfsuite.report.data import (CELL_NOTES, MAX_LISTED, MISSING, NO_DATA, Grid, LatencyData, RecomputeData,
                                   adapter_label, is_number, sizes)
from perfsuite.report.phi_data import MAX_INLINE_PHI_CELLS, SubspaceGroup, panel_title
from perfsuite.table import Table
from perfsuite.measure.paired import NOISY_IQR_PCT

def fmt(v: Any, digits: int = 1, suffix: str = "") -> str:
    """A number for a table; "" for None/NaN, so a missing value is blank, never 0."""
    return f"{v:.{digits}f}{suffix}" if is_number(v) else ""


def fmt_signed(v: Any, digits: int = 1) -> str:
    return f"{v:+.{digits}f}" if is_number(v) else ""


def fmt_sig(v: Any) -> str:
    return f"{v:.4g}" if is_number(v) else ""


def plain_label(text: str) -> str:
    """Mathtext labels as plain text for the tables: Adapter$^H$ → AdapterH."""
    for a, b in (("$^{\\parallel}$", "∥"), ("$^", ""), ("$_", "_"), ("{", ""), ("}", ""), ("$", ""),
                 ("\\Delta ", "Δ"), ("\\phi", "φ")):
        text = text.replace(a, b)
    return text


def latency_tables(data: LatencyData) -> list[Table]:
    """Slow-down (%) as drawn, then the medians in ms: a row per (adapter, seq len, r), a column per batch; where
    device time was measured apart from wall time (CUDA events), the slow-down on device time and the host-bound
    share too."""
    batches = next(iter(data.panels.values())).cols if data.panels else ()
    tables = []
    device = (("device slowdown", data.device, 1, "Slow-down against r = 0 on device time (%), CUDA events", ""),
              ("host bound", data.host_bound, 0, "Host-bound share of wall time (%): the device idle", "")
              ) if data.device else ()
    for name, grids, digits, title, note in (
            ("slowdown", data.panels, 1, "Slow-down against r = 0 (%)",
             f"† noisy: IQR of the timed rounds above {NOISY_IQR_PCT:g} % of their median."),
            ("time", data.times, 3, "Median time per forward pass (ms); r = 0 is the plain model", ""), *device):
        rows = []
        for a in data.adapters:
            if a == "none" and name in ("slowdown", "device slowdown"):
                continue  # the plain model against itself: 0 by definition
            for s in data.seq_lens:
                g = grids[(a, s)]
                for i, r in enumerate(g.rows):
                    who = "none" if r == 0 else plain_label(adapter_label(a))
                    rows.append((who, str(s), str(r), *(cell_text(g, i, j, digits, mark_noisy=name == "slowdown")
                                                      for j in range(len(g.cols)))))
        tables.append(Table(title, ("adapter", "seq len", "r", *(f"b={b}" for b in batches)), tuple(rows),
                            note=note if any(g.noisy for g in grids.values()) and name == "slowdown" else "",
                            collapsed=name != "slowdown"))
    return tables


def cell_text(g: Grid, i: int, j: int, digits: int, *, suffix: str = "", mark_noisy: bool = False) -> str:
    """A grid position as the tables print it: its number (with its runs' lowest–highest, where it is a median of
    several runs), or why it has none."""
    s = g.status[i][j]
    if s != STATUS_OK:
        return CELL_NOTES.get(s, s)
    text = fmt(g.values[i, j], digits, suffix) + ("†" if mark_noisy and (i, j) in g.noisy else "")
    if (i, j) in g.spread:
        lo, hi = g.spread[(i, j)]
        text += f" ({fmt(lo, digits)} to {fmt(hi, digits)})"
    return text


def recompute_tables(data: RecomputeData) -> list[Table]:
    tables = []
    for p in data.panels:
        head = ("batch \\ window", *(str(w) for w in p.cost.cols))
        note = "blank: outside the token budget (batch × window over it), not run."
        for grid, what, digits, suffix, extra in (
                (p.cost, "recompute cost (% of output tokens rolled back)", 2, "%", ""),
                (p.throughput, "throughput normalised to the best cell", 2, "",
                 f" 1.00 = {p.best_tok_s:,.1f} tokens/s." if is_number(p.best_tok_s) else "")):
            rows = tuple((str(b), *(cell_text(grid, i, j, digits, suffix=suffix) for j in range(len(grid.cols))))
                         for i, b in enumerate(grid.rows))
            has_blank = any(s == STATUS_OUTSIDE_BUDGET for line in grid.status for s in line)
            who = plain_label(p.title) if "(" in p.title else f"{plain_label(p.title)} ({sizes(*p.key[2:])})"
            tables.append(Table(f"{who}: {what}", head, rows,
                                note=((note if has_blank else "") + extra).strip()))
        if p.margins is not None and np.isfinite(p.margins.values).any():
            rows = tuple((str(b), *(_margin_text(p, i, j) for j in range(len(p.cost.cols))))
                         for i, b in enumerate(p.cost.rows))
            tables.append(Table(f"{who}: how near a tie the greedy decisions were", head, rows, collapsed=True,
                                note="1st percentile of the top-1 − top-2 logit margin (fp32) of the verified "
                                     "decisions, and in brackets the exact ties: the nearer a tie, the likelier "
                                     "a rounding difference flips the token."))
    return tables


def _margin_text(p, i: int, j: int) -> str:
    if p.margins.status[i][j] != STATUS_OK:
        return cell_text(p.margins, i, j, 3)
    ties = p.ties.values[i, j] if p.ties is not None else float("nan")
    return f"{p.margins.values[i, j]:.3g}" + (f" ({int(ties)})" if is_number(ties) else "")


def gpu_state_table(rows: list[dict]) -> Table | None:
    """The GPU's state around each loop (NVML), beside the times it explains; None when no cell has one."""
    with_state = [r for r in rows if isinstance(r.get("gpu_state_before"), dict)]
    if not with_state:
        return None

    def show(r):
        a, b = r["gpu_state_before"], r.get("gpu_state_after") or {}
        return (r["cell_id"], f"{a.get('sm_clock_mhz')} → {b.get('sm_clock_mhz')}", str(a.get("max_sm_clock_mhz")),
                f"{b.get('temperature_c')}", fmt(b.get("power_w"), 0), str(r.get("gpu_throttled") or ""),
                "yes" if r.get("remeasured_throttled") else "")

    return Table("GPU state around each cell's loop", ("cell", "SM clock (MHz)", "max", "°C", "W", "throttled",
                                                       "re-measured"), tuple(show(r) for r in with_state),
                 collapsed=True, note="Read through NVML before and after each loop; a loop that ran throttled "
                                      "(SM clock below 75 % of its maximum, or a power/thermal slow-down) is "
                                      "measured once more.")


def subspace_tables(group: SubspaceGroup) -> list[Table]:
    rows = []
    for p in (*group.panels, *group.controls):
        k = min(p.r_a, p.r_b)
        rows.append((str(p.layer) if p.comparison != "control" else "", p.matrix if p.comparison != "control" else "",
                     p.comparison, f"{p.r_a} × {p.r_b}", fmt(p.phi[0, 0], 3), fmt(float(np.mean(np.diag(p.phi[:k, :k]))), 3),
                     fmt(float(p.phi.mean()), 3), "" if p.top_agree is None else str(p.top_agree), p.label))
    summary = Table(plain_label(group.title), ("layer", "matrix", "comparison", "r_a × r_b", "φ(1,1)", "mean φ(i,i)",
                                               "mean φ", "top agree", "label"), tuple(rows),
                    note="Every φ(i, j) is in subspace_phi.csv.")
    tables = [summary]
    for p in (*group.panels, *group.controls):
        if p.phi.size <= MAX_INLINE_PHI_CELLS:
            tables.append(Table(f"φ(i, j): {plain_label(panel_title(p))}", ("i \\ j", *(str(j + 1) for j in range(p.r_b))),
                                tuple((str(i + 1), *(fmt(v, 2) for v in p.phi[i])) for i in range(p.r_a)),
                                collapsed=True))
    return tables


# --- run metadata, what is missing, baseline verdicts ----------------------------------------------


def run_table(results: Results) -> Table:
    rows = []
    for r in results.runs:
        commit = str(r.commit or "")[:10]
        rows.append((str(r.source or "").rsplit("/", 1)[-1], str(r.datetime or "")[:19].replace("T", " "),
                     commit + (f" ({r.branch})" if r.branch else ""), str(r.profile or ""),
                     str(r.device or ""), str(r.device_name or ""), str(r.dtype or ""),
                     str(r.torch_version or ""), str(r.cuda_version or ""),
                     "" if r.threads is None else str(r.threads),
                     "" if r.rounds is None else f"{r.rounds} (+{r.warmup or 0} warm-up)",
                     str(r.selection or "")))
    return Table("Runs", ("file", "date (UTC)", "commit", "profile", "device", "device name", "dtype", "torch", "CUDA",
                          "threads", "rounds", "cell selection"), tuple(rows))


def missing_lines(results: Results, drawn: dict[str, str] | None = None) -> list[str]:
    """What the report cannot show, one line each: unreadable files, absent workloads, cells that did not
    run (with their reason), and positions of a drawn grid without a number (``drawn``: cell id → status).
    More than MAX_LISTED cells with the same reason share one line."""
    lines = [f"could not read {e}" for e in results.errors]
    frame = results.frame
    present = set(frame["workload"]) if len(frame) else set()
    absent = [w for w in PAPER_WORKLOADS if w not in present]
    if absent:
        lines.append(f"not in these results: {', '.join(absent)}")
    groups: dict[str, list[str]] = {}
    for rec in frame.to_dict("records"):
        if rec.get("status") not in (STATUS_OK, STATUS_OUTSIDE_BUDGET):
            why = f": {rec['reason']}" if isinstance(rec.get("reason"), str) and rec["reason"] else ""
            groups.setdefault(f"did not run ({rec['status']}{why})", []).append(rec["cell_id"])
    for cell_id, status in (drawn or {}).items():
        if status in (MISSING, NO_DATA):
            why = "in no result file" if status == MISSING else "ran, but recorded no number"
            groups.setdefault(why, []).append(cell_id)
    for why, ids in groups.items():
        if len(ids) <= MAX_LISTED:
            lines += [f"{i} {why}" if why.startswith("did not") else f"{i}: {why}" for i in ids]
        else:
            lines.append(f"{len(ids)} cells {why}: {', '.join(ids[:MAX_LISTED])} and {len(ids) - MAX_LISTED} more")
    return lines


