"""Maximum-likelihood estimators of the personalized reward parameters (Eq. 3.1-3.5).

Every user's parameter is Theta_i = Theta_init_i + DeltaTheta_i (Eq. 3.3); the comparison j of
user i is labelled o = 1 with probability sigmoid(<x0_j - x1_j, Theta_i>_F) (BTL, Eq. 3.5), so
Theta_init enters as a known logit offset. ``fit`` returns the minimiser of the mean negative
log-likelihood (Eq. 3.5 negated, divided by the number of comparisons M) over

- ``shared``  : S^ShareLoRA (Eq. 3.4): rank([DeltaTheta_1..DeltaTheta_N]) <= k, ||DeltaTheta_i||_F <= B;
- ``local``   : S^LoRA (Eq. 3.3): rank(DeltaTheta_i) <= k, ||DeltaTheta_i||_F <= B for every i;
- ``full``    : S (Eq. 3.1): ||DeltaTheta_i||_F <= B only;
- ``global``  : one DeltaTheta shared by all users, ||DeltaTheta||_F <= B;
- ``nuclear`` : mean NLL + lam ||[DeltaTheta_1..DeltaTheta_N]||_* without the ball (convex
  relaxation of Eq. 3.4, reference only; lam by cross-validation, sim/estimation/nuclear.py);
- ``zero``    : DeltaTheta_i = 0 ("learned nothing", a floor every method must beat);
- ``oracle``  : S^ShareLoRA with the column space fixed to a given ``basis`` (B-diamond in
  the simulator): the W_i by constrained MLE, the best a shared-subspace method can reach.

Algorithms (details and measured numbers in docs/estimators.md): ``full`` and ``global`` are
batched ball-constrained logistic regressions (sim/estimation/logistic.py); ``shared`` and
``local`` use the Grassmannian variable-projection solver of sim/estimation/lowrank.py
(``solver`` in SOLVERS), run by sim/estimation/multistart.py from several starts (the spectral
one and random ones, lowest NLL kept); ``nuclear`` is FISTA with singular-value thresholding.
Every method works on the per-user padded layout of sim/estimation/layout.py. The convergence measure ``info["gap"]`` is a Frank-Wolfe gap: for ``shared`` and
``local`` that of the (U, W) problem over its convex feasible set, zero exactly at first-order
stationary points; for the convex methods (``full``, ``global``) it bounds the suboptimality;
for ``nuclear`` it is the gradient-mapping norm. ``info["converged"]`` is True only when that
gap is at most ``tol``: a fit that stalls above it (rounding floor, iteration cap) says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
from threadpoolctl import ThreadpoolController

from sim.estimation.layout import _layout, _Problem
from sim.estimation.logistic import ball_logistic, logistic_loss
from sim.estimation.lowrank import (
    _LowRank as _LowRank,  # re-exported: tests and benchmarks import it here
)
from sim.estimation.multistart import MAX_STARTS, _fit_lowrank
from sim.estimation.nuclear import cv_lambda, fista
from sim.model.data import PreferenceData
from theory.diversity import aggregate, column_space

METHODS = ("shared", "local", "full", "global", "nuclear", "zero", "oracle")
SOLVERS = ("newton", "lbfgs")
# Default stopping tolerance on the Frank-Wolfe gap, in mean-NLL units: far below the
# statistical error (~1e-2 at Np = 50) and reachable in < 0.1 s at sweep size
# (benchmarks/bench_fit.py and docs/estimators.md).
DEFAULT_TOL = 1e-9

_BLAS: list = []  # lazily created ThreadpoolController


def _single_threaded_blas():
    """Context limiting BLAS to one thread: the batched small-matrix work gains nothing from
    threads, and on a shared 2-core machine OpenBLAS spin-waiting made fits ~100x slower
    (0.17 s -> 43 s for ``full`` at d1=20, d2=4, N=50, Np=500; docs/estimators.md)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


_OPTIONS = {
    "shared": ("tol", "max_iter", "solver", "max_starts", "seed"),
    "local": ("tol", "max_iter", "solver", "max_starts", "seed"),
    "full": ("tol", "max_iter"),
    "global": ("tol", "max_iter"),
    "nuclear": ("tol", "max_iter", "lam", "seed"),
    "zero": (),
    "oracle": ("tol", "max_iter", "basis"),
}


