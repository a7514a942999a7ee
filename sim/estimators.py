"""Maximum-likelihood estimators of the personalized reward parameters (Eq. 3.1-3.5).

Every user's parameter is Theta_i = Theta_init_i + DeltaTheta_i (Eq. 3.3); the comparison j of
user i is labelled o = 1 with probability sigmoid(<x0_j - x1_j, Theta_i>_F) (BTL, Eq. 3.5), so
Theta_init enters as a known logit offset. ``fit`` returns the minimiser of the mean negative
log-likelihood (Eq. 3.5 negated, divided by the number of comparisons M) over

- ``shared``  : S^ShareLoRA (Eq. 3.4): rank([DeltaTheta_1..DeltaTheta_N]) <= k, ||DeltaTheta_i||_F <= B;
- ``local``   : S^LoRA (Eq. 3.3): rank(DeltaTheta_i) <= k, ||DeltaTheta_i||_F <= B for every i;
- ``full``    : S (Eq. 3.1): ||DeltaTheta_i||_F <= B only;
- ``global``  : one DeltaTheta shared by all users, ||DeltaTheta||_F <= B;
- ``nuclear`` : mean NLL + lam ||[DeltaTheta_1..DeltaTheta_N]||_* without the ball (convex
  relaxation of Eq. 3.4, reference only).

Algorithms (details and measured numbers in docs/estimators.md):
the rank-constrained problems are written as DeltaTheta_i = U W_i with U (d1, k) and the
equivalent feasible set {||U||_op <= 1, ||W_i||_F <= B}; W is always solved exactly for the
current U (N batched ball-constrained logistic regressions, sim/logistic.py), which makes the
objective a function g(span U) on the Grassmannian (variable projection). ``solver="newton"``
(default) alternates this exact W-step with a Newton step for g in the horizontal directions
U_perp Z (Schur-complement Hessian, saddle-free), retracted by QR and accepted by Armijo
backtracking on g, so the iterates decrease g monotonically and stay feasible. ``solver="lbfgs"`` minimises g by scipy L-BFGS in a
fixed chart span(U0 + U0_perp Z) (an independent outer algorithm used as a cross-check).
The convergence measure ``info["gap"]`` is the Frank-Wolfe gap of the (U, W) problem over its
convex feasible set: zero exactly at first-order stationary points; for the convex methods
(``full``, ``global``) it bounds the suboptimality.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from threadpoolctl import ThreadpoolController

from sim.data import PreferenceData
from sim.logistic import ball_logistic, logistic_loss, pad_index
from theory.diversity import aggregate, column_space

METHODS = ("shared", "local", "full", "global", "nuclear")
SOLVERS = ("newton", "lbfgs")
# Default stopping tolerance on the Frank-Wolfe gap, in mean-NLL units: far below the
# statistical error (~1e-2 at Np = 50) and reachable in < 0.1 s at sweep size
# (benchmarks/bench_fit.py and docs/estimators.md).
DEFAULT_TOL = 1e-9
# Nuclear-norm penalty constant: lam = NUCLEAR_C * tau * (sqrt(d1) + sqrt(N d2)) with tau the
# entrywise noise scale of the mean-NLL gradient (see _default_lambda). The theory's
# "lam >= 2 ||grad||_op" (Negahban & Wainwright 2011) i.e. NUCLEAR_C = 2 shrank every estimate
# to 0 at Np = 50 and quadrupled est_err at Np = 800 (N=20, d1=10, d2=2, k=2, 3 seeds:
# est_err 0.128 at C=2 vs 0.043 at C=1 vs 0.022 at C=0.5); 0.5 is the measured choice.
NUCLEAR_C = 0.5

_BLAS: list = []  # lazily created ThreadpoolController


def _single_threaded_blas():
    """Context limiting BLAS to one thread: the batched small-matrix work gains nothing from
    threads, and on a shared 2-core machine OpenBLAS spin-waiting made fits ~100x slower
    (0.17 s -> 43 s for ``full`` at d1=20, d2=4, N=50, Np=500; docs/estimators.md)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


_OPTIONS = {
    "shared": ("tol", "max_iter", "solver"),
    "local": ("tol", "max_iter", "solver"),
    "full": ("tol", "max_iter"),
    "global": ("tol", "max_iter"),
    "nuclear": ("tol", "max_iter", "lam", "lam_scale"),
}


@dataclass(frozen=True)
class Estimate:
    """Output of :func:`fit`."""

    method: str
    delta: np.ndarray
    """(N, d1, d2): DeltaTheta-hat_i for every user i."""
    basis: np.ndarray | None
    """(d1, k) orthonormal top-k left singular vectors of the aggregate estimate (B-hat) for
    ``shared`` and ``nuclear``; None for ``local``, ``full`` and ``global``."""
    nll: float
    """Mean negative log-likelihood per comparison on the training data at ``delta``."""
    info: dict = field(default_factory=dict)
    """iterations, converged, gap (optimisation gap, mean-NLL units), fit_s, solver details."""


