"""Report, step 1 — the grid model: the tidy frame → the grids each heatmap panel draws.

Every figure is drawn from :class:`Grid` objects built here, and the tables printed under each figure
(:mod:`perfsuite.report.tables`) are made from the same grids, so the page never shows a number the
picture does not. Nothing here imports matplotlib.

Over 350 lines on purpose: every panel's grid is built here from the same helpers (make_grid, records_by_setup,
LatencyAxes, the status rules); split, the report's one grid model would be in several places.
"""

from __future__ import annotations

import re

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from perfsuite.cells.grid import ADAPTER_NAMES, DEFAULT_MODE, HF_ADAPTER_NAMES, Cell
from perfsuite.measure.device_time import SOURCE_EVENTS
from perfsuite.errors import PerfsuiteError
from perfsuite.formats.comparison import Comparison
from perfsuite.formats.record import (STATUS_MISSING_EXTRA, STATUS_NO_DEVICE, STATUS_OK, STATUS_OOM,
                                      STATUS_OUTSIDE_BUDGET, STATUS_UNSUPPORTED)
from perfsuite.formats.results import Results
from perfsuite.measure.paired import NOISY_IQR_PCT
from perfsuite.table import figure_text

# Why a grid position has no number, besides the statuses a cell records (perfsuite.formats.record).
MISSING = "missing"  # no result file has a row for this position of the grid
NO_DATA = "no_data"  # the cell ran but recorded no number (e.g. pytest --benchmark-disable)
# What a panel writes in a cell without a number; "" leaves it blank (by design, not a failure).
CELL_NOTES = {STATUS_OOM: "OOM", STATUS_NO_DEVICE: "no device", STATUS_OUTSIDE_BUDGET: "", MISSING: "missing",
              NO_DATA: "no data", STATUS_MISSING_EXTRA: "not installed", STATUS_UNSUPPORTED: "unsupported"}
# Display names of the adapters, after the papers' notation (LoRA paper Table 1 / Fig. 5).
ADAPTER_LABELS = {"none": "plain model", "houlsby": "Adapter$^H$", "lin": "Adapter$^L$", "pfeiffer": "Adapter$^P$",
                  "adapterdrop": "Adapter$^D$", "parallel": "Adapter$^{\\parallel}$", "spectral-r": "Adapter$^R$",
                  "lora": "LoRA", "lora-merged": "LoRA (merged)", "dora": "DoRA", "vera": "VeRA", "adalora": "AdaLoRA",
                  "fourierft": "FourierFT", "ia3": "IA$^3$"}
SETUP_COLUMNS = ("model", "dtype", "device", "impl", "mode")  # a figure never mixes these
IMPL_LABELS = {"ref": "", "hf": "transformers + peft"}  # added to a setup's label
# A setup names these only when they are not the default (figure names and labels of ref eager runs unchanged).
SETUP_DEFAULTS = {"impl": "ref", "mode": DEFAULT_MODE}
MODE_LABELS = {"eager": "", "compile": "torch.compile", "graphs": "CUDA graphs"}
MAX_LISTED = 5  # cells named one per line in "Missing"; more with the same reason share a line


class ReportError(PerfsuiteError):
    pass


@dataclass(frozen=True)
class Grid:
    """One heatmap panel: ``values[i, j]`` at (``rows[i]``, ``cols[j]``), rows in drawing order (top first).

    ``status[i][j]`` is "ok" where ``values`` has a number, else why not: a cell status
    (oom, no_device, outside_budget) or MISSING / NO_DATA.
    """

    title: str
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    values: np.ndarray  # (len(rows), len(cols)) float, NaN where there is no number
    status: tuple[tuple[str, ...], ...]
    noisy: frozenset[tuple[int, int]] = frozenset()  # (i, j) of cells whose timing spread is large
    # (i, j) → (lowest, highest) run, where the number is the median of several runs (perfsuite.report.runs)
    spread: Mapping[tuple[int, int], tuple[float, float]] = field(default_factory=dict)


