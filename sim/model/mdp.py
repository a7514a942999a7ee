"""Tabular finite-horizon MDPs with linear trajectory rewards (Section 3, "Markov Decision Processes").

Reward of a trajectory tau = (s_1, a_1, ..., s_H, a_H) for parameter Theta (d1, d2):
r_Theta(tau) = sum_h <phi(s_h, a_h), Theta>_F = <psi(tau), Theta>_F  (docs/formats.md notation),
so J(pi; r_Theta) = <E_pi[psi(tau)], Theta>_F is computed exactly from occupancy measures.

Shapes: P (H, S, A, S) with P[h, s, a, s'] the step-h transition; rho (S,) the initial
distribution; phi (S, A, d1, d2); a policy pi is (H, S, A) with pi[h, s, a] = pi_h(a | s);
an occupancy measure d is (H, S, A) with d[h, s, a] = Pr_pi(s_h = s, a_h = a).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROB_TOL = 1e-9
#: Trap instances: number of good (well covered) actions, actions 0 .. TRAP_GOOD - 1.
TRAP_GOOD = 2


@dataclass(frozen=True)
class TabularMDP:
    """A finite-horizon MDP with features; validated on construction."""

    P: np.ndarray
    """Transitions (H, S, A, S): P[h, s, a, s'] = Pr(s_{h+1} = s' | s_h = s, a_h = a)."""
    rho: np.ndarray
    """Initial state distribution (S,)."""
    phi: np.ndarray
    """Features (S, A, d1, d2): phi[s, a] is the d1 x d2 feature matrix of (s, a)."""

    def __post_init__(self):
        P, rho, phi = (np.asarray(a, dtype=float) for a in (self.P, self.rho, self.phi))
        if P.ndim != 4 or P.shape[1] != P.shape[3]:
            raise ValueError(f"P must have shape (H, S, A, S), got {P.shape}")
        H, S, A, _ = P.shape
        if rho.shape != (S,):
            raise ValueError(f"rho must have shape ({S},), got {rho.shape}")
        if phi.ndim != 4 or phi.shape[:2] != (S, A):
            raise ValueError(f"phi must have shape ({S}, {A}, d1, d2), got {phi.shape}")
        if np.any(P < -PROB_TOL) or np.abs(P.sum(-1) - 1).max() > 1e-6:
            bad = np.unravel_index(np.abs(P.sum(-1) - 1).argmax(), P.shape[:3])
            raise ValueError(f"transitions must be non-negative and sum to one; P[h,s,a] at {bad} sums to {P.sum(-1)[bad]:.6g}")
        if np.any(rho < -PROB_TOL) or abs(rho.sum() - 1) > 1e-6:
            raise ValueError(f"initial distribution must be non-negative and sum to one (sums to {rho.sum():.6g})")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "rho", rho)
        object.__setattr__(self, "phi", phi)

    H = property(lambda self: self.P.shape[0])
    S = property(lambda self: self.P.shape[1])
    A = property(lambda self: self.P.shape[2])
    d1 = property(lambda self: self.phi.shape[2])
    d2 = property(lambda self: self.phi.shape[3])

    def step_rewards(self, theta: np.ndarray) -> np.ndarray:
        """r(s, a) = <phi(s, a), theta>_F, shape (S, A) (or (N, S, A) for theta (N, d1, d2))."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape[-2:] != (self.d1, self.d2):
            raise ValueError(f"theta must end in ({self.d1}, {self.d2}), got {theta.shape}")
        return np.einsum("sade,...de->...sa", self.phi, theta)


