"""Parametric-bootstrap confidence radius zeta_i of the sets R_i of Eq. 3.6 (Algorithm 1, step 3).

R_i = {Theta_init_i + DeltaTheta_i : ||DeltaTheta_i - DeltaTheta_hat_i||_F^2 <= zeta_i}.

A bootstrap world has a truth DeltaTheta~: the Bradley-Terry labels of the SAME comparison pairs
(same trajectories and features) are redrawn with P(o_j = 1) = sigmoid(<x0_j - x1_j,
Theta_init_i + DeltaTheta~_i>) (Eq. 3.5's model), the same estimator is refitted with the same
k, B and Theta_init, and e_bi = ||DeltaTheta_hat_b,i - DeltaTheta~_i||_F^2 plays the role of the
unobservable squared error ||DeltaTheta_hat_i - DeltaTheta*_i||_F^2.

- Stage 1 (``debias=False``): the truth is the estimate, DeltaTheta~ = DeltaTheta_hat.
- Stage 2: the truth is the estimate scaled per user to the moment estimate of the true signal
  energy, ||DeltaTheta~_i||^2 = max(0, ||DeltaTheta_hat_i||^2 - mean_b e_bi) with e from stage 1
  (:func:`debiased_world`); scaling keeps the method's parameter set. Reason:
  E||DeltaTheta_hat_i||^2 = ||DeltaTheta*_i||^2 + MSE_i, so the stage-1 world has more signal
  than the real one (``shared``, Np=100, poor behaviour: ||DeltaTheta*||^2 = 0.20 against
  ||DeltaTheta_hat||^2 = 0.45), which makes the subspace and ball-constrained fits look more
  accurate than they are: stage 1 under-covers there.
- Default (``debias=True``, SimConfig.radius = "bootstrap"): zeta_i = the larger of the two
  worlds' radii (2 n_boot refits). The signal energy is a nuisance parameter that the data
  place, roughly, between the two worlds (the estimate's energy is biased up, the debiased one
  is unbiased before its clipping at 0), and the error quantile is not monotone in it: with a
  well-determined subspace less signal means a larger error, but when the estimate is mostly
  noise (Np=20) the error is ~||DeltaTheta_hat_i||^2 + ||DeltaTheta*_i||^2 and a truth
  clipped to 0 under-covers. Taking the larger radius maximises over this two-point set of
  worlds, in the spirit of Berger and Boos (1994, maximising over a nuisance parameter); it is
  not a tuned factor, but the two points are no confidence set, so it is no guarantee either.

zeta_i is an order statistic of user i's own replicates (per user, as Eq. 3.6 asks):

    zeta_i = e_(r),i,   r = ceil((n_boot + 1)(1 - delta)),

capped at (2B)^2 (estimate and truth both lie in the B-ball), and (2B)^2 when r > n_boot. If the
true squared error and the n_boot replicates of a user were exchangeable (the bootstrap being
exact), Pr(err_i <= e_(r),i) >= r / (n_boot + 1) >= 1 - delta for ANY n_boot: the noise of a
quantile from few replicates widens zeta but does not lower the coverage (the conformal rank
argument). Refits start cold, from the estimator's own initialisation, so the replicates
reproduce the estimator exactly as it is used (``sim.estimation.estimators.fit`` has no warm start).

Users with no more comparisons than free parameters in their DeltaTheta_i get (2B)^2 without
resampling (:func:`underdetermined`: their comparisons are always separable, so the ball, not
the likelihood, fixes the estimate; ``full`` and ``local`` at Np=20 in the default sweep).

What neither stage can see: bias that a bootstrap world from the method's own model does not
reproduce. ``global`` is misspecified against heterogeneous users (its bootstrap world has no
heterogeneity) and is under-covered. Measured coverage, costs and the default: docs/pessimism.md
(``python -m sim.coverage``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import expit

from sim.confidence.sets import check_estimate
from sim.estimation import estimators
from sim.model.data import PreferenceData

#: Replicates per stage unless told otherwise (zeta_i = the 28th smallest of 30 at delta = 0.1).
DEFAULT_N_BOOT = 30
#: Spawn key of the bootstrap stream of an instance: sim.experiments.pipeline.build_instance uses the first
#: four children (spawn keys 0-3) of SeedSequence(seed) for the MDP, truth, data and test set.
BOOT_STREAM = 4


def boot_seed(seed: int, method: str) -> np.random.SeedSequence:
    """The bootstrap's seed for instance ``seed`` and ``method``: independent of the instance's
    other streams and of the other methods, so a radius does not depend on which methods run."""
    return np.random.SeedSequence(seed, spawn_key=(BOOT_STREAM, estimators.METHODS.index(method)))


def bootstrap_errors(method: str, est, data: PreferenceData, k: int, B: float,
                     init: np.ndarray | None = None, n_boot: int = DEFAULT_N_BOOT, seed=0,
                     world: np.ndarray | None = None) -> np.ndarray:
    """Squared bootstrap errors e (n_boot, N): e[b, i] = ||DeltaTheta_hat_b,i - DeltaTheta~_i||_F^2.

    The bootstrap world's truth is Theta~_i = Theta_init_i + DeltaTheta~_i with DeltaTheta~ =
    ``world`` (N, d1, d2), by default the estimate est.delta itself; labels of the training pairs
    are redrawn from it and ``method`` is refitted (DeltaTheta_hat_b). method, k, B, init: as in
    the fit that produced ``est`` (a sim.estimation.estimators.Estimate); data: its training comparisons;
    seed: anything np.random.default_rng accepts (a Generator is used and advanced).
    """
    if method not in estimators.METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {estimators.METHODS}")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    delta_hat = check_estimate(est, data, B, init=init, world=world)
    n = delta_hat.shape[0]
    centre = delta_hat if world is None else np.asarray(world, dtype=float)
    theta = centre if init is None else np.asarray(init, dtype=float) + centre
    p = expit(np.einsum("mde,mde->m", data.diff, theta[data.user]))
    rng = np.random.default_rng(seed)
    errs = np.empty((int(n_boot), n))
    for b in range(int(n_boot)):
        o = (rng.random(p.size) < p).astype(data.o.dtype)
        extra = {"basis": est.basis} if method == "oracle" else {}
        refit = estimators.fit(method, dataclasses.replace(data, o=o), k, B, init=init, **extra)
        errs[b] = np.sum((refit.delta - centre) ** 2, axis=(1, 2))
    return errs


def debiased_world(delta_hat: np.ndarray, errs: np.ndarray) -> np.ndarray:
    """DeltaTheta~_i = c_i DeltaTheta_hat_i with c_i^2 = max(0, ||DeltaTheta_hat_i||^2 - mse_i) /
    ||DeltaTheta_hat_i||^2, mse_i = mean_b errs[b, i] (the first stage's errors, (n_boot, N)).

    E||DeltaTheta_hat_i||^2 = ||DeltaTheta*_i||^2 + MSE_i when the error is centred, so this truth
    has the moment estimate of the true signal energy instead of the estimate's inflated one.
    Scaling each user keeps the method's parameter set (the column space for ``shared``, the
    rank for ``local``, the ball for all).
    """
    delta_hat = np.asarray(delta_hat, dtype=float)
    energy = np.sum(delta_hat**2, axis=(1, 2))
    mse = np.asarray(errs, dtype=float).mean(axis=0)
    c2 = np.where(energy > 0, np.maximum(energy - mse, 0.0) / np.where(energy > 0, energy, 1.0), 0.0)
    return delta_hat * np.sqrt(c2)[:, None, None]


def radius_from_errors(errs: np.ndarray, B: float, delta: float = 0.1) -> np.ndarray:
    """Per-user zeta_i (N,): the ceil((n_boot + 1)(1 - delta))-th smallest of errs[:, i], capped
    at (2B)^2 (and equal to it when that rank exceeds n_boot). errs: (n_boot, N)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    errs = np.asarray(errs, dtype=float)
    if errs.ndim != 2 or errs.shape[0] < 2:
        raise ValueError(f"errs must be (n_boot, N) with n_boot >= 2, got shape {errs.shape}")
    cap = 4.0 * B**2
    r = int(np.ceil((errs.shape[0] + 1) * (1 - delta) - 1e-9))
    if r > errs.shape[0]:
        return np.full(errs.shape[1], cap)
    return np.minimum(np.sort(errs, axis=0)[r - 1], cap)


