"""The report step: tidy results → grids → figures after the papers → a static summary page.

One module per step: :mod:`~perfsuite.report.runs` (several runs' files → their medians),
:mod:`~perfsuite.report.data` (the grid model; :mod:`~perfsuite.report.phi_data` for φ),
:mod:`~perfsuite.report.tables` (the numbers under each figure), :mod:`~perfsuite.report.figures` (matplotlib,
Agg-only, no pyplot; the comparison by verdict in :mod:`~perfsuite.report.verdict_figure`),
:mod:`~perfsuite.report.answer` (the page's first screen: what moved, what could be seen) and
:mod:`~perfsuite.report.page` (index.html, summary.md). The names below are the whole API.
"""

from perfsuite.report.data import ReportError, change_data, latency_data, recompute_data, report_frame
from perfsuite.report.phi_data import subspace_groups, subspace_records
from perfsuite.report.figures import latency_figure, recompute_figure, render_subspace, save_figure, subspace_figure
from perfsuite.report.verdict_figure import VERDICT_STYLES, verdict_figure
from perfsuite.report.page import ReportFiles, render_report

__all__ = ["ReportError", "ReportFiles", "VERDICT_STYLES", "change_data", "latency_data", "latency_figure",
           "recompute_data", "recompute_figure", "render_report", "render_subspace", "report_frame", "save_figure",
           "subspace_figure", "subspace_groups", "subspace_records", "verdict_figure"]
