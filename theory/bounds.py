"""Right-hand sides of the paper's bounds, with every constant an argument (default 1).

Implements Proposition 1 (log-bracketing size of S^ShareLoRA, S^LoRA, S), Theorem 4.1 and its
appendix form Theorem B.1 (subspace distance), Theorem 4.2 (individual value gap),
Corollary 4.1 (averaged value gap), Remark 3 (sample complexities) and the confidence radius
of Eq. B.1 / C.3. Notation: N users, Np comparisons per user, nu = sigma_k^2 / N, tail =
Sigma_tail, delta the failure probability. See theory/README.md for the typos resolved here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Method name (DESIGN.md) -> the parameter class of Proposition 1 it estimates over.
METHOD_CLASSES = {"shared": "ShareLoRA", "local": "LoRA", "full": "S", "global": "global"}


def class_dimension(method: str, N: int, d1: int, d2: int, k: int) -> int:
    """Parameter count behind Proposition 1's bracketing bound for each estimator class.

    shared: k(d1 + N d2) (Eq. 4.2); local: N k(d1 + d2); full: N d1 d2; global: d1 d2 (one
    parameter for everybody, not in the paper; listed so every method has a reference).
    """
    dims = {
        "shared": k * (d1 + N * d2),
        "local": N * k * (d1 + d2),
        "full": N * d1 * d2,
        "global": d1 * d2,
    }
    if method not in dims:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(dims)}")
    return dims[method]


def log_bracketing(method, N, Np, d1, d2, k, delta=0.1, c=1.0):
    """Proposition 1 (Eq. 4.2 and the two displays after it).

    log(N_G(1/(N Np)) / delta) <= c * dim * log(N Np / delta), dim from :func:`class_dimension`.
    """
    _check_delta(delta)
    dim = class_dimension(method, N, d1, d2, k)
    return c * dim * np.log(np.asarray(N * Np, dtype=float) / delta)


def dist_bound(N, Np, nu, tail, d1, d2, k, delta=0.1, c1=1.0, c_bracket=1.0,
               placement="inside"):
    """Theorem 4.1 (placement="inside") or Theorem B.1 (placement="outside").

    inside  (Sec. 4.3): c1 * sqrt( L/(N Np nu) + (1/nu) sqrt(tail/N) )
    outside (App. B):   c1 * sqrt( L/(N Np nu) ) + (1/nu) sqrt(tail/N)
    with L = log_bracketing("shared", ...). The two differ in where the tail term sits; the
    bias then scales as (tail/N)^(1/4)/sqrt(nu) or (tail/N)^(1/2)/nu respectively.
    """
    nu, tail = _check_nu_tail(nu, tail)
    lb = log_bracketing("shared", N, Np, d1, d2, k, delta, c_bracket)
    stat = lb / (np.asarray(N, dtype=float) * Np * nu)
    bias = np.sqrt(tail / np.asarray(N, dtype=float)) / nu
    if placement == "inside":
        return c1 * np.sqrt(stat + bias)
    if placement == "outside":
        return c1 * np.sqrt(stat) + bias
    raise ValueError(f"placement must be 'inside' (Thm 4.1) or 'outside' (Thm B.1), got {placement!r}")


def _gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket, method="shared"):
    nu, tail = _check_nu_tail(nu, tail)
    lb = log_bracketing(method, N, Np, d1, d2, k, delta, c_bracket)
    stat = lb / (np.asarray(N, dtype=float) * Np * nu)
    personal = (k * d2 + np.log(np.asarray(N, dtype=float) / delta)) / np.asarray(Np, dtype=float)
    bias = np.sqrt(tail / np.asarray(N, dtype=float)) / nu
    return stat + personal + bias


def gap_bound_user(N, Np, nu, tail, d1, d2, k, b_i, delta=0.1, c2=1.0, c_bracket=1.0):
    """Theorem 4.2: J(pi_tar; r*_i) - J(pi_hat_i; r*_i) <= c2 sqrt(stat + personal + bias + b_i)."""
    return c2 * np.sqrt(_gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket) + b_i)


def gap_bound_average(N, Np, nu, tail, d1, d2, k, delta=0.1, c3=1.0, c_bracket=1.0):
    """Corollary 4.1: averaged gap <= c3 sqrt(stat + personal + bias).

    The printed bracketing argument N_G(1/(N nu)) is read as N_G(1/(N Np)) as in Thm 4.2.
    """
    return c3 * np.sqrt(_gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket))


def zeta_theory(N, Np, nu, tail, d1, d2, k, min_bias=0.0, delta=0.1, c=1.0, c_bracket=1.0):
    """Confidence radius of Eq. B.1 / C.3 (zeta bounds the *squared* distance, Eq. 3.6).

    zeta = c * sqrt(min_i b_i + L/(N Np nu) + (1/nu) sqrt(tail/N) + (k d2 + log(N/delta))/Np).
    """
    return c * np.sqrt(_gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket) + min_bias)


def sample_complexity(method, eps, N, d1, d2, k, delta=0.1, c=1.0):
    """Remark 3: Np needed for an eps-accurate averaged value gap.

    full: c d1 d2 / eps * log(N/delta) (Zhu et al., 2023);
    shared: c (d1 k + N d2 k) / (N eps) * log(N/delta) (accuracy up to (tail/N)^(1/4));
    share-rep: c (d1 k + N k) / (N eps) * log(N/delta) (Park et al., 2024, d2 = 1).
    """
    _check_delta(delta)
    log_term = np.log(np.asarray(N, dtype=float) / delta)
    eps = np.asarray(eps, dtype=float)
    if np.any(eps <= 0):
        raise ValueError(f"eps must be positive, got {eps}")
    if method == "full":
        return c * d1 * d2 / eps * log_term
    if method == "shared":
        return c * (d1 * k + N * d2 * k) / (N * eps) * log_term
    if method == "share-rep":
        return c * (d1 * k + N * k) / (N * eps) * log_term
    raise ValueError(f"Remark 3 covers 'full', 'shared', 'share-rep'; got {method!r}")


def local_log_slope(fun: Callable[[np.ndarray], np.ndarray], x, rel_step=1e-4) -> np.ndarray:
    """d log fun / d log x at each grid point x, by a central difference in log space."""
    x = np.asarray(x, dtype=float)
    if np.any(x <= 0):
        raise ValueError("log-log slope needs positive grid values")
    h = rel_step
    up = np.log(np.asarray(fun(x * np.exp(h)), dtype=float))
    down = np.log(np.asarray(fun(x * np.exp(-h)), dtype=float))
    return (up - down) / (2 * h)


def _check_delta(delta):
    if not 0 < delta <= 1:
        raise ValueError(f"delta must lie in (0, 1], got {delta}")


def _check_nu_tail(nu, tail):
    nu = np.asarray(nu, dtype=float)
    tail = np.asarray(tail, dtype=float)
    if np.any(nu <= 0):
        raise ValueError(f"nu must be positive, got {nu}")
    if np.any(tail < 0):
        raise ValueError(f"tail must be non-negative, got {tail}")
    return nu, tail