def random_mdp(S: int, A: int, H: int, d1: int, d2: int, rng: np.random.Generator,
               feature_scale: float = 1.0, concentration: float = 0.3) -> TabularMDP:
    """Random MDP: Dirichlet(concentration) step-dependent transitions, Dirichlet(1) initial
    distribution, i.i.d. N(0, feature_scale^2 / H) features (so ||psi|| does not grow with H)."""
    for name, v in (("S", S), ("A", A), ("H", H), ("d1", d1), ("d2", d2)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    P = rng.dirichlet(np.full(S, concentration), size=(H, S, A))
    rho = rng.dirichlet(np.ones(S))
    phi = rng.normal(scale=feature_scale / np.sqrt(H), size=(S, A, d1, d2))
    return TabularMDP(P=P, rho=rho, phi=phi)


def check_trap(S: int, A: int, d1: int, d2: int, rare_mass: float, margin: float) -> None:
    """ValueError naming the first violated condition of a trap instance (:func:`trap_mdp`)."""
    if A != d1:
        raise ValueError(f"instance='trap' needs A == d1 (one feature row per action), got A={A}, d1={d1}")
    if A <= TRAP_GOOD:
        raise ValueError(f"instance='trap' needs A > {TRAP_GOOD} (good actions plus rare ones), got A={A}")
    if S < d2:
        raise ValueError(f"instance='trap' needs S >= d2 (every feature column visited), got S={S}, d2={d2}")
    if not 0 < rare_mass < 1:
        raise ValueError(f"rare_mass must lie in (0, 1), got {rare_mass}")
    if not margin >= 0:
        raise ValueError(f"trap_margin must be non-negative, got {margin}")


def trap_mdp(S: int, A: int, H: int, d1: int, d2: int, rng: np.random.Generator,
             feature_scale: float = 1.0, concentration: float = 0.3) -> TabularMDP:
    """Coverage-trap MDP (extension; docs/pessimism.md): random_mdp's transitions and initial
    distribution, one-hot features phi(s, a) = feature_scale / sqrt(H) * E_{a, s mod d2}
    (E_{r, c} the matrix unit), so r_Theta(s, a) is Theta[a, s mod d2] up to the scale: row a of
    Theta is action a's reward in the d2 state groups, and an action's reward is learned only
    from the comparisons that visit it. H = S = d2 = 1 is an A-armed bandit. Needs A == d1."""
    check_trap(S, A, d1, d2, 0.5, 0.0)
    base = random_mdp(S, A, H, d1, d2, rng, feature_scale=feature_scale,
                      concentration=concentration)
    phi = np.zeros((S, A, d1, d2))
    s, a = np.meshgrid(np.arange(S), np.arange(A), indexing="ij")
    phi[s, a, a, s % d2] = feature_scale / np.sqrt(H)
    return TabularMDP(P=base.P, rho=base.rho, phi=phi)


def trap_behaviour(H: int, S: int, A: int, rare_mass: float) -> np.ndarray:
    """Behaviour policy (H, S, A) of a trap: the TRAP_GOOD good actions share 1 - rare_mass,
    the A - TRAP_GOOD rare ones rare_mass, equally, in every state and step."""
    pi = np.full((H, S, A), rare_mass / (A - TRAP_GOOD))
    pi[..., :TRAP_GOOD] = (1.0 - rare_mass) / TRAP_GOOD
    return pi


def trap_base(d1: int, d2: int, margin: float) -> np.ndarray:
    """Known base reward Theta_init (d1, d2) of a trap: margin on the good actions' rows, 0 on
    the rare ones, so a rare action is worse unless DeltaTheta* favours it by > margin."""
    base = np.zeros((d1, d2))
    base[:TRAP_GOOD] = margin
    return base


def check_policy(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    pi = np.asarray(pi, dtype=float)
    if pi.shape != (mdp.H, mdp.S, mdp.A):
        raise ValueError(f"policy must have shape {(mdp.H, mdp.S, mdp.A)}, got {pi.shape}")
    if np.any(pi < -PROB_TOL) or np.abs(pi.sum(-1) - 1).max() > 1e-6:
        raise ValueError("policy rows pi[h, s, :] must be non-negative and sum to one")
    return pi


def occupancy(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """Occupancy measure d (H, S, A) of a step-dependent stochastic policy pi (H, S, A)."""
    pi = check_policy(mdp, pi)
    d = np.empty((mdp.H, mdp.S, mdp.A))
    state = mdp.rho
    for h in range(mdp.H):
        d[h] = state[:, None] * pi[h]
        state = np.einsum("sa,sat->t", d[h], mdp.P[h])
    return d


def expected_feature(mdp: TabularMDP, d: np.ndarray) -> np.ndarray:
    """E[psi(tau)] = sum_h sum_{s,a} d_h(s, a) phi(s, a), shape (d1, d2), from an occupancy d."""
    return np.einsum("hsa,sade->de", d, mdp.phi)


def value(mdp: TabularMDP, pi: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Exact J(pi; r_theta) = <E_pi psi, theta>_F; theta (d1, d2) or (N, d1, d2)."""
    feat = expected_feature(mdp, occupancy(mdp, pi))
    return np.einsum("de,...de->...", feat, np.asarray(theta, dtype=float))


def backward_induction(mdp: TabularMDP, rewards: np.ndarray) -> tuple[np.ndarray, float]:
    """Optimal deterministic policy (H, S, A) and its value for step rewards (S, A)."""
    rewards = np.asarray(rewards, dtype=float)
    if rewards.shape != (mdp.S, mdp.A):
        raise ValueError(f"rewards must have shape {(mdp.S, mdp.A)}, got {rewards.shape}")
    v = np.zeros(mdp.S)
    pi = np.zeros((mdp.H, mdp.S, mdp.A))
    for h in reversed(range(mdp.H)):
        q = rewards + mdp.P[h] @ v
        best = q.argmax(axis=1)
        pi[h, np.arange(mdp.S), best] = 1.0
        v = q[np.arange(mdp.S), best]
    return pi, float(mdp.rho @ v)


def sample_trajectories(mdp: TabularMDP, pi: np.ndarray, n: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n trajectories of pi: states (n, H) and actions (n, H), by inverse-CDF sampling."""
    pi = check_policy(mdp, pi)
    states = np.empty((n, mdp.H), dtype=np.int64)
    actions = np.empty((n, mdp.H), dtype=np.int64)
    s = _draw(np.broadcast_to(mdp.rho, (n, mdp.S)), rng)
    for h in range(mdp.H):
        a = _draw(pi[h, s], rng)
        states[:, h], actions[:, h] = s, a
        if h + 1 < mdp.H:
            s = _draw(mdp.P[h, s, a], rng)
    return states, actions


def trajectory_features(mdp: TabularMDP, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """psi(tau) = sum_h phi(s_h, a_h), shape (n, d1, d2)."""
    return mdp.phi[states, actions].sum(axis=1)


def _draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)
