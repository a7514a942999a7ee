"""Right-hand sides of the paper's bounds, with every constant an argument (default 1).

Implements Proposition 1 (log-bracketing size of S^ShareLoRA, S^LoRA, S), Theorem 4.1 and its
appendix form Theorem B.1 (subspace distance), Theorem 4.2 (individual value gap),
Corollary 4.1 (averaged value gap) and its analogue for the other estimator classes,
Remark 3 (sample complexities) and the confidence radius of Eq. B.1 / C.3. Notation: N users,
Np comparisons per user, nu = sigma_k^2 / N, tail = Sigma_tail, delta the failure probability.
Every additive term of a bound has its own constant (c_bracket, c_personal, c_tail, c_bias;
default 1) so that sim/experiments/analysis.py can tell whether a predicted slope depends on them. See
theory/README.md for the typos resolved here (errata 2, 3, 4, 7, 12, 13).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Method name (docs/formats.md) -> the parameter class of Proposition 1 it estimates over.
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
               placement="inside", c_tail=1.0):
    """Theorem 4.1 (placement="inside") or Theorem B.1 (placement="outside").

    inside  (Sec. 4.3): c1 * sqrt( L/(N Np nu) + c_tail (1/nu) sqrt(tail/N) )
    outside (App. B):   c1 * sqrt( L/(N Np nu) ) + c_tail (1/nu) sqrt(tail/N)
    with L = log_bracketing("shared", ..., c=c_bracket); c_tail is the proof's C C_4 kappa^2
    (B.21). The two differ in where the tail term sits; the bias then scales as
    (tail/N)^(1/4)/sqrt(nu) or (tail/N)^(1/2)/nu respectively, so the local log-slope in tail
    never exceeds 1/4 (inside) or 1/2 (outside), whatever the constants.
    """
    nu, tail = _check_nu_tail(nu, tail)
    lb = log_bracketing("shared", N, Np, d1, d2, k, delta, c_bracket)
    stat = lb / (np.asarray(N, dtype=float) * Np * nu)
    bias = c_tail * np.sqrt(tail / np.asarray(N, dtype=float)) / nu
    if placement == "inside":
        return c1 * np.sqrt(stat + bias)
    if placement == "outside":
        return c1 * np.sqrt(stat) + bias
    raise ValueError(f"placement must be 'inside' (Thm 4.1) or 'outside' (Thm B.1), got {placement!r}")


def _gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket, c_personal=1.0, c_tail=1.0):
    """stat + personal + bias of Theorem 4.2 / Corollary 4.1 / Eq. B.1 (shared class)."""
    nu, tail = _check_nu_tail(nu, tail)
    lb = log_bracketing("shared", N, Np, d1, d2, k, delta, c_bracket)
    stat = lb / (np.asarray(N, dtype=float) * Np * nu)
    personal = (k * d2 + np.log(np.asarray(N, dtype=float) / delta)) / np.asarray(Np, dtype=float)
    bias = np.sqrt(tail / np.asarray(N, dtype=float)) / nu
    return stat + c_personal * personal + c_tail * bias


def gap_bound_user(N, Np, nu, tail, d1, d2, k, b_i, delta=0.1, c2=1.0, c_bracket=1.0):
    """Theorem 4.2: J(pi_tar; r*_i) - J(pi_hat_i; r*_i) <= c2 sqrt(stat + personal + bias + b_i)."""
    return c2 * np.sqrt(_gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket) + b_i)


def gap_bound_average(N, Np, nu, tail, d1, d2, k, delta=0.1, c3=1.0, c_bracket=1.0,
                      c_personal=1.0, c_tail=1.0):
    """Corollary 4.1: averaged gap <= c3 sqrt(stat + c_personal personal + c_tail bias).

    The printed bracketing argument N_G(1/(N nu))^(1/delta) is read as N_G(1/(N Np))/delta as
    in Thm 4.2 (erratum 3). Used for any N and Sigma_tail: Corollary B.1's condition
    N >= mu^2 Sigma_tail (mu undefined) is not imposed (erratum 8).
    """
    return c3 * np.sqrt(_gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket, c_personal, c_tail))


def class_bias(method: str, N, nu, tail, k) -> np.ndarray:
    """Approximation error of a method's class that enters its gap bound (erratum 13).

    shared: none beyond Cor 4.1's own tail term (0 here); full: 0 (S holds the truth); local:
    Sigma_tail / N, an upper bound on the mean per-user rank-k truncation error (Theta_diamond_i
    has rank <= k, so it is at most b_i, whose mean is Sigma_tail / N); global: (nu N k +
    Sigma_tail) / N, the users' mean energy ||DeltaTheta*_i||_F^2 when sigma_1 = ... = sigma_k
    (the simulator's truth), an upper bound on the heterogeneity mean_i ||DeltaTheta*_i - mean||^2.
    """
    nu, tail = _check_nu_tail(nu, tail)
    n = np.asarray(N, dtype=float)
    values = {"shared": 0.0 * tail, "full": 0.0 * tail, "local": tail / n,
              "global": (nu * n * k + tail) / n}
    if method not in values:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(values)}")
    return values[method]


def gap_bound_class(method, N, Np, nu, tail, d1, d2, k, delta=0.1, c3=1.0, c_bracket=1.0,
                    c_personal=1.0, c_tail=1.0, c_bias=1.0):
    """Averaged value gap bound for the class a method estimates over.

    shared: Corollary 4.1 (:func:`gap_bound_average`). local / full / global: the same argument
    (Theorem B.2's proof: gap <= C_r sqrt(E|reward-difference error|^2)) with the MLE's
    error bound over that class, log N_G / (N Np) from Proposition 1, and no subspace step
    (so no 1/nu, no personal term): c3 sqrt(c_bracket dim log(N Np/delta)/(N Np) + c_bias
    class_bias). Not stated in the paper for these classes (erratum 13).
    """
    if method == "shared":
        return gap_bound_average(N, Np, nu, tail, d1, d2, k, delta, c3, c_bracket, c_personal, c_tail)
    bias = class_bias(method, N, nu, tail, k)
    lb = log_bracketing(method, N, Np, d1, d2, k, delta, c_bracket)
    return c3 * np.sqrt(lb / (np.asarray(N, dtype=float) * Np) + c_bias * bias)


def zeta_theory(N, Np, nu, tail, d1, d2, k, min_bias=0.0, delta=0.1, c=1.0, c_bracket=1.0):
    """The confidence radius zeta of Eq. B.1 / C.3: a bound on ||DeltaTheta_i - DeltaTheta_hat_i||_F.

    zeta = c * sqrt(min_i b_i + L/(N Np nu) + (1/nu) sqrt(tail/N) + (k d2 + log(N/delta))/Np),
    c = sqrt(c_3 / (2 L_1^2)). zeta is a *radius* (erratum 4): the proof of Theorem B.2 bounds
    the reward difference inside R_i by L_1 zeta, which needs ||DeltaTheta_i - DeltaTheta_hat_i||_F
    <= zeta, and the sqrt of summed squared-error terms has the units of a distance; it falls
    like Np^(-1/2) without tail and bias. The set of Eq. 3.6, written with the squared
    distance, is therefore {||DeltaTheta_i - DeltaTheta_hat_i||_F^2 <= zeta^2}
    (sim.confidence.sets.theory_radius returns that zeta^2).
    """
    return c * np.sqrt(_gap_terms(N, Np, nu, tail, d1, d2, k, delta, c_bracket) + min_bias)


def sample_complexity(method, eps, N, d1, d2, k, delta=0.1, c=1.0):
    """Remark 3: Np needed for an eps-accurate averaged value gap, with 1/eps^2 (erratum 12).

    full: c d1 d2 / eps^2 * log(N/delta) (Zhu et al., 2023);
    shared: c (d1 k + N d2 k) / (N eps^2) * log(N/delta) (accuracy up to (tail/N)^(1/4));
    share-rep: c (d1 k + N k) / (N eps^2) * log(N/delta) (Park et al., 2024, d2 = 1).
    Remark 3 prints 1/eps, but the bounds it rests on (Cor 4.1, Zhu et al.) are square roots
    of terms ~ 1/Np, so gap <= eps needs Np ~ 1/eps^2.
    """
    _check_delta(delta)
    log_term = np.log(np.asarray(N, dtype=float) / delta)
    eps = np.asarray(eps, dtype=float)
    if np.any(eps <= 0):
        raise ValueError(f"eps must be positive, got {eps}")
    if method == "full":
        return c * d1 * d2 / eps**2 * log_term
    if method == "shared":
        return c * (d1 * k + N * d2 * k) / (N * eps**2) * log_term
    if method == "share-rep":
        return c * (d1 * k + N * k) / (N * eps**2) * log_term
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
