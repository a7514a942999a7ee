"""Confidence radius zeta of the sets R_i of Algorithm 1, step 3 (Eq. 3.6), and their coverage.

R_i = {Theta_init_i + DeltaTheta_i : ||DeltaTheta_i - DeltaTheta_hat_i||_F^2 <= zeta_i}.

- :func:`theory_radius`: the squared radius zeta_B1^2 from Eq. B.1 / C.3 (theory.bounds.zeta_theory
  is the radius itself, theory/README.md erratum 4), every unknown constant an argument ``c``. Its scale is arbitrary (the paper's constants are not
  given), so it cannot promise any coverage.
- :func:`calibrated_radius`: a data-calibrated per-user radius at level 1 - delta from the
  Fisher information of the Bradley-Terry likelihood (Eq. 3.5) restricted to the tangent
  space of each method's parameter set, with the squared error's quantile from a
  moment-matched (Satterthwaite) scaled chi-square. Closed-form: no refits, no randomness.
  The refit-based alternative is the parametric bootstrap of sim/confidence/bootstrap.py; coverage of
  both: docs/pessimism.md (``python -m sim.coverage``).
- :func:`sigma_d_ellipsoid`: an extension, not in the paper: the data-shaped ellipsoid
  ||theta - theta_hat||_{Sigma_D + lambda I} <= beta of Zhu, Jordan & Jiao (2023) with beta
  calibrated from the method's model, for sim/policy/solver.py's ``metric``.
- :func:`coverage`: fraction of users whose true DeltaTheta*_i lies in R_i.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from scipy.stats import chi2

from sim.model.data import PreferenceData
from theory.bounds import zeta_theory

#: Methods with a calibrated radius (the names of docs/formats.md).
CALIBRATED_METHODS = ("shared", "local", "full", "global", "nuclear", "oracle")
#: Ridge (relative to the trace) that keeps an information matrix invertible when a user's
#: comparisons do not span the tangent space; the radius is then capped at (2B)^2 anyway.
FISHER_RIDGE = 1e-10
#: Ridge lambda of the data-shaped set, relative to tr(Sigma_D) / D: small, so directions the
#: data do not see are nearly unconstrained (their variance is then capped by the B-ball).
SIGMA_D_RIDGE = 1e-3


def theory_radius(N, Np, nu, tail, d1, d2, k, min_bias=0.0, delta=0.1, c=1.0) -> float:
    """Eq. 3.6's threshold on the squared distance: the square of B.1 / C.3's radius zeta
    (theory.bounds.zeta_theory) with constant c; it falls like 1/Np, as the squared error does."""
    if not c > 0:
        raise ValueError(f"constant c must be positive, got {c}")
    return float(zeta_theory(N, Np, nu, tail, d1, d2, k, min_bias=min_bias, delta=delta, c=c)) ** 2


def coverage(delta_true: np.ndarray, delta_hat: np.ndarray, zeta, metric=None) -> float:
    """Fraction of users i with ||delta_true_i - delta_hat_i||_F^2 <= zeta_i (Eq. 3.6), or with
    e_i^T M_i e_i <= zeta_i for metrics M (N, d1 d2, d1 d2) (:func:`sigma_d_ellipsoid`).

    delta_true, delta_hat: (N, d1, d2); zeta: scalar or (N,), non-negative.
    """
    delta_true = np.asarray(delta_true, dtype=float)
    delta_hat = np.asarray(delta_hat, dtype=float)
    if delta_true.ndim != 3 or delta_true.shape != delta_hat.shape:
        raise ValueError(f"delta_true and delta_hat must both be (N, d1, d2), got "
                         f"{delta_true.shape} and {delta_hat.shape}")
    n = delta_true.shape[0]
    zeta = np.asarray(zeta, dtype=float)
    if zeta.ndim > 1 or (zeta.ndim == 1 and zeta.shape != (n,)):
        raise ValueError(f"zeta must be a scalar or have shape ({n},), got {zeta.shape}")
    if np.any(~np.isfinite(zeta) & ~np.isposinf(zeta)) or np.any(zeta < 0):
        raise ValueError(f"zeta must be non-negative, got min {zeta.min()}")
    e = (delta_true - delta_hat).reshape(n, -1)
    err = np.sum(e**2, axis=1) if metric is None else np.einsum("nd,nde,ne->n", e, metric, e)
    return float(np.mean(err <= zeta))


def sigma_d_ellipsoid(method: str, est, data: PreferenceData, k: int, B: float,
                      delta: float = 0.1, init: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Data-shaped sets {||theta - theta_hat_i||^2_{M_i} <= beta_i} (extension, not in the paper).

    The set of pessimistic offline RLHF (Zhu, Jordan & Jiao 2023, Eq. 3.1 there): M_i =
    Sigma_D,i + lambda I with Sigma_D,i = (1 / n_i) sum_j x_j x_j^T the second moment of the
    user's feature differences (pooled over users for ``global``, whose estimate uses all
    data) and lambda = SIGMA_D_RIDGE * tr(Sigma_D,i) / D. Zhu et al.'s beta is a worst-case
    bound with unknown constants; here it is calibrated like :func:`calibrated_radius`: with
    Sigma_i the first-order error covariance on the tangent space of the method's model
    (:func:`error_covariance`: shared = span(B_hat) W plus B_hat's error with its information
    pooled over users; local = the rank-k manifold; full/global = everything), e^T M_i e is a
    weighted chi-square with weights eig(M^1/2 Sigma_i M^1/2), and beta_i its (1 - delta)
    quantile (Satterthwaite). Two caps from the B-ball (||e||_F <= 2B): each eigen-direction
    of Sigma_i has variance at most (2B)^2, and beta_i <= lambda_max(M_i) (2B)^2 (the set then
    contains the whole 2B-ball). Returns (M (N, D, D), beta (N,)).
    """
    delta_hat, cov = error_covariance(method, est, data, k, B, delta, init)
    n, d1, d2 = delta_hat.shape
    D = d1 * d2
    x = data.diff.reshape(-1, D)
    second = np.zeros((n, D, D))
    for i in range(n):
        rows = x[data.user == i]
        second[i] = rows.T @ rows / max(len(rows), 1)
    if method == "global":
        second[:] = x.T @ x / len(x)
    metric, beta = np.empty((n, D, D)), np.empty(n)
    for i in range(n):
        m = second[i] + SIGMA_D_RIDGE * max(np.trace(second[i]) / D, 1e-300) * np.eye(D)
        metric[i] = (m + m.T) / 2
        lam_m, vec_m = np.linalg.eigh(metric[i])
        lam_c, vec_c = np.linalg.eigh(cov[i])
        cov_c = (vec_c * np.clip(lam_c, 0.0, 4.0 * B**2)) @ vec_c.T
        root = (vec_m * np.sqrt(lam_m)) @ vec_m.T
        w = np.linalg.eigvalsh(root @ cov_c @ root)
        w = w[w > 1e-14 * max(w.max(), 1e-300)]
        beta[i] = min(_quantile(w, delta), lam_m.max() * 4.0 * B**2)
    return metric, beta