@dataclass(frozen=True)
class Estimate:
    """Output of :func:`fit`."""

    method: str
    delta: np.ndarray
    """(N, d1, d2): DeltaTheta-hat_i for every user i."""
    basis: np.ndarray | None
    """(d1, k) orthonormal top-k left singular vectors of the aggregate estimate (B-hat) for
    ``shared`` and ``nuclear``, the given basis for ``oracle``; None for the others."""
    nll: float
    """Mean negative log-likelihood per comparison on the training data at ``delta``."""
    info: dict = field(default_factory=dict)
    """iterations, converged, gap (optimisation gap, mean-NLL units), n_starts, nll_spread
    (NLL of the spectral start's fit minus the returned NLL; 0 for single-start methods), fit_s,
    solver details."""


def negative_log_likelihood(delta: np.ndarray, data: PreferenceData,
                            init: np.ndarray | None = None) -> float:
    """Mean NLL per comparison (Eq. 3.5 negated, divided by M) at Theta_i = init_i + delta_i.

    delta, init: (N, d1, d2); init None means zeros.
    """
    delta = _check_users(delta, data, "delta")
    theta = delta if init is None else delta + _check_users(init, data, "init")
    if data.user.size == 0:
        raise ValueError("data holds no comparisons")
    z = np.einsum("mde,mde->m", data.diff, theta[data.user])
    return float(np.mean(logistic_loss(z, data.o.astype(float))))


def nll_gradient(delta: np.ndarray, data: PreferenceData,
                 init: np.ndarray | None = None) -> np.ndarray:
    """Gradient (N, d1, d2) of :func:`negative_log_likelihood` in DeltaTheta_i (Eq. 3.5).

    d/dDeltaTheta_i = (1/M) sum_{j of user i} (sigmoid(z_j) - o_j) (x0_j - x1_j).
    """
    delta = _check_users(delta, data, "delta")
    theta = delta if init is None else delta + _check_users(init, data, "init")
    if data.user.size == 0:
        raise ValueError("data holds no comparisons")
    diff = data.diff.astype(float)
    z = np.einsum("mde,mde->m", diff, theta[data.user])
    r = (expit(z) - data.o) / data.user.size
    grad = np.zeros_like(theta)
    np.add.at(grad, data.user, r[:, None, None] * diff)
    return grad


