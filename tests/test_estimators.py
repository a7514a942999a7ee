"""Tests of sim/estimation/estimators.py and sim/estimation/lowrank.py: the MLEs of Eq. 3.5 over S, S^LoRA and
S^ShareLoRA (Eq. 3.1, 3.3, 3.4), the global and nuclear-norm references, and their statistical
behaviour."""

import cvxpy as cp
import numpy as np
import pytest

from sim.estimation.estimators import (
    METHODS,
    _layout,
    _LowRank,
    fit,
    negative_log_likelihood,
    nll_gradient,
)
from sim.estimation.lowrank import _lbfgs, _newton
from sim.estimation.multistart import random_bases
from sim.model.data import PreferenceData, behaviour_policy, make_preferences
from sim.model.mdp import random_mdp
from sim.model.truth import make_ground_truth
from theory.diversity import aggregate, best_rank_k, principal_angle_distance


def _instance(seed, N=10, d1=8, d2=2, k=2, Np=200, nu=0.15, tail=0.0, B=1.0, init_scale=0.0):
    rng = np.random.default_rng(seed)
    mdp = random_mdp(10, 5, 5, d1, d2, rng)
    gt = make_ground_truth(N, d1, d2, k, nu, tail, B, rng, init_scale=init_scale)
    mu = behaviour_policy(mdp, "uniform", rng)
    return gt, make_preferences(mdp, gt.theta, Np, mu, mu, rng)


def _est_err(est, gt):
    return float(np.mean(np.sum((est.delta - gt.delta) ** 2, axis=(1, 2))))


# ------------------------------------------------------------------ gradients


def test_nll_gradient_matches_finite_differences():
    gt, data = _instance(0, N=3, d1=4, d2=2, Np=20, init_scale=0.5)
    rng = np.random.default_rng(1)
    delta = rng.normal(size=gt.delta.shape) * 0.3
    g = nll_gradient(delta, data, gt.init)
    eps = 1e-6
    fd = np.zeros_like(delta)
    for idx in np.ndindex(delta.shape):
        e = np.zeros_like(delta)
        e[idx] = eps
        fd[idx] = (negative_log_likelihood(delta + e, data, gt.init)
                   - negative_log_likelihood(delta - e, data, gt.init)) / (2 * eps)
    np.testing.assert_allclose(g, fd, atol=1e-9)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("B", [10.0, 0.4])  # ball inactive / active for most users
def test_factor_gradient_and_hessian_match_finite_differences(shared, B):
    """Gradient and Newton Hessian of h(Z) = min_W NLL((U + U_perp Z) W) at Z = 0."""
    gt, data = _instance(1, N=4, d1=5, d2=2, k=2, Np=150)
    k = 2 if shared else 1
    lr = _LowRank(_layout(data, None), k, B, shared, tol=1e-15)
    U = lr.spectral_start()
    W, _, _ = lr.w_step(U, np.zeros((4, k, 2)))
    r, s, delta = lr.residuals(U, W)
    Uperp = lr.complement(U)
    dz, gz = lr.newton_direction(U, Uperp, W, r, s)

    def h(zflat):
        Q = np.linalg.qr(U + np.matmul(Uperp, zflat.reshape(dz.shape)))[0]
        W0 = np.matmul(lr.user_basis(Q).transpose(0, 2, 1), delta)
        return lr.w_step(Q, W0)[1].sum()

    n = gz.size
    eps = 1e-4
    basis = np.eye(n)
    g_fd = np.array([(h(eps * e) - h(-eps * e)) / (2 * eps) for e in basis])
    np.testing.assert_allclose(gz.ravel(), g_fd, rtol=1e-5, atol=1e-9 * np.abs(g_fd).max())
    H_fd = np.array([[(h(eps * (a + b)) - h(eps * (a - b)) - h(eps * (b - a)) + h(-eps * (a + b)))
                      / (4 * eps**2) for b in basis] for a in basis])
    H_fd = 0.5 * (H_fd + H_fd.T)
    # newton_direction uses |eigenvalues| of the Hessian; on these instances h is locally
    # convex at the spectral start, so it must equal the plain Newton step of the FD Hessian
    assert np.linalg.eigvalsh(H_fd).min() > 0
    d_fd = -np.linalg.solve(H_fd, g_fd)
    np.testing.assert_allclose(dz.ravel(), d_fd, rtol=1e-3, atol=1e-4 * np.abs(d_fd).max())


