"""The certificate of every solver of Eq. 3.7: one user's problem (*) (sim/policy/solver.py) and
its pricing LP max_d <v(d), theta_c>, solved exactly by backward induction.

For any theta_c in the confidence set, max_d <v(d), theta_c> bounds (*) from above (weak
duality of the inner minimum: f(d) <= <v(d), theta_c> for every d), so a solver's answer d is
certified when that bound minus f(d) is at most tol (1 + |bound|). The LP path prices its
columns with this LP, the face rounds take their faces from it, and the SOCP's answer is
checked by it at the answer's own worst-case theta.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from sim.model.mdp import TabularMDP, backward_induction, occupancy
from sim.policy.exact import extract_policy


@dataclass
class Problem:
    """(*) for one user: the MDP, its features and the user's reference policy mu_ref."""

    mdp: TabularMDP
    phi: np.ndarray
    """(S A, D) features phi(s, a) flattened, D = d1 d2."""
    ref_policy: np.ndarray
    """(H, S, A) mu_ref."""
    d_ref: np.ndarray
    """(H, S, A) occupancy of mu_ref."""
    ref_feat: np.ndarray
    """(D,) Phi^T d_ref summed over steps."""
    tol: float
    """Certified when bound - f <= tol (1 + |bound|)."""
    max_lp: int
    """Pricing-LP budget of the LP path."""
    strict: bool
    """Raise instead of warn when a solver stops above tol."""

    def v(self, x: np.ndarray) -> np.ndarray:
        """v(d) = Phi^T (d - d_ref) summed over steps, (D,), for a flat occupancy x (H S A,)."""
        return x.reshape(self.mdp.H, -1).sum(0) @ self.phi - self.ref_feat

    def dual_bound(self, theta_c: np.ndarray) -> tuple[np.ndarray, float]:
        """max_d <v(d), theta_c> by backward induction: an upper bound on (*) for theta_c in
        the set (weak duality of the inner minimum); returns the maximiser and the bound."""
        mdp = self.mdp
        pi, val = backward_induction(mdp, (self.phi @ theta_c).reshape(mdp.S, mdp.A))
        return pi, float(val - self.ref_feat @ theta_c)

    def price(self, theta_c: np.ndarray) -> tuple[np.ndarray, float]:
        """dual_bound, refusing a non-finite answer (a failed LP must never pass silently)."""
        pi, bound = self.dual_bound(theta_c)
        if not np.isfinite(bound):
            raise RuntimeError(f"pessimistic LP path failed: pricing LP value {bound}")
        return pi, bound

    def converged(self, ub: float, lb: float) -> bool:
        return ub - lb <= self.tol * (1.0 + abs(ub))

    def report_gap(self, ub: float, lb: float, why: str | None = None) -> None:
        """A solver stopped above tol: raise (strict) or warn with the certified gap."""
        why = why or f"max_lp={self.max_lp} LPs were used"
        msg = (f"pessimistic LP path did not converge ({why}): certified bound gap "
               f"{ub - lb:.3e} > tol {self.tol:.1e} * (1 + |{ub:.6g}|)")
        if self.strict:
            raise RuntimeError(msg)
        warnings.warn(msg + "; returning the best policy found (its objective is within that "
                      "gap of the optimum)", RuntimeWarning, stacklevel=4)

    def finish(self, d, th, sz, root, ub, n):
        """(policy, its exactly re-evaluated objective, ub, n, worst-case theta) from d."""
        pi = extract_policy(d)
        v = self.v(occupancy(self.mdp, pi).reshape(-1))  # exact re-evaluation of the policy
        vm = v if root is None else root[0] @ v
        theta_worst = worst_theta(th, sz, v, root).reshape(self.mdp.d1, self.mdp.d2)
        return pi, float(v @ th - sz * np.linalg.norm(vm)), ub, n, theta_worst


def worst_theta(th, sz, v, root=None) -> np.ndarray:
    """argmin of <v, theta> over the set: theta_hat - sqrt(zeta) u, u = v / ||v|| (ball) or
    M^(-1/2) v' / ||v'||, v' = M^(-1/2) v (ellipsoid, root = (M^(-1/2), M^(1/2))); flat (D,)."""
    vm = v if root is None else root[0] @ v
    u = vm / max(np.linalg.norm(vm), 1e-300)
    return th - sz * (u if root is None else root[0] @ u)
