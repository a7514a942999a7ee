"""Behaviour policies and Bradley-Terry preference data (Section 3, Eq. 3.5's dataset D_i).

Each user i gets Np_i comparisons (tau_0, tau_1) with tau_0 ~ mu0, tau_1 ~ mu1 and the label
o = 1 ("tau_0 preferred") with probability Phi(r*_i(tau_0) - r*_i(tau_1)), Phi = sigmoid.
Trajectories enter only through psi(tau) = sum_h phi(s_h, a_h) (sim/model/mdp.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from sim.model.mdp import TabularMDP, backward_induction, sample_trajectories, trajectory_features

BEHAVIOURS = ("uniform", "poor", "expert")


@dataclass(frozen=True)
class PreferenceData:
    """Pairwise comparisons of all users, one row per comparison j."""

    user: np.ndarray
    """(M,) int: the user i who labelled comparison j."""
    x0: np.ndarray
    """(M, d1, d2): psi(tau_0^j)."""
    x1: np.ndarray
    """(M, d1, d2): psi(tau_1^j)."""
    o: np.ndarray
    """(M,) in {0, 1}: 1 when tau_0 is preferred."""
    n_users: int
    paths: tuple | None = None
    """Optional (states0, actions0, states1, actions1), each (M, H) int: the trajectories
    behind x0 and x1 (kept by make_preferences; used by :func:`empirical_policy`)."""

    def __post_init__(self):
        m = self.user.shape[0]
        if self.x0.shape != self.x1.shape or self.x0.shape[0] != m or self.o.shape != (m,):
            raise ValueError("user, x0, x1 and o must describe the same number of comparisons")
        if m and (self.user.min() < 0 or self.user.max() >= self.n_users):
            raise ValueError(f"user indices must lie in [0, {self.n_users})")
        if not np.isin(self.o, (0, 1)).all():
            raise ValueError("labels o must be 0 or 1")

    @property
    def diff(self) -> np.ndarray:
        """psi(tau_0) - psi(tau_1), shape (M, d1, d2)."""
        return self.x0 - self.x1

    @property
    def sizes(self) -> np.ndarray:
        """Np_i per user, shape (N,)."""
        return np.bincount(self.user, minlength=self.n_users)

    def subset(self, mask: np.ndarray) -> PreferenceData:
        paths = None if self.paths is None else tuple(p[mask] for p in self.paths)
        return PreferenceData(self.user[mask], self.x0[mask], self.x1[mask], self.o[mask],
                              self.n_users, paths)


def behaviour_policy(mdp: TabularMDP, kind: str, rng: np.random.Generator,
                     theta_mean: np.ndarray | None = None, eps: float = 0.1) -> np.ndarray:
    """A behaviour policy (H, S, A).

    - "uniform": uniform over actions (good coverage of every policy);
    - "poor": eps-soft version of the policy that is optimal for -theta_mean, i.e. one that
      avoids what the users' average reward favours, so the optimal policies of most users are
      covered only with probability ~eps / A per step;
    - "expert": eps-soft version of the policy that is optimal for +theta_mean: the data
      concentrate near a good policy and cover the rest of the MDP only with probability
      ~eps / A per step (single-policy coverage, the textbook regime of offline pessimism).
    """
    if kind == "uniform":
        return np.full((mdp.H, mdp.S, mdp.A), 1.0 / mdp.A)
    if kind in ("poor", "expert"):
        if theta_mean is None:
            raise ValueError(f"behaviour {kind!r} needs theta_mean (the users' average Theta*)")
        if not 0 < eps <= 1:
            raise ValueError(f"eps must lie in (0, 1], got {eps}")
        sign = -1.0 if kind == "poor" else 1.0
        base, _ = backward_induction(mdp, sign * mdp.step_rewards(theta_mean))
        return (1 - eps) * base + eps / mdp.A
    raise ValueError(f"unknown behaviour {kind!r}; expected one of {BEHAVIOURS}")


def make_preferences(mdp: TabularMDP, theta: np.ndarray, Np, mu0: np.ndarray, mu1: np.ndarray,
                     rng: np.random.Generator) -> PreferenceData:
    """Sample Np_i comparisons per user under the BTL model with rewards r_{theta_i}.

    theta: (N, d1, d2) the users' full parameters Theta*_i; Np: int or (N,) ints.
    """
    theta = np.asarray(theta, dtype=float)
    n = theta.shape[0]
    sizes = np.broadcast_to(np.asarray(Np), (n,)).astype(np.int64)
    if np.any(sizes < 1):
        raise ValueError(f"every user needs Np >= 1 comparisons, got {sizes.min()}")
    m = int(sizes.sum())
    user = np.repeat(np.arange(n), sizes)
    path0 = sample_trajectories(mdp, mu0, m, rng)
    path1 = sample_trajectories(mdp, mu1, m, rng)
    x0, x1 = trajectory_features(mdp, *path0), trajectory_features(mdp, *path1)
    margin = np.einsum("mde,mde->m", x0 - x1, theta[user])
    o = (rng.random(m) < expit(margin)).astype(np.int8)
    return PreferenceData(user=user, x0=x0, x1=x1, o=o, n_users=n, paths=(*path0, *path1))


def empirical_policy(data: PreferenceData, prior: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Per-user reference policies mu_{i,ref} (N, H, S, A) of Algorithm 1 (input "reference
    policy mu_{i,ref}"): user i's empirical policy of both trajectories of each of their
    comparisons, smoothed by a Dirichlet prior with mean ``prior`` (H, S, A) (the behaviour
    policy) and weight ``strength`` pseudo-visits: (n_i(h,s,a) + c prior) / (n_i(h,s) + c).
    Needs data.paths (make_preferences keeps them)."""
    if data.paths is None:
        raise ValueError("empirical_policy needs the trajectories (data.paths); "
                         "build the data with make_preferences")
    if not strength > 0:
        raise ValueError(f"strength must be positive, got {strength}")
    prior = np.asarray(prior, dtype=float)
    H, S, A = prior.shape
    s0, a0, s1, a1 = data.paths
    states, actions = np.concatenate([s0, s1]), np.concatenate([a0, a1])
    user = np.concatenate([data.user, data.user])
    counts = np.zeros((data.n_users, H, S, A))
    h = np.broadcast_to(np.arange(H), states.shape)
    np.add.at(counts, (np.broadcast_to(user[:, None], states.shape), h, states, actions), 1.0)
    return (counts + strength * prior) / (counts.sum(-1, keepdims=True) + strength)


def check_identifiability(data: PreferenceData, warn: bool = True) -> int:
    """Rank of the empirical covariance of psi0 - psi1; warns when below d1 * d2."""
    diff = data.diff.reshape(data.diff.shape[0], -1)
    rank = int(np.linalg.matrix_rank(diff.T @ diff)) if diff.size else 0
    if warn and rank < diff.shape[1]:
        warnings.warn(
            f"features are not identifiable: the covariance of psi(tau0) - psi(tau1) has rank "
            f"{rank} < d1*d2 = {diff.shape[1]}; Theta is only determined on that span",
            stacklevel=2)
    return rank