def any_numbers(grids: Iterable[Grid]) -> bool:
    """Whether any of these panels has a number to draw (a figure of gaps only is not drawn)."""
    return any(np.isfinite(g.values).any() for g in grids)


@dataclass(frozen=True)
class LatencyData:
    """LoRA paper Fig. 5: one panel row per adapter, one panel column per sequence length."""

    stem: str  # output file name without suffix
    setup: dict[str, str]
    adapters: tuple[str, ...]
    seq_lens: tuple[int, ...]
    panels: dict[tuple[str, int], Grid]  # (adapter, seq_len) → rank × batch grid of slowdown_pct
    times: dict[tuple[str, int], Grid]  # the same positions, time_ms
    # The same positions on device time (device_slowdown_pct, host_bound_pct), where it was measured apart from
    # wall time (CUDA events); empty on the CPU, where device time is wall time.
    device: dict[tuple[str, int], Grid] = field(default_factory=dict)
    host_bound: dict[tuple[str, int], Grid] = field(default_factory=dict)

    def grid(self, adapter: str, seq_len: int) -> Grid:
        return self.panels[(adapter, seq_len)]

    def cell_statuses(self) -> dict[str, str]:
        """Cell id → status of every drawn position; the shared r = 0 cells once."""
        out = {}
        for (a, s), g in self.panels.items():
            for i, j, status in _positions(g):
                adapter = "none" if g.rows[i] == 0 else a
                cell = Cell("latency", adapter, g.rows[i], batch=g.cols[j], seq_len=s, model=self.setup["model"],
                            impl=self.setup.get("impl", "ref"), mode=self.setup.get("mode", DEFAULT_MODE))
                out.setdefault(cell.id, status)
        return out


@dataclass(frozen=True)
class RecomputePanel:
    key: tuple[str, int, int | None, int | None]  # adapter, rank, seq_len (prompt), gen_len
    title: str
    cost: Grid  # batch × window of recompute_pct, batch 1 at the bottom
    throughput: Grid  # the same positions, throughput_tok_s / the panel's best
    best_tok_s: float
    margins: Grid | None = None  # the same positions: 1st percentile of the top-1 − top-2 logit margins
    ties: Grid | None = None  # the same positions: exact ties among the greedy decisions


@dataclass(frozen=True)
class RecomputeData:
    """LLM-42 Fig. 13: recompute cost and normalised throughput, batch × window, one panel row per setup."""

    stem: str
    setup: dict[str, str]
    panels: tuple[RecomputePanel, ...]

    def cell_statuses(self) -> dict[str, str]:
        """Cell id → status of every drawn position."""
        out = {}
        for p in self.panels:
            a, rank, prompt, gen = p.key
            for i, j, status in _positions(p.cost):
                cell = Cell("recompute", a, rank, batch=p.cost.rows[i], seq_len=prompt, window=p.cost.cols[j],
                            gen_len=gen, model=self.setup["model"], impl=self.setup.get("impl", "ref"))
                out[cell.id] = status
        return out


def _positions(g: Grid) -> list[tuple[int, int, str]]:
    return [(i, j, s) for i, line in enumerate(g.status) for j, s in enumerate(line)]


# --- small formatting helpers ----------------------------------------------------------------------


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def as_int(v: Any) -> int | None:
    return int(v) if is_number(v) else None


def adapter_label(name: str) -> str:
    return ADAPTER_LABELS.get(name) or figure_text(name)  # a contributed adapter's name: never mathtext


def _adapter_rank(name: str) -> int:
    """The plain model first, then the registry's order, then adapters it does not know."""
    names = ADAPTER_NAMES + tuple(a for a in HF_ADAPTER_NAMES if a not in ADAPTER_NAMES)
    return -1 if name == "none" else names.index(name) if name in names else len(names)


