"""Hand-checkable and property tests of theory/ (Definition 4.1, Eq. 4.1, Definition A.1, bounds)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import subspace_angles
from scipy.stats import ortho_group

from theory import bounds, diversity


def test_aggregate_roundtrip_and_layout():
    users = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    agg = diversity.aggregate(users)
    assert agg.shape == (3, 4)
    np.testing.assert_array_equal(agg[:, :2], users[0])
    np.testing.assert_array_equal(agg[:, 2:], users[1])
    np.testing.assert_array_equal(diversity.split(agg, 2), users)


@pytest.mark.erratum(1)
def test_nu_and_tail_by_hand():
    # aggregate = diag(3, 2, 1) padded: singular values 3, 2, 1 with N = 3 users of d2 = 1.
    users = np.zeros((3, 3, 1))
    for i, s in enumerate((3.0, 2.0, 1.0)):
        users[i, i, 0] = s
    assert diversity.nu(users, k=2) == pytest.approx(4.0 / 3)  # sigma_2^2 / N
    assert diversity.tail(users, k=2) == pytest.approx(1.0)
    assert diversity.tail(users, k=1) == pytest.approx(5.0)
    np.testing.assert_allclose(diversity.per_user_bias(users, k=2), [0, 0, 1])


@pytest.mark.erratum(5)
def test_best_rank_k_is_eckart_young():
    rng = np.random.default_rng(0)
    users = rng.normal(size=(4, 5, 2))
    b, w, theta = diversity.best_rank_k(users, 2)
    np.testing.assert_allclose(b.T @ b, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(theta, np.einsum("dk,nke->nde", b, w))
    err = np.sum((users - theta) ** 2)
    assert err == pytest.approx(diversity.tail(users, 2))
    assert np.linalg.matrix_rank(diversity.aggregate(theta)) == 2


@settings(max_examples=40, deadline=None)
@given(d=st.integers(2, 12), k=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_principal_angle_distance_two_formulas_agree(d, k, seed):
    k = min(k, d)
    rng = np.random.default_rng(seed)
    b1 = ortho_group.rvs(d, random_state=rng)[:, :k] if d > 1 else np.ones((1, 1))
    b2 = ortho_group.rvs(d, random_state=rng)[:, :k]
    a = diversity.principal_angle_distance(b1, b2)
    c = diversity.principal_angle_distance_complement(b1, b2)
    assert a == pytest.approx(c, abs=1e-10)
    # independent oracle: sqrt(sum sin^2 of principal angles)
    assert a == pytest.approx(np.sqrt(np.sum(np.sin(subspace_angles(b1, b2)) ** 2)), abs=1e-8)
    assert diversity.principal_angle_distance(b1, b1) == pytest.approx(0, abs=1e-7)
    assert 0 <= a <= np.sqrt(min(k, d - k)) + 1e-9


def test_distance_rejects_non_orthonormal():
    with pytest.raises(ValueError, match="orthonormal"):
        diversity.principal_angle_distance(np.ones((3, 1)), np.eye(3)[:, :1])


def test_bad_k_is_rejected():
    with pytest.raises(ValueError, match="rank k"):
        diversity.nu(np.ones((2, 3, 1)), k=3)


@pytest.mark.erratum(11)
def test_bracketing_dimensions_match_proposition_1():
    N, d1, d2, k = 10, 20, 4, 3
    assert bounds.class_dimension("shared", N, d1, d2, k) == k * (d1 + N * d2)
    assert bounds.class_dimension("local", N, d1, d2, k) == N * k * (d1 + d2)
    assert bounds.class_dimension("full", N, d1, d2, k) == N * d1 * d2
    assert bounds.class_dimension("global", N, d1, d2, k) == d1 * d2  # erratum 11: a reference
    lb = bounds.log_bracketing("shared", N, 100, d1, d2, k, delta=0.1)
    assert lb == pytest.approx(k * (d1 + N * d2) * np.log(N * 100 / 0.1))
    with pytest.raises(ValueError, match="unknown method"):
        bounds.class_dimension("lora", N, d1, d2, k)


@pytest.mark.erratum(2)
def test_dist_bound_slopes():
    kw = dict(N=10, d1=20, d2=4, k=3)
    np_grid = np.array([1e3, 1e4, 1e5])
    # No tail: slope in Np is -1/2 up to the log factor's correction, and exactly -1/2 in nu.
    s_np = bounds.local_log_slope(lambda x: bounds.dist_bound(Np=x, nu=0.1, tail=0.0, **kw), np_grid)
    assert np.all((s_np > -0.5) & (s_np < -0.4))
    s_nu = bounds.local_log_slope(lambda x: bounds.dist_bound(Np=100, nu=x, tail=0.0, **kw), np.array([0.01, 0.1]))
    np.testing.assert_allclose(s_nu, -0.5, atol=1e-6)
    # Tail-dominated: inside the root the bias scales as tail^(1/4), outside as tail^(1/2).
    big = np.array([1e2, 1e3])
    s_in = bounds.local_log_slope(lambda t: bounds.dist_bound(Np=1e12, nu=0.1, tail=t, **kw), big)
    s_out = bounds.local_log_slope(
        lambda t: bounds.dist_bound(Np=1e12, nu=0.1, tail=t, placement="outside", **kw), big)
    np.testing.assert_allclose(s_in, 0.25, atol=1e-3)
    np.testing.assert_allclose(s_out, 0.5, atol=1e-3)


def test_dist_bound_slope_in_N_matches_closed_form():
    # Without tail and ignoring the log's derivative, the N-slope is -1/2 * d1/(d1 + N d2).
    d1, d2, k, Np = 20, 4, 3, 1e6
    N = np.array([5.0, 20.0, 80.0])

    def f(n):
        return bounds.dist_bound(N=n, Np=Np, nu=0.1, tail=0.0, d1=d1, d2=d2, k=k)

    measured = bounds.local_log_slope(f, N)
    closed = -0.5 * d1 / (d1 + N * d2)
    log_corr = 0.5 / np.log(N * Np / 0.1)  # derivative of the log(N Np / delta) factor
    np.testing.assert_allclose(measured, closed + log_corr, atol=1e-6)


DEFAULT = dict(N=20, d1=12, d2=3, k=2, nu=0.1, delta=0.1)  # sim.model.config.SimConfig's instance


def _b1_by_hand(N, Np, nu, tail, d1, d2, k, delta, min_bias=0.0):
    """Eq. B.1's bracket, written out from the paper (Prop. 1 for log N_G)."""
    log_ng = k * (d1 + N * d2) * np.log(N * Np / delta)
    return min_bias + log_ng / (N * Np * nu) + np.sqrt(tail / N) / nu + (k * d2 + np.log(N / delta)) / Np


