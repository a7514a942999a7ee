"""Pessimistic policy of Algorithm 1, step 4 (Eq. 3.7), over occupancy measures.

For user i with confidence set R_i of Eq. 3.6 (a Frobenius ball of squared radius zeta around
theta_hat = Theta_init_i + DeltaTheta_hat_i; the ball is the same in Theta and in DeltaTheta
because Theta_init_i is a fixed shift), Eq. 3.7 reads

    max_pi min_{||theta - theta_hat||_F^2 <= zeta} J(pi; r_theta) - E_{tau ~ mu_ref} r_theta(tau).

Both terms are linear in theta through expected features (sim/mdp.py), so with the occupancy
measure d (H, S, A) of pi and v(d) = Phi^T (d - d_ref) in R^{d1 d2} (Phi: phi reshaped to
(S A, d1 d2), applied at every step h and summed) the inner minimum is closed-form and

    max_{d in D}  f(d) = <v(d), theta_hat> - sqrt(zeta) ||v(d)||_2,                      (*)

D = {d >= 0 : sum_a d_0(s, a) = rho(s); sum_a d_{h+1}(s', a) = sum_{s,a} P_h(s'|s,a) d_h(s,a)}.
(*) is a second-order-cone program. Two solvers:

- ``"lp"`` (default): Kelley's cutting-plane method. f(d) = min_{theta in ball} <v(d), theta>,
  so every theta_c in the ball gives a valid cut t <= <v(d), theta_c>; the cut at the current
  point uses the worst case theta_c = theta_hat - sqrt(zeta) v / ||v||, which is tight there.
  The LP optimum is an upper bound, f at the LP point a lower bound; stop when they meet. One
  HiGHS model per MDP holds the flow constraints; cuts are rows added in place, every LP is
  warm-started from the previous basis, and between users the cuts are deleted and the basis
  is reset to the vertex of the plug-in policy (the exact optimum of the first LP).
- ``"socp"``: the exact cone program in cvxpy (Clarabel), compiled once with Parameters.

Policies pi (H, S, A) are extracted as pi_h(a | s) = d_h(s, a) / sum_a d_h(s, a), uniform where
a state is unreachable. Value gaps (Theorem 4.2's left-hand side) are exact, by occupancies.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from sim.mdp import TabularMDP, backward_induction, check_policy, occupancy, value

SOLVERS = ("lp", "socp")
#: Occupancy mass below which a state counts as unreachable in policy extraction.
UNREACHABLE_TOL = 1e-12
#: HiGHS feasibility tolerances: tighter than the default 1e-7 so that the LP bound meets the
#: exact objective at the requested tol (see benchmarks/bench_policy.py).
LP_FEAS_TOL = 1e-10
#: Smallest matrix entry HiGHS keeps (its minimum allowed value).
SMALL_MATRIX_VALUE = 1e-12
#: Default LP budget per user: MAX_LP_PER_DIM (d1 d2 + 1) + 100. Kelley needs at least d1 d2 + 1
#: cuts near the kink v = 0; beyond the budget the best policy is returned with its certified
#: gap (a RuntimeWarning; strict=True raises instead). See docs/pessimism.md.
MAX_LP_PER_DIM = 4
#: Relative bound gap below which the LP path tries Newton polishing on the LP point's face.
POLISH_GAP = 1e-4
#: Occupancy entries above this count as the support (face) of an LP point.
POLISH_SUPPORT_TOL = 1e-11
POLISH_NEWTON_STEPS = 30
#: Most variables-hit-zero events of the active-set polish before it gives up.
POLISH_FACE_DROPS = 4
#: Pricing rounds (face enlargements by the Frank-Wolfe vertex) per polish.
POLISH_ROUNDS = 2
#: Clarabel tolerances: 1e-9 is the tightest at which it reliably reports "optimal" here
#: (1e-10 gives "optimal_inaccurate" on some instances).
CLARABEL_OPTIONS = {"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8}
#: Relative slack below zero that value_gap attributes to rounding (anything larger is a bug).
GAP_ROUNDING_TOL = 1e-9


@dataclass(frozen=True)
class PolicyResult:
    """Solution of Eq. 3.7 for one user."""

    pi: np.ndarray
    """(H, S, A) policy, pi[h, s, a] = pi_h(a | s)."""
    objective: float
    """f(d) of (*) at the solver's occupancy: the pessimistic value relative to mu_ref."""
    n_lp: int
    """Number of linear programs solved (0 for the SOCP solver)."""
    seconds: float
    """Wall-clock time of the solve."""
    upper_bound: float = float("nan")
    """Certified upper bound on (*) (LP: the last cutting-plane LP; SOCP: backward induction at
    the worst-case theta of the solver's point)."""
    theta_worst: np.ndarray = field(default=None, repr=False)
    """(d1, d2) worst-case parameter in the ball for the returned policy."""
    converged: bool = True
    """False when the LP budget ran out first (upper_bound - objective is the certified gap)."""


