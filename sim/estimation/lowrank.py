"""Rank-constrained MLE of Eq. 3.5 for the methods ``shared`` and ``local`` of
sim/estimation/estimators.py: the solver from one start (sim/estimation/multistart.py runs it
from several starts and keeps the best).

Minimises the mean negative log-likelihood (Eq. 3.5 negated, divided by M) over
S^ShareLoRA (Eq. 3.4: rank([DeltaTheta_1..DeltaTheta_N]) <= k, ||DeltaTheta_i||_F <= B) for
``shared``, or over S^LoRA (Eq. 3.3: rank(DeltaTheta_i) <= k, ||DeltaTheta_i||_F <= B for every
user i) for ``local``. Called through ``sim.estimation.estimators.fit``, which validates the inputs.

Algorithm (details and measured numbers in docs/estimators.md): write DeltaTheta_i = U W_i with
U (d1, k) (one U for ``shared``, one per user for ``local``) and the equivalent feasible set
{||U||_op <= 1, ||W_i||_F <= B}. W is always solved exactly for the current U (N batched
ball-constrained logistic regressions, sim/estimation/logistic.py), which makes the objective a function
g(span U) on the Grassmannian (variable projection). ``solver="newton"`` (default) alternates
this exact W-step with a Newton step for g in the horizontal directions U_perp Z
(Schur-complement Hessian, saddle-free), retracted by QR and accepted by Armijo backtracking on
g, so the iterates decrease g monotonically and stay feasible. ``solver="lbfgs"`` minimises g
by scipy L-BFGS in a fixed chart span(U0 + U0_perp Z) (an independent outer algorithm used as
a cross-check). The convergence measure ``info["gap"]`` is the Frank-Wolfe gap of the (U, W)
problem over its convex feasible set: zero exactly at first-order stationary points (the
problem is non-convex, so this certifies stationarity, not global optimality).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from sim.estimation.layout import _Problem
from sim.estimation.logistic import ball_logistic
from theory.diversity import aggregate, column_space

#: Objectives within MATCH_RTOL (relative) count as the same minimum (multi-start hits,
#: the early stop of _newton).
MATCH_RTOL = 1e-7
#: Early stop of a random start heading for a worse minimum (see _newton).
ABANDON = 10.0
ABANDON_AFTER = 2


class _LowRank:
    """DeltaTheta_i = U_{c(i)} W_i with one basis (shared, C = 1) or one per user (local, C = N).

    Arrays: U (C, d1, k) orthonormal columns; W (N, k, d2); per-user padded rows (N, m).
    """

    def __init__(self, prob: _Problem, k: int, B: float, shared: bool, tol: float):
        self.prob, self.k, self.B, self.shared, self.tol = prob, k, B, shared, tol
        self.n_w_iters = 0
        n, m, d1, d2 = prob.X.shape
        self.Xf = prob.X.reshape(n, m, d1 * d2)
        # (d1, N m d2): with one shared basis, U^T X_j for all rows is a single GEMM
        self.Xt = prob.X.transpose(2, 0, 1, 3).reshape(d1, -1) if shared else None

    def left_multiply(self, V):
        """(N, m, r, d2): V_{c(i)}^T X_j for every row, V (C, d1, r)."""
        p = self.prob
        n, m, _, d2 = p.X.shape
        if self.shared:
            out = (V[0].T @ self.Xt).reshape(V.shape[2], n, m, d2)
            return out.transpose(1, 2, 0, 3)
        return np.matmul(V.transpose(0, 2, 1)[:, None], p.X)

    def user_basis(self, U):
        """(N, d1, k) basis of every user from (C, d1, k)."""
        return np.broadcast_to(U, (self.prob.N, *U.shape[1:])) if self.shared else U

    def group_sum(self, per_user):
        """Sum a per-user array (N, ...) within basis groups -> (C, ...)."""
        return per_user.sum(0, keepdims=True) if self.shared else per_user

    def project(self, U):
        """(N, m, k, d2): U_{c(i)}^T X_j for every row."""
        return self.left_multiply(U)

    def spectral_start(self) -> np.ndarray:
        """Top-k left singular vectors of the NLL gradient at DeltaTheta = 0 (per group)."""
        p = self.prob
        G = self.gradient_users(p.w * (p.o - expit(p.c)))
        if self.shared:
            return column_space(aggregate(G), self.k)[None]
        u, _, _ = np.linalg.svd(G, full_matrices=True)
        return np.ascontiguousarray(u[:, :, :self.k])

    def gradient_users(self, r):
        """(N, d1, d2): D_i = sum_j r_j X_j over user i's rows."""
        p = self.prob
        return np.matmul(r[:, None, :], self.Xf)[:, 0].reshape(p.N, p.d1, p.d2)

    def users_of(self, groups: np.ndarray) -> np.ndarray:
        """(N,) bool: users whose basis group is flagged in ``groups`` (C,) bool."""
        return np.full(self.prob.N, bool(groups[0])) if self.shared else groups

    def w_step(self, U, W0, users: np.ndarray | None = None):
        """Exact W-step: min over ||W_i||_F <= B of the NLL at U W_i for the given users.

        U: (C, d1, k); W0: (N, k, d2) warm start; users: (N,) bool or None (all).
        Returns W (n_sel, k, d2), objective (n_sel,) and Frank-Wolfe gap (n_sel,).
        """
        p, k = self.prob, self.k
        sel = np.arange(p.N) if users is None else np.flatnonzero(users)
        if self.shared:
            F = self.left_multiply(U)[sel]
        else:
            F = np.matmul(U[sel].transpose(0, 2, 1)[:, None], p.X[sel])
        F = F.reshape(sel.size, p.X.shape[1], -1)
        res = ball_logistic(F, p.c[sel], p.o[sel], p.w[sel], self.B,
                            v0=W0[sel].reshape(sel.size, -1), tol=self.tol / (10 * p.N),
                            max_iter=100)
        self.n_w_iters += res.iterations
        return res.v.reshape(sel.size, k, -1), res.obj, res.gap

    def residuals(self, U, W):
        """r_j = w_j (sigma(z_j) - o_j), s_j = w_j sigma'(z_j) (N, m) and delta (N, d1, d2)."""
        p = self.prob
        delta = np.matmul(self.user_basis(U), W)
        z = np.matmul(self.Xf, delta.reshape(p.N, -1, 1))[:, :, 0] + p.c
        prob_ = expit(z)
        return p.w * (prob_ - p.o), p.w * prob_ * (1 - prob_), delta

    def joint_gap(self, U, W, r, w_gap):
        """Frank-Wolfe gap over {||U||_op <= 1} x {||W_i||_F <= B} (stationarity measure)."""
        D = self.gradient_users(r)
        GU = self.group_sum(np.matmul(D, W.transpose(0, 2, 1)))
        nuc = np.linalg.svd(GU, compute_uv=False).sum(axis=1)
        return float(np.sum(np.maximum(np.einsum("cdk,cdk->c", GU, U) + nuc, 0)) + w_gap.sum())

    def complement(self, U):
        q, _ = np.linalg.qr(U, mode="complete")
        return np.ascontiguousarray(q[:, :, self.k:])

    def newton_direction(self, U, Uperp, W, r, s):
        """Newton step Z (C, q, k), q = d1 - k, for h(Z) = g(span(U + U_perp Z)) at Z = 0.

        h(Z) = min_V f((U + U_perp Z) V) s.t. ||V_i||^2 + ||Z V_i||^2 <= B^2 (U_perp^T U = 0);
        its Hessian is the Schur complement L_ZZ - sum_i L_ZV_i (P_i L_VV_i P_i)^+ L_VZ_i of
        the Lagrangian Hessian, with lam_i the multipliers of the W-step and P_i the projector
        onto the sphere's tangent for users whose ball is active. Returns (dz, grad) with the
        Hessian shifted by a Levenberg term where it is not positive definite.
        """
        k = self.k
        n, m = r.shape
        q = Uperp.shape[2]
        D = self.gradient_users(r)                                   # (N, d1, d2)
        UpX = self.left_multiply(Uperp)                             # (N, m, q, d2)
        a = np.matmul(UpX.reshape(n, m * q, -1), W.transpose(0, 2, 1)).reshape(n, m, q * k)
        b = self.project(U).reshape(n, m, k * W.shape[2])
        gW = np.matmul(r[:, None, :], b)[:, 0]                       # (N, k d2)
        wf = W.reshape(n, -1)
        wn2 = np.sum(wf**2, axis=1)
        lam = np.where(wn2 > 0, -np.sum(gW * wf, axis=1) / np.maximum(wn2, 1e-300), 0.0)
        active = (wn2 >= (self.B * (1 - 1e-7)) ** 2) & (lam > 0)
        lam = np.where(active, lam, 0.0)
        as_ = a * s[:, :, None]
        Hzz = np.matmul(a.transpose(0, 2, 1), as_)                  # (N, qk, qk)
        WWt = lam[:, None, None] * np.matmul(W, W.transpose(0, 2, 1))   # (N, k, k)
        Hzz += np.einsum("ab,ncd->nacbd", np.eye(q), WWt).reshape(n, q * k, q * k)
        E = np.einsum("nqe,cC->nqcCe", np.matmul(self.user_basis(Uperp).transpose(0, 2, 1), D),
                      np.eye(k)).reshape(n, q * k, -1)
        Hzv = np.matmul(as_.transpose(0, 2, 1), b) + E               # (N, qk, k d2)
        pw = b.shape[2]
        Hvv = np.matmul(b.transpose(0, 2, 1), b * s[:, :, None]) + lam[:, None, None] * np.eye(pw)
        what = np.where(active[:, None], wf / np.sqrt(np.maximum(wn2, 1e-300))[:, None], 0.0)
        P = np.eye(pw) - what[:, :, None] * what[:, None, :]
        ridge = 1e-12 * (np.trace(Hvv, axis1=1, axis2=2) / pw + 1e-300)
        Avv = P @ Hvv @ P + what[:, :, None] * what[:, None, :] + ridge[:, None, None] * np.eye(pw)
        Y = np.matmul(Hzv, P)
        schur = np.matmul(Y, np.linalg.solve(Avv, Y.transpose(0, 2, 1)))
        Hh = self.group_sum(Hzz - schur)
        gz = self.group_sum(np.matmul(a.transpose(0, 2, 1), r[:, :, None])[:, :, 0])
        Hh = 0.5 * (Hh + Hh.transpose(0, 2, 1))
        e, V = np.linalg.eigh(Hh)
        floor = 1e-8 * np.maximum(np.abs(e).max(axis=1, keepdims=True), 1e-300)
        e = np.maximum(np.abs(e), floor)  # saddle-free Newton: |eigenvalues|, bounded below
        dz = -np.einsum("cpq,cq->cp", V, np.einsum("cpq,cp->cq", V, gz) / e)
        return dz.reshape(-1, q, k), gz