# ------------------------------------------------------------------ convex methods vs cvxpy


def _cvxpy_full(data, B, shared_delta):
    n, d1, d2 = data.n_users, data.x0.shape[1], data.x0.shape[2]
    X = data.diff.reshape(-1, d1 * d2)
    o = data.o.astype(float)
    if shared_delta:
        v = cp.Variable(d1 * d2)
        z = X @ v
        cons = [cp.norm(v) <= B]
    else:
        V = cp.Variable((n, d1 * d2))
        z = cp.sum(cp.multiply(X, V[data.user]), axis=1)
        cons = [cp.norm(V[i]) <= B for i in range(n)]
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(z) - cp.multiply(o, z)) / o.size), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    return prob.value


@pytest.mark.parametrize("method", ["full", "global"])
def test_convex_methods_match_cvxpy(method):
    gt, data = _instance(2, N=4, d1=3, d2=2, k=1, Np=15, B=1.0, nu=0.5)  # small Np: separable
    est = fit(method, data, 1, 0.7)
    ref = _cvxpy_full(data, 0.7, method == "global")
    assert est.info["converged"]
    assert abs(est.nll - ref) <= 1e-6 * ref and est.nll <= ref + 1e-9
    assert np.linalg.norm(est.delta, axis=(1, 2)).max() <= 0.7 * (1 + 1e-9)


# ------------------------------------------------------------------ shared / local


def test_shared_output_is_feasible():
    gt, data = _instance(3, N=12, d1=8, d2=2, k=2, Np=40, tail=0.05)
    est = fit("shared", data, 2, 0.8)
    assert np.linalg.matrix_rank(aggregate(est.delta), tol=1e-9) <= 2
    assert np.linalg.norm(est.delta, axis=(1, 2)).max() <= 0.8 * (1 + 1e-9)
    assert est.basis.shape == (8, 2)
    np.testing.assert_allclose(est.basis.T @ est.basis, np.eye(2), atol=1e-12)
    assert est.info["converged"] and est.info["gap"] <= 1e-9


def test_local_output_is_feasible():
    gt, data = _instance(3, N=6, d1=6, d2=3, k=2, Np=60)
    est = fit("local", data, 1, 0.8)
    assert est.basis is None
    assert max(np.linalg.matrix_rank(d, tol=1e-9) for d in est.delta) <= 1
    assert np.linalg.norm(est.delta, axis=(1, 2)).max() <= 0.8 * (1 + 1e-9)


@pytest.mark.parametrize("method,k,B", [("shared", 2, 1.0), ("shared", 1, 0.3), ("local", 1, 1.0)])
def test_two_algorithms_agree_from_different_starts(method, k, B):
    """Newton-on-span(U) from fit's starts vs scipy L-BFGS (an independent outer algorithm, one
    fixed chart) from random orthonormal starts: the best L-BFGS objective is never lower, and
    on this well-posed instance (Np = 300, tail = 0) some L-BFGS start reaches the same value.
    B = 0.3 makes most balls active, exercising the constrained branch of both."""
    gt, data = _instance(4, N=8, d1=6, d2=2, k=2, Np=300)
    a = fit(method, data, k, B)
    lr = _LowRank(_layout(data, None), k, B, method == "shared", tol=1e-9)
    rng = np.random.default_rng(123)
    C = 1 if method == "shared" else data.n_users
    best = np.full(C, np.inf)
    for _ in range(5):
        U0 = random_bases(rng, C, 6, k)
        W, _, _ = lr.w_step(U0, np.zeros((data.n_users, k, 2)))
        obj = _lbfgs(lr, U0, W, 500)[2]
        best = np.minimum(best, lr.group_sum(obj))
    assert best.sum() >= a.nll * (1 - 1e-6)
    assert abs(a.nll - best.sum()) <= 1e-6 * a.nll
    assert a.info["converged"]


