"""Tests of sim/estimation/logistic.py: the exact ball trust-region solver and ball-constrained Newton
(the Eq. 3.1 ball), against cvxpy/Clarabel and by property tests."""

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.estimation.logistic import ball_logistic, logistic_loss, pad_index, trs_ball


def _cvxpy_ball_logistic(A, c, o, R):
    m, p = A.shape
    v = cp.Variable(p)
    z = A @ v + c
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(z) - cp.multiply(o, z)) / m),
                      [cp.norm(v) <= R])
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    return prob.value


@pytest.mark.parametrize("separable", [True, False])
def test_ball_logistic_matches_cvxpy(separable):
    rng = np.random.default_rng(3)
    m, p, R = 25, 6, 1.5
    A = rng.normal(size=(m, p))
    truth = rng.normal(size=p) * (4.0 if separable else 0.4)
    if separable:
        o = (A @ truth > 0).astype(float)  # the unconstrained MLE diverges: ball active
    else:
        o = (rng.random(m) < 1 / (1 + np.exp(-A @ truth))).astype(float)
    c = 0.1 * rng.normal(size=m)
    res = ball_logistic(A[None], c[None], o[None], np.full((1, m), 1 / m), R)
    ref = _cvxpy_ball_logistic(A, c, o, R)
    assert res.converged
    assert np.linalg.norm(res.v[0]) <= R * (1 + 1e-12)
    assert abs(res.obj[0] - ref) <= 1e-6 * abs(ref)
    assert res.obj[0] <= ref + 1e-9  # never worse than the interior-point answer
    if separable:
        assert np.linalg.norm(res.v[0]) == pytest.approx(R, rel=1e-9)


def test_ball_logistic_batches_independent_groups():
    rng = np.random.default_rng(0)
    G, m, p = 4, 30, 5
    A = rng.normal(size=(G, m, p))
    o = (rng.random((G, m)) < 0.5).astype(float)
    c = np.zeros((G, m))
    w = np.full((G, m), 1 / m)
    R = np.array([0.1, 1.0, 10.0, 2.0])
    batched = ball_logistic(A, c, o, w, R)
    for g in range(G):
        single = ball_logistic(A[g:g + 1], c[g:g + 1], o[g:g + 1], w[g:g + 1], R[g])
        assert batched.obj[g] == pytest.approx(single.obj[0], rel=1e-12, abs=1e-15)


def test_pad_index_round_trip():
    group = np.array([2, 0, 2, 1, 2])
    idx, mask = pad_index(group, 4)
    assert idx.shape == (4, 3)
    assert mask.sum(1).tolist() == [1, 1, 3, 0]
    assert idx[2][mask[2]].tolist() == [0, 2, 4]


@st.composite
def _trs_instances(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    p = draw(st.integers(1, 6))
    rank = draw(st.integers(0, p))
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(p, rank)) * draw(st.sampled_from([1e-3, 1.0, 100.0]))
    b = rng.normal(size=p) * draw(st.sampled_from([1e-6, 1.0, 10.0]))
    R = draw(st.sampled_from([1e-2, 1.0, 5.0]))
    return L @ L.T, b, R, rng


@settings(max_examples=60, deadline=None)
@given(_trs_instances())
def test_trs_feasible_and_no_worse_than_feasible_points(inst):
    H, b, R, rng = inst
    u = trs_ball(H[None], b[None], np.array([R]))[0]
    assert np.linalg.norm(u) <= R * (1 + 1e-12)

    def q(x):
        return 0.5 * x @ H @ x + b @ x

    pts = rng.normal(size=(200, b.size))
    pts *= (R * rng.random((200, 1)) ** (1 / b.size)) / np.linalg.norm(pts, axis=1, keepdims=True)
    scale = 1e-9 * (np.abs(H).max() * R**2 + np.abs(b).max() * R + 1e-300)
    assert all(q(u) <= q(x) + scale for x in pts)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.05, 1.0, 20.0]), st.integers(1, 5))
def test_ball_logistic_feasible_and_no_worse_than_feasible_points(seed, R, p):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 15))
    A = rng.normal(size=(1, m, p)) * 3
    o = rng.integers(0, 2, size=(1, m)).astype(float)
    c = rng.normal(size=(1, m))
    res = ball_logistic(A, c, o, np.full((1, m), 1 / m), R)
    assert np.linalg.norm(res.v[0]) <= R * (1 + 1e-12)
    pts = rng.normal(size=(100, p))
    pts *= (R * rng.random((100, 1)) ** (1 / p)) / np.linalg.norm(pts, axis=1, keepdims=True)
    vals = np.mean(logistic_loss(np.einsum("mp,kp->km", A[0], pts) + c, o), axis=1)
    assert res.obj[0] <= vals.min() + 1e-12
    assert res.gap[0] <= 1e-10  # Frank-Wolfe certificate of optimality


def test_radius_must_be_positive():
    with pytest.raises(ValueError, match="radius"):
        ball_logistic(np.ones((1, 2, 2)), np.zeros((1, 2)), np.ones((1, 2)), np.ones((1, 2)), 0)


@pytest.mark.parametrize("seed", range(5))
def test_trs_singular_hessian_with_b_in_its_range(seed):
    """H of rank r < p (fewer comparisons than parameters) and b in H's range with
    ||H^+ b|| > R: the minimiser lies on the sphere with (H + lam I) u = -b, lam > 0 (KKT).
    Before the fix the secular iteration stopped at lam = 0 (0/0 on the null direction) and
    returned the rescaled minimum-norm point, an ascent direction of the Newton step."""
    rng = np.random.default_rng(seed)
    p = 6
    # an exactly representable eigenbasis (a signed permutation), so b's null share is exactly 0
    Q = np.eye(p)[rng.permutation(p)] * rng.choice([-1.0, 1.0], size=p)
    e = np.r_[0.0, rng.uniform(1.0, 2.0, size=p - 1)]       # one null direction
    H = (Q * e) @ Q.T
    beta = np.r_[0.0, 0.9 * e[1:] * rng.choice([-1, 1], size=p - 1)]  # b in H's range
    b = Q @ beta
    # |beta_j| <= R e_j for every j, so the secular iteration starts at lam = 0, yet
    # ||H^+ b|| = 0.9 sqrt(p - 1) > R: the minimiser is on the sphere with lam > 0
    R = 1.0
    u = trs_ball(H[None], b[None], np.array([R]))[0]
    assert np.linalg.norm(u) == pytest.approx(R, rel=1e-9)
    lam = -(u @ (H @ u + b)) / (u @ u)
    assert lam > 0
    np.testing.assert_allclose(H @ u + lam * u, -b, atol=1e-8 * np.linalg.norm(b))
    model = lambda x: 0.5 * x @ H @ x + b @ x  # noqa: E731
    for _ in range(200):  # no feasible point does better
        x = rng.normal(size=p)
        x *= R * rng.random() ** (1 / p) / np.linalg.norm(x)
        assert model(u) <= model(x) + 1e-12
