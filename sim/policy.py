"""Pessimistic policy of Algorithm 1, step 4 (Eq. 3.7), over occupancy measures.

For user i with confidence set R_i of Eq. 3.6 (a Frobenius ball of squared radius zeta around
theta_hat = Theta_init_i + DeltaTheta_hat_i; the ball is the same in Theta and in DeltaTheta
because Theta_init_i is a fixed shift), Eq. 3.7 reads

    max_pi min_{||theta - theta_hat||_F^2 <= zeta} J(pi; r_theta) - E_{tau ~ mu_ref} r_theta(tau).

Both terms are linear in theta through expected features (sim/model/mdp.py), so with the occupancy
measure d (H, S, A) of pi and v(d) = Phi^T (d - d_ref) in R^{d1 d2} (Phi: phi reshaped to
(S A, d1 d2), applied at every step h and summed) the inner minimum is closed-form and

    max_{d in D}  f(d) = <v(d), theta_hat> - sqrt(zeta) ||v(d)||_2,                      (*)

D = {d >= 0 : sum_a d_0(s, a) = rho(s); sum_a d_{h+1}(s', a) = sum_{s,a} P_h(s'|s,a) d_h(s,a)}.
(*) is a second-order-cone program. Two solvers:

- ``"lp"`` (default): simplicial decomposition (column generation, i.e. fully corrective
  Frank-Wolfe), no conic solver. Every major step solves one LP over occupancy measures,
  max_d <v(d), theta_c> with theta_c = theta_hat - sqrt(zeta) u, exactly by backward induction
  (dynamic programming on the LP's own structure; tests/test_policy.py checks it against HiGHS).
  With u = v/||v|| at the current point this LP is the Frank-Wolfe pricing step: its optimal
  vertex (a deterministic policy) joins the candidate set and its value is a certified upper
  bound on (*) (weak duality: f(d) = min_{||u|| <= 1} <v(d), theta_hat - sqrt(zeta) u>). The
  restricted master, max of (*) over mixtures of the candidates (and of mu_ref), is solved in
  closed form on affine hulls by sim/simplicial.py (master_step). Stop when upper bound - f <= tol (1 + |ub|);
  the optimum mixes at most d1 d2 + 1 vertices, and the mixture's occupancy gives the
  (stochastic) policy.
- ``"face"`` (experimental, an extension): face rounds of sim/faces.py -- one backward
  induction per round identifies a whole face of tied actions, a restricted master solves
  (*) on it; same certificate, the LP path as fallback. Few DPs, but its face master is
  still slower than the LP path (docs/performance.md, "Eq. 3.7 near the DP floor").
- ``"socp"``: the exact cone program in cvxpy (Clarabel), compiled once with Parameters
  (sim/socp.py), certified here the same way.

Policies pi (H, S, A) are extracted as pi_h(a | s) = d_h(s, a) / sum_a d_h(s, a), uniform where
a state is unreachable. Value gaps (Theorem 4.2's left-hand side) are exact, by occupancies.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from sim.model.mdp import TabularMDP, backward_induction, check_policy, occupancy, value
from sim.simplicial import master_step, objective, tip_step
from sim.socp import OccupancySOCP

SOLVERS = ("lp", "socp", "face")
#: Occupancy mass below which a state counts as unreachable in policy extraction.
UNREACHABLE_TOL = 1e-12
#: Default LP budget per user: MAX_LP_PER_DIM (d1 d2 + 1) + MAX_LP_BASE pricing LPs. By
#: Caratheodory an optimum mixes at most d1 d2 + 1 vertices; users with sqrt(zeta) within ~1%
#: of ||P_W theta_hat|| (the kink) have needed up to ~16 (d1 d2 + 1) LPs. Beyond the budget the
#: best policy is returned with its certified gap (a RuntimeWarning; strict=True raises).
MAX_LP_PER_DIM = 20
MAX_LP_BASE = 200
#: ||v|| below TIP_TOL * (largest candidate ||v||) counts as the tip v = 0 of the cone in (*).
TIP_TOL = 1e-12
#: Weight of the best-bound dual point in the smoothed pricing point (Wentges smoothing).
SMOOTHING = 0.5
#: A smoothed pricing vertex counts as a mis-price unless it ascends from the master's point
#: by at least this fraction of the current bound gap.
MISPRICE = 0.01
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
    """Number of pricing LPs solved (0 for the SOCP solver; "face": backward inductions)."""
    seconds: float
    """Wall-clock time of the solve."""
    upper_bound: float = float("nan")
    """Certified upper bound on (*): the smallest pricing-LP value (SOCP: backward induction at
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

    mdp: the MDP; ref_policy: (H, S, A) mu_ref; solver: "lp" (simplicial decomposition, LPs by
    backward induction), "face" (experimental face rounds, sim/faces.py) or "socp" (cvxpy +
    Clarabel); tol: stop when upper - lower bound <=
    tol * (1 + |bound|); max_lp: LP budget per user; strict: raise instead of warn when the
    budget runs out.
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
        H, S, A, D = mdp.H, mdp.S, mdp.A, mdp.d1 * mdp.d2
        self._n = H * S * A
        self._phi = mdp.phi.reshape(S * A, D)
        # mu_ref, its occupancy d_ref and feature Phi^T d_ref summed over steps (D,); solve()
        # swaps in a per-user reference for the duration of one solve.
        self._default_ref = self._reference(ref_policy)
        self.ref_policy, self.d_ref, self._ref_feat = self._default_ref
        self.strict = bool(strict)
        self._last = None  # (key, PolicyResult) of the previous solve
        self.max_lp = int(max_lp) if max_lp is not None else MAX_LP_PER_DIM * (D + 1) + MAX_LP_BASE
        # Orthonormal basis (D, w) of W = Phi^T (null space of the flow equations), a subspace
        # containing every v(d) = Phi^T (d - d_ref), d in the occupancy polytope.
        _, sv, vt = np.linalg.svd(_flow_constraints(mdp)[0])
        null = vt[int((sv > 1e-10 * sv[0]).sum()):].T
        u, sw, _ = np.linalg.svd(np.tile(self._phi, (H, 1)).T @ null, full_matrices=False)
        self._span_basis = u[:, sw > 1e-10 * max(sw.max(initial=0.0), 1e-300)]
        if solver == "socp":
            self._socp = OccupancySOCP(mdp, self._phi, self._ref_feat)

    # ------------------------------------------------------------------ public
    def solve(self, theta_hat: np.ndarray, zeta: float, metric: np.ndarray | None = None,
              ref_policy: np.ndarray | None = None) -> PolicyResult:
        """Pessimistic policy for theta_hat (d1, d2) = Theta_init_i + DeltaTheta_hat_i, radius zeta.

        metric: None for the Frobenius ball of Eq. 3.6, or a symmetric positive definite
        (d1 d2, d1 d2) matrix M for the ellipsoid (theta - theta_hat)^T M (theta - theta_hat) <=
        zeta (an extension, not in the paper). The inner minimum is then <v, theta_hat> -
        sqrt(zeta) ||M^(-1/2) v||, i.e. (*) in the coordinates v' = M^(-1/2) v.
        ref_policy: (H, S, A) this user's mu_{i,ref} (Algorithm 1's input), None for the
        solver's mu_ref. W = Phi^T (null space of the flow equations) does not depend on it.
        """
        theta_hat = _check_theta(self.mdp, theta_hat)
        zeta = _check_zeta(zeta)
        root = None if metric is None else self._metric_root(metric)
        ref = self._default_ref if ref_policy is None else self._reference(ref_policy)
        start = time.perf_counter()
        key = (theta_hat.tobytes(), zeta, None if metric is None else np.asarray(metric).tobytes(),
               ref[0].tobytes())
        if self._last is not None and self._last[0] == key:
            # Users with the same estimate and radius (every user of `global`) share one solve.
            res = self._last[1]
            return replace(res, pi=res.pi.copy(), seconds=time.perf_counter() - start)
        self.ref_policy, self.d_ref, self._ref_feat = ref
        try:
            res = self._solve(theta_hat, zeta, root, start)
        finally:
            self.ref_policy, self.d_ref, self._ref_feat = self._default_ref
        self._last = (key, res)
        return replace(res, pi=res.pi.copy())

    def _reference(self, ref_policy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu_ref (H, S, A), its occupancy (H, S, A), Phi^T d_ref summed over steps (D,))."""
        pi = check_policy(self.mdp, ref_policy)
        d = occupancy(self.mdp, pi)
        return pi, d, d.reshape(self.mdp.H, -1).sum(0) @ self._phi

    def _metric_root(self, metric) -> tuple[np.ndarray, np.ndarray]:
        """(M^(-1/2), M^(1/2)) of a symmetric positive definite metric; ValueError otherwise."""
        m = np.asarray(metric, dtype=float)
        D = self.mdp.d1 * self.mdp.d2
        if m.shape != (D, D) or not np.all(np.isfinite(m)) or not np.allclose(m, m.T):
            raise ValueError(f"metric must be a finite symmetric ({D}, {D}) matrix")
        lam, vec = np.linalg.eigh(m)
        if lam.min() <= 1e-12 * max(lam.max(), 1e-300):
            raise ValueError(f"metric must be positive definite (smallest eigenvalue {lam.min():.3g})")
        return (vec / np.sqrt(lam)) @ vec.T, (vec * np.sqrt(lam)) @ vec.T

    def _solve(self, theta_hat: np.ndarray, zeta: float, root, start: float) -> PolicyResult:
        th = theta_hat.reshape(-1)
        # In the metric's coordinates: W' = M^(-1/2) W, theta' = M^(1/2) theta_hat.
        q = self._span_basis if root is None else np.linalg.qr(root[0] @ self._span_basis)[0]
        lift = th if root is None else root[1] @ th
        proj_th = q @ (q.T @ lift)
        if zeta > 0 and np.linalg.norm(proj_th) <= np.sqrt(zeta):
            # Exact certificate that (*) = 0 at d_ref: v(d) lies in span W for every d, so
            # <v, theta_hat> = <v, P_W theta_hat> <= ||P_W theta_hat|| ||v|| <= sqrt(zeta) ||v||
            # (in the metric's coordinates). mu_ref is then optimal (the kink v = 0).
            shift = proj_th if root is None else root[0] @ proj_th
            return PolicyResult(pi=self.ref_policy.copy(), objective=0.0, n_lp=0,
                                seconds=time.perf_counter() - start, upper_bound=0.0,
                                theta_worst=(th - shift).reshape(theta_hat.shape))
        if self.solver == "face":
            pi, obj, ub, n_lp, theta_worst = self._solve_face(theta_hat, zeta, root)
        elif self.solver == "lp":
            pi, obj, ub, n_lp, theta_worst = self._solve_lp(theta_hat, zeta, root)
        else:
            pi, obj, ub, theta_worst = self._solve_socp(theta_hat, zeta, root)
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
    def _solve_lp(self, theta_hat, zeta, root=None):
        """Simplicial decomposition (fully corrective Frank-Wolfe) for (*); see the module doc.

        With a metric (root = (M^(-1/2), M^(1/2))) the master works in the coordinates
        v' = M^(-1/2) v, theta' = M^(1/2) theta_hat, and pricing at u' prices theta_hat -
        sqrt(zeta) M^(-1/2) u' in the original ones.
        """
        mdp = self.mdp
        th = theta_hat.reshape(-1)
        sz = float(np.sqrt(zeta))
        to_master = (lambda v: v) if root is None else (lambda v: root[0] @ v)
        th_m = th if root is None else root[1] @ th
        # LP 1 at u = 0 (in the unit ball): the plug-in vertex, and the bound max <v, theta_hat>.
        pi0, ub = self._pricing_lp(th)
        d0 = occupancy(mdp, pi0).reshape(-1)
        occ = np.stack([self.d_ref.reshape(-1), d0])        # candidate occupancies (m, H S A)
        pts = np.column_stack([np.zeros(th.size), to_master(self._v(d0))])  # (D, m)
        lam = master_step(pts, np.array([0.0, 1.0]), th_m, sz)
        n_lp, obj = 1, objective(pts @ lam, th_m, sz)
        u_best = np.zeros_like(th_m)  # dual point of the best bound so far (LP 1 priced u = 0)
        while not self._converged(ub, obj):
            x = pts @ lam
            norm = np.linalg.norm(x)
            at_tip = norm <= TIP_TOL * np.linalg.norm(pts, axis=0).max()
            if at_tip:
                stepped, u_cur = tip_step(pts, lam, th_m, sz)
                if stepped is not None:  # leave the tip inside conv(candidates), no LP needed
                    lam = master_step(pts, stepped, th_m, sz)
                    obj = max(obj, objective(pts @ lam, th_m, sz))
                    continue
            else:
                u_cur = x / norm
            g_cur = th_m - sz * u_cur
            # Wentges smoothing: price first at a dual point between the best-bound one and
            # u_cur (the dual of the master); if that vertex does not ascend from x (a
            # mis-price), price at u_cur, whose vertex ascends unless the bound closes the gap.
            tries = (u_cur,) if at_tip else (SMOOTHING * u_best + (1 - SMOOTHING) * u_cur, u_cur)
            d_new = None
            for u in tries:
                if n_lp >= self.max_lp:
                    break
                lifted = u if root is None else root[0] @ u
                pi_new, bound = self._pricing_lp(th - sz * lifted)  # a certified bound
                n_lp += 1
                if bound < ub:
                    ub, u_best = bound, u
                d = occupancy(mdp, pi_new).reshape(-1)
                if at_tip or (to_master(self._v(d)) - x) @ g_cur > MISPRICE * (ub - obj):
                    d_new = d
                    break
            if self._converged(ub, obj):
                break
            if d_new is None:
                self._budget_exhausted(ub, obj)
                break
            keep = (lam > 0) | at_tip  # at the tip all candidates span the cone K
            occ = np.vstack([occ[keep], d_new])
            pts = np.column_stack([pts[:, keep], to_master(self._v(d_new))])
            lam = master_step(pts, np.r_[lam[keep], 0.0], th_m, sz)
            new_obj = objective(pts @ lam, th_m, sz)
            if new_obj <= obj and not at_tip:
                # Impossible in exact arithmetic (the new vertex is an ascent direction).
                self._budget_exhausted(ub, obj, why="the restricted master stalled")
                break
            obj = max(obj, new_obj)
        d = (lam @ occ).reshape(mdp.H, mdp.S, mdp.A)
        if not (np.all(np.isfinite(d)) and np.isfinite(ub) and np.isfinite(obj)):
            raise RuntimeError("pessimistic LP path failed: non-finite occupancy or bound "
                               f"(upper bound {ub}, objective {obj})")
        return self._finish(d, th, sz, root, ub, n_lp)

    def _finish(self, d, th, sz, root, ub, n):
        """(policy, its exactly re-evaluated objective, ub, n, worst-case theta) from d."""
        pi = extract_policy(d)
        v = self._v(occupancy(self.mdp, pi).reshape(-1))  # exact re-evaluation of the policy
        vm = v if root is None else root[0] @ v
        theta_worst = self._worst_theta(th, sz, v, root).reshape(self.mdp.d1, self.mdp.d2)
        return pi, float(v @ th - sz * np.linalg.norm(vm)), ub, n, theta_worst

    def _solve_face(self, theta_hat, zeta, root=None):
        """Face rounds (sim/faces.py, experimental); the LP path when they do not certify."""
        from sim import faces

        return faces.solve_for(self, theta_hat, zeta, root)

    def _budget_exhausted(self, ub: float, lb: float, why: str | None = None) -> None:
        why = why or f"max_lp={self.max_lp} LPs were used"
        msg = (f"pessimistic LP path did not converge ({why}): certified bound gap "
               f"{ub - lb:.3e} > tol {self.tol:.1e} * (1 + |{ub:.6g}|)")
        if self.strict:
            raise RuntimeError(msg)
        warnings.warn(msg + "; returning the best policy found (its objective is within that "
                      "gap of the optimum)", RuntimeWarning, stacklevel=4)

    def _converged(self, ub: float, lb: float) -> bool:
        return ub - lb <= self.tol * (1.0 + abs(ub))

    def _dual_bound(self, theta_c: np.ndarray) -> tuple[np.ndarray, float]:
        """max_d <v(d), theta_c> by backward induction: an upper bound on (*) for theta_c in
        the ball (weak duality of the inner minimum); returns the maximiser and the bound."""
        mdp = self.mdp
        pi, val = backward_induction(mdp, (self._phi @ theta_c).reshape(mdp.S, mdp.A))
        return pi, float(val - self._ref_feat @ theta_c)

    def _pricing_lp(self, theta_c: np.ndarray) -> tuple[np.ndarray, float]:
        """_dual_bound, refusing a non-finite answer (a failed LP must never pass silently)."""
        pi, bound = self._dual_bound(theta_c)
        if not np.isfinite(bound):
            raise RuntimeError(f"pessimistic LP path failed: pricing LP value {bound}")
        return pi, bound

    def _v(self, x: np.ndarray) -> np.ndarray:
        """v(d) = Phi^T (d - d_ref) summed over steps, (D,), for a flat occupancy x (H S A,)."""
        return x.reshape(self.mdp.H, -1).sum(0) @ self._phi - self._ref_feat

    @staticmethod
    def _worst_theta(th, sz, v, root=None) -> np.ndarray:
        """argmin of <v, theta> over the set: theta_hat - sqrt(zeta) u, u = v / ||v|| (ball) or
        M^(-1/2) v' / ||v'||, v' = M^(-1/2) v (ellipsoid, root = (M^(-1/2), M^(1/2))); flat (D,)."""
        vm = v if root is None else root[0] @ v
        u = vm / max(np.linalg.norm(vm), 1e-300)
        return th - sz * (u if root is None else root[0] @ u)

    # ------------------------------------------------------------------ SOCP path
    def _solve_socp(self, theta_hat, zeta, root=None):
        mdp = self.mdp
        dv, status = self._socp.solve(theta_hat, zeta, self._ref_feat,
                                      None if root is None else root[0])
        pi = extract_policy(dv)
        # Certify the interior-point answer exactly: the extracted policy's own objective is a
        # lower bound, backward induction at its worst-case theta an upper bound (weak duality).
        # Near the cone's tip (v = 0) Clarabel often reports 'optimal_inaccurate'; such an
        # answer is kept only when this certified gap is within tol.
        th, sz = theta_hat.reshape(-1), float(np.sqrt(zeta))
        v_pi = self._v(occupancy(mdp, pi).reshape(-1))
        obj = float(v_pi @ th - sz * np.linalg.norm(v_pi if root is None else root[0] @ v_pi))
        v = self._v(dv.reshape(-1))
        theta_worst = self._worst_theta(th, sz, v, root).reshape(mdp.d1, mdp.d2)
        ub = self._dual_bound(theta_worst.reshape(-1))[1]
        if not self._converged(ub, obj) and self.strict:
            raise RuntimeError(f"Clarabel's SOCP answer (status {status!r}) has certified gap "
                               f"{ub - obj:.3e} > tol {self.tol:.1e} * (1 + |{ub:.6g}|)")
        return pi, obj, ub, theta_worst


def _flow_constraints(mdp: TabularMDP) -> tuple[np.ndarray, np.ndarray]:
    """Dense flow equations (H S, H S A) and right-hand side (H S,) of the occupancy polytope.

    Row (h, s'): sum_a d_h(s', a) - sum_{s,a} P_{h-1}(s' | s, a) d_{h-1}(s, a) = rho(s') [h = 0].
    """
    H, S, A = mdp.H, mdp.S, mdp.A
    flow = np.zeros((H, S, H, S, A))
    for h in range(H):
        flow[h, np.arange(S), h, np.arange(S), :] = 1.0
        if h > 0:
            flow[h, :, h - 1] -= mdp.P[h - 1].transpose(2, 0, 1)
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