def _default_like(seed, Np, behaviour, N=10, d1=8, d2=2, k=2):
    """A small instance of the default sweep's kind (BT data from a random MDP, nu = 0.1)."""
    rng = np.random.default_rng(seed)
    mdp = random_mdp(10, 4, 5, d1, d2, rng, feature_scale=2.0)
    gt = make_ground_truth(N, d1, d2, k, 0.1, 0.0, 1.0, rng)
    mu = behaviour_policy(mdp, behaviour, rng, theta_mean=gt.theta.mean(0), eps=0.2)
    return gt, make_preferences(mdp, gt.theta, Np, mu, mu, rng)


def _best_of_random_starts(data, k, B, shared, rng, n=20):
    """Lowest Eq. 3.5 objective (per basis group) over n random feasible starts (Haar U, W
    uniform in the ball), each refined by Newton (even starts) or L-BFGS (odd starts)."""
    lr = _LowRank(_layout(data, None), k, B, shared, tol=1e-9)
    N, d1, d2 = data.n_users, data.x0.shape[1], data.x0.shape[2]
    C = 1 if shared else N
    best = np.full(C, np.inf)
    for j in range(n):
        U = random_bases(rng, C, d1, k)
        W0 = rng.normal(size=(N, k, d2))
        W0 *= B * rng.random((N, 1, 1)) ** (1 / (k * d2)) / np.linalg.norm(W0, axis=(1, 2),
                                                                          keepdims=True)
        W, obj, gap = lr.w_step(U, W0)
        obj = (_newton(lr, U, W, obj, gap, 500) if j % 2 == 0 else _lbfgs(lr, U, W, 500))[2]
        best = np.minimum(best, lr.group_sum(obj))
    return best


_GLOBAL_CASES = [(Np, beh, seed) for Np in (20, 50, 100) for beh in ("uniform", "poor")
                 for seed in range(5)]


@pytest.mark.parametrize("Np,behaviour,seed", [
    pytest.param(*c, marks=() if c[2] < 2 else pytest.mark.slow) for c in _GLOBAL_CASES])
def test_shared_reaches_the_global_optimum(Np, behaviour, seed):
    """Item 2 of issue 10: 20 further random feasible starts (another stream, half of them
    refined by the other outer algorithm) never improve the returned NLL by more than 1e-6
    relative. 30 instances (Np = 20, 50, 100; uniform and poor behaviour; 5 seeds; 12 in the
    default run, all with -m slow). With the spectral start alone (max_starts=1) 7 of the 30
    fail (docs/estimators.md)."""
    gt, data = _default_like(seed, Np, behaviour)
    est = fit("shared", data, 2, 1.0)
    best = _best_of_random_starts(data, 2, 1.0, True, np.random.default_rng(10_000 + seed))
    assert best.min() >= est.nll * (1 - 1e-6), (est.nll, best, est.info["n_starts"])


@pytest.mark.parametrize("Np,behaviour", [(20, "poor"), (50, "uniform")])
def test_local_reaches_the_global_optimum(Np, behaviour):
    """The same check per user for ``local`` (each user its own basis), in the original
    (untransposed) chart: no user's random start beats the returned fit by > 1e-6 relative."""
    gt, data = _default_like(1, Np, behaviour, d2=3)
    est = fit("local", data, 2, 1.0)
    lr = _LowRank(_layout(data, None), 2, 1.0, False, tol=1e-9)
    U = np.asarray([np.linalg.svd(d)[0][:, :2] for d in est.delta])
    W = np.matmul(U.transpose(0, 2, 1), est.delta)
    ours = lr.w_step(U, W)[1]  # per-user objective of the returned fit
    best = _best_of_random_starts(data, 2, 1.0, False, np.random.default_rng(7))
    assert np.all(best >= ours - 1e-6 * ours.sum()), (ours - best).min()


def test_init_enters_as_offset():
    gt, data = _instance(5, N=6, d1=6, d2=2, k=2, Np=100, init_scale=1.0)
    est = fit("shared", data, 2, 1.0, init=gt.init)
    zero = fit("shared", data, 2, 1.0)
    assert est.nll < zero.nll  # the true init is informative
    assert est.nll == pytest.approx(negative_log_likelihood(est.delta, data, gt.init))