def adapter_order(names: Iterable[str]) -> list[str]:
    """The adapters (not "none") in drawing order."""
    return sorted(set(names) - {"none"}, key=lambda a: (_adapter_rank(a), a))


def records_by_setup(frame: pd.DataFrame, workload: str, *, paper_layout: bool = True
                     ) -> list[tuple[dict[str, str], list[dict]]]:
    """The workload's rows, grouped by (model, dtype, device, impl, mode): one figure each, in a stable order. A
    setup names its ``impl`` and ``mode`` only when they are not the defaults (ref, eager). Latency rows of a
    decode step or a quantized base are left out unless ``paper_layout`` is False: perfsuite.report.serving
    draws them."""
    rows = frame[frame["workload"] == workload].to_dict("records")
    if workload == "latency" and paper_layout:
        rows = [r for r in rows if r.get("phase") in (None, "prefill") or not isinstance(r.get("phase"), str)]
        rows = [r for r in rows if r.get("quant") in (None, "none") or not isinstance(r.get("quant"), str)]

    def value(r: dict, c: str) -> str:
        v = r.get(c)
        return str(v if isinstance(v, str) and v else SETUP_DEFAULTS.get(c, v))

    def key(r: dict) -> tuple[str, ...]:
        return tuple(value(r, c) for c in SETUP_COLUMNS)

    def setup(k: tuple[str, ...]) -> dict[str, str]:  # impl and mode only when not the defaults
        return {c: v for c, v in zip(SETUP_COLUMNS, k) if SETUP_DEFAULTS.get(c) != v}

    keys = sorted({key(r) for r in rows})
    return [(setup(k), [r for r in rows if key(r) == k]) for k in keys]


def file_stem(workload: str, setup: dict[str, str], many: bool) -> str:
    impl = f"-{setup['impl']}" if setup.get("impl", "ref") != "ref" else ""
    mode = f"-{setup['mode']}" if setup.get("mode", DEFAULT_MODE) != DEFAULT_MODE else ""
    stem = f"{workload}-{setup['model']}-{setup['dtype']}-{setup['device']}{impl}{mode}" if many else workload
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", stem)  # a file name inside the report folder, whatever a model is named


def setup_rows(frame: pd.DataFrame, workload: str, setup: dict[str, str]) -> list[dict]:
    """The workload's rows of one (model, dtype, device) setup."""
    return next((recs for s, recs in records_by_setup(frame, workload) if s == setup), [])


def setup_label(setup: dict[str, str]) -> str:
    impl = IMPL_LABELS.get(setup.get("impl", "ref"), setup.get("impl"))
    mode = MODE_LABELS.get(setup.get("mode", DEFAULT_MODE), setup.get("mode"))
    return figure_text(f"{setup['model']}, {setup['dtype']}, {setup['device']}" + (f", {impl}" if impl else "")
                       + (f", {mode}" if mode else ""))  # recorded names: plain text in a figure's title


# --- the tidy frame, for CSV -----------------------------------------------------------------------

RUN_COLUMNS = ("datetime", "commit", "branch", "profile", "selection")  # run metadata copied onto each row
# Integer columns that pandas holds as float when another workload leaves them empty; written as integers.
INT_COLUMNS = ("rank", "batch", "seq_len", "window", "gen_len", "rank_b", "rounds", "threads", "tokens", "flops",
               "mismatches", "peak_mem_bytes", "runs_combined")


