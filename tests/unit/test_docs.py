"""The docs site (docs/, mkdocs.yml) and the README that points into it: the site builds with ``--strict`` (a broken
link, a missing anchor or image, a stale API name fails), its API page names every public name of perfsuite.api, the
README stays the front door and its links resolve, and the figures both quote agree with the tool's own output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import docs_figures
import synthetic as syn
from perfsuite import api
from perfsuite.cells.grid import get_profile, selected_cells
from perfsuite.estimate import HostCosts, analytic_timer, estimate
from perfsuite.report import verdict_figure

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_MAX_LINES = 250  # the front door: about two screens (issue 28)
NO_MKDOCS = "mkdocs is not installed (it comes with the test extra: pip install -e '.[test]'), so the site is not built"


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its successor, on every build
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, env=env, cwd=config.parent)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason=NO_MKDOCS)
    out = tmp_path_factory.mktemp("site")
    proc = build(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def nav_pages() -> list[str]:
    return re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)


def test_the_site_builds_strictly_with_every_page_in_its_nav(site):
    pages = nav_pages()
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))  # no page left out of the nav
    for page in pages:
        html = site / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")
        assert html.exists(), page
    assert {p.name for p in (DOCS / "img").iterdir()} <= {p.name for p in (site / "img").iterdir()}


@pytest.mark.parametrize("breakage, says", [
    ("[a section that is not there](verdicts.md#no-such-section)", "no-such-section"),
    ("[a page that is not there](no-such-page.md)", "no-such-page.md"),
    ("::: perfsuite.api.no_such_function", "no_such_function"),
])
def test_a_broken_link_or_a_stale_api_name_fails_the_build(tmp_path, breakage, says):
    """The strict build is a check that can fail: one broken reference in a copy of the docs stops it."""
    pytest.importorskip("mkdocs", reason=NO_MKDOCS)
    shutil.copytree(DOCS, tmp_path / "docs")
    with (tmp_path / "docs" / "running.md").open("a") as f:
        f.write(f"\n\n{breakage}\n")
    config = (ROOT / "mkdocs.yml").read_text().replace("paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "mkdocs.yml").write_text(config)
    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-3000:]


def public_api() -> list[str]:
    return [name for name, value in vars(api).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == "perfsuite.api"]


def test_the_api_page_documents_every_public_name_of_perfsuite_api(site):
    page = (site / "api" / "index.html").read_text()
    names = public_api()
    assert {"RunOptions", "RunResult", "run", "compare", "report", "ab", "history_add"} <= set(names)
    assert [n for n in names if f'id="perfsuite.api.{n}"' not in page] == []


README = (ROOT / "README.md").read_text()


def test_the_readme_is_the_front_door():
    assert len(README.splitlines()) <= README_MAX_LINES
    cpu_torch = README.index("download.pytorch.org/whl/cpu")
    assert cpu_torch < README.index("pip install -e . && perfsuite run")  # before a paste can pull the CUDA build
    assert cpu_torch < README.index("pip install -e '.[test]' && pytest")
    assert "![" in README.split("## Install", 1)[0]  # a picture of a verdict before the install


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading (mkdocs.yml asks pymdownx for the same slugs, so the site agrees)."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_link_of_the_readme_resolves_to_a_file_and_a_heading():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(local) >= 10
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), link
        if anchor:
            assert anchor in anchors(target), (link, sorted(anchors(target)))


def test_the_anchor_rule_is_githubs():
    assert github_anchor("Trained weights: `--weights DIR`") == "trained-weights---weights-dir"
    assert github_anchor("The real stack: transformers + peft, and trained weights") == (
        "the-real-stack-transformers--peft-and-trained-weights")


def panel_texts(fig) -> dict[str, list[str]]:
    return {ax.get_ylabel().split("\n")[-1]: [t.get_text() for t in ax.texts] for ax in fig.axes if ax.get_ylabel()}


def test_the_readmes_verdict_picture_and_its_reading_are_what_the_report_draws(tmp_path):
    """README's figure is the report's drawing of the planted comparison, and the numbers its reading quotes are
    the ones in that drawing: LoRA a marked +12.0, Adapter^H an unmarked +19.3, Adapter^L new."""
    texts = panel_texts(verdict_figure(docs_figures.planted_verdicts()))
    assert "+12.0" in texts["(lora)"] and "▲" in texts["(lora)"]
    assert texts["(houlsby)"] == ["+19.3"] and texts["(lin)"] == ["new"]
    for quoted in ("LoRA's slow-down grew by **+12.0 pp**", "Adapter^H's **+19.3 pp** is *inconclusive*",
                   "no baseline for the cell yet (Adapter^L)", "docs/img/verdict-planted.png"):
        assert quoted in README, quoted
    report_page = (DOCS / "report.md").read_text()
    assert "+12.0 pp is a confirmed regression" in report_page and "+19.3 pp is larger but inconclusive" in report_page
    committed = imread(DOCS / "img" / f"{docs_figures.VERDICT_STEM}.png")[..., :3]
    fresh = imread(docs_figures.write_verdict_figure(tmp_path))[..., :3]
    assert committed.shape == fresh.shape  # a stale picture: regenerate with `python tests/docs_figures.py`
    assert float(np.abs(committed - fresh).mean()) < 0.02


def cell_count(profile: str) -> int:
    """What `perfsuite cells --profile NAME` prints as its count."""
    proc = syn.cli("cells", "--profile", profile)
    assert proc.returncode == 0, proc.stderr
    return int(re.search(rf"^(\d+) cells in profile '{profile}'", proc.stdout, re.M).group(1))


PLANTED_HOST = HostCosts(svd_1024_s=0.5, dispatch_op_s=1e-5, meta_op_s=1e-4, init_param_s=1e-8)


def timed_forwards(profile: str, cells: str | None = None) -> str:
    """`perfsuite cells --estimate`'s "timed forward passes: A to B" (counts: they do not depend on the host)."""
    p = get_profile(profile)
    e = estimate(p, selected_cells(p, cells, device="cuda"), analytic_timer(), how="test", host=PLANTED_HOST)
    return f"{e.forwards_min:,} to {e.forwards_max:,}"