def vanilla_policy(mdp: TabularMDP, theta_hat: np.ndarray) -> np.ndarray:
    """Plug-in policy (Eq. 3.7 with zeta = 0): backward induction on r_theta_hat, (H, S, A)."""
    theta_hat = _check_theta(mdp, theta_hat)
    return backward_induction(mdp, mdp.step_rewards(theta_hat))[0]


def value_gap(mdp: TabularMDP, theta_true: np.ndarray, pi: np.ndarray) -> float:
    """Theorem 4.2's left-hand side J(pi*; r_true) - J(pi; r_true) >= 0, exact.

    theta_true: (d1, d2) the user's full parameter Theta*_i; pi: (H, S, A). pi* is the optimal
    policy for theta_true by backward induction; both values are computed by occupancy measures.
    """
    theta_true = _check_theta(mdp, theta_true)
    pi = check_policy(mdp, pi)
    star = backward_induction(mdp, mdp.step_rewards(theta_true))[0]
    j_star = float(value(mdp, star, theta_true))
    gap = j_star - float(value(mdp, pi, theta_true))
    if gap < -GAP_ROUNDING_TOL * max(1.0, abs(j_star)):
        raise RuntimeError(f"negative value gap {gap:.3e}: backward induction is not optimal")
    return max(gap, 0.0)


def pessimistic_objective(mdp: TabularMDP, d: np.ndarray, d_ref: np.ndarray,
                          theta_hat: np.ndarray, zeta: float) -> float:
    """f(d) of (*): <v, theta_hat> - sqrt(zeta) ||v||, v = Phi^T (d - d_ref); d, d_ref (H, S, A)."""
    v = np.einsum("hsa,sade->de", np.asarray(d) - np.asarray(d_ref), mdp.phi)
    return float(np.sum(v * theta_hat) - np.sqrt(zeta) * np.linalg.norm(v))


def extract_policy(d: np.ndarray) -> np.ndarray:
    """pi_h(a | s) = d_h(s, a) / sum_a d_h(s, a); uniform where sum_a d_h(s, a) ~ 0. (H, S, A)."""
    d = np.clip(np.asarray(d, dtype=float), 0.0, None)
    mass = d.sum(-1, keepdims=True)
    reachable = mass > UNREACHABLE_TOL
    return np.where(reachable, d / np.where(reachable, mass, 1.0), 1.0 / d.shape[-1])


