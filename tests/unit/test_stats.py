"""The statistics on seeded synthetic samples: exactness of U, calibration of the interval, the two gates."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from perfsuite.compare import stats
from perfsuite.formats.comparison import VERDICTS
from perfsuite.compare.stats import compare_samples, decide, mann_whitney, median_ratio, wilson_interval


def brute_force_u_counts(n, m):
    counts = [0] * (n * m + 1)
    for ys in itertools.combinations(range(n + m), m):  # positions of the y's in the pooled order
        counts[sum(pos - i for i, pos in enumerate(ys))] += 1  # x's below each y
    return counts


@pytest.mark.parametrize("n,m", [(1, 1), (1, 4), (3, 3), (4, 6), (7, 5)])
def test_exact_u_distribution_matches_enumeration(n, m):
    assert list(stats._u_counts(n, m)) == brute_force_u_counts(n, m)


def test_exact_p_value_of_complete_separation():
    # 3 vs 3, every y above every x: P(U = 9) = 1/20, two-sided 0.1 — never significant at 1 % with 3 samples.
    u, p = mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert u == 9 and p == pytest.approx(0.1)


def test_normal_approximation_agrees_with_exact(monkeypatch):
    rng = np.random.default_rng(1)
    x, y = rng.lognormal(0, 0.05, 20), rng.lognormal(0.03, 0.05, 20)
    _, exact = mann_whitney(x, y)
    monkeypatch.setattr(stats, "EXACT_MAX_N", 0)
    _, approx = mann_whitney(x, y)
    assert approx == pytest.approx(exact, abs=2e-3)


def test_ties_are_mid_ranked():
    u, p = mann_whitney([1.0, 1.0, 2.0, 2.0] * 6, [1.0, 1.0, 2.0, 2.0] * 6)
    assert u == pytest.approx(24 * 24 / 2) and p == pytest.approx(1.0)


def test_the_effect_is_the_ratio_of_medians():
    x = np.random.default_rng(2).lognormal(0, 0.1, 25)
    change, low, high, p = median_ratio(x, 1.1 * x, alpha=0.05)
    assert change == pytest.approx(10.0)
    assert low < 10.0 < high and p < 0.05


def test_the_bootstrap_is_deterministic():
    rng = np.random.default_rng(3)
    x, y = rng.lognormal(0, 0.05, 30), rng.lognormal(0.02, 0.05, 30)
    assert median_ratio(x, y) == median_ratio(x.copy(), y.copy())


@pytest.mark.parametrize("contaminated", [False, True])
def test_interval_covers_the_true_ratio_at_its_level(contaminated):
    """95 % intervals over 300 seeded pairs of 30 samples contain the true +4 % about 95 % of the time, also when a
    fifth of the samples of each run are slowed by 0-100 % (one-sided, as a descheduled thread does)."""
    rng = np.random.default_rng(4)

    def run(shift):
        v = rng.lognormal(shift, 0.03, 30)
        if contaminated:
            hit = rng.random(30) < 0.2
            v[hit] *= 1 + rng.random(hit.sum())
        return v

    true = 100 * (math.exp(0.04) - 1)  # equal contamination scales both medians alike
    hits = 0
    for _ in range(300):
        _, low, high, _ = median_ratio(run(0.0), run(0.04), alpha=0.05)
        hits += low <= true <= high
    assert 0.91 <= hits / 300 <= 0.99


def test_contamination_does_not_hide_a_five_percent_slowdown():
    """The case that made us prefer medians to ranks: 20 % of both runs far off, the clean rounds 5 % apart."""
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(100):
        x, y = rng.lognormal(0, 0.005, 30), rng.lognormal(math.log(1.05), 0.005, 30)
        x[:6] *= rng.uniform(1.1, 1.5, 6)  # slow outliers in the baseline
        y[:6] *= rng.uniform(0.75, 0.95, 6)  # a hiccup in the r = 0 call makes a current ratio low
        found += compare_samples(x, y).verdict == "regression"
    assert found >= 95


def test_too_few_samples_give_no_interval_and_no_verdict():
    shift = compare_samples([1.0, 1.1], [2.0, 2.2])
    assert shift.ci_low_pct == -math.inf and shift.ci_high_pct == math.inf
    assert shift.verdict == "inconclusive"


@pytest.mark.parametrize("change,low,high,p,expected", [
    (6.0, 4.0, 8.0, 0.001, "regression"),
    (-6.0, -8.0, -4.0, 0.001, "improvement"),
    (1.0, 0.5, 1.5, 0.001, "unchanged"),  # real, but below the minimum effect
    (0.2, -1.0, 1.0, 0.5, "unchanged"),  # not significant, and the interval rules out a 3 % change
    (2.0, -1.0, 5.0, 0.2, "unchanged"),  # not significant; a 3 % change is possible, a 6 % one is not
    (0.5, -7.0, 8.0, 0.6, "unchanged"),  # noisy: the interval (reported beside it) says what could hide in it
    (6.0, -1.0, 12.0, 0.02, "inconclusive"),  # as large as the minimum effect, but not significant at 1 %
])
def test_decide_applies_both_gates(change, low, high, p, expected):
    assert decide(change, low, high, p, alpha=0.01, min_effect_pct=3.0) == expected


def test_false_alarms_and_power_on_synthetic_noise():
    """iid log-normal noise, 2 % spread, 30 samples a side (a cell's rounds): A/A never regresses, +5 % is found."""
    rng = np.random.default_rng(4)
    aa = [compare_samples(rng.lognormal(0, 0.02, 30), rng.lognormal(0, 0.02, 30)).verdict for _ in range(300)]
    hit = [compare_samples(rng.lognormal(0, 0.02, 30), rng.lognormal(math.log(1.05), 0.02, 30)).verdict
           for _ in range(300)]
    assert aa.count("regression") <= 3  # ≤ 1 %
    assert hit.count("regression") >= 285  # ≥ 95 %


def test_wilson_interval():
    low, high = wilson_interval(0, 300)
    assert low == 0.0 and 0.01 < high < 0.015
    low, high = wilson_interval(150, 300)
    assert low < 0.5 < high


# --- invariants ---------------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 40)
spreads = st.floats(0.001, 0.5)


def draw(seed, n, spread, shift=0.0):
    return np.random.default_rng(seed).lognormal(shift, spread, n)


@settings(max_examples=60, deadline=None)
@given(seeds, sizes, spreads)
def test_identical_samples_never_regress(seed, n, spread):
    x = draw(seed, n, spread)
    shift = compare_samples(x, x.copy())
    assert shift.verdict in ("unchanged", "inconclusive")
    assert shift.change_pct == 0.0 and shift.p_value > 0.9


@settings(max_examples=60, deadline=None)
@given(seeds, seeds, sizes, sizes, spreads, st.floats(-0.3, 0.3), st.floats(1e-3, 1e3))
def test_scaling_both_runs_keeps_the_verdict(seed_x, seed_y, n, m, spread, shift, factor):
    x, y = draw(seed_x, n, spread), draw(seed_y, m, spread, shift)
    a, b = compare_samples(x, y), compare_samples(factor * x, factor * y)
    assert a.verdict == b.verdict
    assert a.p_value == pytest.approx(b.p_value)
    assert a.change_pct == pytest.approx(b.change_pct, abs=1e-9)


anything = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(anything, anything)
# found by this test in a fresh clone (no example database): medians and ratios overflowed at float range's ends
@example([1.0] * 6 + [1e-300, 1], [1.0, 179769314.0, 1.0, 179769313.0, 179769314.0, 1.0, 1.0, 1.0])
@example([1.0] * 8, [1.0] * 6 + [8.98846567431158e307, 1])
@example([1.0], [1.797693134862316e306])
def test_a_verdict_never_comes_from_an_exception(x, y):
    """Bad input raises ValueError; good input gives a verdict with a real p-value and a finite change — nothing in
    between, anywhere in float range."""
    valid = all(math.isfinite(v) and v > 0 for v in x + y) and x and y
    if not valid:
        with pytest.raises(ValueError):
            compare_samples(x, y)
        return
    shift = compare_samples(x, y)
    assert shift.verdict in VERDICTS and 0.0 <= shift.p_value <= 1.0 and math.isfinite(shift.change_pct)


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(1, 40), spreads, st.floats(-0.3, 0.3))
def test_swapping_the_runs_never_gives_two_regressions(seed, n, spread, shift):
    """The effect mirrors exactly (ratio of medians), so a change cannot be a regression both ways round."""
    x, y = draw(seed, n, spread), draw(seed + 1, n, spread, shift)
    forward, backward = compare_samples(x, y), compare_samples(y, x)
    assert (1 + forward.change_pct / 100) * (1 + backward.change_pct / 100) == pytest.approx(1.0)
    assert "regression" not in (forward.verdict, backward.verdict) or forward.verdict != backward.verdict
    if forward.verdict == "regression":
        assert backward.verdict in ("improvement", "unchanged", "inconclusive")


# --- between runs: Student's t on run-level estimates ----------------------------------------------------------


@pytest.mark.parametrize("df, q, t", [(1, 0.995, 63.657), (4, 0.995, 4.604), (8, 0.995, 3.355), (4, 0.975, 2.776),
                                      (30, 0.975, 2.042), (10_000, 0.975, 1.960)])
def test_t_quantiles_match_the_tables(df, q, t):
    assert stats.t_quantile(q, df) == pytest.approx(t, abs=2e-3)
    assert stats.t_two_sided_p(t, df) == pytest.approx(2 * (1 - q), rel=2e-3)


@given(st.floats(0, 50), st.floats(0, 50), st.integers(1, 200))
def test_t_tail_is_monotone(a, b, df):
    lo, hi = sorted((a, b))
    assert stats.t_two_sided_p(hi, df) <= stats.t_two_sided_p(lo, df) + 1e-12