# (file, the text around the figure with {} where it stands, what the tool says). Times are not here: they are
# probed on the machine, and each page names the command and the machine that gave them (so are the serving grid's
# timed calls: counting them prices every serving group, 10 s of a test run).
QUOTED = [
    ("README.md", "every adapter; latency, recompute and subspace on the `tiny` model, {} cells", lambda: cell_count("smoke")),
    ("README.md", "one decode step of every adapter, {} cells", lambda: cell_count("paper")),
    ("docs/running.md", "every adapter; latency, recompute and subspace, {} cells:", lambda: cell_count("smoke")),
    ("docs/timing.md", "stays the eager smoke ({} cells)", lambda: cell_count("smoke")),
    ("docs/timing.md", "the timed forwards double,\n{}, modelled", lambda: timed_forwards("paper", "mode in ('eager', 'graphs')")),
    ("docs/serving.md", "the torchao bases: {} cells.", lambda: cell_count("serving-smoke")),
    ("docs/serving.md", "every quantization under LoRA: {} cells.", lambda: cell_count("serving")),
    ("docs/serving.md", "says {} cells, ", lambda: cell_count("serving")),
    ("docs/hf.md", "on both, {} cells |", lambda: cell_count("hf-smoke")),
    ("docs/hf.md", "with the ref twins ({} cells)", lambda: cell_count("hf-paper")),
    ("docs/hf.md", "16 + 8 tokens), {} cells |", lambda: cell_count("hf-modern-smoke")),
    ("docs/history.md", "raw time of its {} cells", lambda: cell_count("paper")),
]


@pytest.mark.parametrize("path, around, tool", QUOTED, ids=[f"{q[0]}:{q[1][:30]}" for q in QUOTED])
def test_a_figure_the_docs_quote_is_the_tools(path, around, tool):
    text = (ROOT / path).read_text()
    assert around.format(tool()) in text, f"{path} should say: {around.format(tool())!r}"



@pytest.mark.parametrize("picture", sorted(docs_figures.REPORT_FIGURES))
def test_a_picture_of_a_real_run_is_its_committed_reports_figure_as_the_report_draws_it_now(picture, tmp_path):
    """A docs picture of a measured run is the committed reference run's own figure, and that figure is what the
    report draws from the run's results.json today: a change to the figures that leaves a stale picture fails here
    (the home page showed the old layout, r = 0 rows and paper names only, after the report changed).
    Regenerate: the command in reports/README.md, then copy the figure to docs/img."""
    folder, figure = docs_figures.REPORT_FIGURES[picture]
    committed = docs_figures.REPORTS / folder / "report" / figure
    assert (DOCS / "img" / picture).read_bytes() == committed.read_bytes(), f"copy {committed} to docs/img/{picture}"
    api.report(docs_figures.REPORTS / folder / "results.json", tmp_path, vector="none")
    fresh = imread(tmp_path / figure)[..., :3]
    drawn = imread(committed)[..., :3]
    assert drawn.shape == fresh.shape, f"the report draws {figure} differently now: re-make {folder}"
    assert float(np.abs(drawn - fresh).mean()) < 0.02, f"the report draws {figure} differently now: re-make {folder}"