def _newton(lr: _LowRank, U, W, obj, w_gap, max_iter, target=None):
    """Exact W-steps alternating with Armijo-backtracked Newton steps on span(U).

    A step whose predicted decrease is below the rounding level of g cannot be verified by
    Armijo; it is taken in full unless g visibly increases, and two such steps in a row stop
    the group (it sits at its rounding floor). ``target`` (C,): the incumbent minima of a
    multi-start; a group stops once its g is within MATCH_RTOL of its target (``reached``), or,
    after ABANDON_AFTER iterations, once g exceeds it by more than ABANDON times the Newton
    model's predicted decrease (it is heading for a worse minimum).
    """
    it = 0
    C = U.shape[0]
    live = np.ones(C, dtype=bool)
    reached = np.zeros(C, dtype=bool)
    abandoned = np.zeros(C, dtype=bool)
    was_futile = np.zeros(C, dtype=bool)
    for _ in range(max_iter):
        it += 1
        r, s, _ = lr.residuals(U, W)
        if lr.joint_gap(U, W, r, w_gap) <= lr.tol or not live.any():
            break
        Uperp = lr.complement(U)
        dz, gz = lr.newton_direction(U, Uperp, W, r, s)
        slope = np.einsum("cp,cp->c", gz, dz.reshape(gz.shape))
        gobj = lr.group_sum(obj)
        futile = -slope <= 1e-13 * np.abs(gobj)
        live &= ~(futile & was_futile)
        was_futile = futile
        if target is not None:
            same = live & (np.abs(gobj - target) <= MATCH_RTOL * np.abs(target))
            worse = (it > ABANDON_AFTER) & (gobj - target > ABANDON * np.maximum(-slope, 0)
                                            + MATCH_RTOL * np.abs(target))
            reached |= same
            abandoned |= worse & ~same
            live &= ~(same | worse)
        t = np.ones(C)
        todo = live & (slope < 0)
        delta = np.matmul(lr.user_basis(U), W)
        for _ in range(30):
            if not todo.any():
                break
            Un = U.copy()
            Un[todo] = np.linalg.qr(U[todo] + t[todo, None, None] *
                                    np.matmul(Uperp[todo], dz[todo]))[0]
            users = lr.users_of(todo)
            # warm start: project the current update onto the new span (stays feasible)
            W0 = np.matmul(lr.user_basis(Un).transpose(0, 2, 1), delta)
            Wn, objn, gapn = lr.w_step(Un, W0, users)
            obj_try = obj.copy()
            obj_try[users] = objn
            g_try = lr.group_sum(obj_try)
            ok = todo & ((g_try <= gobj + 1e-4 * t * slope) |
                         (futile & (g_try <= gobj * (1 + 1e-15))))
            sel = np.flatnonzero(users)
            keep = lr.users_of(ok)[sel]
            U[ok] = Un[ok]
            W[sel[keep]], obj[sel[keep]], w_gap[sel[keep]] = Wn[keep], objn[keep], gapn[keep]
            todo &= ~ok
            t[todo] *= 0.5
        live &= ~todo  # groups without an acceptable step are at their rounding floor
    return U, W, obj, w_gap, {"iterations": it, "reached": reached,
                                  "abandoned": abandoned}


