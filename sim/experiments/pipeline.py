"""One run of Algorithm 1 on a simulated instance: truth -> data -> Eq. 3.5 fit -> Eq. 3.6
radius -> Eq. 3.7 pessimistic policy -> exact value gaps. Produces the runs.csv rows of
docs/formats.md (one per method)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sim.confidence import bootstrap, sets
from sim.estimation import estimators
from sim.experiments import new_users
from sim.model.config import NEW_USER_FIELDS, SimConfig
from sim.model.data import (
    behaviour_policy,
    check_identifiability,
    empirical_policy,
    make_preferences,
)
from sim.model.mdp import random_mdp, trap_base, trap_behaviour, trap_mdp
from sim.model.truth import make_ground_truth
from sim.policy.exact import optimal_value, value_gap, vanilla_policy
from sim.policy.solver import PessimisticSolver
from theory import bounds, diversity

#: Methods that estimate a shared column space (the others get dist = NaN, docs/formats.md);
#: ``oracle`` is given B-diamond, so its dist is 0.
SUBSPACE_METHODS = ("shared", "nuclear", "oracle")


def build_instance(cfg: SimConfig, seed: int):
    """MDP, truth, behaviour policy, training and held-out data, all from SeedSequence(seed)
    (one spawned stream per stage, so a stage's draws never shift another's)."""
    return draw_instance(cfg, *(np.random.default_rng(s)
                                for s in np.random.SeedSequence(seed).spawn(4)))


def draw_instance(cfg: SimConfig, rng_mdp, rng_truth, rng_data, rng_test=None):
    """The instance of ``cfg`` (Sec. 3.1 MDP, Def. 4.1 truth, Eq. 3.2 comparisons) from the
    given generators, drawn in this order: MDP, truth, behaviour policy and training data,
    held-out data (None without ``rng_test``). One generator may serve several stages
    (``python -m sim.demo`` draws everything from one stream)."""
    trap = cfg.instance == "trap"
    mdp = (trap_mdp if trap else random_mdp)(cfg.S, cfg.A, cfg.H, cfg.d1, cfg.d2, rng_mdp,
                                             feature_scale=cfg.feature_scale)
    truth = make_ground_truth(cfg.N, cfg.d1, cfg.d2, cfg.k, cfg.nu, cfg.tail, cfg.B, rng_truth,
                              init_scale=0.0 if trap else cfg.init_scale)
    if trap:  # known base reward favouring the covered actions (sim/model/mdp.py trap_base)
        base = trap_base(cfg.d1, cfg.d2, cfg.trap_margin)
        truth = replace(truth, init=np.broadcast_to(base, truth.delta.shape).copy())
        mu = trap_behaviour(cfg.H, cfg.S, cfg.A, cfg.rare_mass)
    else:
        mu = behaviour_policy(mdp, cfg.behaviour, rng_data, theta_mean=truth.theta.mean(0),
                              eps=cfg.eps)
    train = make_preferences(mdp, truth.theta, cfg.Np, mu, mu, rng_data)
    test = (None if rng_test is None else
            make_preferences(mdp, truth.theta, cfg.n_test, mu, mu, rng_test))
    return mdp, truth, mu, train, test


def heldout_accuracy(theta_hat: np.ndarray, test) -> float:
    """Fraction of held-out comparisons whose label the estimate predicts (ties count 1/2)."""
    margin = np.einsum("mde,mde->m", test.diff, theta_hat[test.user])
    pred = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    return float(np.mean(np.where(test.o == 1, pred, 1 - pred)))


def run_instance(cfg: SimConfig, seed: int, methods, artifacts: Path | None = None) -> list[dict]:
    """All runs.csv rows (one per method) for one config and seed: the stages below in order."""
    return run_instances([cfg], seed, methods, [artifacts])[0]


def run_instances(cfgs: list[SimConfig], seed: int, methods, artifacts=None) -> list[list[dict]]:
    """run_instance for each of ``cfgs``, which may differ only in NEW_USER_FIELDS: Algorithm 1
    on the training users runs once and only the new users are drawn and scored per config.
    The rows equal run_instance's for each config (the stages draw from per-stage streams);
    fit_s and policy_s are the training run's, repeated. artifacts: one path (or None) per
    config."""
    cfg = cfgs[0]
    shared_part = {f: getattr(cfg, f) for f in NEW_USER_FIELDS}
    if any(c.with_(**shared_part) != cfg for c in cfgs):
        raise ValueError(f"run_instances: configs may differ only in {NEW_USER_FIELDS}")
    artifacts = artifacts if artifacts is not None else [None] * len(cfgs)
    mdp, truth, mu, train, test = build_instance(cfg, seed)
    b_diamond, _, _ = diversity.best_rank_k(truth.delta, cfg.k)
    bias = diversity.per_user_bias(truth.delta, cfg.k)
    solver = PessimisticSolver(mdp, mu, solver=cfg.policy_solver)
    j_star = optimal_values(mdp, truth.theta)
    truth_metrics = diversity.diversity_metrics(truth.delta, cfg.k)
    common = dict(
        nu_true=truth_metrics["nu"], tail_true=truth_metrics["tail"],
        bias_mean=float(bias.mean()),
        bound_dist=float(bounds.dist_bound(cfg.N, cfg.Np, cfg.nu, cfg.tail, cfg.d1, cfg.d2, cfg.k, cfg.delta)),
        bound_gap=float(bounds.gap_bound_average(cfg.N, cfg.Np, cfg.nu, cfg.tail, cfg.d1, cfg.d2, cfg.k, cfg.delta)),
        bayes_acc=heldout_accuracy(truth.theta, test),
        ident_rank=check_identifiability(train, warn=False),
        gap_ref=reference_gap(mdp, truth, mu, j_star),
    )
    refs = reference_policies(cfg, train, mu)
    fits, saved = [], {}
    for method in methods:
        est, fit_s = fit_method(cfg, method, train, truth, basis=b_diamond)
        theta_hat = truth.init + est.delta
        metric, zeta = confidence_set(cfg, method, est, train, truth, seed)
        t0 = time.perf_counter()
        gaps_p, res = policy_gaps(mdp, solver, truth.theta, j_star, theta_hat, zeta, metric, refs)
        gaps_v = plugin_gaps(mdp, truth.theta, j_star, theta_hat)
        policy_s = time.perf_counter() - t0
        cols = dict(
            dist=subspace_distance(est, b_diamond),
            est_err=float(np.mean(user_errors(est.delta, truth.delta))),
            pred_err=prediction_error(est.delta, truth.delta, train),
            gap_pess=float(np.mean(gaps_p)), gap_vanilla=float(np.mean(gaps_v)),
            coverage=float(sets.coverage(truth.delta, est.delta, zeta, metric)),
            zeta=float(np.mean(zeta)), policy_cert_gap=certificate_gap(res),
            nll_train=float(est.nll), acc_heldout=heldout_accuracy(theta_hat, test),
            rank_hat=int(np.linalg.matrix_rank(diversity.aggregate(est.delta), tol=1e-8)),
            n_starts=int(est.info["n_starts"]), nll_spread=float(est.info["nll_spread"]),
            fit_converged=bool(est.info["converged"]), fit_gap=float(est.info["gap"]),
            **common, fit_s=fit_s, policy_s=policy_s)
        basis_cov = (sets.basis_error_covariance(est, train, cfg.B, cfg.delta, truth.init)
                     if method == "shared" and any(c.N_new for c in cfgs) else None)
        fits.append((method, est, (zeta, basis_cov), cols))
        saved[method] = dict(delta=est.delta, zeta=zeta, pi=np.stack([r.pi for r in res]))
    out = []
    for c, art in zip(cfgs, artifacts):
        new = (new_users.build_new_users(c, truth, mdp, mu, np.random.SeedSequence(seed).spawn(6)[4:])
               if c.N_new else None)  # streams 4, 5: the training instance's streams are untouched
        out.append([dict(seed=seed, method=method, **c.as_dict(), **cols,
                         **(_score_new_users(c, method, est, new, train_set, mdp, mu, solver)
                            if new is not None else new_users.empty_columns()))
                    for method, est, train_set, cols in fits])
        if art is not None:
            _save_artifacts(art, mdp, truth, mu, saved)
    return out


# ---------------------------------------------------------------- the stages, one per step

def fit_method(cfg: SimConfig, method: str, train, truth, basis=None):
    """Algorithm 1 step 2, Eq. 3.5: ``method``'s estimate from ``train`` at Theta_init =
    truth.init (``oracle`` is given ``basis``, default B-diamond: the truth's best rank-k column
    space). Returns the estimate and its wall-clock seconds."""
    t0 = time.perf_counter()
    if method == "oracle" and basis is None:
        basis = diversity.best_rank_k(truth.delta, cfg.k)[0]
    extra = {"basis": basis} if method == "oracle" else {}
    est = estimators.fit(method, train, cfg.k, cfg.B, init=truth.init, **extra)
    return est, time.perf_counter() - t0


def confidence_set(cfg: SimConfig, method: str, est, train, truth, seed: int):
    """Algorithm 1 step 3, Eq. 3.6: (metric, zeta) of R_i per user -- metric (N, D, D) for the
    sigma_d ellipsoid (extension) or None for the ball, zeta (N,) from ``cfg.radius``. The
    fixed estimate ``zero`` gets no set (zeta = 0: pessimism is the plug-in policy)."""
    if method == "zero":
        return None, np.zeros(cfg.N)
    if cfg.confidence_set == "sigma_d":
        return sets.sigma_d_ellipsoid(method, est, train, cfg.k, cfg.B, cfg.delta, init=truth.init)
    return None, radius(cfg, method, est, train, truth, seed)


def reference_policies(cfg: SimConfig, train, mu):
    """mu_ref of Eq. 3.7 per user (n, H, S, A), or None for mu_ref = mu1 (cfg.ref_policy)."""
    return empirical_policy(train, mu) if cfg.ref_policy == "empirical" else None


def optimal_values(mdp, theta_true: np.ndarray) -> np.ndarray:
    """J(pi*_i; r*_i) per user (n,), theta_true (n, d1, d2): computed once per instance, it
    serves every policy's value gap."""
    return np.array([optimal_value(mdp, t) for t in theta_true])


