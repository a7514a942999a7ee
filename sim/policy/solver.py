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
  closed form on affine hulls by sim/policy/master.py (master_step). Stop when upper bound - f <= tol (1 + |ub|);
  the optimum mixes at most d1 d2 + 1 vertices, and the mixture's occupancy gives the
  (stochastic) policy.
- ``"face"`` (experimental, an extension): face rounds of sim/policy/faces.py -- one backward
  induction per round identifies a whole face of tied actions, a restricted master solves
  (*) on it; same certificate, the LP path as fallback. Few DPs, but its face master is
  still slower than the LP path (docs/performance.md, "Eq. 3.7 near the DP floor").
- ``"socp"``: the exact cone program in cvxpy (Clarabel), compiled once with Parameters
  (sim/policy/socp.py), certified the same way.

Where each part lives: this module is the entry point (validation, reference policies,
metrics, dispatch, the exact answer at the cone's tip); sim/policy/lp_path.py the simplicial
decomposition and sim/policy/master.py its restricted master; sim/policy/certificate.py the
pricing LP by backward induction and the certificate every solver reports;
sim/policy/exact.py the exact evaluations (plug-in policy, value gaps, policy extraction).

Policies pi (H, S, A) are extracted as pi_h(a | s) = d_h(s, a) / sum_a d_h(s, a), uniform where
a state is unreachable. Value gaps (Theorem 4.2's left-hand side) are exact, by occupancies.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from sim.model.mdp import TabularMDP, check_policy, occupancy
from sim.policy import faces
from sim.policy.certificate import Problem
from sim.policy.exact import PolicyResult, check_theta, check_zeta, flow_constraints
from sim.policy.lp_path import MAX_LP_BASE, MAX_LP_PER_DIM, solve_lp
from sim.policy.socp import OccupancySOCP, solve_socp

SOLVERS = ("lp", "socp", "face")


class PessimisticSolver:
    """Solves Eq. 3.7 for many users of one MDP and one reference policy mu_ref.

    mdp: the MDP; ref_policy: (H, S, A) mu_ref; solver: "lp" (simplicial decomposition, LPs by
    backward induction), "face" (experimental face rounds, sim/policy/faces.py) or "socp" (cvxpy +
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
        self._phi = mdp.phi.reshape(S * A, D)
        # mu_ref, its occupancy d_ref and feature Phi^T d_ref summed over steps (D,); solve()
        # takes a per-user reference instead when given one.
        self._default_ref = self._reference(ref_policy)
        self.ref_policy, self.d_ref, _ = self._default_ref
        self.strict = bool(strict)
        self._last = None  # (key, PolicyResult) of the previous solve
        self.max_lp = int(max_lp) if max_lp is not None else MAX_LP_PER_DIM * (D + 1) + MAX_LP_BASE
        # Orthonormal basis (D, w) of W = Phi^T (null space of the flow equations), a subspace
        # containing every v(d) = Phi^T (d - d_ref), d in the occupancy polytope.
        _, sv, vt = np.linalg.svd(flow_constraints(mdp)[0])
        null = vt[int((sv > 1e-10 * sv[0]).sum()):].T
        u, sw, _ = np.linalg.svd(np.tile(self._phi, (H, 1)).T @ null, full_matrices=False)
        self._span_basis = u[:, sw > 1e-10 * max(sw.max(initial=0.0), 1e-300)]
        if solver == "socp":
            self._socp = OccupancySOCP(mdp, self._phi, self._default_ref[2])

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
        theta_hat = check_theta(self.mdp, theta_hat)
        zeta = check_zeta(zeta)
        root = None if metric is None else self._metric_root(metric)
        ref = self._default_ref if ref_policy is None else self._reference(ref_policy)
        start = time.perf_counter()
        key = (theta_hat.tobytes(), zeta, None if metric is None else np.asarray(metric).tobytes(),
               ref[0].tobytes())
        if self._last is not None and self._last[0] == key:
            # Users with the same estimate and radius (every user of `global`) share one solve.
            res = self._last[1]
            return replace(res, pi=res.pi.copy(), seconds=time.perf_counter() - start)
        res = self._solve(self.problem(ref), theta_hat, zeta, root, start)
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

    def problem(self, ref=None) -> Problem:
        """(*) of one user (sim/policy/certificate.py) with ``ref`` = self._reference(mu_ref)
        (None: the solver's mu_ref)."""
        return Problem(self.mdp, self._phi, *(ref or self._default_ref), tol=self.tol,
                       max_lp=self.max_lp, strict=self.strict)

    def _solve(self, prob: Problem, theta_hat: np.ndarray, zeta: float, root, start: float
               ) -> PolicyResult:
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
            return PolicyResult(pi=prob.ref_policy.copy(), objective=0.0, n_lp=0,
                                seconds=time.perf_counter() - start, upper_bound=0.0,
                                theta_worst=(th - shift).reshape(theta_hat.shape))
        if self.solver == "face":
            pi, obj, ub, n_lp, theta_worst = faces.solve_for(prob, theta_hat, zeta, root)
        elif self.solver == "lp":
            pi, obj, ub, n_lp, theta_worst = solve_lp(prob, theta_hat, zeta, root)
        else:
            pi, obj, ub, theta_worst = solve_socp(self._socp, prob, theta_hat, zeta, root)
            n_lp = 0
        return PolicyResult(pi=pi, objective=obj, n_lp=n_lp, seconds=time.perf_counter() - start,
                            upper_bound=ub, theta_worst=theta_worst,
                            converged=prob.converged(ub, obj))

    def solve_many(self, theta_hat: np.ndarray, zeta) -> list[PolicyResult]:
        """solve() for theta_hat (N, d1, d2) and zeta scalar or (N,)."""
        theta_hat = np.asarray(theta_hat, dtype=float)
        if theta_hat.ndim != 3:
            raise ValueError(f"theta_hat must have shape (N, d1, d2), got {theta_hat.shape}")
        zetas = np.broadcast_to(np.asarray(zeta, dtype=float), (theta_hat.shape[0],))
        return [self.solve(t, z) for t, z in zip(theta_hat, zetas)]