def _lbfgs(lr: _LowRank, U0, W, max_iter):
    """Variable projection: scipy L-BFGS on h(Z) = g(span(U0 + U0_perp Z)), one fixed chart.

    Gradient (envelope theorem, M = U0 + U0_perp Z = Q R): dh/dZ = U0_perp^T (I - Q Q^T)
    G_Q R^{-T}, G_Q the NLL gradient in the basis at the optimal W.
    """
    U0perp = lr.complement(U0)
    C, d1, q = U0perp.shape
    k = lr.k
    state = {"W": W}

    def fun(zflat):
        Z = zflat.reshape(C, q, k)
        Q, Rm = np.linalg.qr(U0 + np.matmul(U0perp, Z))
        # warm start from the previous W mapped into the new basis (feasible)
        Wn, objn, gapn = lr.w_step(Q, state["W"])
        state.update(W=Wn, Q=Q, obj=objn, gap=gapn)
        r, _, _ = lr.residuals(Q, Wn)
        GQ = lr.group_sum(np.matmul(lr.gradient_users(r), Wn.transpose(0, 2, 1)))
        horiz = GQ - np.matmul(Q, np.matmul(Q.transpose(0, 2, 1), GQ))
        gM = np.linalg.solve(Rm, horiz.transpose(0, 2, 1)).transpose(0, 2, 1)
        return float(objn.sum()), np.matmul(U0perp.transpose(0, 2, 1), gM).ravel()

    res = minimize(fun, np.zeros(C * q * k), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 30})
    fun(res.x)
    return state["Q"], state["W"], state["obj"], state["gap"], {
        "iterations": int(res.nit), "lbfgs_message": str(res.message)}