# ------------------------------------------------------------------ nuclear


def test_nuclear_kkt_and_penalty():
    gt, data = _instance(6, N=10, d1=6, d2=2, k=2, Np=200)
    big = fit("nuclear", data, 2, 1.0, lam=1.0)
    np.testing.assert_array_equal(big.delta, 0)  # lam above ||grad(0)||_op
    est = fit("nuclear", data, 2, 1.0, tol=1e-10, lam=0.02)
    g = aggregate(nll_gradient(est.delta, data))
    u, s, vt = np.linalg.svd(aggregate(est.delta), full_matrices=False)
    r = int(np.sum(s > 1e-8))
    # optimality: -grad in lam * subdifferential of ||.||_* at the estimate
    np.testing.assert_allclose(-g @ vt[:r].T, 0.02 * u[:, :r], atol=1e-6)
    assert np.linalg.norm(g, 2) <= 0.02 * (1 + 1e-5)
    assert est.info["converged"]


def test_nuclear_lambda_from_cross_validation():
    """lam is chosen on the data alone: inside the grid below lam_max = ||grad(0)||_op (which
    gives the zero estimate), the held-out NLL at the choice is the grid minimum, and more data
    per user gives a smaller penalty (the gradient noise falls like 1/sqrt(Np))."""
    lams = []
    for Np in (40, 640):
        gt, data = _instance(6, N=8, d1=6, d2=2, k=2, Np=Np)
        est = fit("nuclear", data, 2, 1.0)
        grid, cv = est.info["cv_grid"], est.info["cv_nll"]
        lam_max = np.linalg.norm(aggregate(nll_gradient(np.zeros_like(gt.delta), data)), 2)
        assert grid[0] == pytest.approx(lam_max, rel=1e-12)
        assert est.info["lam"] == grid[np.argmin(cv)]
        lams.append(est.info["lam"])
    assert lams[1] < lams[0]


# ------------------------------------------------------------------ zero and oracle


def test_zero_and_oracle():
    """zero: DeltaTheta = 0, NLL log 2 at zero init. oracle with the true B-diamond: columns in
    span(B-diamond), per-user ball kept, and -- because B-diamond is feasible for ``shared`` --
    the shared fit's NLL is no larger (a necessary condition for its global optimality)."""
    gt, data = _instance(10, N=8, d1=6, d2=2, k=2, Np=80)
    zero = fit("zero", data, 2, 1.0)
    np.testing.assert_array_equal(zero.delta, 0)
    assert zero.nll == pytest.approx(np.log(2), rel=1e-14) and zero.info["converged"]
    bd = best_rank_k(gt.delta, 2)[0]
    orc = fit("oracle", data, 2, 1.0, basis=bd)
    resid = orc.delta - np.einsum("ab,nbc->nac", bd @ bd.T, orc.delta)
    assert np.abs(resid).max() <= 1e-12
    assert np.linalg.norm(orc.delta, axis=(1, 2)).max() <= 1 + 1e-9
    assert orc.info["converged"] and orc.nll < zero.nll
    assert fit("shared", data, 2, 1.0).nll <= orc.nll + 1e-12
    with pytest.raises(ValueError, match="needs basis"):
        fit("oracle", data, 2, 1.0)
    with pytest.raises(ValueError, match="orthonormal"):
        fit("oracle", data, 2, 1.0, basis=2 * bd)


def test_stalled_fits_are_not_converged():
    """A fit stopped by its iteration cap or above tol is never reported converged."""
    gt, data = _instance(11, N=6, d1=6, d2=2, k=2, Np=100)
    for method in ("full", "global", "shared", "local"):
        est = fit(method, data, 2, 1.0, max_iter=1)
        assert est.info["converged"] == (est.info["gap"] <= 1e-9), method
    est = fit("shared", data, 2, 1.0, max_iter=1, max_starts=1)
    assert not est.info["converged"] and est.info["gap"] > 1e-9
    nuc = fit("nuclear", data, 2, 1.0, lam=0.01, max_iter=3)
    assert not nuc.info["converged"]