def policy_gaps(mdp, solver, theta_true: np.ndarray, j_star: np.ndarray, theta_hat: np.ndarray,
                zeta: np.ndarray, metric=None, refs=None):
    """Algorithm 1 step 4, Eq. 3.7 per user, and the exact value gaps of its policies
    (Theorem 4.2's left side): (gaps, solver results), each a list over users. theta_true,
    theta_hat: (n, d1, d2); j_star: (n,) optimal_values; zeta: (n,); metric: (n, D, D) or None;
    refs: per-user reference policies (n, H, S, A) or None."""
    gaps, results = [], []
    for i in range(theta_hat.shape[0]):
        res = solver.solve(theta_hat[i], float(zeta[i]),
                           metric=None if metric is None else metric[i],
                           ref_policy=None if refs is None else refs[i])
        gaps.append(value_gap(mdp, theta_true[i], res.pi, j_star[i]))
        results.append(res)
    return gaps, results


def plugin_gaps(mdp, theta_true: np.ndarray, j_star: np.ndarray, theta_hat: np.ndarray) -> list:
    """Value gaps of the plug-in policies (Eq. 3.7 at zeta = 0) of theta_hat (n, d1, d2)."""
    return [value_gap(mdp, t, vanilla_policy(mdp, th), j) for t, j, th in
            zip(theta_true, j_star, theta_hat)]


