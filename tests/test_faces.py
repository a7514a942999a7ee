"""Tests of sim/policy/faces.py (the experimental "face" solver of Eq. 3.7): its successor features
against occupancy measures, its answers against the cvxpy/Clarabel SOCP (a different
algorithm) for the ball and ellipsoids, degenerate radii, and an independent certificate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.model.mdp import backward_induction, occupancy, random_mdp
from sim.policy import faces
from sim.policy.solver import PessimisticSolver


def _instance(seed, S=5, A=3, H=4, d1=4, d2=2):
    rng = np.random.default_rng(seed)
    mdp = random_mdp(S, A, H, d1, d2, rng, feature_scale=2.0)
    mu = rng.dirichlet(np.ones(A), size=(H, S))
    th = rng.normal(size=(d1, d2))
    return rng, mdp, mu, th / np.linalg.norm(th)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_successor_features_and_dp_match_occupancies(seed):
    # F_h(s, a) must give the value of every single-action switch of the DP policy, computed
    # independently as the occupancy of the switched policy.
    rng, mdp, _, th = _instance(seed)
    P2 = mdp.P.reshape(mdp.H, mdp.S * mdp.A, mdp.S)
    phi3 = mdp.phi.reshape(mdp.S, mdp.A, -1)
    act, val = faces.dp(P2, mdp.rho, phi3 @ th.reshape(-1))
    pi_ref, val_ref = backward_induction(mdp, mdp.step_rewards(th))
    assert val == pytest.approx(val_ref, abs=1e-12)
    F, m = faces.successor(P2, mdp.rho, phi3, act)
    pi = np.eye(mdp.A)[act]
    d = occupancy(mdp, pi)
    np.testing.assert_allclose(m, d.sum(-1), atol=1e-12)
    h, s, a = rng.integers(mdp.H), rng.integers(mdp.S), rng.integers(mdp.A)
    pi2 = pi.copy()
    pi2[h, s] = np.eye(mdp.A)[a]
    dv = np.einsum("hsa,sae->e", occupancy(mdp, pi2) - d, phi3)
    np.testing.assert_allclose(dv, m[h, s] * (F[h, s, a] - F[h, s, act[h, s]]), atol=1e-10)


def _check(res, socp, mdp, th, zeta, metric):
    ref = socp.solve(th, zeta, metric=metric)
    assert res.converged
    assert res.upper_bound - res.objective <= 1e-8 * (1 + abs(res.upper_bound))
    assert res.objective == pytest.approx(ref.objective, abs=1e-6 * (1 + abs(ref.objective)))
    # Independent certificate: the worst-case theta's backward induction bounds the optimum.
    v = np.einsum("hsa,sade->de", occupancy(mdp, res.pi) - socp.d_ref, mdp.phi).reshape(-1)
    if metric is None:
        obj = v @ th.reshape(-1) - np.sqrt(zeta) * np.linalg.norm(v)
    else:
        obj = v @ th.reshape(-1) - np.sqrt(zeta * v @ np.linalg.solve(metric, v))
    assert obj == pytest.approx(res.objective, abs=1e-10)
    _, g = backward_induction(mdp, mdp.step_rewards(res.theta_worst))
    ub = g - np.einsum("hsa,sade,de->", socp.d_ref, mdp.phi, res.theta_worst)
    assert ub >= obj - 1e-9 and ub - obj <= 1e-7 * (1 + abs(ub))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.6, 0.95])
def test_face_agrees_with_socp_on_the_ball(seed, ratio):
    _, mdp, mu, th = _instance(seed)
    face, socp = PessimisticSolver(mdp, mu, "face"), PessimisticSolver(mdp, mu, "socp")
    zeta = ratio**2
    res = face.solve(th, zeta)
    _check(res, socp, mdp, th, zeta, None)
    if ratio == 0.0:  # zeta = 0: the plug-in policy, one backward induction
        assert res.n_lp == 1
        np.testing.assert_allclose(res.pi, backward_induction(mdp, mdp.step_rewards(th))[0])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cond", [10.0, 1e3])
def test_face_agrees_with_socp_on_ellipsoids(seed, cond):
    rng, mdp, mu, th = _instance(seed)
    D = th.size
    q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    metric = (q * np.geomspace(1.0, 1.0 / cond, D)) @ q.T
    metric = (metric + metric.T) / 2
    face, socp = PessimisticSolver(mdp, mu, "face"), PessimisticSolver(mdp, mu, "socp")
    zeta = 0.3 * float(th.reshape(-1) @ metric @ th.reshape(-1))
    _check(face.solve(th, zeta, metric=metric), socp, mdp, th, zeta, metric)


def test_huge_radius_returns_the_reference_policy():
    _, mdp, mu, th = _instance(1)
    res = PessimisticSolver(mdp, mu, "face").solve(th, 1e6)
    assert res.objective == 0.0 and res.upper_bound == 0.0
    np.testing.assert_allclose(res.pi, mu)


@pytest.mark.parametrize("seed", range(6))
def test_face_rounds_certify_without_the_lp_fallback(seed):
    # faces.solve itself (no LP path behind it) must reach the certificate on small instances.
    _, mdp, mu, th = _instance(seed)
    socp = PessimisticSolver(mdp, mu, "socp")
    sz = 0.5
    out = faces.solve(mdp.P.reshape(mdp.H, -1, mdp.S), mdp.rho,
                      mdp.phi.reshape(mdp.S, mdp.A, -1), socp.problem().ref_feat, th.reshape(-1), sz,
                      1e-9)
    assert out is not None
    d, lb, ub, n_dp, rounds = out
    assert ub - lb <= 1e-9 * (1 + abs(ub)) and n_dp in (rounds, rounds + 1)
    assert lb == pytest.approx(socp.solve(th, sz**2).objective, abs=1e-6)
    np.testing.assert_allclose(d.sum(-1)[0], mdp.rho, atol=1e-12)


def test_config_accepts_face_and_the_pipeline_agrees_with_lp():
    # The same run with policy_solver = face and = lp: every result within the certificate.
    from sim.experiments.pipeline import run_instance
    from sim.model.config import SimConfig

    with pytest.raises(ValueError, match="'face'"):
        SimConfig(policy_solver="simplex")
    rows = {}
    for solver in ("lp", "face"):
        cfg = SimConfig(N=6, d1=4, d2=2, k=1, S=5, A=3, H=3, n_test=10, Np=60,
                        confidence_set="sigma_d", policy_solver=solver)
        rows[solver] = run_instance(cfg, 0, ["shared", "local"])
    for a, b in zip(rows["lp"], rows["face"]):
        assert a["gap_pess"] == pytest.approx(b["gap_pess"], abs=1e-6)
        assert max(a["policy_cert_gap"], b["policy_cert_gap"]) <= 1e-8
        assert a["zeta"] == b["zeta"] and a["coverage"] == b["coverage"]
