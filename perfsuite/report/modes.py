"""Report — eager against another execution mode: where an adapter's slow-down is launch overhead, where device work.

For every (model, dtype, device, impl) whose latency cells ran eagerly and in CUDA graphs (or compiled), one
figure in the latency layout (a panel row per adapter, a column per sequence length; y = rank, x = batch). Each
cell reads ``eager → graphs``: the slow-down against r = 0 in eager mode and in the other mode, both from their own
paired loops; the colour is their difference in percentage points. A CUDA graph replays the same kernels without
the host launching them one by one, so what disappears is launch overhead (the extra dispatcher ops an adapter
adds), and what stays is the adapter's device work. The per-mode latency figures themselves are the ordinary
latency figures, one per mode (:mod:`perfsuite.report.data` keeps modes apart).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from perfsuite.cells.grid import DEFAULT_MODE
from perfsuite.report.data import MODE_LABELS, Grid, LatencyData, adapter_label, file_stem, latency_data, setup_label
from perfsuite.report.figures import LABEL_FONT, centred_norm, draw_grid, latency_layout, wrap_to
from perfsuite.report.tables import cell_text, plain_label
from perfsuite.table import Table

GAP_CMAP = "PuOr_r"  # orange: eager pays more than the other mode (launch overhead); purple: less
OTHER_MODES = ("graphs", "compile")  # drawn against eager, in this order, where present


@dataclass(frozen=True)
class ModeGapData:
    """Eager against ``other`` for one setup: the two slow-down grids per (adapter, seq len), and their gap."""

    stem: str
    setup: dict[str, str]  # the setup without its mode
    other: str
    adapters: tuple[str, ...]
    seq_lens: tuple[int, ...]
    eager: dict[tuple[str, int], Grid]  # slowdown_pct in eager mode
    moded: dict[tuple[str, int], Grid]  # slowdown_pct in the other mode, same positions
    gap: dict[tuple[str, int], Grid]  # eager − other (pp), where both have a number
    device_name: str = ""  # the machine that made the numbers ("synthetic ..." for planted files)


def _without_mode(setup: dict[str, str]) -> tuple:
    return tuple(sorted((k, v) for k, v in setup.items() if k != "mode"))


def _gap_grid(eager: Grid, other: Grid) -> Grid:
    values = eager.values - other.values  # NaN where either has no number
    status = tuple(tuple(e if e != "ok" else o for e, o in zip(er, orow)) for er, orow in zip(eager.status, other.status))
    return Grid(eager.title, eager.rows, eager.cols, values, status, eager.noisy | other.noisy)


def mode_gap_data(frame: pd.DataFrame) -> list[ModeGapData]:
    """One :class:`ModeGapData` per setup and non-eager mode that has both eager and that mode's latency cells."""
    by_setup: dict[tuple, dict[str, LatencyData]] = {}
    for data in latency_data(frame):
        by_setup.setdefault(_without_mode(data.setup), {})[data.setup.get("mode", DEFAULT_MODE)] = data
    pairs = [(k, m) for k, modes in sorted(by_setup.items()) for m in OTHER_MODES if DEFAULT_MODE in modes and m in modes]
    out = []
    for key, other in pairs:
        eager, moded = by_setup[key][DEFAULT_MODE], by_setup[key][other]
        positions = [p for p in eager.panels if p[0] != "none"  # the plain model: 0 → 0 by definition
                     and p in moded.panels and eager.panels[p].rows == moded.panels[p].rows
                     and eager.panels[p].cols == moded.panels[p].cols]
        if not positions:
            continue
        adapters = tuple(a for a in eager.adapters if any(p[0] == a for p in positions))
        seq_lens = tuple(s for s in eager.seq_lens if any(p[1] == s for p in positions))
        setup = dict(key)
        rows = frame[(frame["workload"] == "latency") & (frame["model"] == setup["model"])]
        names = sorted({str(n) for n in rows.get("device_name", pd.Series(dtype=object)).dropna()})
        out.append(ModeGapData(file_stem(f"modes-eager-vs-{other}", setup, len(pairs) > 1), setup, other, adapters,
                               seq_lens, {p: eager.panels[p] for p in positions}, {p: moded.panels[p] for p in positions},
                               {p: _gap_grid(eager.panels[p], moded.panels[p]) for p in positions}, ", ".join(names)))
    return out


def _title(data: ModeGapData) -> str:
    machine = f"\n{data.device_name}" if data.device_name else ""
    return (f"Slow-down against r = 0: eager → {MODE_LABELS.get(data.other, data.other)}\n"
            f"{setup_label(data.setup)}{machine}")


def mode_gap_figure(data: ModeGapData) -> Figure:
    """Each cell ``eager → other`` (slow-down %), coloured by the gap in pp: launch overhead the other mode removes."""
    norm = centred_norm(data.gap.values())
    cmap = colormaps[GAP_CMAP]

    def draw(ax, adapter, seq):
        e, o = data.eager[(adapter, seq)], data.moded[(adapter, seq)]
        labels = {}
        for i in range(len(e.rows)):
            for j in range(len(e.cols)):
                labels[(i, j)] = f"{e.values[i, j]:.0f}→{o.values[i, j]:.0f}"
        gap = data.gap[(adapter, seq)]
        positions = iter([(i, j) for i in range(len(gap.rows)) for j in range(len(gap.cols))
                          if gap.status[i][j] == "ok"])
        return draw_grid(ax, gap, cmap=cmap, norm=norm, label=lambda v: labels[next(positions)], fontsize=6.5)

    fig, axes, im = latency_layout(data.adapters, data.seq_lens, data.gap, draw)
    bar = fig.colorbar(im, ax=axes, aspect=max(12, 8 * len(data.adapters)), pad=0.02)
    bar.set_label(f"eager − {data.other} (pp)", fontsize=LABEL_FONT)
    fig.suptitle(wrap_to(_title(data), fig.get_figwidth(), 10), fontsize=10)
    return fig


def mode_gap_tables(data: ModeGapData) -> list[Table]:
    """The numbers as drawn: per (adapter, seq len, r), eager and the other mode's slow-down per batch."""
    batches = next(iter(data.gap.values())).cols if data.gap else ()
    rows = []
    for a in data.adapters:
        for s in data.seq_lens:
            e, o = data.eager[(a, s)], data.moded[(a, s)]
            for i, r in enumerate(e.rows):
                if r == 0:
                    continue  # 0 → 0 by definition
                rows.append((plain_label(adapter_label(a)), str(s), str(r),
                             *(f"{cell_text(e, i, j, 1)} → {cell_text(o, i, j, 1)}" for j in range(len(e.cols)))))
    return [Table(f"Slow-down against r = 0 (%), eager → {data.other}",
                  ("adapter", "seq len", "r", *(f"b={b}" for b in batches)), tuple(rows))]


NOTE = ("Each cell: the adapter's slow-down against the plain model in eager mode → in the other mode, each from its "
        "own paired loop; the colour is the difference (pp). What a CUDA graph removes is launch overhead; what "
        "stays is the adapter's device work.")
