"""One night's look at a series (perfsuite.history.looks): what is shown, what is filed, and that the nightly and
the measurement of it decide by the same function. Planted series and planted steps, seeded; no timing."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from workflow_fakes import github_issues

pytest.importorskip("ruptures", reason="ruptures does not install on this Python")

from perfsuite.cells.grid import get_profile  # noqa: E402
from perfsuite.cli import main  # noqa: E402
from perfsuite.history import looks  # noqa: E402
from perfsuite.history.changepoints import detect, inflation  # noqa: E402
from perfsuite.history.changes import changes_document, find_changes  # noqa: E402
from perfsuite.history.looks import (EARLY_STEP_SIGMAS, FILE_MIN_BEFORE_RUNS, LOOK_ALPHA, decide,  # noqa: E402
                                     exact_detection, filing_p, look)
from perfsuite.history.rows import EXACT_METRICS, METRICS, metric_rows, searched_metrics  # noqa: E402
from perfsuite.history.store import open_store  # noqa: E402
from perfsuite.history.synthetic import (Upgrade, build_store, commit_of, issues_opened,  # noqa: E402
                                         monitoring_false_issues, monitoring_power, night_records, simulated_series)

CELLS = get_profile("smoke").cells(device="cpu")




def planted(nights=60, at=40, pct=6.0, noise=0.005, seed=0):
    """A series of log-normal noise ``noise`` with a step of ``pct`` from night ``at``, and its search."""
    values = simulated_series(np.random.default_rng(seed), nights, noise, step_pct=pct, at=at)
    return values, detect(values)


def test_a_confirmed_step_with_enough_history_and_a_small_filing_p_is_filed():
    values, d = planted()
    (s,) = d.steps
    assert not s.provisional and filing_p(s, d, values) < LOOK_ALPHA
    assert decide(s, d, values).filed


def test_the_filing_p_allows_for_autocorrelation_the_series_cannot_rule_out(monkeypatch):
    values, d = planted(pct=3.0, noise=0.01, seed=2)
    (s,) = d.steps
    bounded = filing_p(s, d, values)
    # the same nights' spread (noise_pct is σ̂ inflated for φ̂), read as more autocorrelated: a larger bound
    more = dataclasses.replace(d, autocorrelation=0.5,
                               noise_pct=d.noise_pct / inflation(d.autocorrelation) * inflation(0.5))
    assert filing_p(s, more, values) > bounded, "a larger φ̂, a larger bound"
    monkeypatch.setattr(looks, "PHI_BOUND_SES", 0.0)
    assert filing_p(s, d, values) < bounded, "φ̂ alone would be more lenient"


@pytest.mark.parametrize("case, why", [("provisional", "provisional"), ("weak", "the level of"),
                                       ("early", "an early step needs")])
def test_a_shown_step_that_is_not_filed_says_why(case, why):
    if case == "provisional":
        values, d = planted(at=58, pct=10.0)
        (s,) = d.steps
        assert s.provisional
    elif case == "weak":  # the search's own α passes it; the nightly level does not
        values, d = planted(pct=2.2, noise=0.015, seed=2)
        (s,) = d.steps
        assert s.p_value < 0.01 and filing_p(s, d, values) >= LOOK_ALPHA
    else:  # a step in the first nights of a series, under 4 σ̂
        values, d = planted(at=12, pct=2.5, noise=0.0075, seed=1)
        (s,) = d.steps
        assert s.first < FILE_MIN_BEFORE_RUNS and filing_p(s, d, values) < LOOK_ALPHA
    filing = decide(s, d, values)
    assert not filing.filed and why in filing.reason


def test_an_early_step_is_filed_only_when_large_against_the_noise():
    values, d = planted(at=12, pct=10.0, noise=0.01, seed=1)
    (s,) = d.steps
    assert s.first < FILE_MIN_BEFORE_RUNS and abs(np.log1p(s.step_pct / 100)) > EARLY_STEP_SIGMAS * d.noise_pct / 100
    assert decide(s, d, values).filed
    noisier = dataclasses.replace(d, noise_pct=d.noise_pct * 3)  # the same step is under 4 σ̂ of a noisier series
    assert not decide(s, noisier, values).filed


def test_a_behaviour_change_is_always_filed():
    values = [0.0] * 5 + [31.25] * 2
    d = exact_detection(values)
    assert [decide(s, d, values).filed for s in d.steps] == [True]


@settings(max_examples=40, deadline=None)
@given(nights=st.integers(8, 70), at=st.integers(4, 66), pct=st.floats(-30, 60), noise=st.floats(0.002, 0.05),
       seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 1e3))
def test_filing_needs_a_confirmed_step_below_the_level_and_ignores_the_unit(nights, at, pct, noise, seed, scale):
    values = simulated_series(np.random.default_rng(seed), nights, noise, step_pct=pct, at=min(at, nights - 1))
    tonight, scaled = look(values), look(values * scale)
    for s, f in zip(tonight.detection.steps, tonight.filings):
        if f.filed:
            assert not s.provisional and filing_p(s, tonight.detection, values) < LOOK_ALPHA
    assert [f.filed for f in scaled.filings] == [f.filed for f in tonight.filings], "ms or s: the same decision"


# --- exact comparison of deterministic outcomes --------------------------------------------------------------------

def test_a_deterministic_series_changes_exactly_where_its_value_does():
    d = exact_detection([0.0] * 10 + [31.25] * 5 + [31.25])
    (s,) = d.steps
    assert (s.index, s.first, s.last, s.before, s.after, s.step_pct, s.test) == (10, 10, 10, 0.0, 31.25, None, "exact")
    assert [(g.start, g.stop, g.level) for g in d.segments] == [(0, 10, 0.0), (10, 16, 31.25)]
    assert exact_detection([2.0] * 30).steps == ()
    assert exact_detection([2.0, 3.0]).steps[0].step_pct == pytest.approx(50.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 12.5, 31.25]), min_size=0, max_size=80))
def test_every_change_of_a_deterministic_value_is_one_step_and_the_levels_cover_the_series(values):
    d = exact_detection(values)
    assert [s.index for s in d.steps] == [i for i in range(1, len(values)) if values[i] != values[i - 1]]
    assert sum(g.stop - g.start for g in d.segments) == len(values)
    assert all(set(values[g.start:g.stop]) == {g.level} for g in d.segments)
    assert all(f.filed for f in look(values, exact=True).filings)


# --- one night's look ----------------------------------------------------------------------------------------------

def test_a_step_is_shown_provisional_first_and_filed_once_it_has_lasted():
    values = simulated_series(np.random.default_rng(7), 60, 0.01, step_pct=10.0, at=40)
    young = look(values[:42])
    (s,) = young.detection.steps
    assert s.provisional and young.filed == ()
    settled = look(values)
    (s,) = settled.filed
    assert s.first <= 40 <= s.last and 7.0 < s.step_pct < 13.0
    assert look(simulated_series(np.random.default_rng(7), 60, 0.01)).detection.steps == ()


@pytest.mark.parametrize("seed", [5, 6, 16])
def test_a_false_step_of_an_autocorrelated_series_is_shown_on_some_night_but_never_filed(seed):
    """The issue's failure: every step shown opened an issue. These unchanged series (lag-1 autocorrelation 0.3)
    show a false step on some of their 60 nights; none is filed."""
    values = simulated_series(np.random.default_rng(seed), 60, 0.015, autocorrelation=0.3)
    assert any(look(values[:n]).detection.steps for n in range(1, 61))
    assert issues_opened(values) == (0, True)


# --- the nightly and the measurement decide by the same function ------------------------------------------------

@pytest.fixture
def spied(monkeypatch):
    """looks.decide replaced by a spy that files every step it is asked about (the real one would not)."""
    calls = []

    def spy(s, detection, values):
        calls.append(s)
        return looks.Filing(True, "spy")

    monkeypatch.setattr(looks, "decide", spy)
    return calls


def test_the_nightly_filing_path_and_the_simulation_call_the_same_decision_function(spied, tmp_path):
    # the nightly: the store's series → `history show --json`'s document → the issue script's filed points
    cells = [c for c in CELLS if c.id == "latency[lora-r8-b1-s32]"]
    build_store(tmp_path / "h.sqlite", cells, 20, steps={cells[0].id: (16, 10.0)}, seed=3)
    with open_store(tmp_path / "h.sqlite") as store:
        found = find_changes(store)
    doc = json.loads(json.dumps(changes_document(found, "h.sqlite")))
    nightly = len(spied)
    assert nightly >= 1 and doc["filed"] == nightly, "every step the spy filed is filed in the document"
    assert [p["filing"] for p in github_issues.filed_points(doc)] == ["spy"] * nightly
    # the simulation: the same spy decides, so the unchanged series that shows a false step (and, decided by the
    # real function, opens no issue: test above) opens one, and a series that shows none opens none
    values = simulated_series(np.random.default_rng(5), 60, 0.015, autocorrelation=0.3)
    opened, shown = issues_opened(values)
    assert len(spied) > nightly and shown and opened >= 1
    watched = monitoring_false_issues(30, 0.015, 4, seed=4)
    assert watched.with_issue.hits == watched.shown.hits


def test_without_the_spy_the_same_paths_file_what_decide_files(tmp_path):
    cells = [c for c in CELLS if c.id == "latency[lora-r8-b1-s32]"]
    build_store(tmp_path / "h.sqlite", cells, 20, steps={cells[0].id: (16, 10.0)}, seed=3)
    with open_store(tmp_path / "h.sqlite") as store:
        found = find_changes(store)
    points = [c for s in found for c in s.changes]
    assert points and all(c.filed == decide(s, f.detection, [p.value for p in f.series.points[f.start:]]).filed
                          for f in found for c, s in zip(f.changes, f.detection.steps))
    assert not any(c.filed for c in points), "4 nights after the step: shown, not yet filed"


# --- the monitoring measurement counts what it says ------------------------------------------------------------------

def test_a_step_found_night_after_night_with_a_drifting_range_opens_one_issue():
    values = simulated_series(np.random.default_rng(2), 60, 0.005, step_pct=10.0, at=30)
    assert issues_opened(values) == (1, True)
    assert issues_opened(simulated_series(np.random.default_rng(2), 60, 0.005)) == (0, False)


def test_monitoring_power_counts_shown_and_filed_steps():
    shown, filed = monitoring_power(40, 0.01, 10.0, 3, seed=0)
    assert (shown.hits, filed.hits, shown.trials) == (3, 3, 3)
    shown, filed = monitoring_power(40, 0.01, 0.5, 3, seed=0)  # under MIN_STEP_PCT: never a step
    assert shown.hits == filed.hits == 0


def test_simulate_prints_the_monitoring_table_and_refuses_a_bad_table(capsys):
    assert main(["history", "simulate", "--tables", "monitoring", "--looks", "12", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "| series with a false change-point issue |" in out and "| 12 | 1.5 % | 0 | 0/1 " in out
    assert "| 12 | 1.5 % | 0.3 |" in out and "searches 1566 series a night" in out
    assert main(["history", "simulate", "--tables", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tables" in err
    assert main(["history", "simulate", "--tables", "monitoring", "--looks", "8"]) == 2


# --- what the history stores and searches ---------------------------------------------------------------------------

def test_deterministic_outcomes_are_stored_even_at_zero():
    recs = {r.id: r for r in night_records(CELLS, 0, np.random.default_rng(0), steps={}, time_noise=0.03,
                                           ratio_noise=0.01)}
    rows = {m: v for m, v, *_ in metric_rows(recs["recompute[none-r0-b1-s16-w4-g16]"])}
    assert rows["recompute_pct"] == 0.0 and rows["mismatches"] == 0.0 and rows["matches_fixed_schedule"] == 1.0
    assert not set(EXACT_METRICS) & {m for m, *_ in metric_rows(recs["latency[lora-r8-b1-s32]"])}


def test_the_per_night_family_of_the_paper_grid():
    cells = get_profile("paper").cells(device="cuda")
    assert sum(len(searched_metrics(c, gpu=True)) for c in cells) == 531 + 504 + 531  # 450 prefill and 81 decode-step cells
    assert sum(len(searched_metrics(c, gpu=False)) for c in cells) == 531 + 504


def test_the_cli_offers_every_stored_metric():
    from perfsuite.commands.history import METRIC_CHOICES

    assert METRIC_CHOICES == ("all", "auto", *METRICS)


def test_a_changed_recompute_pct_is_a_filed_behaviour_change_at_its_night(tmp_path, capsys):
    cell = "recompute[none-r0-b1-s16-w4-g16]"
    cells = [c for c in CELLS if c.workload == "recompute"]
    store = tmp_path / "h.sqlite"
    build_store(store, cells, 12, behaviour={cell: (9, 31.25)}, seed=1)
    assert main(["history", "show", "--store", str(store), "--json", str(tmp_path / "c.json")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "BEHAVIOUR" in line]
    (line,) = lines
    assert line.startswith(f"{cell}  recompute_pct  BEHAVIOUR CHANGED 0 → 31.25")
    assert f"commits {commit_of(8)[:7]}..{commit_of(9)[:7]} (1 nightly" in line and line.endswith("FILED")
    doc = json.loads((tmp_path / "c.json").read_text())
    (point,) = [p for p in doc["change_points"] if p["kind"] == "behaviour"]
    assert point["step_pct"] is None and point["filed"] and (point["before"], point["after"]) == (0.0, 31.25)
    (change,) = github_issues.changes(doc)
    title, body = github_issues.change_body(change, "https://example.invalid/run")
    assert "behaviour change in 1 cell(s)" in title and "| exact |" in body


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    """60 nightlies of six smoke cells (r = 0 and adapters); from night 40 torch 2.14 and every cell and its
    reference 1.3 × as slow: the slow-down ratio does not move, raw time does."""
    ids = {"latency[none-r0-b1-s32]", "latency[none-r0-b4-s32]", "latency[lora-r8-b1-s32]",
           "latency[lora-r8-b4-s32]", "latency[houlsby-r8-b1-s32]", "latency[parallel-r8-b4-s32]"}
    cells = [c for c in CELLS if c.id in ids]
    assert len(cells) == len(ids)
    path = tmp_path_factory.mktemp("upgrade") / "h.sqlite"
    build_store(path, cells, 60, upgrade=Upgrade(40, 1.3, "2.14.0+cpu"), seed=5)
    with open_store(path) as store:
        return find_changes(store), find_changes(store, metric="auto")


def test_an_environment_wide_slowdown_is_a_change_point_on_every_cells_raw_time(upgraded):
    found, _ = upgraded
    times = [s for s in found if s.series.metric == "time_ms"]
    assert len(times) == 6
    for s in times:
        (c,) = s.changes
        assert c.filed and 25.0 < c.step_pct < 35.0 and c.good.commit != c.bad.commit
        assert c.software_changes == ("torch 2.13.0+cpu → torch 2.14.0+cpu",)
        assert c.good.commit in {commit_of(n) for n in range(36, 40)} and c.at.commit == commit_of(40)
    assert not any(s.changes for s in found if s.series.metric == "slowdown_ratio"), "the ratio cancels it"
    doc = json.loads(json.dumps(changes_document(found, "h.sqlite")))
    (change,) = github_issues.changes(doc)
    assert len({p["cell_id"] for p in change.points}) == 6, "one change, one issue for the six cells"


def test_the_old_auto_search_saw_the_upgrade_only_on_the_plain_cells(upgraded):
    _, auto = upgraded
    stepped = {s.series.cell.id for s in auto if s.changes}
    assert stepped == {"latency[none-r0-b1-s32]", "latency[none-r0-b4-s32]"}


def test_peak_memory_is_searched_by_default_and_a_hoarding_adapter_is_filed(tmp_path):
    """An adapter that keeps a copy of its weights per call: +20 % peak memory from night 30, time unchanged."""
    from perfsuite.history.store import add_files
    from perfsuite.history.synthetic import night_document

    cell = next(c for c in CELLS if c.id == "latency[lora-r8-b1-s32]")
    rng = np.random.default_rng(0)
    for night in range(40):
        (rec,) = night_records([cell], night, rng, steps={}, time_noise=0.03, ratio_noise=0.015)
        peak = 48e6 * (1.2 if night >= 30 else 1.0)
        rec = dataclasses.replace(rec, metrics={**rec.metrics, "peak_mem_bytes": peak})
        path = tmp_path / f"n{night}.json"
        path.write_text(json.dumps(night_document([rec], night)))
        add_files(tmp_path / "h.sqlite", [path])
    with open_store(tmp_path / "h.sqlite") as store:
        found = find_changes(store)
    stepped = {s.series.metric: s.changes for s in found if s.changes}
    (c,) = stepped.pop("peak_mem_bytes")
    assert c.filed and c.at.commit == commit_of(30) and c.step_pct == pytest.approx(20.0)
    assert stepped == {}, "time and the slow-down ratio did not move"
