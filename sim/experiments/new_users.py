"""Held-out users scored with what each method learned (EXTENSION, not in the paper; issue 18).

After Algorithm 1 has run on the N training users, N_new further users arrive with Np_new
comparisons each (same MDP, same behaviour policy). Each method personalises them with what it
learned (docs/estimators.md, "New users"):

- ``shared``  : W_new by the constrained MLE of Eq. 3.5 over {B_hat W : ||W||_F <= B} with the
  training estimate's basis B_hat frozen (a convex ball-constrained logistic regression,
  solved to a Frank-Wolfe-gap certificate by the W-step that ``oracle`` uses);
- ``oracle``  : the same with B_diamond frozen;
- ``nuclear`` : the same with the top-k column space of its estimate frozen (its basis, as for
  ``shared``: the convex relaxation's learned subspace);
- ``local`` / ``full`` : from scratch on the new users' data alone (S^LoRA, S);
- ``global``  : its one trained DeltaTheta, unchanged (the new data are not used);
- ``zero``    : DeltaTheta_new = 0.

New users' truth (:func:`make_new_users`): DeltaTheta*_new = U diag(sigma) G with U, sigma the
left singular vectors and values of the training truth's aggregate [DeltaTheta*_1..N] and G
(r, d2) Gaussian, then the head (span B_diamond) and the tail (its complement) rescaled to the
training users' average energies k nu and Sigma_tail / N exactly. So every new user shares
B_diamond, has an isotropic head (E W W^T = nu I_k) and the training users' average tail, and
||DeltaTheta*_new||_F^2 = (k nu N + Sigma_tail) / N <= B^2, the training users' own norm.

Confidence sets (Eq. 3.6) use the degrees of freedom of what was fitted: for the frozen-basis
fits the tangent space {B W} (k d2 dimensions; sim.confidence.sets.calibrated_radius with method
``oracle`` and the frozen basis), ``local`` / ``full`` their own classes, ``global`` its
training radius (pooled information), ``zero`` none. The frozen fits' radius ignores the
basis' own error (the representation floor), which is not random given B_hat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.confidence import sets
from sim.estimation import estimators
from sim.model.data import make_preferences
from sim.model.truth import GroundTruth
from sim.policy.exact import optimal_value
from theory import diversity

#: Methods whose new users are fitted with a frozen basis (the method's own, B_diamond for oracle).
FROZEN = ("shared", "nuclear", "oracle")
#: Methods refitted from scratch on the new users' data.
SCRATCH = ("local", "full")
#: runs.csv columns this module fills (NaN when N_new = 0); docs/formats.md.
COLUMNS = ("est_err_new", "pred_err_new", "gap_pess_new", "gap_vanilla_new", "coverage_new",
           "zeta_new", "floor_new", "fit_gap_new", "policy_cert_gap_new")


@dataclass(frozen=True)
class NewUsers:
    """The held-out users of one instance."""

    truth: GroundTruth
    """(N_new, d1, d2) truth of the new users (init and delta)."""
    train: object
    """sim.model.data.PreferenceData: their Np_new comparisons each."""
    j_star: np.ndarray
    """(N_new,) their optimal values J(pi*; r*) (sim.policy.exact.optimal_value)."""


def make_new_users(truth: GroundTruth, n_new: int, rng: np.random.Generator,
                   init_scale: float = 0.0, init: np.ndarray | None = None) -> GroundTruth:
    """n_new users from the training truth's family (module docstring): column space B_diamond,
    head energy k nu and tail energy Sigma_tail / N exactly, per user.

    truth: the training GroundTruth (N, d1, d2); init: a fixed (d1, d2) Theta_init for every new
    user (the trap instance's base), else a random one of norm init_scale (0: none).
    """
    if int(n_new) != n_new or n_new < 1:
        raise ValueError(f"n_new must be a positive integer, got {n_new!r}")
    k, (n, _, d2) = truth.k, truth.delta.shape
    u, s, _ = np.linalg.svd(diversity.aggregate(truth.delta), full_matrices=False)
    head_e, tail_e = float(np.sum(s[:k] ** 2)) / n, float(np.sum(s[k:] ** 2)) / n
    g = rng.normal(size=(n_new, s.size, d2)) * s[None, :, None]
    head, tail = u[:, :k] @ g[:, :k], u[:, k:] @ g[:, k:]
    head *= np.sqrt(head_e) / np.linalg.norm(head, axis=(1, 2), keepdims=True)
    if tail_e > 1e-14 * max(head_e, 1e-300) and s.size > k:
        tail *= np.sqrt(tail_e) / np.linalg.norm(tail, axis=(1, 2), keepdims=True)
    else:
        tail[:] = 0.0
    delta = head + tail
    if init is not None:
        base = np.broadcast_to(np.asarray(init, dtype=float), delta.shape).copy()
    elif init_scale > 0:
        base = rng.normal(size=delta.shape)
        base *= init_scale / np.linalg.norm(base, axis=(1, 2), keepdims=True)
    else:
        base = np.zeros_like(delta)
    return GroundTruth(delta=delta, init=base, k=k, B=truth.B)


def build_new_users(cfg, truth: GroundTruth, mdp, mu, seeds) -> NewUsers:
    """New users' truth and data from two SeedSequences (``seeds``: the instance's spawn 4, 5)."""
    s_truth, s_data = seeds
    trap = cfg.instance == "trap"
    new = make_new_users(truth, cfg.N_new, np.random.default_rng(s_truth),
                         init_scale=0.0 if trap else cfg.init_scale,
                         init=truth.init[0] if trap else None)
    data = make_preferences(mdp, new.theta, cfg.Np_new, mu, mu, np.random.default_rng(s_data))
    return NewUsers(truth=new, train=data,
                    j_star=np.array([optimal_value(mdp, t) for t in new.theta]))


def fit_frozen(data, basis: np.ndarray, B: float, init: np.ndarray | None = None,
               tol: float = estimators.DEFAULT_TOL):
    """Eq. 3.5 over {basis W_i : ||W_i||_F <= B} for every user of ``data`` (basis (d1, k) frozen):
    the W-step of method ``oracle`` (sim.estimation.estimators.fit), certified by its Frank-Wolfe gap."""
    basis = np.asarray(basis, dtype=float)
    return estimators.fit("oracle", data, basis.shape[1], B, init=init, basis=basis, tol=tol)


def personalise(method: str, est, new: NewUsers, k: int, B: float, delta: float,
                zeta_train: np.ndarray, basis_cov: np.ndarray | None = None):
    """(DeltaTheta_hat_new (N_new, d1, d2), zeta_new (N_new,), fit gap) for one method; the
    frozen basis is the training estimate's own (est.basis: B_diamond for ``oracle``).
    basis_cov: for ``shared``, the covariance of its basis's error on the training users
    (sets.basis_error_covariance); the frozen fits' radius then adds each new user's share of
    it, as the training users' sets do. None (``oracle``'s exact B_diamond, ``nuclear``): the
    radius covers the W-error only."""
    data, init, n_new = new.train, new.truth.init, new.truth.N
    if method in FROZEN:
        fitted = fit_frozen(data, est.basis, B, init=init)
        zeta = sets.calibrated_radius("oracle", fitted, data, k, B, delta=delta, init=init,
                                      basis_cov=basis_cov)
    elif method in SCRATCH:
        fitted = estimators.fit(method, data, k, B, init=init)
        zeta = sets.calibrated_radius(method, fitted, data, k, B, delta=delta, init=init)
    elif method == "global":  # the pooled training fit; its radius is the same for every user
        return (np.broadcast_to(est.delta[0], new.truth.delta.shape).copy(),
                np.full(n_new, float(zeta_train[0])), 0.0)
    elif method == "zero":
        return np.zeros_like(new.truth.delta), np.zeros(n_new), 0.0
    else:
        raise ValueError(f"no new-user rule for method {method!r}")
    return fitted.delta, np.broadcast_to(zeta, (n_new,)).astype(float), float(fitted.info["gap"])


def frozen_floor(method: str, est, new: NewUsers) -> float:
    """Mean over new users of ||P_perp DeltaTheta*_new||_F^2, P_perp the projector off the frozen
    basis: an exact lower bound on a frozen fit's est_err_new (its estimate lies in
    span(basis) (x) R^d2); NaN for methods without a frozen basis."""
    if method not in FROZEN:
        return float("nan")
    perp = np.eye(est.basis.shape[0]) - est.basis @ est.basis.T
    return float(np.mean(np.sum((perp @ new.truth.delta) ** 2, axis=(1, 2))))


def empty_columns() -> dict:
    """The new-user columns when N_new = 0 (all NaN)."""
    return dict.fromkeys(COLUMNS, float("nan"))
