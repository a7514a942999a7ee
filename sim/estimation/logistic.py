"""Batched ball-constrained logistic regression, the workhorse of the MLEs of Eq. 3.5.

Every estimator of sim/estimation/estimators.py reduces to (many) problems of the form

    minimise_v  F_g(v) = sum_j w_gj * l(<a_gj, v> + c_gj, o_gj)   subject to ||v||_2 <= R_g,

with l(z, o) = log(1 + e^z) - o z the Bradley-Terry negative log-likelihood (Eq. 3.5 negated),
one problem per group g (a user, or a group of users sharing a basis). The ball is the
Frobenius bound ||DeltaTheta_i||_F <= B of Eq. 3.1/3.3/3.4; at small Np a user's comparisons
are often linearly separable, the unconstrained MLE diverges and the ball is active.

Algorithm: Newton's method whose subproblem -- the quadratic model over the ball, a
trust-region subproblem centred at the origin -- is solved exactly (eigendecomposition plus a
monotone Newton iteration on the secular equation, Moré & Sorensen 1983, Sec. 4), followed by
Armijo backtracking along the feasible segment. All groups advance together as stacked arrays
(np.linalg.eigh on (G, p, p)). Convergence is certified by the Frank-Wolfe gap
g.v + R ||g|| >= F(v) - min F, which the solver drives below ``tol`` for every group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

ARMIJO = 1e-4
MAX_HALVINGS = 40
SECULAR_ITERS = 60


@dataclass(frozen=True)
class BallLogisticResult:
    """Solution of G ball-constrained logistic regressions."""

    v: np.ndarray
    """(G, p): the minimisers."""
    obj: np.ndarray
    """(G,): F_g at v."""
    gap: np.ndarray
    """(G,): Frank-Wolfe gap g.v + R||g||, an upper bound on F_g(v) - min F_g."""
    iterations: int
    converged: bool
    """True only when every group's gap is <= tol (a stalled group makes it False)."""


def logistic_loss(z: np.ndarray, o: np.ndarray) -> np.ndarray:
    """l(z, o) = log(1 + e^z) - o z elementwise (negated log-likelihood of Eq. 3.5)."""
    return np.logaddexp(0.0, z) - o * z