@pytest.mark.erratum(4)
def test_zeta_is_a_radius_with_the_proofs_np_exponent():
    # The proof of Thm B.2 uses zeta as the Frobenius radius (reward error <= L_1 zeta), so
    # zeta ~ sqrt(bracket) falls like Np^(-1/2) up to the log; closed-form local slope:
    # d log sqrt(s)/d log Np with s = (A log(N Np/delta) + P)/Np is (A/(A log + P) - 1)/2.
    N, d1, d2, k, nu, delta = DEFAULT.values()
    A, P = k * (d1 + N * d2) / (N * nu), k * d2 + np.log(N / delta)
    grid = np.array([20.0, 100.0, 400.0, 1e4, 1e8])
    slope = bounds.local_log_slope(
        lambda x: bounds.zeta_theory(N, x, nu, 0.0, d1, d2, k, delta=delta), grid)
    closed = 0.5 * (A / (A * np.log(N * grid / delta) + P) - 1)
    np.testing.assert_allclose(slope, closed, atol=1e-6)
    assert abs(slope[-1] + 0.5) < 0.03 and np.all(slope < -0.4)
    # values: the radius itself, sqrt of the bracket (5.52 / 2.69 / 1.44 at the sim's default)
    z = bounds.zeta_theory(N, grid[:3], nu, 0.0, d1, d2, k, delta=delta, c=0.5)
    np.testing.assert_allclose(z, 0.5 * np.sqrt(_b1_by_hand(N, grid[:3], nu, 0.0, d1, d2, k, delta)))
    # a tail or a bias term is a floor: the radius then stops shrinking
    flat = bounds.local_log_slope(
        lambda x: bounds.zeta_theory(N, x, nu, 0.4, d1, d2, k, min_bias=0.01, delta=delta), [1e10])
    assert abs(flat[0]) < 1e-3