class PessimisticSolver:
    """Solves Eq. 3.7 for many users of one MDP and one reference policy mu_ref.

    mdp: the MDP; ref_policy: (H, S, A) mu_ref; solver: "lp" (Kelley cutting planes with HiGHS)
    or "socp" (cvxpy + Clarabel); tol: stop when upper - lower bound <= tol * (1 + |bound|);
    max_lp: LP budget per user; strict: raise instead of warn when the budget runs out.
    """

    def __init__(self, mdp: TabularMDP, ref_policy: np.ndarray, solver: str = "lp",
                 tol: float = 1e-9, max_lp: int | None = None, strict: bool = False):
        if not isinstance(mdp, TabularMDP):
            raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        self.mdp = mdp
        self.solver = solver
        self.tol = float(tol)
        self.ref_policy = check_policy(mdp, ref_policy)
        self.d_ref = occupancy(mdp, self.ref_policy)
        H, S, A, D = mdp.H, mdp.S, mdp.A, mdp.d1 * mdp.d2
        self._n = H * S * A
        self._phi = mdp.phi.reshape(S * A, D)
        # Feature of mu_ref: Phi^T d_ref summed over steps, (D,).
        self._ref_feat = self.d_ref.reshape(H, S * A).sum(0) @ self._phi
        self.strict = bool(strict)
        self.max_lp = int(max_lp) if max_lp is not None else MAX_LP_PER_DIM * (D + 1) + 100
        self._flow_dense, self._rhs = _flow_constraints(mdp)
        self._phi_h = np.tile(self._phi, (H, 1))
        # Orthogonal projector (D, D) onto W = Phi^T (null space of the flow equations), a
        # subspace containing every v(d) = Phi^T (d - d_ref), d in the occupancy polytope.
        _, sv, vt = np.linalg.svd(self._flow_dense)
        null = vt[int((sv > 1e-10 * sv[0]).sum()):].T
        u, sw, _ = np.linalg.svd(self._phi_h.T @ null, full_matrices=False)
        basis = u[:, sw > 1e-10 * max(sw.max(initial=0.0), 1e-300)]
        self._span_proj = basis @ basis.T
        if solver == "lp":
            self._build_lp()
        else:
            self._build_socp()

    # ------------------------------------------------------------------ public
    def solve(self, theta_hat: np.ndarray, zeta: float) -> PolicyResult:
        """Pessimistic policy for theta_hat (d1, d2) = Theta_init_i + DeltaTheta_hat_i, radius zeta."""
        theta_hat = _check_theta(self.mdp, theta_hat)
        zeta = _check_zeta(zeta)
        start = time.perf_counter()
        if zeta > 0 and np.linalg.norm(self._span_proj @ theta_hat.reshape(-1)) <= np.sqrt(zeta):
            # Exact certificate that (*) = 0 at d_ref: v(d) lies in span W for every d, so
            # <v, theta_hat> = <v, P_W theta_hat> <= ||P_W theta_hat|| ||v|| <= sqrt(zeta) ||v||.
            # mu_ref is then optimal (the kink v = 0, where cutting planes converge slowest).
            theta_worst = theta_hat - (self._span_proj @ theta_hat.reshape(-1)).reshape(theta_hat.shape)
            return PolicyResult(pi=self.ref_policy.copy(), objective=0.0, n_lp=0,
                                seconds=time.perf_counter() - start, upper_bound=0.0,
                                theta_worst=theta_worst)
        if self.solver == "lp":
            pi, obj, ub, n_lp, theta_worst = self._solve_lp(theta_hat, zeta)
        else:
            pi, obj, ub, theta_worst = self._solve_socp(theta_hat, zeta)
            n_lp = 0
        return PolicyResult(pi=pi, objective=obj, n_lp=n_lp, seconds=time.perf_counter() - start,
                            upper_bound=ub, theta_worst=theta_worst,
                            converged=self._converged(ub, obj))

    def solve_many(self, theta_hat: np.ndarray, zeta) -> list[PolicyResult]:
        """solve() for theta_hat (N, d1, d2) and zeta scalar or (N,)."""
        theta_hat = np.asarray(theta_hat, dtype=float)
        if theta_hat.ndim != 3:
            raise ValueError(f"theta_hat must have shape (N, d1, d2), got {theta_hat.shape}")
        zetas = np.broadcast_to(np.asarray(zeta, dtype=float), (theta_hat.shape[0],))
        return [self.solve(t, z) for t, z in zip(theta_hat, zetas)]

    # ------------------------------------------------------------------ LP path
    def _build_lp(self) -> None:
        import highspy
        from scipy.sparse import csc_matrix

        mdp = self.mdp
        H, S = mdp.H, mdp.S
        n = self._n
        flow = csc_matrix(self._flow_dense)
        rhs = self._rhs
        lp = highspy.HighsLp()
        lp.num_col_ = n + 1
        lp.num_row_ = H * S
        lp.col_cost_ = np.r_[np.zeros(n), 1.0]
        lp.col_lower_ = np.r_[np.zeros(n), -highspy.kHighsInf]
        lp.col_upper_ = np.r_[np.ones(n), highspy.kHighsInf]
        lp.row_lower_ = rhs
        lp.row_upper_ = rhs
        lp.sense_ = highspy.ObjSense.kMaximize
        a = csc_matrix((flow.data, flow.indices, np.r_[flow.indptr, flow.indptr[-1]]),
                       shape=(H * S, n + 1))  # the t column is empty in the flow rows
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr
        lp.a_matrix_.index_ = a.indices
        lp.a_matrix_.value_ = a.data
        h = highspy.Highs()
        h.silent()
        for name, val in (("primal_feasibility_tolerance", LP_FEAS_TOL),
                          ("dual_feasibility_tolerance", LP_FEAS_TOL),
                          ("small_matrix_value", SMALL_MATRIX_VALUE), ("presolve", "off"), ("solver", "simplex"), ("threads", 1)):
            h.setOptionValue(name, val)
        status = h.passModel(lp)
        if status == highspy.HighsStatus.kError:
            raise RuntimeError(f"HiGHS rejected the occupancy LP: {status}")
        self._highs = h
        self._hs = highspy
        self._n_flow = H * S
        self._cut_idx = np.arange(n + 1, dtype=np.int32)

    def _add_cut(self, theta_c: np.ndarray) -> None:
        """Row t - sum_{h,s,a} <phi(s,a), theta_c> d_h(s,a) <= -<Phi^T d_ref, theta_c>."""
        r = self._phi @ theta_c
        vals = np.r_[-np.tile(r, self.mdp.H), 1.0]
        self._highs.addRow(-self._hs.kHighsInf, -float(self._ref_feat @ theta_c),
                           self._n + 1, self._cut_idx, vals)

    def _vertex_basis(self, pi_det: np.ndarray):
        """Basis of the vertex of deterministic pi_det with t basic and every row nonbasic."""
        hs = self._hs
        basic = (pi_det.reshape(-1) > 0.5)
        col = [hs.HighsBasisStatus.kBasic if b else hs.HighsBasisStatus.kLower for b in basic]
        col.append(hs.HighsBasisStatus.kBasic)
        rows = [hs.HighsBasisStatus.kLower] * self._n_flow + [hs.HighsBasisStatus.kUpper]
        basis = hs.HighsBasis()
        basis.col_status = col
        basis.row_status = rows
        basis.valid = True
        basis.alien = False
        return basis

    def _run_lp(self) -> tuple[np.ndarray, float]:
        h, hs = self._highs, self._hs
        h.run()
        status = h.getModelStatus()
        if status != hs.HighsModelStatus.kOptimal:
            raise RuntimeError(
                f"cutting-plane LP failed: HiGHS model status {h.modelStatusToString(status)!r}")
        x = np.asarray(h.getSolution().col_value)
        return x[:-1], float(x[-1])

    def _solve_lp(self, theta_hat, zeta):
        mdp, h = self.mdp, self._highs
        D = mdp.d1 * mdp.d2
        th = theta_hat.reshape(D)
        sz = float(np.sqrt(zeta))
        n_rows = h.getNumRow()
        if n_rows > self._n_flow:
            h.deleteRows(n_rows - self._n_flow, np.arange(self._n_flow, n_rows, dtype=np.int32))
        # First cut at the plug-in vertex: its worst case theta_c; the LP with this single cut
        # is solved exactly by backward induction on theta_c, whose vertex basis is then passed.
        d0 = occupancy(mdp, vanilla_policy(mdp, theta_hat))
        theta_c = self._worst_theta(th, sz, d0)
        pi0, dual0 = self._dual_bound(theta_c)
        self._add_cut(theta_c)
        h.setBasis(self._vertex_basis(pi0))
        best_obj, best_x = -np.inf, None
        ub, n_lp, last_face = dual0, 0, None
        while True:
            if n_lp >= self.max_lp:
                msg = (f"cutting planes did not converge in max_lp={self.max_lp} LPs: certified "
                       f"bound gap {ub - best_obj:.3e} > tol {self.tol:.1e} * (1 + |{ub:.6g}|)")
                if self.strict:
                    raise RuntimeError(msg)
                warnings.warn(msg + "; returning the best policy found (its objective is "
                              "within that gap of the optimum)", RuntimeWarning, stacklevel=3)
                break
            x, ub_lp = self._run_lp()
            n_lp += 1
            ub = min(ub, ub_lp)
            v = self._v(x)
            obj = float(v @ th - sz * np.linalg.norm(v))
            if obj > best_obj:
                best_obj, best_x = obj, x
            if self._converged(ub, best_obj):
                break
            cuts = [self._worst_theta(th, sz, x, v)]
            face = x > POLISH_SUPPORT_TOL
            if (sz > 0 and ub - best_obj <= POLISH_GAP * (1.0 + abs(ub))
                    and (last_face is None or not np.array_equal(face, last_face))):
                last_face = face
                xp = self._polish(x, face, th, sz)
                if True:
                    # Exact objective of the polished point's policy, and the dual bound of
                    # its worst-case theta: max_d <v(d), theta_c> >= (*) for any theta_c.
                    dp = occupancy(mdp, extract_policy(xp.reshape(mdp.H, mdp.S, mdp.A)))
                    vp = self._v(dp.reshape(-1))
                    objp = float(vp @ th - sz * np.linalg.norm(vp))
                    if objp > best_obj:
                        best_obj, best_x = objp, dp.reshape(-1)
                    cuts.append(self._worst_theta(th, sz, None, vp))
                    ub = min(ub, self._dual_bound(cuts[-1])[1])
                    if self._converged(ub, best_obj):
                        break
            for theta_c in cuts:
                self._add_cut(theta_c)
        best_d = best_x.reshape(mdp.H, mdp.S, mdp.A)
        theta_worst = self._worst_theta(th, sz, best_x).reshape(mdp.d1, mdp.d2)
        return extract_policy(best_d), best_obj, ub, n_lp, theta_worst

    def _converged(self, ub: float, lb: float) -> bool:
        return ub - lb <= self.tol * (1.0 + abs(ub))

    def _dual_bound(self, theta_c: np.ndarray) -> tuple[np.ndarray, float]:
        """max_d <v(d), theta_c> by backward induction: an upper bound on (*) for theta_c in
        the ball (weak duality of the inner minimum); returns the maximiser and the bound."""
        mdp = self.mdp
        pi, val = backward_induction(mdp, (self._phi @ theta_c).reshape(mdp.S, mdp.A))
        return pi, float(val - self._ref_feat @ theta_c)

    def _polish(self, x: np.ndarray, face: np.ndarray, th, sz) -> np.ndarray:
        """Primal active-set method for (*) started at the LP point x (flat, H S A).

        Near convergence Kelley's cuts pin down the optimal face long before the point on it
        (a smooth curved objective needs ever more cuts). On a face {d_j = 0, j not in F} (*)
        is smooth, so Newton steps in the face's affine hull converge quadratically; a step
        that would leave the face stops at its boundary and drops the variables that reach
        zero; a Newton direction along which (*) is flat (e.g. radial in v) is followed to the
        boundary. When the face optimum is not optimal overall, the backward-induction
        maximiser of the linearisation (the Frank-Wolfe vertex) prices in the missing
        state-actions and the face grows. The result only ever serves as a candidate point
        (its exact objective) and a cut, so a bad polish costs time, never correctness.
        """
        F = np.flatnonzero(face)
        xf = x[F].copy()
        for _ in range(POLISH_ROUNDS):
            F, xf = self._newton_on_faces(F, xf, th, sz)
            full = np.zeros_like(x)
            full[F] = xf
            v = self._v(full)
            theta_c = self._worst_theta(th, sz, None, v)
            pi_dp, bound = self._dual_bound(theta_c)
            obj = float(v @ th - sz * np.linalg.norm(v))
            if self._converged(bound, obj):
                break
            grow = occupancy(self.mdp, pi_dp).reshape(-1) > POLISH_SUPPORT_TOL
            new = np.setdiff1d(np.flatnonzero(grow), F)
            if new.size == 0:
                break
            order = np.argsort(np.r_[F, new])
            F, xf = np.r_[F, new][order], np.r_[xf, np.zeros(new.size)][order]
        full = np.zeros_like(x)
        full[F] = np.clip(xf, 0.0, None)
        return full

    def _newton_on_faces(self, F, xf, th, sz):
        """Newton ascent of (*) on the face F, dropping variables that reach zero."""
        for _ in range(POLISH_FACE_DROPS):
            AF = self._flow_dense[:, F]
            U, sv, Vt = np.linalg.svd(AF, full_matrices=True)
            rank = int((sv > 1e-10 * sv[0]).sum())
            N = Vt[rank:].T
            xf = xf - Vt[:rank].T @ ((U[:, :rank].T @ (AF @ xf - self._rhs)) / sv[:rank])
            if N.shape[1] == 0:
                break
            phiF = self._phi_h[F]
            M = phiF.T @ N
            blocked = None
            for _ in range(POLISH_NEWTON_STEPS):
                v = phiF.T @ xf - self._ref_feat
                nv = np.linalg.norm(v)
                if nv == 0.0:
                    return F, xf
                w = v / nv
                g = M.T @ (th - sz * w)
                Mw = M.T @ w
                lam, Q = np.linalg.eigh((sz / nv) * (M.T @ M - np.outer(Mw, Mw)))
                gq = Q.T @ g
                curved = lam > 1e-10 * max(lam.max(initial=0.0), 1e-300)
                z = np.where(curved, gq / np.where(curved, lam, 1.0), 0.0)
                flat = ~curved & (np.abs(gq) > 1e-12 * (1.0 + np.linalg.norm(g)))
                dx = N @ (Q @ z)
                if flat.any():
                    # (*) is linear along these directions: follow them (unit length in d,
                    # longer than any feasible move since 0 <= d <= 1) to the face boundary.
                    df = N @ (Q[:, flat] @ gq[flat])
                    dx = dx + df * (2.0 * np.sqrt(F.size) / max(np.linalg.norm(df), 1e-300))
                neg = dx < -1e-13 * np.abs(dx).max(initial=0.0)
                alpha = 1.0
                if flat.any() and not neg.any():
                    return F, xf  # numerically unbounded face direction: leave it to the LP
                if np.any(xf[neg] + dx[neg] < 0):
                    ratios = -xf[neg] / dx[neg]
                    alpha = float(ratios.min())
                    blocked = np.flatnonzero(neg)[ratios <= alpha * (1 + 1e-9) + 1e-300]
                xf = xf + alpha * dx
                if blocked is not None:
                    break
                if np.linalg.norm(dx) <= 1e-14 * (1.0 + np.linalg.norm(xf)):
                    break
            if blocked is None:
                break
            keep = np.ones(F.size, dtype=bool)
            keep[blocked] = False
            F, xf = F[keep], np.clip(xf[keep], 0.0, None)
        return F, xf

    def _v(self, x: np.ndarray) -> np.ndarray:
        """v(d) = Phi^T (d - d_ref) summed over steps, (D,), for a flat occupancy x (H S A,)."""
        return x.reshape(self.mdp.H, -1).sum(0) @ self._phi - self._ref_feat

    def _worst_theta(self, th, sz, d, v=None) -> np.ndarray:
        """argmin over the ball of <v(d), theta>: theta_hat - sqrt(zeta) v / ||v||, flat (D,)."""
        if v is None:
            v = self._v(np.asarray(d).reshape(-1))
        norm = np.linalg.norm(v)
        if norm == 0.0 or sz == 0.0:
            return th.copy()
        return th - sz * v / norm

    # ------------------------------------------------------------------ SOCP path
    def _build_socp(self) -> None:
        import cvxpy as cp

        mdp = self.mdp
        H, S, A, D = mdp.H, mdp.S, mdp.A, mdp.d1 * mdp.d2
        d = cp.Variable((H, S * A), nonneg=True)
        theta = cp.Parameter(D)
        sz = cp.Parameter(nonneg=True)
        # v is its own variable so that the cone touches D + 1 columns only; with v inlined
        # Clarabel's KKT system carries the dense (H S A) x D feature block inside the cone
        # and is several times slower (benchmarks/bench_policy.py).
        v = cp.Variable(D)
        cons = [v == cp.sum(d, axis=0) @ self._phi - self._ref_feat,
                cp.sum(cp.reshape(d[0], (S, A), order="C"), axis=1) == mdp.rho]
        for h in range(1, H):
            inflow = d[h - 1] @ mdp.P[h - 1].reshape(S * A, S)
            cons.append(cp.sum(cp.reshape(d[h], (S, A), order="C"), axis=1) == inflow)
        prob = cp.Problem(cp.Maximize(theta @ v - sz * cp.norm(v, 2)), cons)
        if not prob.is_dpp():
            raise RuntimeError("SOCP of Eq. 3.7 is not DPP; it would be recompiled per user")
        self._socp = (prob, d, theta, sz)

    def _solve_socp(self, theta_hat, zeta):
        import cvxpy as cp

        prob, d, theta, sz = self._socp
        mdp = self.mdp
        theta.value = theta_hat.reshape(-1)
        sz.value = float(np.sqrt(zeta))
        try:
            with warnings.catch_warnings():  # 'may be inaccurate': certified below instead
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                prob.solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)
        except cp.error.SolverError as err:
            raise RuntimeError(f"Clarabel failed on the SOCP of Eq. 3.7: {err}") from err
        if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or d.value is None:
            raise RuntimeError(f"Clarabel did not solve the SOCP of Eq. 3.7: status {prob.status!r}")
        dv = np.clip(d.value, 0.0, None).reshape(mdp.H, mdp.S, mdp.A)
        pi = extract_policy(dv)
        # Certify the interior-point answer exactly: the extracted policy's own objective is a
        # lower bound, backward induction at its worst-case theta an upper bound (weak duality).
        # Near the cone's tip (v = 0) Clarabel often reports 'optimal_inaccurate'; such an
        # answer is kept only when this certified gap is within tol.
        obj = pessimistic_objective(mdp, occupancy(mdp, pi), self.d_ref, theta_hat, zeta)
        th = theta_hat.reshape(-1)
        theta_worst = self._worst_theta(th, np.sqrt(zeta), dv).reshape(mdp.d1, mdp.d2)
        ub = self._dual_bound(theta_worst.reshape(-1))[1]
        if not self._converged(ub, obj) and self.strict:
            raise RuntimeError(f"Clarabel's SOCP answer (status {prob.status!r}) has certified gap "
                               f"{ub - obj:.3e} > tol {self.tol:.1e} * (1 + |{ub:.6g}|)")
        return pi, obj, ub, theta_worst