def certificate_gap(results) -> float:
    """policy_cert_gap of runs.csv: the largest certified optimality gap of Eq. 3.7's solves."""
    return float(np.max([r.upper_bound - r.objective for r in results]))


def reference_gap(mdp, truth, mu, j_star: np.ndarray) -> float:
    """gap_ref of runs.csv: the mean value gap of the behaviour policy itself."""
    return float(np.mean([value_gap(mdp, t, mu, j) for t, j in zip(truth.theta, j_star)]))


def user_errors(delta_hat: np.ndarray, delta_true: np.ndarray) -> np.ndarray:
    """(N,) squared Frobenius errors ||DeltaTheta_hat_i - DeltaTheta*_i||_F^2 (est_err is the
    mean)."""
    return np.sum((delta_hat - delta_true) ** 2, axis=(1, 2))


def subspace_distance(est, b_diamond: np.ndarray) -> float:
    """dist(B_hat, B-diamond) of Definition A.1 for a method with a shared column space, NaN for
    the others (docs/formats.md)."""
    return (diversity.principal_angle_distance(est.basis, b_diamond)
            if est.basis is not None else float("nan"))


def _score_new_users(cfg: SimConfig, method: str, est, new, train_set, mdp, mu, solver) -> dict:
    """The new-user columns of runs.csv (sim.experiments.new_users.COLUMNS) for one method;
    train_set = (the training users' radii, the covariance of the basis error or None)."""
    zeta_train, basis_cov = train_set
    delta_hat, zeta, fit_gap = new_users.personalise(method, est, new, cfg.k, cfg.B, cfg.delta,
                                                     zeta_train, basis_cov)
    t = new.truth
    refs = reference_policies(cfg, new.train, mu)
    theta_hat = t.init + delta_hat
    gaps_p, res = policy_gaps(mdp, solver, t.theta, new.j_star, theta_hat, zeta, None, refs)
    gaps_v = plugin_gaps(mdp, t.theta, new.j_star, theta_hat)
    return dict(
        est_err_new=float(np.mean(user_errors(delta_hat, t.delta))),
        pred_err_new=prediction_error(delta_hat, t.delta, new.train),
        gap_pess_new=float(np.mean(gaps_p)), gap_vanilla_new=float(np.mean(gaps_v)),
        coverage_new=float(sets.coverage(t.delta, delta_hat, zeta)),
        zeta_new=float(np.mean(zeta)), floor_new=new_users.frozen_floor(method, est, new),
        fit_gap_new=fit_gap, policy_cert_gap_new=certificate_gap(res))


