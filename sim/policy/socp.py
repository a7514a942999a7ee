"""Reference solver of Eq. 3.7: the exact second-order-cone program over occupancy measures.

    max_{d in D} <v(d), theta_hat> - sqrt(zeta) ||v(d)||_2,   v(d) = Phi^T (d - d_ref)     (*)

in cvxpy, compiled once per MDP with Parameters (theta_hat and sqrt(zeta), DPP checked) and
solved by Clarabel. solve_socp certifies its answers by backward induction
(sim/policy/certificate.py); the default
solver there is the LP path, and this one is its independent check (tests, benchmarks).
"""

from __future__ import annotations

import warnings

import numpy as np

from sim.model.mdp import TabularMDP, occupancy
from sim.policy.certificate import worst_theta
from sim.policy.exact import extract_policy

#: Clarabel tolerances: 1e-8 is the tightest at which it reliably reports "optimal" here
#: (1e-10 gives "optimal_inaccurate" on some instances).
CLARABEL_OPTIONS = {"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8}


class OccupancySOCP:
    """(*) for one MDP; phi: (S A, D) features. The reference feature Phi^T d_ref (summed over
    steps) is a Parameter, so per-user reference policies reuse the compiled problem; an
    ellipsoidal set ||theta - theta_hat||_M^2 <= zeta has its own problem, compiled on first
    use, with the penalty ||R v||, R = sqrt(zeta) M^(-1/2) one Parameter (DPP)."""

    def __init__(self, mdp: TabularMDP, phi: np.ndarray, ref_feat: np.ndarray):
        import cvxpy as cp

        H, S, A, D = mdp.H, mdp.S, mdp.A, mdp.d1 * mdp.d2
        self.shape = (H, S, A)
        self._d = cp.Variable((H, S * A), nonneg=True)
        self._theta = cp.Parameter(D)
        self._ref = cp.Parameter(D, value=np.asarray(ref_feat, dtype=float))
        self._sz = cp.Parameter(nonneg=True)
        self._root = cp.Parameter((D, D))
        # v is its own variable so that the cone touches D + 1 columns only; with v inlined
        # Clarabel's KKT system carries the dense (H S A) x D feature block inside the cone
        # and is several times slower (benchmarks/bench_policy.py).
        self._v = v = cp.Variable(D)
        d = self._d
        self._cons = [v == cp.sum(d, axis=0) @ phi - self._ref,
                      cp.sum(cp.reshape(d[0], (S, A), order="C"), axis=1) == mdp.rho]
        for h in range(1, H):
            inflow = d[h - 1] @ mdp.P[h - 1].reshape(S * A, S)
            self._cons.append(cp.sum(cp.reshape(d[h], (S, A), order="C"), axis=1) == inflow)
        self._prob = cp.Problem(cp.Maximize(self._theta @ v - self._sz * cp.norm(v, 2)), self._cons)
        self._prob_m = None
        if not self._prob.is_dpp():
            raise RuntimeError("SOCP of Eq. 3.7 is not DPP; it would be recompiled per user")

    def solve(self, theta_hat: np.ndarray, zeta: float, ref_feat: np.ndarray | None = None,
              inv_root: np.ndarray | None = None) -> tuple[np.ndarray, str]:
        """Occupancy (H, S, A) at Clarabel's answer (clipped at 0) and cvxpy's status.

        ref_feat: (D,) Phi^T d_ref of this user's reference policy (None: keep the last one);
        inv_root: M^(-1/2) (D, D) for the ellipsoid with metric M (None: the ball).
        """
        import cvxpy as cp

        self._theta.value = np.asarray(theta_hat, dtype=float).reshape(-1)
        if ref_feat is not None:
            self._ref.value = np.asarray(ref_feat, dtype=float)
        if inv_root is None:
            prob = self._prob
            self._sz.value = float(np.sqrt(zeta))
        else:
            if self._prob_m is None:
                self._prob_m = cp.Problem(cp.Maximize(self._theta @ self._v
                                                      - cp.norm(self._root @ self._v, 2)), self._cons)
            prob = self._prob_m
            self._root.value = float(np.sqrt(zeta)) * np.asarray(inv_root, dtype=float)
        try:
            with warnings.catch_warnings():  # 'may be inaccurate': the caller certifies
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                prob.solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)
        except cp.error.SolverError as err:
            raise RuntimeError(f"Clarabel failed on the SOCP of Eq. 3.7: {err}") from err
        status = prob.status
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or self._d.value is None:
            raise RuntimeError(f"Clarabel did not solve the SOCP of Eq. 3.7: status {status!r}")
        return np.clip(self._d.value, 0.0, None).reshape(self.shape), status


def solve_socp(socp: OccupancySOCP, prob, theta_hat, zeta, root=None):
    """(pi, objective, ub, theta_worst) of the cone program, certified by backward induction."""
    mdp = prob.mdp
    dv, status = socp.solve(theta_hat, zeta, prob.ref_feat,
                                  None if root is None else root[0])
    pi = extract_policy(dv)
    # Certify the interior-point answer exactly: the extracted policy's own objective is a
    # lower bound, backward induction at its worst-case theta an upper bound (weak duality).
    # Near the cone's tip (v = 0) Clarabel often reports 'optimal_inaccurate'; such an
    # answer is kept only when this certified gap is within tol.
    th, sz = theta_hat.reshape(-1), float(np.sqrt(zeta))
    v_pi = prob.v(occupancy(mdp, pi).reshape(-1))
    obj = float(v_pi @ th - sz * np.linalg.norm(v_pi if root is None else root[0] @ v_pi))
    v = prob.v(dv.reshape(-1))
    theta_worst = worst_theta(th, sz, v, root).reshape(mdp.d1, mdp.d2)
    ub = prob.dual_bound(theta_worst.reshape(-1))[1]
    if not prob.converged(ub, obj) and prob.strict:
        raise RuntimeError(f"Clarabel's SOCP answer (status {status!r}) has certified gap "
                           f"{ub - obj:.3e} > tol {prob.tol:.1e} * (1 + |{ub:.6g}|)")
    return pi, obj, ub, theta_worst
