"""Tests of sim/policy/master.py, the restricted master of the LP path for Eq. 3.7: ascent,
feasibility, affine-hull optimality and the tip's Moreau certificate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.policy.master import caratheodory, master_step, objective, tip_step


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), D=st.integers(1, 6), m=st.integers(1, 12),
       sz=st.floats(0.0, 3.0))
def test_master_step_ascends_and_stays_in_the_simplex(seed, D, m, sz):
    rng = np.random.default_rng(seed)
    pts, th = rng.normal(size=(D, m)), rng.normal(size=D)
    lam0 = rng.dirichlet(np.ones(m))
    lam = master_step(pts, lam0, th, sz)
    assert lam.shape == (m,) and lam.min() >= 0 and lam.sum() == pytest.approx(1.0)
    assert objective(pts @ lam, th, sz) >= objective(pts @ lam0, th, sz) - 1e-10
    assert np.count_nonzero(lam) <= max(D + 1, np.count_nonzero(lam0))


@pytest.mark.parametrize("seed", range(5))
def test_column_generation_over_a_finite_set_reaches_its_optimum(seed):
    # The LP path in miniature: the "polytope" is conv of 8 points in R^3, pricing picks the
    # point with the largest <x_j, gradient>; master steps must reach the maximum of (*) over
    # the hull, checked against a dense random sample of it.
    rng = np.random.default_rng(seed)
    allpts, th, sz = rng.normal(size=(3, 8)), rng.normal(size=3), 0.7
    lam = np.eye(8)[int(np.argmax(allpts.T @ th))]
    for _ in range(50):
        x = allpts @ lam
        g = th - sz * x / max(np.linalg.norm(x), 1e-300)
        j = int(np.argmax(allpts.T @ g))
        if allpts[:, j] @ g - x @ g <= 1e-12:
            break
        keep = lam > 0
        keep[j] = True
        sub = master_step(allpts[:, keep], lam[keep], th, sz)
        lam = np.zeros(8)
        lam[keep] = sub
    best = max(objective(allpts @ w, th, sz) for w in rng.dirichlet(np.ones(8) * 0.3, size=20000))
    assert objective(allpts @ lam, th, sz) >= best - 1e-9


def test_tip_certificate_is_moreau():
    # If ||p|| <= sqrt(zeta) for p = proj of theta on cone(pts), every candidate prices <= 0 at
    # u = p / sqrt(zeta); otherwise the step leaves v = 0 with a positive objective.
    rng = np.random.default_rng(3)
    for _ in range(50):
        pts, th = rng.normal(size=(4, 6)), rng.normal(size=4)
        lam = np.zeros(6)
        lam[0] = 1.0
        pts[:, 0] = 0.0  # mu_ref's point v = 0 carries all the weight
        sz = rng.uniform(0.1, 3.0)
        stepped, u = tip_step(pts, lam, th, sz)
        if stepped is None:
            assert np.linalg.norm(u) <= 1 + 1e-9
            assert np.all(pts.T @ (th - sz * u) <= 1e-9)
        else:
            assert stepped.min() >= 0 and stepped.sum() == pytest.approx(1.0)
            assert objective(pts @ stepped, th, sz) > 0


def test_caratheodory_keeps_the_point():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(2, 7))
    lam = rng.dirichlet(np.ones(7))
    out = caratheodory(pts, lam.copy())
    np.testing.assert_allclose(pts @ out, pts @ lam, atol=1e-12)
    assert np.count_nonzero(out) <= 3 and out.min() >= 0