def error_covariance(method: str, est, data: PreferenceData, k: int, B: float,
                     delta: float = 0.1, init: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(DeltaTheta_hat (N, d1, d2), Sigma (N, D, D)): the first-order covariance of each user's
    error T_i (T_i^T I_i T_i)^-1 T_i^T (+ the shared basis' error for ``shared``), the
    distribution behind :func:`calibrated_radius` (whose eigenvalues it has)."""
    delta_hat, info = _information(method, est, data, B, delta, init)
    n, d1, d2 = delta_hat.shape
    D = d1 * d2
    if method == "shared" and est.basis is None:
        raise ValueError("method 'shared' needs est.basis (d1, k)")
    extra = (_basis_error_cov(delta_hat, np.asarray(est.basis, dtype=float), info)
             if method == "shared" else np.zeros((n, D, D)))
    cov = np.empty((n, D, D))
    for i in range(n):
        t = _tangent(method, delta_hat[i], k, est.basis)
        info_t = t.T @ info[i] @ t
        info_t += FISHER_RIDGE * max(np.trace(info_t) / len(info_t), 1e-300) * np.eye(len(info_t))
        c = t @ np.linalg.solve(info_t, t.T) + extra[i]
        cov[i] = (c + c.T) / 2
    return delta_hat, cov


def calibrated_radius(method: str, est, data: PreferenceData, k: int, B: float,
                      delta: float = 0.1, init: np.ndarray | None = None,
                      basis_cov: np.ndarray | None = None) -> np.ndarray:
    """Per-user zeta_i (N,) with Pr(||DeltaTheta_hat_i - DeltaTheta*_i||_F^2 <= zeta_i) ~ 1 - delta.

    method: the estimator's name; est: its sim.estimation.estimators.Estimate (uses est.delta (N, d1, d2)
    and est.basis (d1, k) for ``shared``); data: the training comparisons; k, B: as in the fit;
    init: Theta_init (N, d1, d2) or None (zeros).

    Asymptotically DeltaTheta_hat_i - DeltaTheta*_i ~ N(0, T_i (T_i^T I_i T_i)^{-1} T_i^T) with
    I_i = sum_j p_j (1 - p_j) x_j x_j^T the user's Fisher information at the fit (x_j the
    vectorised feature difference, p_j the fitted BTL probability) and T_i an orthonormal
    basis of the tangent space of the method's parameter set at the estimate:
    ``full``/``nuclear``: all of R^{d1 d2}; ``local``: {U X + Y V^T} at the rank-k SVD
    U S V^T of DeltaTheta_hat_i; ``shared``: {B_hat W} plus the user's share P_perp Y W_i of
    the error Y of B_hat, whose information is pooled over all users (independent of the
    W-error to first order; holding B_hat fixed under-covered, docs/pessimism.md); ``global``: all of R^{d1 d2} with the information pooled over
    users. The squared norm is then a weighted chi-square sum_l lam_l chi2_1 (lam_l the
    covariance eigenvalues), whose (1 - delta) quantile is approximated by the scaled chi2
    a chi2_nu with a = sum lam^2 / sum lam, nu = (sum lam)^2 / sum lam^2 (Satterthwaite).
    Every estimate and truth lies in the ball ||DeltaTheta_i||_F <= B, so zeta_i <= (2B)^2.
    This ignores the estimators' bias (ball shrinkage, rank truncation when the truth has a
    tail, pooling for ``global``); docs/pessimism.md reports the coverage it achieves.

    basis_cov: for ``oracle``-type fits in a basis est.basis that was estimated on *other*
    users (new users personalised with a frozen `shared` basis, sim/experiments/new_users.py),
    the covariance (d1 k, d1 k) of that basis's error (:func:`basis_error_covariance` of the
    training fit); each user's share P_perp Y W_i is then added exactly as for ``shared``.
    """
    delta_hat, info = _information(method, est, data, B, delta, init)
    n, d1, d2 = delta_hat.shape
    shared_cov = None
    if method == "shared":
        if est.basis is None:
            raise ValueError("method 'shared' needs est.basis (d1, k)")
        basis = np.asarray(est.basis, dtype=float)
        shared_cov = _basis_error_cov(delta_hat, basis, info)
    elif basis_cov is not None:
        if method != "oracle":
            raise ValueError(f"basis_cov applies to fits in a frozen basis ('oracle'), not {method!r}")
        G = _basis_jacobians(delta_hat, np.asarray(est.basis, dtype=float))
        shared_cov = np.einsum("ndp,pq,neq->nde", G, basis_cov, G)
    zeta = np.empty(n)
    for i in range(n):
        tangent = _tangent(method, delta_hat[i], k, est.basis)
        lam = 1.0 / _eig_ridge(tangent.T @ info[i] @ tangent)
        if shared_cov is not None:
            # Add the user's share of the error of B_hat: cov of W-error (in span B_hat,
            # eigenvalues lam) plus that of (B_hat error) W_i (orthogonal to span B_hat).
            lam = np.r_[lam, np.linalg.eigvalsh(shared_cov[i])]
            lam = lam[lam > 0]
        zeta[i] = _quantile(lam, delta)
    return np.minimum(zeta, 4.0 * B**2)


def _information(method, est, data, B, delta, init):
    """Checked inputs of the Fisher-based sets: est.delta (N, d1, d2) and the per-user Fisher
    information at the fit (N, D, D), pooled over users for ``global``."""
    if method not in CALIBRATED_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {CALIBRATED_METHODS}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    delta_hat = check_estimate(est, data, B, init=init)
    theta = delta_hat if init is None else np.asarray(init, dtype=float) + delta_hat
    info = fisher_information(theta, data)
    if method == "global":
        info = np.broadcast_to(info.sum(0), info.shape)
    return delta_hat, info


def _tangent(method: str, delta_i: np.ndarray, k: int, basis) -> np.ndarray:
    """Orthonormal basis (d1 d2, t) of the tangent space of the method's parameter set at
    DeltaTheta_hat_i (see calibrated_radius)."""
    d1, d2 = delta_i.shape
    if method in ("full", "nuclear", "global"):
        return np.eye(d1 * d2)
    if method in ("shared", "oracle"):  # oracle: the basis is known, no basis error
        return np.kron(np.asarray(basis, dtype=float), np.eye(d2))
    return _lowrank_tangent(delta_i, k)


def _basis_jacobians(delta_hat: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(N, D, d1 k): G_i with vec(P_perp Y W_i) = G_i vec(Y), W_i = basis^T DeltaTheta_hat_i."""
    d1 = basis.shape[0]
    perp = np.eye(d1) - basis @ basis.T
    return np.stack([np.kron(perp, (basis.T @ d).T) for d in delta_hat])


