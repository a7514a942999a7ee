"""A new user fitted on a frozen estimated subspace (EXTENSION, not a claim of the paper).

A user who arrives after training gets n comparisons and fits only W_new with the basis fixed:
DeltaTheta_new = B_hat W_new, ||W_new||_F <= B (the W-step of Theorem B.3's proof, Appendix B.2,
applied to a user whose data are independent of B_hat). theory/README.md ("New users from the
learned subspace") derives, from the same steps (B.3)-(B.7) as Theorem B.3,

    E ||DeltaTheta_hat_new - DeltaTheta*_new||_F^2
        <~ c_est * k d2 / n  +  c_rep * (dist(B_hat, B_diamond)^2 * ||W_new||_F^2 / k + tail_new),

against the from-scratch rate c_est * dim / n (dim = d1 d2 for the class S of Eq. 3.1,
k (d1 + d2 - k) for S^LoRA of Eq. 3.3). c_est (curvature of the BTL likelihood and the
conditioning of the feature covariance) and c_rep (>= 1; the ratio of the Fisher information
across span B_hat and its complement) are unknown; every function takes them as arguments.
The representation term's ``/ k`` assumes a new user's head W_new is isotropic (E W W^T =
||W||_F^2 / k I_k, as the simulator draws it, sim/experiments/new_users.py); the worst case drops it.
Constant-free: the slope -1 of each estimation term, the lower bound c_rep = 1 of the floor
(the frozen estimate lies in span B_hat, so its error is at least the part of DeltaTheta*_new
outside span B_hat), and nothing else (the crossover scales with c_est / c_rep).
"""

from __future__ import annotations

import numpy as np


def _positive(name: str, v) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be positive and finite, got {v!r}")
    return a


def _nonneg(name: str, v) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be non-negative and finite, got {v!r}")
    return a


def representation_floor(dist, head_energy, k: int, user_tail, c_rep=1.0):
    """The n -> infinity error of the frozen-basis fit: c_rep (dist^2 ||W_new||_F^2 / k + tail_new).

    dist: dist(B_hat, B_diamond) of Definition A.1 (= ||sin Theta||_F); head_energy:
    ||W_new||_F^2 = ||B_diamond^T DeltaTheta*_new||_F^2; user_tail: ||DeltaTheta*_new -
    B_diamond B_diamond^T DeltaTheta*_new||_F^2 (the user's own tail). With c_rep = 1 this is
    the expected squared norm of the part of DeltaTheta*_new outside span B_hat for an isotropic
    head, up to the tail's overlap with span B_hat (at most tail_new dist^2 / (r - k)).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    dist = _nonneg("dist", dist)
    return _positive("c_rep", c_rep) * (dist**2 * _nonneg("head_energy", head_energy) / k
                                        + _nonneg("user_tail", user_tail))


def frozen_basis_error(n_new, k: int, d2: int, dist, head_energy, user_tail, c_est=1.0,
                       c_rep=1.0):
    """Excess squared error of a new user's W fitted on a frozen B_hat with n_new comparisons:
    c_est k d2 / n_new + representation_floor(...) (extension of Theorem B.3, theory/README.md)."""
    n = _positive("n_new", n_new)
    if int(d2) != d2 or d2 < 1:
        raise ValueError(f"d2 must be a positive integer, got {d2!r}")
    est = _positive("c_est", c_est) * k * d2 / n
    return est + representation_floor(dist, head_energy, k, user_tail, c_rep)


def from_scratch_error(n_new, dim: int, c_est=1.0):
    """c_est dim / n_new: a new user fitted from scratch over a class of dimension ``dim``
    (d1 d2 for ``full``, k (d1 + d2 - k) for ``local``; theory.bounds.class_dimension with N = 1)."""
    return _positive("c_est", c_est) * _positive("dim", dim) / _positive("n_new", n_new)


def crossover_n(k: int, d2: int, dim_scratch: int, floor, c_est=1.0, c_scratch=None):
    """n_new at which the from-scratch fit catches up with the frozen-basis fit, i.e. the root of
    c_scratch dim_scratch / n = c_est k d2 / n + floor:  n* = (c_scratch dim_scratch - c_est k d2) / floor.

    c_scratch defaults to c_est (the same curvature constant for both fits). Returns inf when
    floor == 0 (a perfect basis is never caught) and 0 when the from-scratch class is no larger
    (c_scratch dim_scratch <= c_est k d2: the frozen fit never leads).
    """
    c_scratch = c_est if c_scratch is None else c_scratch
    lead = _positive("c_scratch", c_scratch) * _positive("dim_scratch", dim_scratch) \
        - _positive("c_est", c_est) * k * d2
    floor = _nonneg("floor", floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(lead <= 0, 0.0, np.where(floor > 0, lead / np.where(floor > 0, floor, 1.0),
                                                np.inf))
    return out if out.ndim else float(out)


def estimation_dominated(n_new, k: int, d2: int, floor, c_est=1.0, factor=4.0):
    """Bool array: n_new where the estimation term c_est k d2 / n is at least ``factor`` times
    the floor (the range where the frozen-basis error falls like 1/n_new)."""
    n = _positive("n_new", n_new)
    return _positive("c_est", c_est) * k * d2 / n >= factor * _nonneg("floor", floor)