def underdetermined(method: str, data: PreferenceData, k: int) -> np.ndarray:
    """(N,) bool: users with no more comparisons than free parameters in their DeltaTheta_i.

    Free parameters: d1 d2 (``full``, ``nuclear``), k (d1 + d2 - k) (``local``, the rank-k
    manifold), k d2 (``shared``, given the basis pooled over users), and for ``global`` d1 d2
    against all M comparisons. n <= p feature differences in general position are linearly
    independent, so every labelling is separable: the unconstrained MLE does not exist, the
    ball (not the likelihood) fixes the estimate, and refits on relabelled data say nothing
    about its error (measured without this rule: ``full`` at Np=20 <= 36 covered 0.20-0.50).
    """
    n, d1, d2 = data.n_users, data.x0.shape[1], data.x0.shape[2]
    if method == "global":
        return np.full(n, data.user.size <= d1 * d2)
    dims = {"full": d1 * d2, "nuclear": d1 * d2,
            "local": k * (d1 + d2 - k) if k < min(d1, d2) else d1 * d2,
            "shared": k * d2 if k < d1 else d1 * d2, "oracle": k * d2, "zero": 0}
    if method not in dims:
        raise ValueError(f"unknown method {method!r}; expected one of {estimators.METHODS}")
    return data.sizes <= dims[method]