def report_frame(results: Results) -> pd.DataFrame:
    """The tidy frame with each row's run metadata (``run_datetime``, ``run_commit``, …) and no φ grids
    (those go to subspace_phi.csv); list columns (raw samples) as JSON text, so it writes as flat CSV."""
    frame = results.frame.drop(columns=["subspace"], errors="ignore").copy()
    by_source = {r.source: r for r in results.runs}
    for key in RUN_COLUMNS:
        frame[f"run_{key}"] = [by_source[s].get(key) if s in by_source else None for s in frame.get("source", [])]
    for col in INT_COLUMNS:
        if col in frame.columns and frame[col].map(lambda v: v is None or not is_number(v) or float(v).is_integer()).all():
            frame[col] = pd.array([int(v) if is_number(v) else None for v in frame[col]], dtype="Int64")
    for col in frame.columns:
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (list, dict))).any():
            frame[col] = frame[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return frame


# --- latency: LoRA paper Figure 5 ------------------------------------------------------------------


def _cell_status(rec: dict | None, metric: str) -> str:
    if rec is None:
        return MISSING
    status = rec.get("status") or STATUS_OK
    if status == STATUS_OK and not is_number(rec.get(metric)):
        return NO_DATA
    return status


def make_grid(title: str, rows, cols, lookup, metric: str) -> Grid:
    values = np.full((len(rows), len(cols)), np.nan)
    status, noisy, spread = [], set(), {}
    for i, r in enumerate(rows):
        line = []
        for j, c in enumerate(cols):
            rec = lookup(r, c)
            s = _cell_status(rec, metric)
            if s == STATUS_OK:
                values[i, j] = float(rec[metric])
                if is_number(rec.get("iqr_pct")) and rec["iqr_pct"] > NOISY_IQR_PCT:
                    noisy.add((i, j))
                if is_number(rec.get(f"{metric}_lo")) and is_number(rec.get(f"{metric}_hi")):
                    spread[(i, j)] = (float(rec[f"{metric}_lo"]), float(rec[f"{metric}_hi"]))
            line.append(s)
        status.append(tuple(line))
    return Grid(title, tuple(rows), tuple(cols), values, tuple(status), frozenset(noisy), spread)


def as_reference(rec: dict | None) -> dict | None:
    """The r = 0 row is the reference every slow-down is measured against: 0 % by definition. The plain model is
    not timed against itself (schema 2), so its record has a time but no slow-down of its own."""
    if (rec is not None and (rec.get("status") or STATUS_OK) == STATUS_OK and is_number(rec.get("time_ms"))
            and not is_number(rec.get("slowdown_pct"))):
        return {**rec, "slowdown_pct": 0.0, **({"device_slowdown_pct": 0.0} if is_number(rec.get("device_ms")) else {})}
    return rec


def latency_key(rec: dict) -> tuple[str, int | None, int | None, int | None]:
    """(adapter, rank, seq_len, batch): where a latency record stands in the latency layout."""
    return rec["adapter"], as_int(rec["rank"]), as_int(rec["seq_len"]), as_int(rec["batch"])


@dataclass(frozen=True)
class LatencyAxes:
    """The axes of the latency layout (LoRA Fig. 5) over some latency keys: a panel per (adapter, seq len), and in
    each a row per rank and a column per batch. With ``with_base`` the plain model (r = 0) is a panel row of its own,
    "none", first: said once, not repeated as an r = 0 row in every adapter's panel."""

    adapters: tuple[str, ...]  # "none" first when the plain model has its row
    seq_lens: tuple[int, ...]
    batches: tuple[int, ...]
    ranks: dict[str, list[int]]

    @classmethod
    def of(cls, keys: Iterable[tuple], *, with_base: bool) -> "LatencyAxes":
        keys = list(keys)
        adapters = adapter_order(k[0] for k in keys)
        if with_base or not adapters:
            adapters = ["none", *adapters]
        ranks = {a: sorted({k[1] for k in keys if k[0] == a} - {None}) for a in adapters}
        ranks["none"] = [0]
        return cls(tuple(adapters), tuple(sorted({k[2] for k in keys} - {None})),
                   tuple(sorted({k[3] for k in keys} - {None})), ranks)

    def panels(self) -> list[tuple[str, int]]:
        """(adapter, seq len) of every panel, in drawing order."""
        return [(a, s) for a in self.adapters for s in self.seq_lens]

    def grid(self, adapter: str, seq_len: int, lookup, metric: str) -> Grid:
        """Panel (adapter, seq len): ``metric`` of ``lookup(rank, batch)`` at every rank × batch."""
        return make_grid(f"Seq Len = {seq_len}", self.ranks[adapter], list(self.batches), lookup, metric)


def latency_data(frame: pd.DataFrame) -> list[LatencyData]:
    """One :class:`LatencyData` per (model, dtype, device) among the latency rows; none without any."""
    setups = records_by_setup(frame, "latency")
    out = []
    for setup, recs in setups:
        by_key = {latency_key(r): r for r in recs}
        axes = LatencyAxes.of(by_key, with_base=any(r["adapter"] == "none" for r in recs))
        panels, times, device, host_bound = {}, {}, {}, {}
        on_device = any(r.get("device_time_source") == SOURCE_EVENTS for r in recs)
        for a, s in axes.panels():
            def lookup(r, b, a=a, s=s):
                if r == 0:
                    return as_reference(by_key.get((a, 0, s, b)) or by_key.get(("none", 0, s, b)))
                return by_key.get((a, r, s, b))

            panels[(a, s)] = axes.grid(a, s, lookup, "slowdown_pct")
            times[(a, s)] = axes.grid(a, s, lookup, "time_ms")
            if on_device:
                device[(a, s)] = axes.grid(a, s, lookup, "device_slowdown_pct")
                host_bound[(a, s)] = axes.grid(a, s, lookup, "host_bound_pct")
        out.append(LatencyData(file_stem("latency", setup, len(setups) > 1), setup, axes.adapters, axes.seq_lens,
                               panels, times, device, host_bound))
    return out


# --- recompute: LLM-42 Figure 13 -------------------------------------------------------------------


def recompute_data(frame: pd.DataFrame) -> list[RecomputeData]:
    setups = records_by_setup(frame, "recompute")
    out = []
    for setup, recs in setups:
        keys = sorted({(r["adapter"], as_int(r["rank"]), as_int(r["seq_len"]), as_int(r["gen_len"])) for r in recs},
                      key=lambda k: (_adapter_rank(k[0]), k[0], *(-1 if x is None else x for x in k[1:])))
        panels = []
        for key in keys:
            by_pos = {(as_int(r["batch"]), as_int(r["window"])): r for r in recs
                      if (r["adapter"], as_int(r["rank"]), as_int(r["seq_len"]), as_int(r["gen_len"])) == key}
            # Each panel spans its own batches and windows (a profile may give one adapter a smaller grid);
            # a position inside that span with no record is a lost cell.
            batches = sorted({b for b, _ in by_pos} - {None}, reverse=True)  # batch 1 at the bottom
            windows = sorted({w for _, w in by_pos} - {None})
            lookup = lambda b, w, by_pos=by_pos: by_pos.get((b, w))  # noqa: E731
            a, rank, prompt, gen = key
            title = adapter_label(a) + (f" r = {rank}" if rank else "")
            if len({k[2:] for k in keys}) > 1:  # rows differ in more than the adapter
                title += f" ({sizes(prompt, gen)})"
            cost = make_grid(title, batches, windows, lookup, "recompute_pct")
            tput = make_grid(title, batches, windows, lookup, "throughput_tok_s")
            best = float(np.nanmax(tput.values)) if np.isfinite(tput.values).any() else float("nan")
            norm = Grid(title, tput.rows, tput.cols, tput.values / best if best > 0 else tput.values * np.nan,
                        tput.status)
            panels.append(RecomputePanel(key, title, cost, norm, best, make_grid(title, batches, windows, lookup, "margin_p1"),
                                         make_grid(title, batches, windows, lookup, "exact_ties")))
        out.append(RecomputeData(file_stem("recompute", setup, len(setups) > 1), setup, tuple(panels)))
    return out


def sizes(prompt: int | None, gen: int | None) -> str:
    return f"prompt {prompt}, {gen} output tokens"


# --- the comparison in the latency layout ----------------------------------------------------------


@dataclass(frozen=True)
class ChangeData:
    """A comparison drawn in the latency figure's layout (LoRA Fig. 5): a panel per adapter and sequence length,
    rank × batch; the change of one metric at every position the comparison has a number for, and the verdict of
    every position it judged (new and missing cells have a verdict and no number: their grid status says which)."""

    stem: str
    metric: str  # "slowdown" (change in percentage points) or "time" (change in %: the judged speed metric)
    setup: dict[str, str]
    adapters: tuple[str, ...]
    seq_lens: tuple[int, ...]
    panels: dict[tuple[str, int], Grid]
    verdicts: dict[tuple[str, int], dict[tuple[int, int], str]]  # (i, j) -> the verdict of that cell on this metric
    cell_ids: dict[tuple[str, int], dict[tuple[int, int], str]] = field(default_factory=dict)  # (i, j) -> cell id

    def marks(self, adapter: str, seq_len: int) -> dict[tuple[int, int], str]:
        """The confirmed verdicts of one panel (regression, improvement)."""
        return {k: v for k, v in self.verdicts[(adapter, seq_len)].items() if v in CONFIRMED}


CHANGE_UNITS = {"slowdown": "pp", "time": "%"}
CONFIRMED = ("regression", "improvement")  # verdicts that say the change is real
NOT_COMPARED = "not_compared"  # a position of the grid the comparison has no entry for
# Speed is judged on the loop's probe-normalised time where recorded (the raw time is then shown, not judged).
SPEED_METRICS = ("norm_time", "time")


def change_metric(entry, metric: str):
    """The metric entry a change figure draws for ``metric``: the slow-down, or for "time" the judged speed metric."""
    if metric != "time":
        return entry.metric(metric)
    found = [entry.metric(m) for m in SPEED_METRICS if entry.metric(m) is not None]
    return next((m for m in found if m.is_judged), found[0] if found else None)


def change_data(frame: pd.DataFrame, comparison: Comparison) -> list[ChangeData]:
    """One :class:`ChangeData` per latency setup and metric that the comparison has numbers for."""
    entries = {c.cell_id: c for c in comparison.cells}
    setups = records_by_setup(frame, "latency")
    out = []
    for setup, recs in setups:
        has_base = any(r["adapter"] == "none" for r in recs)
        for metric in CHANGE_UNITS:
            # the plain model's row only for time: its own time change shows the uniform slow-downs
            axes = LatencyAxes.of(map(latency_key, recs), with_base=metric == "time" and has_base)
            panels, verdicts, ids = {}, {}, {}
            for a, s in axes.panels():
                def cell_id(r, b, a=a, s=s):
                    return Cell("latency", "none" if r == 0 else a, r, batch=b, seq_len=s, model=setup["model"],
                                impl=setup.get("impl", "ref"), mode=setup.get("mode", DEFAULT_MODE)).id

                def lookup(r, b, metric=metric, cell_id=cell_id):
                    entry = entries.get(cell_id(r, b))
                    if entry is None:
                        return {"status": NOT_COMPARED}
                    m = change_metric(entry, metric)
                    if m is None or m.change is None:  # new or missing: a verdict without a number
                        return {"status": entry.verdict}
                    return {"status": STATUS_OK, "change": m.change, "verdict": m.verdict}

                panels[(a, s)] = axes.grid(a, s, lookup, "change")
                verdicts[(a, s)], ids[(a, s)] = {}, {}
                for i, r in enumerate(axes.ranks[a]):
                    for j, b in enumerate(axes.batches):
                        found = lookup(r, b)
                        if found["status"] != NOT_COMPARED:
                            verdicts[(a, s)][(i, j)] = found.get("verdict", found["status"])
                            ids[(a, s)][(i, j)] = cell_id(r, b)
            if any_numbers(panels.values()):
                stem = file_stem(f"change-{metric}", setup, len(setups) > 1)
                out.append(ChangeData(stem, metric, setup, axes.adapters, axes.seq_lens, panels, verdicts, ids))
    return out