def _basis_error_cov(delta_hat: np.ndarray, basis: np.ndarray, info: np.ndarray) -> np.ndarray:
    """(N, D, D): covariance of P_perp Y W_i, the error Y (d1, k) of the shared basis seen by user
    i (W_i = basis^T DeltaTheta_hat_i), with vec(Y) ~ N(0, J^+), J = sum_i G_i^T I_i G_i pooled."""
    G = _basis_jacobians(delta_hat, basis)
    return np.einsum("ndp,pq,neq->nde", G, _pooled_inverse(G, info), G)


def _pooled_inverse(G: np.ndarray, info: np.ndarray) -> np.ndarray:
    """J^+ with J = sum_i G_i^T I_i G_i: the basis error's covariance pooled over the users."""
    J = np.einsum("ndp,nde,neq->pq", G, info, G)
    return np.linalg.pinv(J, rcond=1e-10, hermitian=True)


def basis_error_covariance(est, data: PreferenceData, B: float, delta: float = 0.1,
                           init: np.ndarray | None = None) -> np.ndarray:
    """(d1 k, d1 k): the asymptotic covariance J^+ of vec(Y), the error of a `shared` fit's basis
    est.basis, pooled over the users of ``data`` -- the basis term of calibrated_radius's
    ``shared`` sets, for users who reuse that basis later (``basis_cov``)."""
    if est.basis is None:
        raise ValueError("basis_error_covariance needs est.basis (d1, k)")
    delta_hat, info = _information("shared", est, data, B, delta, init)
    return _pooled_inverse(_basis_jacobians(delta_hat, np.asarray(est.basis, dtype=float)), info)


