"""The moderated t: special functions, variance components, the correlation-safe prior, one test, a group test."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from perfsuite.compare import moderated as md
from perfsuite.compare.moderated import Prior, components, family_prior, fit_prior, group_test, helmert, \
    moderated_test

scipy_special = pytest.importorskip("scipy.special")


# --- special functions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [1e-3, 0.1, 0.5, 1.0, 2.5, 6.0, 17.3, 400.0])
def test_digamma_and_trigamma_match_scipy(x):
    assert md.digamma(x) == pytest.approx(float(scipy_special.digamma(x)), rel=1e-10, abs=1e-10)
    assert md.trigamma(x) == pytest.approx(float(scipy_special.polygamma(1, x)), rel=1e-10)
    assert md._tetragamma(x) == pytest.approx(float(scipy_special.polygamma(2, x)), rel=1e-8)


@pytest.mark.parametrize("x", [0.05, 0.5, 1.0, 3.0, 40.0, 5000.0])
def test_trigamma_inverse_inverts(x):
    assert md.trigamma_inverse(md.trigamma(x)) == pytest.approx(x, rel=1e-6)


def test_helmert_contrasts_are_orthonormal_and_blind_to_the_mean():
    h = helmert(5)
    assert h.shape == (4, 5)
    assert np.allclose(h @ h.T, np.eye(4)) and np.allclose(h @ np.ones(5), 0)


# --- variance components and what a pool is worth ---------------------------------------------------------------

def _family(rng, loops=6, per_loop=10, runs=5, machine=0.02, loop=0.01, own=0.01, scale=None):
    """Per-run log estimates of a family: machine + loop + own, cells × runs."""
    t = loops * per_loop
    x = (rng.normal(0, machine, (1, runs)) + np.repeat(rng.normal(0, loop, (loops, runs)), per_loop, axis=0)
         + rng.normal(0, own, (t, runs)))
    if scale is not None:
        x = x * scale[:, None]
    return x, [i // per_loop for i in range(t)]


def test_components_recover_planted_variances_on_average():
    rng = np.random.default_rng(1)
    found = []
    for _ in range(400):
        x, loops = _family(rng)
        c = components(x @ helmert(5).T, loops)
        found.append((c.machine, c.loop, c.own))
    machine, loop, own = np.mean(found, axis=0)
    assert machine == pytest.approx(0.02 ** 2, rel=0.25)  # 4 df per draw: noisy, unbiased up to the clip at 0
    assert loop == pytest.approx(0.01 ** 2, rel=0.15) and own == pytest.approx(0.01 ** 2, rel=0.05)


def test_a_pool_is_worth_few_degrees_of_freedom_when_the_machine_dominates():
    independent = md.Components(0.0, 0.0, 1.0, 4, (10,) * 6)
    assert independent.eff_df == pytest.approx(4 * 60) and independent.mean_sq_corr == 0.0
    machine = md.Components(1.0, 0.0, 0.01, 4, (10,) * 6)  # every cell moves with the machine
    assert machine.eff_df < 4.2 and machine.mean_sq_corr > 0.95
    looped = md.Components(0.0, 1.0, 0.0, 4, (10,) * 6)  # each loop one unit: 6 loops' worth
    assert looped.eff_df == pytest.approx(4 * 6)


def test_correlated_cells_do_not_pass_for_a_homogeneous_family():
    """With a machine component, cells' spreads agree because they share runs: limma's moments alone call that a
    family of identical variances (d0 = inf); the correlation-aware fit keeps the cells' own spreads in play."""
    rng = np.random.default_rng(2)
    scale = np.exp(rng.normal(0, 0.5, 60))  # cells really differ (heterogeneous)
    x, loops = _family(rng, machine=0.03, loop=0.005, own=0.005, scale=scale)
    s2 = x.var(axis=1, ddof=1)
    naive = fit_prior(s2, np.full(60, 4.0), 0.0)
    c = components(x @ helmert(5).T, loops)
    aware = fit_prior(s2, np.full(60, 4.0), c.mean_sq_corr)
    assert aware[1] <= naive[1]


def test_the_prior_never_lends_more_than_the_pool_is_worth():
    rng = np.random.default_rng(3)
    x, loops = _family(rng, machine=0.05, loop=0.0, own=0.002)
    prior = family_prior(x, loops)
    assert prior.df + prior.base_d <= prior.cap + 1e-9 and prior.cap < 10


def test_a_family_too_small_or_one_run_long_has_no_prior():
    assert family_prior(np.zeros((2, 5)), [0, 0]).df == 0
    assert family_prior(np.ones((10, 1)), [0] * 10).df == 0
    holes = np.full((10, 5), np.nan)
    assert family_prior(holes, [0] * 10) == Prior.none()


# --- one test -----------------------------------------------------------------------------------------------------

def test_without_a_prior_it_is_students_pooled_t_at_its_level_and_power_follows_the_spread():
    """Run estimates ~ N(0, 2 %) between processes; 5 baseline runs, 1 current: A/A alarms at about α."""
    rng = np.random.default_rng(7)
    aa = [moderated_test(rng.normal(0, 0.02, 5), rng.normal(0, 0.02, 1), prior=Prior.none(), alpha=0.05,
                         min_effect_pct=0).p_value < 0.05 for _ in range(2000)]
    assert 0.035 <= np.mean(aa) <= 0.065
    hit = [moderated_test(rng.normal(0, 0.01, 5), rng.normal(np.log(1.10), 0.01, 5), prior=Prior.none()).verdict
           == "regression" for _ in range(200)]
    assert np.mean(hit) >= 0.95  # a 10 % step against 1 % between-run noise, 5 runs a side