def fit(method: str, data: PreferenceData, k: int, B: float, init: np.ndarray | None = None,
        **options) -> Estimate:
    """Fit one estimator of Eq. 3.5 over the parameter set named by ``method`` (see module doc).

    data: comparisons of N = data.n_users users with features (M, d1, d2); k: rank of the shared
    (``shared``, ``nuclear`` basis) or per-user (``local``) update, 1 <= k <= min(d1, N d2);
    B > 0: per-user Frobenius bound of Eq. 3.1/3.3/3.4; init: Theta_init (N, d1, d2) or None.
    Options: ``tol`` (gap tolerance, default DEFAULT_TOL), ``max_iter``; for ``shared``/``local``
    ``solver`` in SOLVERS, ``max_starts`` (default sim.estimation.multistart.MAX_STARTS; 1 = spectral start
    only) and ``seed`` of the random starts (default 0); ``lam`` (fixed penalty; default: chosen
    by cross-validation with ``seed``) for ``nuclear``; ``basis`` (d1, k) orthonormal, required
    for ``oracle``. Deterministic: the same inputs give identical arrays.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; supported methods are {METHODS}")
    bad = sorted(set(options) - set(_OPTIONS[method]))
    if bad:
        raise ValueError(f"unknown option(s) {bad} for method {method!r}; "
                         f"supported: {_OPTIONS[method]}")
    if not isinstance(data, PreferenceData):
        raise ValueError(f"data must be a PreferenceData, got {type(data).__name__}")
    if data.user.size == 0:
        raise ValueError("data holds no comparisons")
    n, d1, d2 = data.n_users, data.x0.shape[1], data.x0.shape[2]
    kmax = min(d1, n * d2)
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= kmax:
        raise ValueError(f"rank k={k!r} must be an integer in [1, min(d1, N*d2)={kmax}]")
    k = int(k)
    if not (np.isfinite(B) and B > 0):
        raise ValueError(f"Frobenius bound B must be positive and finite, got {B!r}")
    if init is not None:
        init = _check_users(init, data, "init")
    tol = float(options.get("tol", DEFAULT_TOL))
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    # FISTA needs many more (cheap) iterations than the Newton-type solvers
    max_iter = int(options.get("max_iter", 5000 if method == "nuclear" else 500))
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    solver = options.get("solver", "newton")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; supported solvers are {SOLVERS}")
    max_starts = options.get("max_starts", MAX_STARTS)
    if isinstance(max_starts, bool) or int(max_starts) != max_starts or max_starts < 1:
        raise ValueError(f"max_starts must be a positive integer, got {max_starts!r}")
    options = dict(options, max_starts=int(max_starts))
    if method == "oracle":
        options["basis"] = _check_basis(options.get("basis"), d1, k)

    with _single_threaded_blas():
        return _fit(method, data, k, B, init, options, tol, max_iter, solver)


def _fit(method, data, k, B, init, options, tol, max_iter, solver) -> Estimate:
    d1, d2 = data.x0.shape[1], data.x0.shape[2]
    start = time.perf_counter()
    prob = _layout(data, init)
    basis = None
    if method == "full" or (method == "local" and k >= min(d1, d2)) or (
            method == "shared" and k >= d1):
        # the rank constraint is vacuous: S^LoRA / S^ShareLoRA coincide with S (Eq. 3.1)
        delta, info = _fit_full(prob, B, tol, max_iter)
        if method != "full":
            info["reduces_to"] = "full"
    elif method == "global":
        delta, info = _fit_global(prob, B, tol, max_iter)
    elif method == "nuclear":
        delta, info = _fit_nuclear(prob, data, init, options, tol, max_iter)
    elif method == "zero":
        delta = np.zeros((data.n_users, d1, d2))
        info = {"iterations": 0, "converged": True, "gap": 0.0}
    else:
        delta, info = _fit_lowrank(prob, k, B, method == "shared", solver, tol, max_iter,
                                   max_starts=options["max_starts"],
                                   seed=int(options.get("seed", 0)),
                                   basis=options.get("basis"))
    info.setdefault("n_starts", 1)
    info.setdefault("nll_spread", 0.0)
    if method in ("shared", "nuclear"):
        basis = column_space(aggregate(delta), k)
    elif method == "oracle":
        basis = options["basis"]
    info["fit_s"] = time.perf_counter() - start
    info["method"] = method
    nll = negative_log_likelihood(delta, data, init)
    return Estimate(method=method, delta=delta, basis=basis, nll=nll, info=info)


def _check_basis(basis, d1: int, k: int) -> np.ndarray:
    if basis is None:
        raise ValueError("method 'oracle' needs basis= (d1, k) with orthonormal columns")
    basis = np.asarray(basis, dtype=float)
    if basis.shape != (d1, k) or not np.allclose(basis.T @ basis, np.eye(k), atol=1e-8):
        raise ValueError(f"oracle basis must be ({d1}, {k}) with orthonormal columns, "
                         f"got shape {basis.shape}")
    return basis


def _check_users(arr, data: PreferenceData, name: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=float)
    want = (data.n_users, *data.x0.shape[1:])
    if arr.shape != want:
        raise ValueError(f"{name} must have shape (N, d1, d2) = {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


# ---------------------------------------------------------------- convex: full and global


def _fit_full(prob: _Problem, B: float, tol: float, max_iter: int):
    """Eq. 3.1: N independent ball-constrained logistic regressions, batched."""
    n, m, d1, d2 = prob.X.shape
    res = ball_logistic(prob.X.reshape(n, m, d1 * d2), prob.c, prob.o, prob.w, B,
                        tol=tol / n, max_iter=max_iter)
    info = {"iterations": res.iterations, "converged": res.converged,
            "gap": float(res.gap.sum()), "objective": float(res.obj.sum())}
    return res.v.reshape(n, d1, d2), info


def _fit_global(prob: _Problem, B: float, tol: float, max_iter: int):
    """One DeltaTheta for every user (the init offsets stay per user), ||DeltaTheta||_F <= B."""
    n, m, d1, d2 = prob.X.shape
    res = ball_logistic(prob.X.reshape(1, n * m, d1 * d2), prob.c.reshape(1, -1),
                        prob.o.reshape(1, -1), prob.w.reshape(1, -1), B, tol=tol,
                        max_iter=max_iter)
    info = {"iterations": res.iterations, "converged": res.converged,
            "gap": float(res.gap.sum()), "objective": float(res.obj.sum())}
    return np.broadcast_to(res.v.reshape(1, d1, d2), (n, d1, d2)).copy(), info


# ---------------------------------------------------------------- nuclear-norm relaxation


def _fit_nuclear(prob: _Problem, data: PreferenceData, init, options: dict, tol: float,
                 max_iter: int):
    """FISTA (sim/estimation/nuclear.py) at lam from ``options`` or from cross-validation (no ball)."""
    cv = {}
    if "lam" in options:
        lam = options["lam"]
        if not (np.isfinite(lam) and lam >= 0):
            raise ValueError(f"nuclear penalty lam must be non-negative and finite, got {lam!r}")
    else:
        lam, cv = cv_lambda(data, init, seed=int(options.get("seed", 0)))
    delta, info = fista(prob, float(lam), tol, max_iter)
    info.update(cv)
    return delta, info