def prediction_error(delta_hat: np.ndarray, delta_true: np.ndarray, data) -> float:
    """pred_err = (1/N) sum_i e_i^T Sigma_hat_i e_i, e_i = vec(DeltaTheta_hat_i - DeltaTheta*_i),
    Sigma_hat_i = (1/Np_i) sum_j x_j x_j^T the second moment of user i's training feature
    differences x_j (error in the directions the data see). Arrays (N, d1, d2)."""
    err = np.asarray(delta_hat, dtype=float) - np.asarray(delta_true, dtype=float)
    z2 = np.einsum("mde,mde->m", data.diff, err[data.user]) ** 2
    per_user = np.bincount(data.user, weights=z2, minlength=data.n_users) / data.sizes
    return float(np.mean(per_user))


def warn_unconverged(runs) -> str | None:
    """One line naming the fits with fit_converged False in a runs table (None if all are)."""
    bad = runs[~runs["fit_converged"].astype(bool)]
    if bad.empty:
        return None
    by = ", ".join(f"{m} {c}" for m, c in bad["method"].value_counts().items())
    return (f"{len(bad)} of {len(runs)} fits stopped above their tolerance ({by}; fit_gap up to "
            f"{bad['fit_gap'].max():.1e}); see fit_converged and fit_gap in runs.csv")


def radius(cfg: SimConfig, method: str, est, train, truth, seed: int) -> np.ndarray:
    """Per-user zeta_i of Eq. 3.6's ball (array (N,)) by ``cfg.radius``; the bootstrap draws
    from its own stream of the instance seed (sim.confidence.bootstrap.boot_seed)."""
    if cfg.radius == "theory":
        z = sets.theory_radius(cfg.N, cfg.Np, cfg.nu, cfg.tail, cfg.d1, cfg.d2, cfg.k,
                                     min_bias=float(diversity.per_user_bias(truth.delta, cfg.k).min()),
                                     delta=cfg.delta, c=cfg.zeta_c)
        return np.full(cfg.N, float(z))
    if cfg.radius == "bootstrap":
        return bootstrap.bootstrap_radius(method, est, train, cfg.k, cfg.B, delta=cfg.delta,
                                          init=truth.init, n_boot=cfg.n_boot,
                                          seed=bootstrap.boot_seed(seed, method))
    return np.broadcast_to(
        sets.calibrated_radius(method, est, train, cfg.k, cfg.B, delta=cfg.delta,
                                     init=truth.init), (cfg.N,)).astype(float)


def _save_artifacts(path: Path, mdp, truth, mu, saved: dict) -> None:
    arrays = dict(P=mdp.P, rho=mdp.rho, phi=mdp.phi, delta_true=truth.delta, init=truth.init, mu=mu)
    for method, d in saved.items():
        for key, val in d.items():
            arrays[f"{method}__{key}"] = val
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)

