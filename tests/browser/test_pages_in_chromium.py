"""The report and the trends page as a person sees them: loaded in headless Chromium (Debian's ``chromium`` driven
through Playwright), with no console error, every image loaded, the verdicts and a figure on the first screen, the
trend charts drawn large on dated axes with commits, and a hover that shows a night's commit.

Skipped, with the reason, where Playwright or a Chromium binary is missing (``.ci/run`` installs both). Set
``PERFSUITE_SCREENSHOTS=DIR`` to keep the screenshots the tests take.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

import synthetic as syn

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = {"width": 1280, "height": 900}  # one screen of a laptop


@pytest.fixture(scope="module")
def browser():
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(BROWSERS)}); apt-get install chromium")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except sync_api.Error as e:
            pytest.skip(f"{exe} does not start headless: {str(e).splitlines()[0]}")
        yield b
        b.close()


def open_page(browser, path: Path):
    """The page loaded from disk, as a file:// URL, with every console error and page error collected."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, errors


def images_loaded(page) -> list[str]:
    """The src of every image that did not load (lazy ones are loaded first)."""
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    return page.evaluate("[...document.images].filter(i => !i.naturalWidth).map(i => i.src)")


def screenshot(page, name: str, tmp_path: Path, **kw) -> Path:
    folder = Path(os.environ.get("PERFSUITE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), **kw)
    return folder / name


def test_the_report_shows_the_verdicts_and_a_figure_by_verdict_on_its_first_screen(browser, tmp_path):
    from perfsuite.report import render_report

    results, doc = syn.planted_comparison()
    files = render_report(results, tmp_path / "report", comparison=doc, vector=None)
    page, errors = open_page(browser, files.index)
    assert images_loaded(page) == [] and page.evaluate("document.images.length") >= 3
    first = {name: page.locator(sel).first.bounding_box() for name, sel in (
        ("headline", "p.headline"), ("what moved", "h3:text('What moved')"), ("detect", "p.detect"),
        ("figure", "img[src='change-slowdown.png']"))}
    assert all(box is not None and box["y"] < VIEWPORT["height"] for box in first.values()), first
    assert "latency[lora-r8-b1-s32]" in page.locator("table").first.inner_text()
    fig = page.locator("img[src='change-slowdown.png']")
    assert fig.evaluate("i => i.naturalWidth") > 400
    assert not page.locator("details.method").evaluate("d => d.open")  # the method is folded
    screenshot(page, "report-first-screen.png", tmp_path)
    assert errors == []


def test_the_trends_page_of_sixty_nights_draws_large_dated_charts_and_hover_shows_the_commit(browser, tmp_path):
    pytest.importorskip("ruptures", reason="ruptures does not install on this Python")
    from perfsuite.cells.grid import get_profile
    from perfsuite.history.changes import find_changes
    from perfsuite.history.store import open_store
    from perfsuite.history.synthetic import build_store
    from perfsuite.history.trends import render_trends

    cells = get_profile("smoke").cells(device="cpu")
    lora = [c.id for c in cells if c.adapter == "lora"]
    commits = build_store(tmp_path / "h.sqlite", cells, 60, steps={cid: (30, 8.0) for cid in lora})
    with open_store(tmp_path / "h.sqlite") as store:
        files = render_trends(find_changes(store), tmp_path / "trends")
    page, errors = open_page(browser, files.index)
    assert images_loaded(page) == []
    charts = page.locator(".trend-chart")
    assert charts.count() >= 10
    for k in range(charts.count()):
        chart = charts.nth(k)
        assert chart.locator("svg").bounding_box()["width"] >= 600
        assert int(chart.get_attribute("data-drawn")) > 0
    stepped = page.locator(".trend-chart:has(rect.step)")
    assert stepped.count() >= 1
    chart = stepped.first
    assert chart.locator("circle.night").count() == 60 * len(chart.locator(".trend-legend span").all())
    ticks = chart.locator("svg .axes text").evaluate_all("els => els.map(e => e.textContent)")
    assert sum(bool(re.fullmatch(r"2026-\d\d-\d\d", t)) for t in ticks) >= 5  # a dated axis
    assert sum(t in {c[:7] for c in commits} for t in ticks) >= 5  # with the nights' commits
    chart.scroll_into_view_if_needed()
    dot = chart.locator("circle.night").nth(40)
    dot.hover()
    tip = chart.locator(".trend-tip")
    assert tip.is_visible()
    shown = re.search(r"commit ([0-9a-f]{7})", tip.inner_text())
    assert shown and shown.group(1) in {c[:7] for c in commits}, tip.inner_text()
    legend = page.locator(".trend-legend").all_inner_texts()
    assert not any("merged-" in t for t in legend)  # lora-merged's series are named by their shape, not "merged-…"
    screenshot(page, "trends-chart-hover.png", tmp_path, clip=chart.bounding_box())
    assert errors == []


def test_a_report_with_history_draws_the_same_charts(browser, tmp_path):
    """`perfsuite report --history` carries the trend sections: their charts and their script come with them."""
    pytest.importorskip("ruptures", reason="ruptures does not install on this Python")
    from perfsuite.cells.grid import get_profile
    from perfsuite.history.changes import find_changes
    from perfsuite.history.store import open_store
    from perfsuite.history.synthetic import build_store
    from perfsuite.history.trends import trend_sections
    from perfsuite.report import render_report

    cells = [c for c in get_profile("smoke").cells(device="cpu") if c.workload == "latency"]
    build_store(tmp_path / "h.sqlite", cells, 20)
    results, doc = syn.planted_comparison()
    with open_store(tmp_path / "h.sqlite") as store:
        sections = trend_sections(find_changes(store), tmp_path / "report")
    files = render_report(results, tmp_path / "report", comparison=doc, vector=None, trends=sections)
    page, errors = open_page(browser, files.index)
    assert images_loaded(page) == []
    charts = page.locator(".trend-chart")
    assert charts.count() == len(sections) and all(int(charts.nth(k).get_attribute("data-drawn")) > 0
                                                   for k in range(charts.count()))
    assert files.index.read_text().count("perfsuite trends: one interactive chart per") == 1  # the script, once
    assert errors == []