def test_it_floors_the_spread_and_needs_degrees_of_freedom():
    x, y = np.log([1.0, 1.0, 1.0]), np.log([1.05])
    shift = moderated_test(x, y, prior=Prior.none())
    assert shift.p_value < 1e-12 and shift.verdict == "regression"
    floored = moderated_test(x, y, prior=Prior.none(), floor_sd=0.05)
    assert floored.noise_pct == pytest.approx(100 * (np.exp(0.05) - 1)) and floored.verdict != "regression"
    with pytest.raises(ValueError, match="one run on each side"):
        moderated_test([0.0], [0.1], prior=Prior.none())
    with pytest.raises(ValueError, match="NaN or infinity"):
        moderated_test([0.0, np.nan], [0.1], prior=Prior.none())


def test_a_prior_lends_degrees_of_freedom_and_narrows_the_gate():
    x, y = np.log([1.0, 1.02, 0.98]), np.log([1.10])
    alone = moderated_test(x, y, prior=Prior.none(), alpha=1e-4)
    helped = moderated_test(x, y, prior=Prior(0.02 ** 2, 40.0, 50.0, 2), alpha=1e-4)
    assert alone.df == 2 and helped.df == 42
    assert helped.detectable_pct < alone.detectable_pct / 3 and helped.p_value < alone.p_value


def test_a_one_run_baseline_can_lean_on_its_family():
    shift = moderated_test([0.0], [math.log(1.2)], prior=Prior(0.02 ** 2, 20.0, 30.0, 4), alpha=0.01)
    assert shift.df == 20 and shift.verdict == "regression"


def test_per_test_false_alarms_stay_at_the_level_in_a_correlated_family():
    """A family of 60 cells in 6 loops, a machine component as large as the rest: each cell's moderated test of
    an unchanged run rejects at about α (not more: the prior does not pretend the pool is independent)."""
    rng = np.random.default_rng(11)
    rejected = total = 0
    for _ in range(300):
        x, loops = _family(rng, runs=4, machine=0.015, loop=0.01, own=0.01)
        y, _ = _family(rng, runs=1, machine=0.015, loop=0.01, own=0.01)
        prior = family_prior(x, loops)
        for i in range(x.shape[0]):
            rejected += moderated_test(x[i], y[i], prior=prior, alpha=0.05, min_effect_pct=0).p_value < 0.05
            total += 1
    assert rejected / total <= 0.065


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.5, 0.5), min_size=2, max_size=6), st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=3),
       st.floats(-3, 3), st.floats(1e-6, 0.1), st.floats(0, 100))
def test_a_shift_of_both_sides_changes_nothing_and_p_is_a_probability(x, y, c, s2, d0):
    prior = Prior(s2, d0, d0 + 10, 2)
    a = moderated_test(x, y, prior=prior)
    b = moderated_test(np.array(x) + c, np.array(y) + c, prior=prior)
    assert 0.0 <= a.p_value <= 1.0 and a.verdict == b.verdict
    assert a.p_value == pytest.approx(b.p_value, abs=1e-9)


# --- a group of cells -----------------------------------------------------------------------------------------------

def test_a_group_test_sees_a_method_wide_move_no_lone_cell_shows():
    comp = md.Components(0.0, 0.0001, 0.0009, 4, (9,) * 18)  # slow-down sd 3 %, mostly the cell's own
    rng = np.random.default_rng(5)
    loops = list(range(18))
    diffs = rng.normal(math.log(1.05), math.sqrt(0.001 * 1.2), 18)  # +5 % on all 18 shapes
    shift = group_test(diffs, loops, comp=comp, base_runs=5, current_runs=1, alpha=0.01 / 900)
    assert shift.verdict == "regression"
    lone = [moderated_test(rng.normal(0, 0.03, 5), [d], prior=Prior(0.0009, 200, 300, 4), alpha=0.01 / 900).verdict
            for d in diffs]
    assert "regression" not in lone


def test_a_group_test_of_an_unchanged_method_is_at_its_level():
    """Components estimated from each night's 5-run baseline (18 loops of 9 cells, a machine part), the group one
    cell per loop: an unchanged method is called at about α, whatever the machine's share."""
    rng = np.random.default_rng(6)
    for machine in (0.002, 0.015):
        p = []
        for _ in range(1500):
            runs = _family(rng, loops=18, per_loop=9, runs=6, machine=machine, loop=0.015, own=0.02)[0]
            x, y = runs[:, :5], runs[:, 5]
            comp = components(x @ helmert(5).T, [i // 9 for i in range(162)])
            mine = np.arange(0, 162, 9)
            p.append(group_test(y[mine] - x[mine].mean(axis=1), list(range(18)), comp=comp, base_runs=5,
                                current_runs=1).p_value)
        assert 0.03 <= np.mean(np.array(p) < 0.05) <= 0.07, machine
