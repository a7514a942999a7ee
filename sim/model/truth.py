"""Synthetic ground truth DeltaTheta* with prescribed diversity (Definition 4.1, Eq. 3.4).

DeltaTheta* = U diag(sigma) V^T (d1 x N d2) with sigma_1 = ... = sigma_k = sqrt(nu N), so
nu = sigma_k^2 / N exactly, and the tail sigma_{k+1} = ... = sigma_r spread evenly so that
sum_{j>k} sigma_j^2 = Sigma_tail exactly (r = min(d1, N d2)). V is rotated by Givens rotations
(Bendel & Mickey, 1978) until every row of V diag(sigma^2) V^T carries the same energy, which
gives every user exactly ||DeltaTheta*_i||_F^2 = (k nu N + Sigma_tail) / N; feasibility in
S^ShareLoRA (||DeltaTheta*_i||_F <= B) is therefore k nu N + Sigma_tail <= N B^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ortho_group

from theory.diversity import split


@dataclass(frozen=True)
class GroundTruth:
    """Per-user truth: Theta*_i = init_i + delta_i, arrays of shape (N, d1, d2)."""

    delta: np.ndarray
    init: np.ndarray
    k: int
    B: float

    @property
    def theta(self) -> np.ndarray:
        return self.init + self.delta

    N = property(lambda self: self.delta.shape[0])
    d1 = property(lambda self: self.delta.shape[1])
    d2 = property(lambda self: self.delta.shape[2])


def check_feasible(N: int, d1: int, d2: int, k: int, nu: float, tail: float, B: float) -> None:
    """Raise ValueError naming the first violated condition of a ground-truth request."""
    for name, v in (("N", N), ("d1", d1), ("d2", d2), ("k", k)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    r = min(d1, N * d2)
    if k > r:
        raise ValueError(f"k={k} exceeds min(d1, N*d2)={r}")
    if not nu > 0:
        raise ValueError(f"nu must be positive, got {nu}")
    if not tail >= 0:
        raise ValueError(f"tail must be non-negative, got {tail}")
    if not B > 0:
        raise ValueError(f"B must be positive, got {B}")
    energy = k * nu * N + tail
    if energy > N * B**2 * (1 + 1e-12):
        raise ValueError(
            f"energy budget violated: nu*N*k + tail = {energy:.6g} > N*B^2 = {N * B**2:.6g} "
            f"(at N={N}, k={k}, B={B} nu may be at most {(N * B**2 - tail) / (N * k):.6g})")
    if tail > 0 and r == k:
        raise ValueError(f"tail={tail} > 0 needs min(d1, N*d2)={r} > k={k}")
    if tail > 0 and tail / (r - k) >= nu * N:
        raise ValueError(
            f"tail too large for a spectral gap: tail/(r-k) = {tail / (r - k):.6g} >= sigma_k^2 = "
            f"nu*N = {nu * N:.6g}; B-diamond would not be unique")


def spectrum(N: int, d1: int, d2: int, k: int, nu: float, tail: float) -> np.ndarray:
    """The singular values sigma_1..sigma_r (r = min(d1, N d2)) used by make_ground_truth."""
    r = min(d1, N * d2)
    sig2 = np.zeros(r)
    sig2[:k] = nu * N
    if r > k:
        sig2[k:] = tail / (r - k)
    return np.sqrt(sig2)


def make_ground_truth(N: int, d1: int, d2: int, k: int, nu: float, tail: float, B: float,
                      rng: np.random.Generator, init_scale: float = 0.0) -> GroundTruth:
    """Random DeltaTheta* with nu and Sigma_tail hit exactly and equal per-user energy.

    init_scale > 0 adds a random Theta_init with ||Theta_init_i||_F = init_scale (Eq. 3.3).
    """
    check_feasible(N, d1, d2, k, nu, tail, B)
    sigma = spectrum(N, d1, d2, k, nu, tail)
    r = sigma.size
    U = ortho_group.rvs(d1, random_state=rng)[:, :r] if d1 > 1 else np.ones((1, 1))
    V = ortho_group.rvs(N * d2, random_state=rng)[:, :r] if N * d2 > 1 else np.ones((1, 1))
    V = balance_rows(V, sigma**2)
    delta = split((U * sigma) @ V.T, N)
    init = np.zeros_like(delta)
    if init_scale > 0:
        init = rng.normal(size=delta.shape)
        init *= init_scale / np.linalg.norm(init, axis=(1, 2), keepdims=True)
    return GroundTruth(delta=delta, init=init, k=k, B=float(B))


def balance_rows(V: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rotate the rows of V (n, r; orthonormal columns) so that diag(V diag(w) V^T) is constant.

    Givens rotations in the (i, j) plane with row i below and row j above the mean set row i
    exactly to the mean (Bendel-Mickey); at most n - 1 rotations. Columns stay orthonormal.
    """
    V = np.array(V, dtype=float)
    w = np.asarray(weights, dtype=float)
    diag = (V**2) @ w
    target = diag.mean()
    tol = 1e-13 * max(target, 1e-300)
    for _ in range(V.shape[0]):
        i, j = int(diag.argmin()), int(diag.argmax())
        if target - diag[i] <= tol or diag[j] - target <= tol:
            break
        a, b, m = diag[i], diag[j], float((V[i] * V[j]) @ w)
        half, radius = (a - b) / 2, np.hypot((a - b) / 2, m)
        two_theta = np.arctan2(m, half) + np.arccos(np.clip((target - (a + b) / 2) / radius, -1, 1))
        c, s = np.cos(two_theta / 2), np.sin(two_theta / 2)
        V[i], V[j] = c * V[i] + s * V[j], -s * V[i] + c * V[j]
        diag[i], diag[j] = (V[i] ** 2) @ w, (V[j] ** 2) @ w
    return V
