"""The figures the README and the docs show that the tool draws from planted data, made the way the report makes
them, so a test can check the committed image and the numbers the text quotes against the tool's own drawing.

Regenerate after a change to the report's figures: ``python tests/docs_figures.py`` (writes under docs/img).
"""

from __future__ import annotations

from pathlib import Path

import synthetic as syn
from perfsuite.formats.comparison import Comparison
from perfsuite.report import change_data, verdict_figure
from perfsuite.report.data import ChangeData
from perfsuite.report.figures import save_figure

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
VERDICT_STEM = "verdict-planted"  # README's picture of a verdict: docs/img/verdict-planted.png
# The docs' pictures of real runs: each is a figure of a committed reference run (reports/, measured, with the machine
# named in reports/README.md), copied as it was drawn: docs/img NAME <- reports/FOLDER/report/FIGURE.
REPORT_FIGURES = {"latency-smoke.png": ("smoke-cpu", "latency.png"),
                  "hf-modern-smoke-llama-tiny.png": ("hf-modern-smoke-cpu", "latency-llama-tiny-float32-cpu-hf.png")}
REPORTS = IMG.parents[1] / "reports"


def planted_verdicts() -> ChangeData:
    """The slow-down figure of :func:`synthetic.planted_comparison`: a confirmed regression (LoRA), an inconclusive
    move larger than it (Adapter^H) and a new cell (Adapter^L) — synthetic, not measured."""
    results, doc = syn.planted_comparison()
    return {d.metric: d for d in change_data(results.frame, Comparison.from_dict(doc))}["slowdown"]


def write_verdict_figure(out_dir: Path = IMG) -> Path:
    return save_figure(verdict_figure(planted_verdicts()), out_dir, VERDICT_STEM, vector=None)[0]


if __name__ == "__main__":
    print(write_verdict_figure())