def _flow_constraints(mdp: TabularMDP) -> tuple[np.ndarray, np.ndarray]:
    """Dense flow equations (H S, H S A) and right-hand side (H S,) of the occupancy polytope.

    Row (h, s'): sum_a d_h(s', a) - sum_{s,a} P_{h-1}(s' | s, a) d_{h-1}(s, a) = rho(s') [h = 0].
    Entries below SMALL_MATRIX_VALUE are dropped (HiGHS would ignore them with a warning; the
    flow they carry is below 1e-12 per entry).
    """
    H, S, A = mdp.H, mdp.S, mdp.A
    flow = np.zeros((H, S, H, S, A))
    for h in range(H):
        flow[h, np.arange(S), h, np.arange(S), :] = 1.0
        if h > 0:
            p = np.where(mdp.P[h - 1] < SMALL_MATRIX_VALUE, 0.0, mdp.P[h - 1])  # (S, A, S')
            flow[h, :, h - 1] -= p.transpose(2, 0, 1)
    rhs = np.zeros(H * S)
    rhs[:S] = mdp.rho
    return flow.reshape(H * S, H * S * A), rhs


def _check_theta(mdp: TabularMDP, theta: np.ndarray) -> np.ndarray:
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (mdp.d1, mdp.d2):
        raise ValueError(f"theta must have shape (d1, d2) = {(mdp.d1, mdp.d2)} of the MDP's "
                         f"features, got {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains non-finite entries")
    return theta


def _check_zeta(zeta) -> float:
    z = float(zeta)
    if not np.isfinite(z) or z < 0:
        raise ValueError(f"zeta (squared radius of Eq. 3.6) must be finite and >= 0, got {zeta}")
    return z
