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


def test_nu_and_tail_by_hand():
    # aggregate = diag(3, 2, 1) padded: singular values 3, 2, 1 with N = 3 users of d2 = 1.
    users = np.zeros((3, 3, 1))
    for i, s in enumerate((3.0, 2.0, 1.0)):
        users[i, i, 0] = s
    assert diversity.nu(users, k=2) == pytest.approx(4.0 / 3)  # sigma_2^2 / N
    assert diversity.tail(users, k=2) == pytest.approx(1.0)
    assert diversity.tail(users, k=1) == pytest.approx(5.0)
    np.testing.assert_allclose(diversity.per_user_bias(users, k=2), [0, 0, 1])


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


def test_bracketing_dimensions_match_proposition_1():
    N, d1, d2, k = 10, 20, 4, 3
    assert bounds.class_dimension("shared", N, d1, d2, k) == k * (d1 + N * d2)
    assert bounds.class_dimension("local", N, d1, d2, k) == N * k * (d1 + d2)
    assert bounds.class_dimension("full", N, d1, d2, k) == N * d1 * d2
    lb = bounds.log_bracketing("shared", N, 100, d1, d2, k, delta=0.1)
    assert lb == pytest.approx(k * (d1 + N * d2) * np.log(N * 100 / 0.1))
    with pytest.raises(ValueError, match="unknown method"):
        bounds.class_dimension("lora", N, d1, d2, k)


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


def test_gap_bounds_and_zeta_are_monotone():
    kw = dict(N=10, d1=20, d2=4, k=3, nu=0.1, tail=0.01)
    g1, g2 = bounds.gap_bound_average(Np=100, **kw), bounds.gap_bound_average(Np=1000, **kw)
    assert g2 < g1
    assert bounds.gap_bound_user(Np=100, b_i=0.5, **kw) > bounds.gap_bound_average(Np=100, **kw)
    assert bounds.zeta_theory(Np=100, **kw) == pytest.approx(bounds.gap_bound_average(Np=100, **kw))
    with pytest.raises(ValueError, match="nu must be positive"):
        bounds.gap_bound_average(Np=100, N=10, d1=20, d2=4, k=3, nu=0.0, tail=0.0)


def test_remark3_sample_complexity_crossover():
    N, d2, k = 50, 4, 3
    d1 = np.array([5, 20, 80, 320])
    full = bounds.sample_complexity("full", 0.1, N, d1, d2, k)
    shared = bounds.sample_complexity("shared", 0.1, N, d1, d2, k)
    # shared grows like (d1 k + N d2 k)/N, full like d1 d2: shared wins from the start here
    np.testing.assert_allclose(shared / full, (d1 * k + N * d2 * k) / (N * d1 * d2))
    assert np.all(np.diff(full / shared) > 0)