@dataclass(frozen=True)
class _Problem:
    """Training data laid out per user: padded to (N, m) rows, m = max_i Np_i."""

    X: np.ndarray  # (N, m, d1, d2) x0 - x1
    c: np.ndarray  # (N, m) logit offsets <X, init_i>
    o: np.ndarray  # (N, m) labels as floats
    w: np.ndarray  # (N, m) 1/M on real rows, 0 on padding
    M: int

    N = property(lambda self: self.X.shape[0])
    d1 = property(lambda self: self.X.shape[2])
    d2 = property(lambda self: self.X.shape[3])


def negative_log_likelihood(delta: np.ndarray, data: PreferenceData,
                            init: np.ndarray | None = None) -> float:
    """Mean NLL per comparison (Eq. 3.5 negated, divided by M) at Theta_i = init_i + delta_i.

    delta, init: (N, d1, d2); init None means zeros.
    """
    delta = _check_users(delta, data, "delta")
    theta = delta if init is None else delta + _check_users(init, data, "init")
    if data.user.size == 0:
        raise ValueError("data holds no comparisons")
    z = np.einsum("mde,mde->m", data.diff, theta[data.user])
    return float(np.mean(logistic_loss(z, data.o.astype(float))))


def nll_gradient(delta: np.ndarray, data: PreferenceData,
                 init: np.ndarray | None = None) -> np.ndarray:
    """Gradient (N, d1, d2) of :func:`negative_log_likelihood` in DeltaTheta_i (Eq. 3.5).

    d/dDeltaTheta_i = (1/M) sum_{j of user i} (sigmoid(z_j) - o_j) (x0_j - x1_j).
    """
    delta = _check_users(delta, data, "delta")
    theta = delta if init is None else delta + _check_users(init, data, "init")
    if data.user.size == 0:
        raise ValueError("data holds no comparisons")
    diff = data.diff.astype(float)
    z = np.einsum("mde,mde->m", diff, theta[data.user])
    r = (expit(z) - data.o) / data.user.size
    grad = np.zeros_like(theta)
    np.add.at(grad, data.user, r[:, None, None] * diff)
    return grad