def test_prediction_error_by_hand():
    """pred_err = (1/N) sum_i mean_j <x_j, e_i>^2 (Sigma_hat_i the second moment)."""
    from sim.experiments.pipeline import prediction_error, warn_unconverged

    x0 = np.array([[[1.0], [0.0]], [[0.0], [2.0]], [[1.0], [1.0]]])
    data = PreferenceData(np.array([0, 0, 1]), x0, np.zeros_like(x0), np.array([1, 0, 1]), 2)
    err = np.array([[[1.0], [1.0]], [[0.5], [0.0]]])
    # user 0: (1^2 + 2^2) / 2 = 2.5; user 1: 0.5^2 = 0.25
    assert prediction_error(err, np.zeros_like(err), data) == pytest.approx((2.5 + 0.25) / 2)
    import pandas as pd

    runs = pd.DataFrame(dict(method=["shared", "full"], fit_converged=[True, False],
                             fit_gap=[1e-12, 3e-9]))
    assert "1 of 2 fits" in warn_unconverged(runs) and "full 1" in warn_unconverged(runs)
    assert warn_unconverged(runs.iloc[:1]) is None


# ------------------------------------------------------------------ statistics


def _recovery_curve(Nps, seeds, **kw):
    err = np.zeros((len(seeds), len(Nps)))
    dist = np.zeros_like(err)
    for a, s in enumerate(seeds):
        for b, Np in enumerate(Nps):
            gt, data = _instance(s, Np=Np, **kw)
            est = fit("shared", data, 2, 1.0)
            err[a, b] = _est_err(est, gt)
            dist[a, b] = principal_angle_distance(est.basis, best_rank_k(gt.delta, 2)[0])
    return err.mean(0), dist.mean(0)


def test_recovery_rate_one_over_Np():
    """Sigma_tail = 0: est_err ~ 1/Np (slope -1 +- 0.2 over Np = 50..3200) and dist falls."""
    Nps = [50, 100, 200, 400, 800, 1600, 3200]
    err, dist = _recovery_curve(Nps, seeds=[0, 1, 2], N=10, d1=8, d2=2, k=2, tail=0.0)
    slope = np.polyfit(np.log(Nps), np.log(err), 1)[0]
    assert -1.2 <= slope <= -0.8, (slope, err)
    assert np.all(np.diff(dist) < 0), dist


@pytest.mark.slow
def test_recovery_rate_one_over_Np_larger():
    Nps = [50, 100, 200, 400, 800, 1600, 3200]
    err, dist = _recovery_curve(Nps, seeds=list(range(6)), N=20, d1=10, d2=2, k=2, tail=0.0)
    slope = np.polyfit(np.log(Nps), np.log(err), 1)[0]
    assert -1.2 <= slope <= -0.8, (slope, err)
    assert dist[-1] < 0.5 * dist[0]


def test_shared_beats_local_and_full_when_many_users_few_comparisons():
    """Remark 3: N = 50 users, Np = 40, k = 1 -- pooling the column space pays off."""
    errs = {m: [] for m in ("shared", "local", "full")}
    for s in range(2):
        gt, data = _instance(s, N=50, d1=10, d2=2, k=1, Np=40, nu=0.3)
        for m in errs:
            errs[m].append(_est_err(fit(m, data, 1, 1.0), gt))
    shared = np.mean(errs["shared"])
    assert shared < 0.5 * np.mean(errs["local"]) and shared < 0.5 * np.mean(errs["full"]), errs


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_contract(method):
    gt, data = _instance(7, N=5, d1=5, d2=2, k=2, Np=60)
    extra = {"basis": best_rank_k(gt.delta, 2)[0]} if method == "oracle" else {}
    a, b = fit(method, data, 2, 1.0, **extra), fit(method, data, 2, 1.0, **extra)
    np.testing.assert_array_equal(a.delta, b.delta)
    assert a.method == method and a.delta.shape == (5, 5, 2)
    assert (a.basis is None) == (method in ("local", "full", "global", "zero"))
    if a.basis is not None:
        np.testing.assert_array_equal(a.basis, b.basis)
    assert a.nll == pytest.approx(negative_log_likelihood(a.delta, data))
    for key in ("iterations", "converged", "gap", "fit_s", "n_starts", "nll_spread"):
        assert key in a.info