def check_estimate(est, data: PreferenceData, B: float, **same_shape) -> np.ndarray:
    """est.delta (N, d1, d2) as floats, after checking it against data, B > 0 and the shapes of
    the optional (N, d1, d2) arrays in same_shape (None skips one); ValueError otherwise."""
    if not B > 0:
        raise ValueError(f"B must be positive, got {B}")
    delta_hat = np.asarray(est.delta, dtype=float)
    n, d1, d2 = delta_hat.shape
    if data.n_users != n or data.x0.shape[1:] != (d1, d2):
        raise ValueError(f"estimate has shape {delta_hat.shape} but data has {data.n_users} "
                         f"users with features {data.x0.shape[1:]}")
    for name, arr in same_shape.items():
        if arr is not None and np.shape(arr) != delta_hat.shape:
            raise ValueError(f"{name} must have shape {delta_hat.shape}, got {np.shape(arr)}")
    return delta_hat


def fisher_information(theta: np.ndarray, data: PreferenceData) -> np.ndarray:
    """Per-user BTL Fisher information at theta (N, d1, d2): (N, d1 d2, d1 d2)."""
    n, d1, d2 = theta.shape
    x = data.diff.reshape(-1, d1 * d2)
    p = expit(np.einsum("md,md->m", x, theta[data.user].reshape(-1, d1 * d2)))
    w = p * (1 - p)
    info = np.zeros((n, d1 * d2, d1 * d2))
    order = np.argsort(data.user, kind="stable")  # one GEMM per user (np.add.at was the hotspot)
    bounds = np.searchsorted(data.user[order], np.arange(n + 1))
    for i in range(n):
        rows = order[bounds[i]:bounds[i + 1]]
        info[i] = (x[rows] * w[rows, None]).T @ x[rows]
    return info


def _lowrank_tangent(delta_i: np.ndarray, k: int, basis: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal basis (d1 d2, <= k (d1 + d2 - k)) of {U X + Y V^T}: the rank-k manifold's
    tangent space at delta_i = U S V^T (U replaced by ``basis`` (d1, k) when given)."""
    d1, d2 = delta_i.shape
    u, _, vt = np.linalg.svd(delta_i)
    U, V = (u[:, :k] if basis is None else basis), vt[:k].T
    span = np.hstack([np.kron(U, np.eye(d2)), np.kron(np.eye(d1), V)])
    q, s, _ = np.linalg.svd(span, full_matrices=False)
    return q[:, s > 1e-10 * s[0]]


def _eig_ridge(info_t: np.ndarray) -> np.ndarray:
    """Eigenvalues of an information matrix with a relative ridge (FISHER_RIDGE)."""
    m = info_t.shape[0]
    ridge = FISHER_RIDGE * max(np.trace(info_t) / m, 1e-300)
    return np.linalg.eigvalsh(info_t + ridge * np.eye(m))


def _quantile(lam: np.ndarray, delta: float) -> float:
    """(1 - delta) quantile of sum_l lam_l chi2_1 by Satterthwaite's scaled chi-square."""
    a = np.sum(lam**2) / np.sum(lam)
    dof = np.sum(lam) ** 2 / np.sum(lam**2)
    return float(a * chi2.ppf(1 - delta, dof))