def fit(method: str, data: PreferenceData, k: int, B: float, init: np.ndarray | None = None,
        **options) -> Estimate:
    """Fit one estimator of Eq. 3.5 over the parameter set named by ``method`` (see module doc).

    data: comparisons of N = data.n_users users with features (M, d1, d2); k: rank of the shared
    (``shared``, ``nuclear`` basis) or per-user (``local``) update, 1 <= k <= min(d1, N d2);
    B > 0: per-user Frobenius bound of Eq. 3.1/3.3/3.4; init: Theta_init (N, d1, d2) or None.
    Options: ``tol`` (gap tolerance, default DEFAULT_TOL), ``max_iter``; ``solver`` in SOLVERS for
    ``shared``/``local``; ``lam`` (absolute penalty) or ``lam_scale`` (multiplies the default)
    for ``nuclear``. Deterministic: no randomness is used.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; supported methods are {METHODS}")
    bad = sorted(set(options) - set(_OPTIONS[method]))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for method {method!r}; "
                         f"supported: {_OPTIONS[method]}")
    if not isinstance(data, PreferenceData):
        raise ValueError(f"data must be a PreferenceData, got {type(data).__name__}")
    if data.user.size == 0:
        raise ValueError("data holds no comparisons")
    n, d1, d2 = data.n_users, data.x0.shape[1], data.x0.shape[2]
    kmax = min(d1, n * d2)
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= kmax:
        raise ValueError(f"rank k={k!r} must be an integer in [1, min(d1, N*d2)={kmax}]")
    k = int(k)
    if not (np.isfinite(B) and B > 0):
        raise ValueError(f"Frobenius bound B must be positive and finite, got {B!r}")
    if init is not None:
        init = _check_users(init, data, "init")
    tol = float(options.get("tol", DEFAULT_TOL))
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    max_iter = int(options.get("max_iter", 500))
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    solver = options.get("solver", "newton")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; supported solvers are {SOLVERS}")

    with _single_threaded_blas():
        return _fit(method, data, k, B, init, options, tol, max_iter, solver)


def _fit(method, data, k, B, init, options, tol, max_iter, solver) -> Estimate:
    d1, d2 = data.x0.shape[1], data.x0.shape[2]
    start = time.perf_counter()
    prob = _layout(data, init)
    basis = None
    if method == "full" or (method == "local" and k >= min(d1, d2)) or (
            method == "shared" and k >= d1):
        # the rank constraint is vacuous: S^LoRA / S^ShareLoRA coincide with S (Eq. 3.1)
        delta, info = _fit_full(prob, B, tol, max_iter)
        if method != "full":
            info["reduces_to"] = "full"
    elif method == "global":
        delta, info = _fit_global(prob, B, tol, max_iter)
    elif method == "nuclear":
        delta, info = _fit_nuclear(prob, options, tol, max_iter)
    else:
        delta, info = _fit_lowrank(prob, k, B, method == "shared", solver, tol, max_iter)
    if method in ("shared", "nuclear"):
        basis = column_space(aggregate(delta), k)
    info["fit_s"] = time.perf_counter() - start
    info["method"] = method
    nll = negative_log_likelihood(delta, data, init)
    return Estimate(method=method, delta=delta, basis=basis, nll=nll, info=info)


def _check_users(arr, data: PreferenceData, name: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=float)
    want = (data.n_users, *data.x0.shape[1:])
    if arr.shape != want:
        raise ValueError(f"{name} must have shape (N, d1, d2) = {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _layout(data: PreferenceData, init: np.ndarray | None) -> _Problem:
    idx, mask = pad_index(data.user, data.n_users)
    diff = data.diff.astype(float)
    X = diff[idx] * mask[:, :, None, None]
    c = np.zeros(mask.shape)
    if init is not None:
        c = np.einsum("nmde,nde->nm", X, init)
    o = data.o.astype(float)[idx] * mask
    M = int(data.user.size)
    return _Problem(X=X, c=c, o=o, w=mask / M, M=M)


def _fw_gap_ball(grad: np.ndarray, v: np.ndarray, R: float) -> float:
    """Sum over rows of the Frank-Wolfe gap g.v + R||g|| of a ball-constrained block."""
    g2, v2 = grad.reshape(grad.shape[0], -1), v.reshape(v.shape[0], -1)
    return float(np.sum(np.maximum(np.sum(g2 * v2, 1) + R * np.linalg.norm(g2, axis=1), 0)))


# ---------------------------------------------------------------- convex: full and global


def _fit_full(prob: _Problem, B: float, tol: float, max_iter: int):
    """Eq. 3.1: N independent ball-constrained logistic regressions, batched."""
    n, m, d1, d2 = prob.X.shape
    res = ball_logistic(prob.X.reshape(n, m, d1 * d2), prob.c, prob.o, prob.w, B,
                        tol=tol / n, max_iter=max_iter)
    info = {"iterations": res.iterations, "converged": res.converged,
            "gap": float(res.gap.sum()), "objective": float(res.obj.sum())}
    return res.v.reshape(n, d1, d2), info


def _fit_global(prob: _Problem, B: float, tol: float, max_iter: int):
    """One DeltaTheta for every user (the init offsets stay per user), ||DeltaTheta||_F <= B."""
    n, m, d1, d2 = prob.X.shape
    res = ball_logistic(prob.X.reshape(1, n * m, d1 * d2), prob.c.reshape(1, -1),
                        prob.o.reshape(1, -1), prob.w.reshape(1, -1), B, tol=tol,
                        max_iter=max_iter)
    info = {"iterations": res.iterations, "converged": res.converged,
            "gap": float(res.gap.sum()), "objective": float(res.obj.sum())}
    return np.broadcast_to(res.v.reshape(1, d1, d2), (n, d1, d2)).copy(), info


# ---------------------------------------------------------------- rank-constrained: shared, local


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


def _fit_lowrank(prob: _Problem, k: int, B: float, shared: bool, solver: str, tol: float,
                 max_iter: int):
    lr = _LowRank(prob, k, B, shared, tol)
    U = lr.spectral_start()
    W = np.zeros((prob.N, k, prob.d2))
    W, obj, w_gap = lr.w_step(U, W)
    if solver == "lbfgs":
        U, W, obj, w_gap, info = _lbfgs(lr, U, W, max_iter)
    else:
        U, W, obj, w_gap, info = _newton(lr, U, W, obj, w_gap, max_iter)
    r, _, delta = lr.residuals(U, W)
    info.update(gap=lr.joint_gap(U, W, r, w_gap), objective=float(obj.sum()),
                w_newton_iterations=lr.n_w_iters, solver=solver)
    info["converged"] = bool(info["gap"] <= tol)
    return delta, info


def _newton(lr: _LowRank, U, W, obj, w_gap, max_iter):
    """Exact W-steps alternating with Armijo-backtracked Newton steps on span(U).

    A step whose predicted decrease is below the rounding level of g cannot be verified by
    Armijo; it is taken in full unless g visibly increases, and two such steps in a row stop
    the group (it sits at its rounding floor).
    """
    it = 0
    C = U.shape[0]
    live = np.ones(C, dtype=bool)
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
    return U, W, obj, w_gap, {"iterations": it}


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


# ---------------------------------------------------------------- nuclear-norm relaxation


def _default_lambda(prob: _Problem) -> float:
    """lam = NUCLEAR_C * tau * (sqrt(d1) + sqrt(N d2)).

    The mean-NLL gradient at the truth has entries (1/M) sum_{j of user i} (sigma - o) X_j[a, b]
    with variance <= Np_i s_x^2 / (4 M^2), s_x^2 the mean squared feature entry, so with
    Np = M / N, tau = s_x / (2 N sqrt(Np)) and its spectral norm is about
    tau (sqrt(d1) + sqrt(N d2)) (Gaussian-matrix estimate); equivalently
    lam ~ NUCLEAR_C * s_x * sqrt((d1 + N d2) / (N Np)) / (2 sqrt(N)) up to the sqrt-sum form.
    """
    n, d1, d2, M = prob.N, prob.d1, prob.d2, prob.M
    s_x = np.sqrt(np.sum(prob.X**2) / (M * d1 * d2))
    tau = s_x / (2 * n * np.sqrt(M / n))
    return float(NUCLEAR_C * tau * (np.sqrt(d1) + np.sqrt(n * d2)))


def _fit_nuclear(prob: _Problem, options: dict, tol: float, max_iter: int):
    """FISTA with singular-value thresholding and function-value restart (no ball)."""
    if "lam" in options and "lam_scale" in options:
        raise ValueError("give at most one of lam and lam_scale for method 'nuclear'")
    lam_scale = options.get("lam_scale", 1.0)
    if not (np.isfinite(lam_scale) and lam_scale >= 0):
        raise ValueError(f"lam_scale must be non-negative and finite, got {lam_scale!r}")
    lam = options.get("lam", _default_lambda(prob) * lam_scale)
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"nuclear penalty lam must be non-negative and finite, got {lam!r}")
    n, m, d1, d2 = prob.X.shape
    Xf = prob.X.reshape(n, m, d1 * d2)
    # per-user Lipschitz constant of the mean-NLL gradient: lambda_max(sum_j w_j x_j x_j^T) / 4
    cov = np.matmul(Xf.transpose(0, 2, 1), Xf * prob.w[:, :, None])
    L = max(float(np.linalg.eigvalsh(cov)[:, -1].max()) / 4, 1e-12)
    max_iter = max(max_iter, 5000)

    def smooth(D):
        z = np.matmul(Xf, D[:, :, None])[:, :, 0] + prob.c
        f = float(np.sum(prob.w * logistic_loss(z, prob.o)))
        return f, np.matmul((prob.w * (expit(z) - prob.o))[:, None, :], Xf)[:, 0]

    def prox(D, step):
        agg = aggregate(D.reshape(n, d1, d2))
        u, sv, vt = np.linalg.svd(agg, full_matrices=False)
        sv = np.maximum(sv - step * lam, 0)
        return (u * sv) @ vt, sv

    def to_users(agg):
        return agg.reshape(d1, n, d2).transpose(1, 0, 2).reshape(n, d1 * d2)

    x = np.zeros((n, d1 * d2))
    y, t_mom = x.copy(), 1.0
    f_x = smooth(x)[0]
    obj_x = f_x
    resid = np.inf
    it = 0
    history: list[float] = []
    stalled = False
    for _ in range(max_iter):
        it += 1
        f_y, g_y = smooth(y)
        agg_new, sv = prox(y - g_y / L, 1 / L)
        x_new = to_users(agg_new)
        obj_new = smooth(x_new)[0] + lam * sv.sum()
        resid = L * np.linalg.norm(x_new - y)  # norm of the gradient mapping at y
        if obj_new > obj_x:  # adaptive restart (O'Donoghue & Candes 2015)
            if t_mom == 1.0:  # a plain proximal-gradient step failed: rounding floor
                stalled = True
                break
            y, t_mom = x.copy(), 1.0
            continue
        t_new = (1 + np.sqrt(1 + 4 * t_mom**2)) / 2
        y = x_new + (t_mom - 1) / t_new * (x_new - x)
        x, obj_x, t_mom = x_new, obj_new, t_new
        history.append(obj_x)
        if resid <= tol:
            break
        # rounding floor: the gradient-mapping norm stalls near L * eps * ||x|| while the
        # objective no longer moves
        if len(history) > 20 and history[-21] - obj_x <= 1e-14 * abs(obj_x):
            stalled = True
            break
    info = {"iterations": it, "converged": bool(resid <= tol or stalled), "gap": float(resid),
            "gap_kind": "gradient-mapping norm", "stalled": stalled, "lam": float(lam), "objective": obj_x}
    return x.reshape(n, d1, d2), info
