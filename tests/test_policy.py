"""Tests of sim/policy/solver.py: the pessimistic policy of Eq. 3.7 (LP path vs SOCP vs backward
induction vs HiGHS), exact policy evaluation and input validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.model.mdp import TabularMDP, occupancy, random_mdp, value
from sim.policy.exact import extract_policy, pessimistic_objective, value_gap, vanilla_policy
from sim.policy.solver import PessimisticSolver


def _instance(seed, S=5, A=3, H=4, d1=3, d2=2, ref="uniform"):
    rng = np.random.default_rng(seed)
    mdp = random_mdp(S, A, H, d1, d2, rng)
    if ref == "uniform":
        mu = np.full((H, S, A), 1.0 / A)
    else:
        mu = rng.dirichlet(np.ones(A), size=(H, S))
    return mdp, mu, rng


@pytest.fixture(scope="module")
def solvers():
    mdp, mu, _ = _instance(0, S=6, A=3, H=4, d1=4, d2=2, ref="random")
    return mdp, mu, PessimisticSolver(mdp, mu, "lp"), PessimisticSolver(mdp, mu, "socp")


def test_two_state_by_hand():
    # H=1, one state, two actions with scalar features 1 and 0, mu_ref uniform: v(d) =
    # d(a0) - 1/2, so (*) = max_p (p - 1/2)(theta - sqrt(zeta) sign) -> p = 1 iff theta > sqrt(zeta).
    P = np.ones((1, 1, 2, 1))
    phi = np.array([[[[1.0]], [[0.0]]]])
    mdp = TabularMDP(P=P, rho=np.ones(1), phi=phi)
    solver = PessimisticSolver(mdp, np.full((1, 1, 2), 0.5))
    res = solver.solve(np.array([[1.0]]), 0.25)
    assert res.pi[0, 0, 0] == pytest.approx(1.0)
    assert res.objective == pytest.approx(0.5 * (1.0 - 0.5))
    res = solver.solve(np.array([[1.0]]), 4.0)  # radius 2 > theta: fall back to mu_ref
    assert res.objective == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(res.pi, 0.5)


@pytest.mark.parametrize("zeta", [1e-3, 0.05, 0.3, 1.0])
def test_lp_agrees_with_socp(solvers, zeta):
    mdp, mu, lp, socp = solvers
    rng = np.random.default_rng(1)
    for _ in range(4):
        th = rng.normal(size=(mdp.d1, mdp.d2))
        a, b = lp.solve(th, zeta), socp.solve(th, zeta)
        assert abs(a.objective - b.objective) <= 1e-6 * max(1.0, abs(b.objective))
        assert a.objective <= a.upper_bound + 1e-9 * (1 + abs(a.upper_bound))


def test_extracted_policy_reproduces_objective(solvers):
    mdp, mu, lp, socp = solvers
    rng = np.random.default_rng(2)
    for zeta in (0.0, 0.02, 0.3):
        th = rng.normal(size=(mdp.d1, mdp.d2))
        for solver in (lp, socp):
            res = solver.solve(th, zeta)
            exact = pessimistic_objective(mdp, occupancy(mdp, res.pi), lp.d_ref, th, zeta)
            assert exact == pytest.approx(res.objective, rel=1e-7, abs=1e-9)


def test_zeta_zero_is_vanilla(solvers):
    mdp, mu, lp, _ = solvers
    rng = np.random.default_rng(3)
    for _ in range(5):
        th = rng.normal(size=(mdp.d1, mdp.d2))
        res = lp.solve(th, 0.0)
        # Values, not policies: ties between actions may be broken differently.
        assert float(value(mdp, res.pi, th)) == pytest.approx(
            float(value(mdp, vanilla_policy(mdp, th), th)), rel=1e-9, abs=1e-10)
        assert res.n_lp == 1


def test_model_reused_across_users(solvers):
    mdp, mu, lp, _ = solvers
    rng = np.random.default_rng(4)
    th = rng.normal(size=(mdp.d1, mdp.d2))
    first = lp.solve(th, 0.1).objective
    for _ in range(3):
        lp.solve(rng.normal(size=(mdp.d1, mdp.d2)), 0.2)
    assert lp.solve(th, 0.1).objective == pytest.approx(first, rel=1e-9)


def test_repeated_input_is_served_from_the_previous_solve(solvers):
    mdp, mu, lp, _ = solvers
    th = np.random.default_rng(9).normal(size=(mdp.d1, mdp.d2))
    a = lp.solve(th, 0.2)
    a.pi[:] = 0.0  # callers own their copy
    b = lp.solve(th.copy(), 0.2)
    c = PessimisticSolver(mdp, mu, "lp").solve(th, 0.2)
    assert b.objective == c.objective and b.n_lp == c.n_lp
    np.testing.assert_array_equal(b.pi, c.pi)


def test_value_gap_zero_for_optimal_and_positive_otherwise():
    mdp, mu, rng = _instance(5)
    th = rng.normal(size=(mdp.d1, mdp.d2))
    assert value_gap(mdp, th, vanilla_policy(mdp, th)) == 0.0 or \
        value_gap(mdp, th, vanilla_policy(mdp, th)) < 1e-12
    assert value_gap(mdp, th, vanilla_policy(mdp, -th)) > 0


def test_extract_policy_uniform_on_unreachable():
    d = np.zeros((1, 2, 3))
    d[0, 0] = [0.2, 0.0, 0.6]
    pi = extract_policy(d)
    np.testing.assert_allclose(pi[0, 0], [0.25, 0.0, 0.75])
    np.testing.assert_allclose(pi[0, 1], 1 / 3)


def test_bad_inputs(solvers):
    mdp, mu, lp, _ = solvers
    th = np.zeros((mdp.d1, mdp.d2))
    with pytest.raises(ValueError, match="zeta"):
        lp.solve(th, -0.1)
    with pytest.raises(ValueError, match="theta must have shape"):
        lp.solve(np.zeros((mdp.d1 + 1, mdp.d2)), 0.1)
    with pytest.raises(ValueError, match="policy must have shape"):
        PessimisticSolver(mdp, mu[:, :, :-1])
    with pytest.raises(ValueError, match="unknown solver"):
        PessimisticSolver(mdp, mu, solver="qp")
    P = np.array(mdp.P)
    P[0, 0, 0] *= 0.5
    with pytest.raises(ValueError, match="sum to one"):
        TabularMDP(P=P, rho=mdp.rho, phi=mdp.phi)
    with pytest.raises(ValueError, match="phi must have shape"):
        TabularMDP(P=mdp.P, rho=mdp.rho, phi=mdp.phi[:-1])


def test_pricing_lp_by_backward_induction_matches_highs(solvers):
    # The LP path solves every LP over occupancy measures by backward induction; an independent
    # solver (HiGHS through scipy) on the explicit flow-constrained LP must give the same value.
    from scipy.optimize import linprog

    from sim.policy.exact import flow_constraints

    mdp, mu, lp, _ = solvers
    flow, rhs = flow_constraints(mdp)
    prob = lp.problem()
    rng = np.random.default_rng(6)
    for _ in range(5):
        theta_c = rng.normal(size=mdp.d1 * mdp.d2)
        pi, bound = prob.dual_bound(theta_c)
        reward = np.tile(prob.phi @ theta_c, mdp.H)
        res = linprog(-reward, A_eq=flow, b_eq=rhs, bounds=(0, None), method="highs")
        assert res.status == 0
        assert bound == pytest.approx(-res.fun - prob.ref_feat @ theta_c, rel=1e-9, abs=1e-10)
        d = occupancy(mdp, pi).reshape(-1)
        np.testing.assert_allclose(flow @ d, rhs, atol=1e-12)  # the vertex is feasible


def test_master_step_is_the_affine_hull_optimum():
    # On the segment between two points v1, v2 (D = 2) the master must find the maximiser of
    # (*) on the segment; compare with a dense grid search.
    from sim.policy.master import master_step as _master
    from sim.policy.master import objective as _f

    rng = np.random.default_rng(8)
    for _ in range(20):
        pts = rng.normal(size=(2, 2))
        th, sz = rng.normal(size=2), rng.uniform(0.1, 1.5)
        lam = _master(pts, np.array([1.0, 0.0]), th, sz)
        grid = np.linspace(0, 1, 20001)
        vals = [_f(pts @ np.array([1 - t, t]), th, sz) for t in grid]
        assert _f(pts @ lam, th, sz) >= max(vals) - 1e-9
        assert lam.min() >= 0 and lam.sum() == pytest.approx(1.0)


def test_failed_lp_raises(solvers, monkeypatch):
    # A pricing LP that returns garbage must raise, never yield a silently wrong policy.
    mdp, mu, _, _ = solvers
    lp = PessimisticSolver(mdp, mu, "lp")
    from sim.policy.certificate import Problem

    monkeypatch.setattr(Problem, "dual_bound", lambda self, theta_c: (vanilla_policy(mdp, np.ones(
        (mdp.d1, mdp.d2))), float("nan")))
    with pytest.raises(RuntimeError, match="pricing LP value nan"):
        lp.solve(np.ones((mdp.d1, mdp.d2)), 0.3)


def test_nonconvergence_raises(solvers):
    mdp, mu, _, _ = solvers
    strict = PessimisticSolver(mdp, mu, "lp", max_lp=1, strict=True)
    rng = np.random.default_rng(7)
    thetas = rng.normal(size=(20, mdp.d1, mdp.d2))
    with pytest.raises(RuntimeError, match="did not converge"):
        for th in thetas:
            strict.solve(th, 0.5)
    loose = PessimisticSolver(mdp, mu, "lp", max_lp=1)
    with pytest.warns(RuntimeWarning, match="certified bound gap"):
        results = [loose.solve(th, 0.5) for th in thetas]
    bad = [r for r in results if not r.converged]
    assert bad and all(r.upper_bound >= r.objective for r in bad)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), S=st.integers(1, 4), A=st.integers(1, 3),
       H=st.integers(1, 3), zeta=st.floats(0.0, 2.0))
def test_properties_on_random_mdps(seed, S, A, H, zeta):
    mdp, mu, rng = _instance(seed, S=S, A=A, H=H, d1=2, d2=2, ref="random")
    # Occupancies: non-negative and satisfy the flow constraints.
    d = occupancy(mdp, mu)
    assert np.all(d >= 0)
    np.testing.assert_allclose(d[0].sum(-1), mdp.rho, atol=1e-12)
    for h in range(H - 1):
        np.testing.assert_allclose(d[h + 1].sum(-1), np.einsum("sa,sat->t", d[h], mdp.P[h]),
                                   atol=1e-12)
    solver = PessimisticSolver(mdp, mu)
    thetas = rng.normal(size=(3, mdp.d1, mdp.d2))
    for th in thetas:
        res = solver.solve(th, zeta)
        van = pessimistic_objective(mdp, occupancy(mdp, vanilla_policy(mdp, th)), solver.d_ref,
                                    th, 0.0)
        assert res.objective <= van + 1e-9 * (1 + abs(van))  # pessimism never exceeds plug-in
        assert res.objective >= -1e-9  # mu_ref itself scores 0
        assert value_gap(mdp, th, res.pi) >= 0.0


@pytest.mark.parametrize("seed", range(4))
def test_deterministic_reference_policy(seed):
    # A deterministic mu_ref puts d_ref at a vertex: v = 0 is then on the boundary of the
    # v-polytope, the exact shortcut of solve() does not apply, and the LP path must certify
    # (or leave) the tip itself.
    mdp, mu, rng = _instance(seed, S=5, A=3, H=4, d1=3, d2=2, ref="random")
    det = np.eye(mdp.A)[mu.argmax(-1)]
    lp = PessimisticSolver(mdp, det, "lp", strict=True)
    socp = PessimisticSolver(mdp, det, "socp")
    for zeta in (0.1, 1.0, 3.0):
        th = rng.normal(size=(mdp.d1, mdp.d2))
        a, b = lp.solve(th, zeta), socp.solve(th, zeta)
        assert a.converged
        assert a.objective == pytest.approx(b.objective, rel=1e-6, abs=1e-6)


def test_ellipsoidal_set_equals_ball_in_transformed_features():
    # (theta - theta_hat)^T M (theta - theta_hat) <= zeta on features phi is the Frobenius ball
    # on features M^(-1/2) phi with theta' = M^(1/2) theta_hat: solve the latter with the SOCP.
    mdp, mu, rng = _instance(11, S=5, A=3, H=4, d1=3, d2=2, ref="random")
    D = mdp.d1 * mdp.d2
    lp = PessimisticSolver(mdp, mu, "lp", strict=True)
    for _ in range(4):
        a = rng.normal(size=(D, D))
        M = a @ a.T + 0.1 * np.eye(D)
        lam, vec = np.linalg.eigh(M)
        m_inv_half, m_half = (vec / np.sqrt(lam)) @ vec.T, (vec * np.sqrt(lam)) @ vec.T
        phi_t = np.einsum("ed,sad->sae", m_inv_half, mdp.phi.reshape(mdp.S, mdp.A, D))
        mdp_t = TabularMDP(P=mdp.P, rho=mdp.rho, phi=phi_t.reshape(mdp.phi.shape))
        socp_t = PessimisticSolver(mdp_t, mu, "socp")
        th = rng.normal(size=(mdp.d1, mdp.d2))
        for zeta in (0.05, 0.5, 2.0):
            res = lp.solve(th, zeta, metric=M)
            ref = socp_t.solve((m_half @ th.reshape(-1)).reshape(th.shape), zeta)
            assert res.objective == pytest.approx(ref.objective, rel=1e-6, abs=1e-7)
            # The worst case lies on the ellipsoid's boundary (or is theta_hat when mu_ref wins).
            e = (res.theta_worst - th).reshape(-1)
            assert e @ M @ e <= zeta * (1 + 1e-9)
    th = rng.normal(size=(mdp.d1, mdp.d2))
    assert lp.solve(th, 0.3, metric=np.eye(D)).objective == pytest.approx(
        lp.solve(th, 0.3).objective, rel=1e-9)
    with pytest.raises(ValueError, match="positive definite"):
        lp.solve(th, 0.3, metric=np.zeros((D, D)))
    with pytest.raises(ValueError, match="symmetric"):
        lp.solve(th, 0.3, metric=np.eye(D + 1))


def _data_shaped_metric(rng, D, cond=1e3):
    """A metric like Sigma_D + lambda I: random eigenvectors, eigenvalues spread over `cond`."""
    q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return (q * np.geomspace(1.0, 1.0 / cond, D)) @ q.T


@pytest.mark.parametrize("zeta", [1e-3, 0.05, 0.5])
def test_ellipsoid_lp_agrees_with_socp_and_is_certified(solvers, zeta):
    # The LP path and Clarabel's SOCP on the same ellipsoid, the LP answer certified to 1e-9.
    mdp, mu, lp, socp = solvers
    rng = np.random.default_rng(5)
    D = mdp.d1 * mdp.d2
    for _ in range(3):
        M = _data_shaped_metric(rng, D)
        th = rng.normal(size=(mdp.d1, mdp.d2))
        a, b = lp.solve(th, zeta, metric=M), socp.solve(th, zeta, metric=M)
        assert a.converged and a.upper_bound - a.objective <= 1e-9 * (1 + abs(a.upper_bound))
        assert a.objective == pytest.approx(b.objective, rel=1e-6, abs=1e-7)
        assert a.objective >= b.objective - 1e-7  # the SOCP's own certificate is weaker
        v = np.einsum("hsa,sade->de", occupancy(mdp, a.pi) - lp.d_ref, mdp.phi).reshape(-1)
        lam, vec = np.linalg.eigh(M)
        direct = v @ th.reshape(-1) - np.sqrt(zeta) * np.sqrt(v @ (vec / lam) @ vec.T @ v)
        assert a.objective == pytest.approx(direct, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("solver", ["lp", "socp"])
def test_per_user_reference_equals_a_solver_built_with_it(solver):
    # solve(..., ref_policy=r) must be Eq. 3.7 with mu_{i,ref} = r: the same answer as a solver
    # constructed with r; the solver's own mu_ref is untouched afterwards.
    mdp, mu, rng = _instance(4, S=4, A=3, H=3, d1=3, d2=2, ref="random")
    D = mdp.d1 * mdp.d2
    shared = PessimisticSolver(mdp, mu, solver)
    for _ in range(3):
        r = rng.dirichlet(np.ones(mdp.A), size=(mdp.H, mdp.S))
        own = PessimisticSolver(mdp, r, solver)
        th = rng.normal(size=(mdp.d1, mdp.d2))
        for zeta, M in ((0.2, None), (0.2, _data_shaped_metric(rng, D, 50.0))):
            a, b = shared.solve(th, zeta, metric=M, ref_policy=r), own.solve(th, zeta, metric=M)
            assert a.objective == pytest.approx(b.objective, rel=1e-6, abs=1e-7)
    np.testing.assert_array_equal(shared.ref_policy, mu)
    base = shared.solve(th, 0.2)
    assert base.objective == pytest.approx(PessimisticSolver(mdp, mu, solver).solve(th, 0.2).objective,
                                           rel=1e-6, abs=1e-7)
