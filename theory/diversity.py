"""Diversity metrics and subspace geometry of the aggregate update (Section 4.2, Appendix A).

Implements
- Definition 4.1: nu = sigma_k^2 / N (Remark 1 / Lemma 5; the printed "sigma_k^2/sigma_N^2" is a
  typo, see theory/README.md) and Sigma_tail = sum_{j>k} sigma_j^2;
- Eq. 4.1: the best rank-k approximation Theta-diamond = B-diamond W-diamond;
- Theorem 4.2: the per-user bias b_i = ||DeltaTheta*_i - Theta-diamond_i||_F^2;
- Definition A.1: the principal-angle distance, by both of its formulas.

Per-user arrays have shape (N, d1, d2), index [i, row, col] = user i's d1 x d2 matrix. The
aggregate DeltaTheta = [DeltaTheta_1, ..., DeltaTheta_N] has shape (d1, N*d2).
"""

from __future__ import annotations

import numpy as np

ORTHONORMAL_TOL = 1e-8


def aggregate(users: np.ndarray) -> np.ndarray:
    """Stack per-user matrices (N, d1, d2) side by side into DeltaTheta (d1, N*d2)."""
    users = _as_users(users)
    n, d1, d2 = users.shape
    return users.transpose(1, 0, 2).reshape(d1, n * d2)


def split(agg: np.ndarray, n_users: int) -> np.ndarray:
    """Inverse of :func:`aggregate`: (d1, N*d2) -> (N, d1, d2)."""
    agg = np.asarray(agg, dtype=float)
    if agg.ndim != 2 or agg.shape[1] % n_users:
        raise ValueError(f"aggregate of shape {agg.shape} cannot be split into {n_users} users")
    d1 = agg.shape[0]
    return agg.reshape(d1, n_users, -1).transpose(1, 0, 2)


def singular_values(users: np.ndarray) -> np.ndarray:
    """Singular values sigma_1 >= ... of the aggregate, length min(d1, N*d2)."""
    return np.linalg.svd(aggregate(users), compute_uv=False)


def nu(users: np.ndarray, k: int) -> float:
    """Definition 4.1 as used in Remark 1 / Lemma 5: nu = sigma_k(DeltaTheta)^2 / N."""
    users = _as_users(users)
    sv = singular_values(users)
    _check_k(k, sv.size)
    return float(sv[k - 1] ** 2 / users.shape[0])


def tail(users: np.ndarray, k: int) -> float:
    """Definition 4.1: Sigma_tail = sum_{j > k} sigma_j^2."""
    sv = singular_values(users)
    _check_k(k, sv.size)
    return float(np.sum(sv[k:] ** 2))


def best_rank_k(users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 4.1: Theta-diamond = argmin_{rank <= k} ||DeltaTheta* - DeltaTheta||_F (Eckart-Young).

    Returns ``(B, W, theta)``: B (d1, k) orthonormal columns spanning the top-k left singular
    subspace (B-diamond), W (N, k, d2) with theta_i = B @ W_i, and theta (N, d1, d2).
    """
    users = _as_users(users)
    n = users.shape[0]
    u, s, vt = np.linalg.svd(aggregate(users), full_matrices=False)
    _check_k(k, s.size)
    b = u[:, :k]
    w_agg = s[:k, None] * vt[:k]
    w = w_agg.reshape(k, n, -1).transpose(1, 0, 2)
    return b, w, np.einsum("dk,nke->nde", b, w)


def per_user_bias(users: np.ndarray, k: int) -> np.ndarray:
    """Theorem 4.2: b_i = ||DeltaTheta*_i - Theta-diamond_i||_F^2, shape (N,)."""
    users = _as_users(users)
    _, _, diamond = best_rank_k(users, k)
    return np.sum((users - diamond) ** 2, axis=(1, 2))


def column_space(agg: np.ndarray, k: int) -> np.ndarray:
    """Orthonormal basis (d1, k) of the top-k left singular subspace of a (d1, m) matrix."""
    agg = np.asarray(agg, dtype=float)
    u, s, _ = np.linalg.svd(agg, full_matrices=False)
    _check_k(k, s.size)
    return u[:, :k]


def principal_angle_distance(b1: np.ndarray, b2: np.ndarray) -> float:
    """Definition A.1, first form: ||B1 B1^T - B2 B2^T||_F / sqrt(2).

    b1, b2: (d, k) with orthonormal columns.
    """
    b1, b2 = _check_bases(b1, b2)
    return float(np.linalg.norm(b1 @ b1.T - b2 @ b2.T) / np.sqrt(2.0))


def principal_angle_distance_complement(b1: np.ndarray, b2: np.ndarray) -> float:
    """Definition A.1, second form: ||B1^T B2_perp||_F with B2_perp a basis of span(B2)^perp."""
    b1, b2 = _check_bases(b1, b2)
    q, _ = np.linalg.qr(b2, mode="complete")
    return float(np.linalg.norm(b1.T @ q[:, b2.shape[1]:]))


def diversity_metrics(users: np.ndarray, k: int) -> dict:
    """Everything of Definition 4.1 for a stacked update: nu, tail, energy, singular values."""
    users = _as_users(users)
    sv = singular_values(users)
    _check_k(k, sv.size)
    return {
        "N": users.shape[0],
        "k": k,
        "nu": float(sv[k - 1] ** 2 / users.shape[0]),
        "tail": float(np.sum(sv[k:] ** 2)),
        "energy": float(np.sum(sv**2)),
        "top_energy_fraction": float(np.sum(sv[:k] ** 2) / max(np.sum(sv**2), 1e-300)),
        "singular_values": sv,
    }


def _as_users(users: np.ndarray) -> np.ndarray:
    users = np.asarray(users, dtype=float)
    if users.ndim != 3:
        raise ValueError(f"per-user array must have shape (N, d1, d2), got {users.shape}")
    return users


def _check_k(k: int, rank_max: int) -> None:
    if not 1 <= k <= rank_max:
        raise ValueError(f"rank k={k} must lie in [1, min(d1, N*d2)={rank_max}]")


def _check_bases(b1: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b1 = np.asarray(b1, dtype=float)
    b2 = np.asarray(b2, dtype=float)
    if b1.shape != b2.shape or b1.ndim != 2:
        raise ValueError(f"bases must both be (d, k); got {b1.shape} and {b2.shape}")
    for name, b in (("B1", b1), ("B2", b2)):
        err = np.abs(b.T @ b - np.eye(b.shape[1])).max()
        if err > ORTHONORMAL_TOL:
            raise ValueError(f"{name} does not have orthonormal columns (max |B^T B - I| = {err:.2e})")
    return b1, b2