@pytest.mark.erratum(9)
def test_zeta_uses_the_smallest_bias_theorem_42_the_users_own():
    N, d1, d2, k, nu, delta = DEFAULT.values()
    b = np.array([0.3, 0.01, 0.2])
    user = bounds.gap_bound_user(N, 100, nu, 0.5, d1, d2, k, b_i=b, delta=delta)
    np.testing.assert_allclose(user, np.sqrt(_b1_by_hand(N, 100, nu, 0.5, d1, d2, k, delta) + b))
    zeta = bounds.zeta_theory(N, 100, nu, 0.5, d1, d2, k, min_bias=b.min(), delta=delta)
    assert np.all(zeta <= user + 1e-12) and zeta == pytest.approx(user[1])


@pytest.mark.erratum(3, 7, 8)
def test_corollary_41_by_hand_and_its_tail_floor():
    N, d1, d2, k, nu, delta = DEFAULT.values()
    # erratum 3: log(N_G(1/(N Np))/delta); erratum 8: no N >= mu^2 Sigma_tail condition (tail > N here)
    for Np, tail in ((50, 0.0), (800, 0.4), (100, 25.0)):
        by_hand = np.sqrt(_b1_by_hand(N, Np, nu, tail, d1, d2, k, delta))
        assert bounds.gap_bound_average(N, Np, nu, tail, d1, d2, k, delta) == pytest.approx(by_hand)
    # erratum 7: as Np -> infinity the gap bound tends to (tail/N)^(1/4)/sqrt(nu), Remark 3's floor
    floor = bounds.gap_bound_average(N, 1e15, nu, 0.4, d1, d2, k, delta)
    assert floor == pytest.approx((0.4 / N) ** 0.25 / np.sqrt(nu), rel=1e-5)
    with pytest.raises(ValueError, match="nu must be positive"):
        bounds.gap_bound_average(Np=100, N=10, d1=20, d2=4, k=3, nu=0.0, tail=0.0)


@settings(max_examples=25, deadline=None)
@given(Np=st.floats(10, 1e5), tail=st.floats(0, 5), c=st.floats(1e-3, 1e3))
def test_gap_bounds_fall_with_np_and_grow_with_tail(Np, tail, c):
    kw = dict(N=20, d1=12, d2=3, k=2, nu=0.1)
    for method in ("shared", "local", "full", "global"):
        g = bounds.gap_bound_class(method, Np=Np, tail=tail, c_bias=c, c_tail=c, **kw)
        assert bounds.gap_bound_class(method, Np=2 * Np, tail=tail, c_bias=c, c_tail=c, **kw) < g
        assert bounds.gap_bound_class(method, Np=Np, tail=tail + 1, c_bias=c, c_tail=c, **kw) >= g


