"""Restricted master of the LP path for Eq. 3.7 (sim/policy/solver.py): (*) over mixtures of candidates.

The LP path (simplicial decomposition) keeps candidate occupancies d_j, here only through
their feature differences v_j = Phi^T (d_j - d_ref) (columns of pts, (D, m)), and barycentric
weights lam. Every function maximises or certifies

    f(v) = <v, theta_hat> - sqrt(zeta) ||v||_2,      v in conv(pts),                     (*)

the pessimistic objective of Eq. 3.7 after the closed-form inner minimum over the Frobenius
ball of Eq. 3.6. No optimisation solver is called: affine-hull optima are closed-form
(:func:`master_step`), the cone's tip v = 0 is handled by an NNLS projection (:func:`tip_step`),
and redundant candidates are removed by Caratheodory steps (:func:`caratheodory`).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import qr, solve_triangular
from scipy.optimize import nnls

#: Relative cut-off on |R_ii| of the pivoted QR that spans an affine hull of candidates.
RANK_TOL = 1e-10


def objective(v: np.ndarray, th: np.ndarray, sz: float) -> float:
    """(*) as a function of v: <v, theta_hat> - sqrt(zeta) ||v||."""
    return float(v @ th - sz * np.linalg.norm(v))


def affine_max(x: np.ndarray, U: np.ndarray, th: np.ndarray, sz: float) -> tuple[np.ndarray, float]:
    """Closed-form ascent of (*) on the affine set x + span(U) (U orthonormal, (D, r)).

    With a = x - U U^T x and b = U U^T th / sqrt(zeta), (*) on the set is <a, th> +
    sqrt(zeta)(<z, b> - sqrt(||a||^2 + ||z||^2)) in z = U U^T x', so its maximiser is
    x_A = a + b ||a|| / sqrt(1 - ||b||^2) if ||b|| < 1: returns (x_A - x, 1). Otherwise (*)
    increases without bound along U U^T th: returns (U U^T th, inf).
    """
    tq = U.T @ th
    if np.linalg.norm(tq) < sz * (1.0 - 1e-12):
        a = x - U @ (U.T @ x)
        nb2 = float(tq @ tq) / sz**2
        return a + (U @ tq / sz) * (np.linalg.norm(a) / np.sqrt(1.0 - nb2)) - x, 1.0
    return U @ tq, np.inf


def master_step(pts: np.ndarray, lam: np.ndarray, th: np.ndarray, sz: float) -> np.ndarray:
    """Restricted master: ascend (*) over conv(pts) from the weights lam, Wolfe-style.

    pts (D, m) holds v(d_j) of the candidate occupancies, lam (m,) barycentric weights. On the
    affine hull p_0 + span(Q) of the candidates, with a the component of p_0 orthogonal to
    span(Q) and b = Q Q^T theta_hat / sqrt(zeta), (*) is <a, theta_hat> + sqrt(zeta)(<z, b> -
    sqrt(||a||^2 + ||z||^2)) in z = Q Q^T x, so its maximiser is closed-form:
    x_A = a + b ||a|| / sqrt(1 - ||b||^2) if ||b|| < 1; otherwise (*) increases without bound
    along b. Move towards x_A (or along b); if a weight reaches zero first, drop that candidate
    and repeat on the smaller hull (a minor cycle). (*) is concave and non-decreasing along
    every such move, so the weights returned score at least as well as lam. Hulls come from
    pivoted QR. If more than D + 1 candidates keep weight, Caratheodory steps remove the
    redundant ones (null directions of [pts; 1], x unchanged).
    """
    lam = lam.astype(float).copy()
    active = np.ones(lam.size, dtype=bool)
    for _ in range(lam.size):
        idx = np.flatnonzero(active)
        if idx.size < 2:
            break
        x = pts @ lam
        p0 = pts[:, idx[0]]
        Q, R, perm = qr(pts[:, idx[1:]] - p0[:, None], mode="economic", pivoting=True,
                        check_finite=False)
        diag = np.abs(np.diag(R))
        rank = int((diag > RANK_TOL * max(diag[0], 1e-300)).sum())
        if rank == 0:
            break
        U = Q[:, :rank]
        direction, t_max = affine_max(x, U, th, sz)
        # Basic solution of (hull directions) c = direction: dependent columns keep c = 0.
        c = np.zeros(idx.size - 1)
        c[perm[:rank]] = solve_triangular(R[:rank, :rank], U.T @ direction, check_finite=False)
        delta = np.zeros_like(lam)
        delta[idx[1:]] = c
        delta[idx[0]] = -c.sum()
        neg = delta < -1e-14 * np.abs(delta).max(initial=0.0)
        if not neg.any():
            if np.isfinite(t_max):
                lam += delta
            break
        with np.errstate(over="ignore", divide="ignore"):
            ratios = lam[neg] / -delta[neg]
        j = int(np.argmin(ratios))
        if ratios[j] >= t_max:
            lam += t_max * delta
            break
        lam += ratios[j] * delta
        drop = np.flatnonzero(neg)[j]
        lam[drop], active[drop] = 0.0, False
        lam = np.clip(lam, 0.0, None)
    lam = np.clip(lam, 0.0, None)
    lam /= lam.sum()
    return caratheodory(pts, lam) if np.count_nonzero(lam) > pts.shape[0] + 1 else lam


def tip_step(pts: np.ndarray, lam: np.ndarray, th: np.ndarray, sz: float):
    """At v = 0 (the cone's tip, where (*) is not differentiable): a step or a pricing point.

    With mu >= 0 the NNLS coefficients of theta_hat on the candidates and p = pts mu its
    projection onto their cone K: if ||p|| > sqrt(zeta), (*) grows like t ||p|| (||p|| -
    sqrt(zeta)) along v = t p, a feasible direction from v = 0 inside conv(pts); return the
    weights after the longest such step. Otherwise theta_hat - p lies in K's polar cone
    (Moreau), so u = p / sqrt(zeta) prices every candidate at <v_j, theta_hat - sqrt(zeta) u> <=
    0: the pricing LP then either certifies v = 0 (value ~0) or returns a vertex outside K,
    which strictly shrinks ||theta_hat - p||. Returns (new weights or None, u or None).
    """
    mu = nnls(pts, th)[0]
    p = pts @ mu
    if np.linalg.norm(p) <= sz * (1.0 + 1e-12) or mu.sum() == 0:
        return None, p / max(sz, 1e-300)
    delta = mu - mu.sum() * lam  # x(t) = t p; negative only where lam > 0
    neg = delta < 0
    t = float(np.min(lam[neg] / -delta[neg])) if neg.any() else 1.0 / mu.sum()
    w = np.clip(lam + t * delta, 0.0, None)
    return w / w.sum(), None


def caratheodory(pts: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Zero weights along null directions of [pts; 1] until the support is affinely independent."""
    while True:
        idx = np.flatnonzero(lam > 0)
        M = np.vstack([pts[:, idx], np.ones(idx.size)])
        if idx.size <= 1 or idx.size <= M.shape[0] and np.linalg.matrix_rank(M) == idx.size:
            return lam
        null = np.linalg.svd(M)[2][-1]
        if null.max() <= 0:
            null = -null
        pos = null > 1e-14 * np.abs(null).max()
        ratios = lam[idx][pos] / null[pos]
        j = int(np.argmin(ratios))
        lam[idx] = np.clip(lam[idx] - ratios[j] * null, 0.0, None)
        lam[idx[np.flatnonzero(pos)[j]]] = 0.0
        lam /= lam.sum()