def pad_index(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of each group as a rectangular table.

    group: (M,) ints in [0, n_groups). Returns ``idx`` (G, m_max) row numbers (padding points
    at row 0) and ``mask`` (G, m_max) bool, True on real rows; rows keep their input order.
    """
    group = np.asarray(group)
    counts = np.bincount(group, minlength=n_groups)
    m_max = max(int(counts.max()) if counts.size else 0, 1)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(group.size) - starts[group[order]]
    idx = np.zeros((n_groups, m_max), dtype=np.int64)
    mask = np.zeros((n_groups, m_max), dtype=bool)
    idx[group[order], pos] = order
    mask[group[order], pos] = True
    return idx, mask


def trs_ball(H: np.ndarray, b: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Exact minimiser of 0.5 u^T H u + b^T u over ||u|| <= R, batched.

    H: (G, p, p) symmetric positive semi-definite; b: (G, p); R: (G,) radii > 0.
    Returns u (G, p). Because H is PSD the "hard case" can only occur with multiplier 0, where
    the minimum-norm minimiser is optimal; otherwise the multiplier lam > 0 solves
    ||(H + lam I)^{-1} b|| = R, found by Newton on 1/||u(lam)|| - 1/R (concave, increasing),
    started left of the root so the iterates increase monotonically to it.
    """
    e, Q = np.linalg.eigh(H)
    e = np.maximum(e, 0.0)
    beta = np.einsum("gpq,gp->gq", Q, b)
    tiny = 1e-13 * np.maximum(e[:, -1:], 1e-300)
    null = e <= tiny
    btiny = 1e-13 * np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    unbounded = np.any(null & (np.abs(beta) > btiny), axis=1)
    # b's share of a null direction below btiny is rounding (b lies in H's range): zero it, or
    # 0/0 at lam = 0 stops the secular iteration there and the rescaled minimum-norm point,
    # which is not the minimiser, is returned (found by tests/test_new_users.py at m < p)
    beta = np.where(null & ~unbounded[:, None] & (np.abs(beta) <= btiny), 0.0, beta)
    coef0 = np.where(null, 0.0, beta / np.where(null, 1.0, e))
    norm0 = np.linalg.norm(coef0, axis=1)
    R = np.broadcast_to(np.asarray(R, dtype=float), norm0.shape)
    interior = ~unbounded & (norm0 <= R)
    lam = np.maximum(0.0, np.max(np.abs(beta) / R[:, None] - e, axis=1))
    lam = np.where(interior, 0.0, lam)
    todo = ~interior
    for _ in range(SECULAR_ITERS):
        if not todo.any():
            break
        den = e[todo] + lam[todo, None]
        bt = beta[todo]
        with np.errstate(divide="ignore", invalid="ignore"):
            n2 = np.sum(np.where(bt == 0, 0.0, bt**2 / den**2), axis=1)
            d2 = np.sum(np.where(bt == 0, 0.0, bt**2 / den**3), axis=1)
            norm = np.sqrt(n2)
            phi = 1.0 / norm - 1.0 / R[todo]
            step = np.where(d2 > 0, phi * n2 * norm / d2, 0.0)
        step = np.nan_to_num(step, nan=0.0, posinf=0.0)
        lam[todo] = lam[todo] - step
        done = np.abs(norm - R[todo]) <= 1e-13 * R[todo]
        sub = np.flatnonzero(todo)
        todo[sub[done | (step == 0)]] = False
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = np.where(interior[:, None], coef0,
                        np.where(beta == 0, 0.0, beta / (e + lam[:, None])))
    coef = np.nan_to_num(coef)
    u = -np.einsum("gpq,gq->gp", Q, coef)
    norm = np.linalg.norm(u, axis=1)
    over = norm > R
    u[over] *= (R[over] / norm[over])[:, None]
    return u


def _evaluate(A, c, o, w, v):
    z = np.einsum("gmp,gp->gm", A, v) + c
    return np.sum(w * logistic_loss(z, o), axis=1), z


def ball_logistic(A: np.ndarray, c: np.ndarray, o: np.ndarray, w: np.ndarray, R,
                  v0: np.ndarray | None = None, tol: float = 1e-13,
                  max_iter: int = 100) -> BallLogisticResult:
    """Solve G problems min sum_j w_j l(<a_j, v> + c_j, o_j) s.t. ||v|| <= R (Eq. 3.1 ball).

    A: (G, m, p) features a_gj; c: (G, m) known logit offsets (Theta_init); o: (G, m) labels in
    {0, 1}; w: (G, m) non-negative row weights (0 on padding, 1/M for the mean NLL);
    R: scalar or (G,) radii > 0; v0: (G, p) start (projected onto the ball).
    Stops when every Frank-Wolfe gap is <= tol or no Armijo step can decrease F any more
    (stalled: then ``converged`` is False).
    """
    A = np.asarray(A, dtype=float)
    G, _, p = A.shape
    R = np.broadcast_to(np.asarray(R, dtype=float), (G,)).copy()
    if np.any(~(R > 0)):
        raise ValueError(f"ball radius must be positive, got {R.min()}")
    v = np.zeros((G, p)) if v0 is None else np.array(v0, dtype=float)
    nv = np.linalg.norm(v, axis=1)
    v[nv > R] *= (R[nv > R] / nv[nv > R])[:, None]
    obj, z = _evaluate(A, c, o, w, v)
    active = np.ones(G, dtype=bool)
    was_futile = np.zeros(G, dtype=bool)
    it = 0
    gap = np.full(G, np.inf)
    for _ in range(max_iter):
        it += 1
        prob = expit(z)
        r = w * (prob - o)
        g = np.einsum("gmp,gm->gp", A, r)
        gap = np.maximum(np.einsum("gp,gp->g", g, v) + R * np.linalg.norm(g, axis=1), 0.0)
        active &= gap > tol
        if not active.any():
            break
        ia = np.flatnonzero(active)
        Aa = A[ia]
        s = w[ia] * prob[ia] * (1.0 - prob[ia])
        H = np.matmul(Aa.transpose(0, 2, 1), Aa * s[:, :, None])
        va = v[ia]
        u = trs_ball(H, g[ia] - np.einsum("gpq,gq->gp", H, va), R[ia])
        d = u - va
        slope = np.einsum("gp,gp->g", g[ia], d)
        # a predicted decrease below the rounding level of F cannot be verified by Armijo:
        # take the full Newton step unless it visibly increases F (quadratic-convergence region)
        futile = -slope <= 1e-14 * np.maximum(np.abs(obj[ia]), 1e-300)
        t = np.ones(ia.size)
        accepted = np.zeros(ia.size, dtype=bool)
        new_obj = obj[ia].copy()
        new_z = z[ia].copy()
        for _ in range(MAX_HALVINGS):
            pend = np.flatnonzero(~accepted)
            cand = va[pend] + t[pend, None] * d[pend]
            f_c, z_c = _evaluate(Aa[pend], c[ia[pend]], o[ia[pend]], w[ia[pend]], cand)
            ok = f_c <= obj[ia[pend]] + ARMIJO * t[pend] * slope[pend]
            ok |= futile[pend] & (f_c <= obj[ia[pend]] + 4e-16 * np.abs(obj[ia[pend]]))
            ok &= np.isfinite(f_c)
            new_obj[pend[ok]] = f_c[ok]
            new_z[pend[ok]] = z_c[ok]
            accepted[pend[ok]] = True
            t[pend[~ok]] *= 0.5
            if accepted.all():
                break
        # a group whose Newton direction gives no Armijo decrease is at its rounding floor
        # twice futile in a row (or no acceptable step): at the rounding floor
        stalled = ~accepted | (futile & was_futile[ia])
        was_futile[ia] = futile
        upd = accepted & ~stalled
        v[ia[upd]] = va[upd] + t[upd, None] * d[upd]
        obj[ia[upd]] = new_obj[upd]
        z[ia[upd]] = new_z[upd]
        active[ia[stalled]] = False
    else:
        r = w * (expit(z) - o)
        g = np.einsum("gmp,gm->gp", A, r)
        gap = np.maximum(np.einsum("gp,gp->g", g, v) + R * np.linalg.norm(g, axis=1), 0.0)
    # a group stopped at its rounding floor with gap > tol is *not* converged
    converged = bool(np.all(gap <= tol))
    return BallLogisticResult(v=v, obj=obj, gap=gap, iterations=it, converged=converged)