@pytest.mark.erratum(13)
def test_class_gap_bounds_use_each_class():
    N, d1, d2, k, nu, delta = DEFAULT.values()
    Np = 400.0
    full = bounds.gap_bound_class("full", N, Np, nu, 0.0, d1, d2, k, delta)
    assert full == pytest.approx(np.sqrt(N * d1 * d2 * np.log(N * Np / delta) / (N * Np)))
    local = bounds.gap_bound_class("local", N, Np, nu, 0.0, d1, d2, k, delta)
    assert local == pytest.approx(np.sqrt(N * k * (d1 + d2) * np.log(N * Np / delta) / (N * Np)))
    assert bounds.gap_bound_class("shared", N, Np, nu, 0.3, d1, d2, k, delta) == pytest.approx(
        bounds.gap_bound_average(N, Np, nu, 0.3, d1, d2, k, delta))
    # without bias the non-shared classes fall like Np^(-1/2) up to the log, at every Np
    s = bounds.local_log_slope(lambda x: bounds.gap_bound_class("full", N, x, nu, 0.0, d1, d2, k), [1e3, 1e9])
    np.testing.assert_allclose(s, -0.5 + 0.5 / np.log(N * np.array([1e3, 1e9]) / delta), atol=1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        bounds.class_bias("lora", N, nu, 0.0, k)


@pytest.mark.erratum(13)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), frac=st.floats(0.01, 0.8), nu=st.floats(0.02, 0.12))
def test_class_biases_bound_the_classes_approximation_errors(seed, frac, nu):
    from sim.model.truth import make_ground_truth

    N, d1, d2, k = 10, 8, 3, 2
    tail = frac * (d1 - k) * nu * N  # keeps the spectral gap sigma_k > sigma_{k+1}
    truth = make_ground_truth(N, d1, d2, k, nu, tail, 1.0, np.random.default_rng(seed))
    # local: mean per-user best rank-k error (Eckart-Young per user, by SVD)
    sv = np.linalg.svd(truth.delta, compute_uv=False)
    local_err = np.mean(np.sum(sv[:, k:] ** 2, axis=1))
    assert local_err <= bounds.class_bias("local", N, nu, tail, k) + 1e-9
    hetero = np.mean(np.sum((truth.delta - truth.delta.mean(0)) ** 2, axis=(1, 2)))
    assert hetero <= bounds.class_bias("global", N, nu, tail, k) + 1e-9
    assert bounds.class_bias("full", N, nu, tail, k) == 0


@pytest.mark.erratum(12)
def test_remark3_needs_one_over_eps_squared_like_the_bound_it_inverts():
    from scipy.optimize import brentq

    N, d1, d2, k, nu, delta = DEFAULT.values()
    eps = np.geomspace(0.5, 0.01, 6)
    # invert Corollary 4.1 (tail 0) numerically: Np with gap bound = eps
    def log_np_for(e):
        return brentq(lambda lnp: bounds.gap_bound_average(N, np.exp(lnp), nu, 0.0, d1, d2, k, delta) - e,
                      0.0, 80.0)

    need = np.array([log_np_for(e) for e in eps])
    slope_inverted = np.polyfit(np.log(eps), need, 1)[0]  # need is log Np
    slope_remark = np.polyfit(np.log(eps), np.log(bounds.sample_complexity("shared", eps, N, d1, d2, k)), 1)[0]
    assert slope_remark == pytest.approx(-2.0)
    # the inverted bound is -2 up to the log(N Np) factor, which steepens it slightly
    assert -2.35 < slope_inverted < -2.0
    full = bounds.sample_complexity("full", 0.1, N, np.array([5, 20, 80]), d2, k)
    shared = bounds.sample_complexity("shared", 0.1, N, np.array([5, 20, 80]), d2, k)
    assert np.all(np.diff(full / shared) > 0)  # full's need grows faster in d1
    with pytest.raises(ValueError, match="eps must be positive"):
        bounds.sample_complexity("full", 0.0, N, d1, d2, k)


@pytest.mark.erratum(6)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), d=st.integers(3, 10), k=st.integers(1, 3))
def test_lemma5_davis_kahan_form(seed, d, k):
    # For rank-k Theta and Theta*: dist(col Theta, col Theta*)^2 <= ||Theta - Theta*||_F^2 / sigma_k(Theta*)^2
    rng = np.random.default_rng(seed)
    k = min(k, d - 1)
    star = rng.normal(size=(d, k)) @ rng.normal(size=(k, 2 * d))
    other = star + rng.normal(scale=rng.uniform(0.01, 3), size=star.shape)
    u, s, vt = np.linalg.svd(other)
    other = (u[:, :k] * s[:k]) @ vt[:k]
    dist = diversity.principal_angle_distance(diversity.column_space(other, k), diversity.column_space(star, k))
    sigma_k = np.linalg.svd(star, compute_uv=False)[k - 1]
    assert dist**2 <= np.sum((other - star) ** 2) / sigma_k**2 + 1e-9