def bootstrap_stages(method: str, est, data: PreferenceData, k: int, B: float,
                     delta: float = 0.1, init: np.ndarray | None = None,
                     n_boot: int = DEFAULT_N_BOOT, seed=0, debias: bool = True):
    """Both stages' radii: (zeta_1, zeta_2, errs_1, errs_2), zeta (N,), errs (n_boot, N).

    zeta_1 from the world of the estimate, zeta_2 from the energy-debiased world (None, with
    errs_2, when ``debias`` is False); users flagged by :func:`underdetermined` get (2B)^2 in
    both, and when every user is flagged no refit is run (errs None). Stage 1 draws first from
    np.random.default_rng(seed), stage 2 continues the same stream.
    """
    if not 0 < delta < 1:  # checked before the refits
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    cap = 4.0 * B**2
    flags = underdetermined(method, data, k)
    if flags.all():
        if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 2:
            raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
        full = np.full(data.n_users, cap)
        return full, (full.copy() if debias else None), None, None
    rng = np.random.default_rng(seed)
    errs1 = bootstrap_errors(method, est, data, k, B, init=init, n_boot=n_boot, seed=rng)
    z1 = np.where(flags, cap, radius_from_errors(errs1, B, delta))
    if not debias:
        return z1, None, errs1, None
    world = debiased_world(est.delta, errs1)
    errs2 = bootstrap_errors(method, est, data, k, B, init=init, n_boot=n_boot, seed=rng,
                             world=world)
    z2 = np.where(flags, cap, radius_from_errors(errs2, B, delta))
    return z1, z2, errs1, errs2


def bootstrap_radius(method: str, est, data: PreferenceData, k: int, B: float,
                     delta: float = 0.1, init: np.ndarray | None = None,
                     n_boot: int = DEFAULT_N_BOOT, seed=0, debias: bool = True) -> np.ndarray:
    """Per-user zeta_i (N,) of Eq. 3.6 at level 1 - delta by the parametric bootstrap (module doc).

    debias=False: stage 1 only, the world whose truth is the estimate (n_boot refits).
    debias=True (default): also stage 2, the world with the energy-debiased truth of
    :func:`debiased_world` (2 n_boot refits), and zeta_i = the larger of the two worlds' radii.
    Users with Np_i <= their free parameters (:func:`underdetermined`) get (2B)^2.
    Other arguments as in :func:`bootstrap_errors`.
    """
    z1, z2, _, _ = bootstrap_stages(method, est, data, k, B, delta=delta, init=init,
                                    n_boot=n_boot, seed=seed, debias=debias)
    return z1 if z2 is None else np.maximum(z1, z2)
