"""The report step: tidy results → tables → heatmaps after the papers → a static summary page.

One module per step: :mod:`~perfsuite.report.tables` (numbers), :mod:`~perfsuite.report.figures`
(matplotlib, Agg-only, no pyplot), :mod:`~perfsuite.report.page` (index.html, summary.md).
The names below are the whole API.
"""

from perfsuite.report.figures import (latency_figure, recompute_figure, render_subspace, save_figure,
                                      subspace_figure)
from perfsuite.report.page import ReportFiles, render_report
from perfsuite.report.tables import (ReportError, check_comparison, latency_data, load_comparison, recompute_data,
                                     report_frame, subspace_groups, subspace_records)

__all__ = ["ReportError", "ReportFiles", "check_comparison", "latency_data", "latency_figure", "load_comparison",
           "recompute_data", "recompute_figure", "render_report", "render_subspace", "report_frame", "save_figure",
           "subspace_figure", "subspace_groups", "subspace_records"]
