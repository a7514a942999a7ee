"""Exact quantities of Eq. 3.7 and Theorem 4.2 by dynamic programming and occupancy measures:
the plug-in policy (Eq. 3.7 at zeta = 0), the value gap J(pi*; r*) - J(pi; r*), the objective
f(d) of (*) (sim/policy/solver.py), policy extraction from an occupancy, the flow equations of
the occupancy polytope, and the result type every solver of (*) returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.model.mdp import TabularMDP, backward_induction, check_policy, value

#: Occupancy mass below which a state counts as unreachable in policy extraction.
UNREACHABLE_TOL = 1e-12
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
    theta_hat = check_theta(mdp, theta_hat)
    return backward_induction(mdp, mdp.step_rewards(theta_hat))[0]


def optimal_value(mdp: TabularMDP, theta_true: np.ndarray) -> float:
    """J(pi*; r_true), pi* the optimal policy for theta_true (d1, d2) by backward induction,
    its value by occupancy measures."""
    theta_true = check_theta(mdp, theta_true)
    star = backward_induction(mdp, mdp.step_rewards(theta_true))[0]
    return float(value(mdp, star, theta_true))


def value_gap(mdp: TabularMDP, theta_true: np.ndarray, pi: np.ndarray,
              j_star: float | None = None) -> float:
    """Theorem 4.2's left-hand side J(pi*; r_true) - J(pi; r_true) >= 0, exact.

    theta_true: (d1, d2) the user's full parameter Theta*_i; pi: (H, S, A); j_star: the user's
    optimal_value, when already known (one per user serves every policy scored for them).
    """
    theta_true = check_theta(mdp, theta_true)
    pi = check_policy(mdp, pi)
    j_star = optimal_value(mdp, theta_true) if j_star is None else float(j_star)
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



def flow_constraints(mdp: TabularMDP) -> tuple[np.ndarray, np.ndarray]:
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


def check_theta(mdp: TabularMDP, theta: np.ndarray) -> np.ndarray:
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (mdp.d1, mdp.d2):
        raise ValueError(f"theta must have shape (d1, d2) = {(mdp.d1, mdp.d2)} of the MDP's "
                         f"features, got {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains non-finite entries")
    return theta


def check_zeta(zeta) -> float:
    z = float(zeta)
    if not np.isfinite(z) or z < 0:
        raise ValueError(f"zeta (squared radius of Eq. 3.6) must be finite and >= 0, got {zeta}")
    return z