def test_bad_inputs_raise():
    gt, data = _instance(8, N=3, d1=4, d2=2, k=1, Np=10)
    with pytest.raises(ValueError, match="unknown method 'lora'.*shared"):
        fit("lora", data, 1, 1.0)
    for k in (0, 5, 1.5):
        with pytest.raises(ValueError, match=f"rank k={k}"):
            fit("shared", data, k, 1.0)
    for B in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="Frobenius bound B"):
            fit("full", data, 1, B)
    with pytest.raises(ValueError, match=r"init must have shape .*\(3, 4, 2\)"):
        fit("shared", data, 1, 1.0, init=np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match="unknown option"):
        fit("full", data, 1, 1.0, solver="lbfgs")
    with pytest.raises(ValueError, match="unknown solver"):
        fit("shared", data, 1, 1.0, solver="adam")
    with pytest.raises(ValueError, match="delta must have shape"):
        negative_log_likelihood(np.zeros((2, 4, 2)), data)
    empty = PreferenceData(np.zeros(0, int), np.zeros((0, 4, 2)), np.zeros((0, 4, 2)),
                           np.zeros(0, np.int8), 3)
    with pytest.raises(ValueError, match="no comparisons"):
        fit("full", empty, 1, 1.0)


def test_vacuous_rank_constraint_reduces_to_full():
    gt, data = _instance(9, N=4, d1=4, d2=2, k=2, Np=50)
    local = fit("local", data, 2, 1.0)  # rank(DeltaTheta_i) <= min(d1, d2) = 2 always
    full = fit("full", data, 2, 1.0)
    np.testing.assert_array_equal(local.delta, full.delta)
    assert local.info["reduces_to"] == "full"


# ------------------------------------------------------------------ command line


def test_demo_smoke_and_bad_arguments():
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "sim.demo", "--seed", "1", "--N", "8", "--Np", "20",
                         "--methods", "shared,full"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "shared" in ok.stdout and "est_err" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "sim.demo", "--Np", "0"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_demo_ordering_is_signal_to_noise():
    # On the demo's own instance (unit-scale features) at N_p = 100, `shared` has a larger
    # Frobenius error than guessing zero, which looked like a failure of Eq. 3.5. It is the
    # low signal-to-noise regime: in the directions the data see (pred_err, Theorem 4.1's
    # norm) shared beats zero at N_p = 100, and with 4x the comparisons it beats zero by > 4x in
    # Frobenius norm too, and the shrinking cross-validated nuclear-norm fit as well.
    from sim.experiments import demo

    _, shared, zero = demo.run(0, 100, 50, ["shared", "zero"])
    assert shared["est_err"] > zero["est_err"]
    assert shared["pred_err"] < 0.8 * zero["pred_err"]
    _, shared, nuclear, zero = demo.run(0, 400, 50, ["shared", "nuclear", "zero"])
    assert shared["est_err"] < zero["est_err"] / 4
    assert shared["est_err"] < nuclear["est_err"]


def test_demo_fits_the_oracle_with_b_diamond():
    # The demo's default methods include ``oracle``, which needs B-diamond; the demo used to
    # call fit without it (exit 2 on every default run). Through the pipeline's fit_method the
    # oracle is given the truth's best rank-k column space, so its dist is 0, and it reaches
    # the truth's nu exactly (the instance is feasible and drawn as configured).
    from sim.experiments import demo

    head, oracle, glob = demo.run(1, 20, 8, ["oracle", "global"])
    assert head["nu"] == pytest.approx(demo.NU) and head["tail"] == pytest.approx(demo.TAIL)
    assert oracle["method"] == "oracle" and oracle["dist"] == pytest.approx(0.0, abs=1e-10)
    assert np.isnan(glob["dist"]) and oracle["converged"]
