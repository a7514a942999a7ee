"""The face master of sim/policy/faces.py (experimental solver of Eq. 3.7): max of (*) over one
face of the occupancy polytope, in the coordinates c of the face's action switches, by a primal
active-set method whose equality-constrained steps are the closed-form maximiser of (*) on an
affine set (sim/policy/master.py: affine_max). Blocking constraints join the working set,
constraints with wrong-signed multipliers leave it.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import qr, solve_triangular

from sim.policy.master import RANK_TOL, affine_max, objective

#: Active-set iterations of one face master.
MAX_ACTIVE = 200
#: Feasibility slack of the face's constraints (in units of the state's mass).
FEAS_TOL = 1e-12


def _pivots(rows_state, sw_state, fixed):
    """One free switch per active row, at the row's own state (G is 1 there), or None.

    sw_state is sorted (switches come from np.nonzero over (h, s, a)), so the first free
    switch of each state is found by a binary search."""
    idx = np.flatnonzero(~fixed)
    st_free = sw_state[idx]
    pos = np.searchsorted(st_free, rows_state)
    if np.any(pos >= st_free.size) or np.any(st_free[np.minimum(pos, st_free.size - 1)] != rows_state):
        return None
    return idx[pos]


def _null_space(Ga, rows_state, free_state):
    """Basis (nf, nf - r) of the null space of the active rows Ga (r, nf) over the free switches.

    Each active row t has coefficient 1 at the free switches of its own state and entries only
    at upstream states otherwise, so one pivot per row gives an invertible (triangular in step
    order) block: c_piv = -Ga_piv^(-1) Ga_rest c_rest. Falls back to an SVD without pivots.
    """
    nf = free_state.size
    piv = _pivots(rows_state, free_state, np.zeros(nf, dtype=bool))
    if piv is None:
        _, sv, vt = np.linalg.svd(Ga)
        return vt[int((sv > 1e-10 * max(sv.max(initial=0.0), 1e-300)).sum()):].T
    rest = np.ones(nf, dtype=bool)
    rest[piv] = False
    nr = int(rest.sum())
    Z = np.zeros((nf, nr))
    Z[rest, np.arange(nr)] = 1.0
    Z[piv] = -np.linalg.solve(Ga[:, piv], Ga[:, rest])
    return Z


def _span(B):
    """(Q (D, r) orthonormal basis of range(B), solver of B z = Q y for z (basic solution))."""
    if B.shape[1] <= B.shape[0]:
        Q, R = np.linalg.qr(B)
        diag = np.abs(np.diag(R))
        if diag.min() > RANK_TOL * max(diag.max(), 1e-300):
            return Q, lambda y: solve_triangular(R, y, check_finite=False)
    Q, R, perm = qr(B, mode="economic", pivoting=True, check_finite=False)
    diag = np.abs(np.diag(R))
    rank = int((diag > RANK_TOL * max(diag[0] if diag.size else 0.0, 1e-300)).sum())

    def solve(y):
        z = np.zeros(B.shape[1])
        z[perm[:rank]] = solve_triangular(R[:rank, :rank], y, check_finite=False)
        return z
    return Q[:, :rank], solve


def face_master(V, x0, G, th, sz, c0=None, owner=None, sw_state=None):
    """max f(x0 + V c) s.t. c >= 0, G c <= 1 by a primal active-set method; returns c.

    V (D, k), x0 (D,) in the master's coordinates (f = <x, th> - sz ||x||). Starts at the
    base vertex c = 0 or at the feasible warm start c0. Equality steps: the closed-form maximiser of (*) on the affine set the
    working set leaves free (sim.policy.master.affine_max); a blocking constraint joins the working
    set (a minor cycle, as in master_step); at an equality optimum every constraint whose
    multiplier has the wrong sign leaves it at once.
    """
    k = V.shape[1]
    c = np.zeros(k) if c0 is None else np.clip(c0, 0.0, None)
    lb = c <= 0.0  # working set: bounds c_j = 0 ...
    ub = G @ c >= 1.0 - FEAS_TOL  # ... and base-occupancy constraints (G c)_t = 1
    for _ in range(MAX_ACTIVE):
        free = np.flatnonzero(~lb)
        x = x0 + V @ c
        step, t_max = np.zeros(k), 1.0
        if free.size:
            Z = _null_space(G[ub][:, free], owner[ub], sw_state[free]) if ub.any() else None
            B = V[:, free] if Z is None else V[:, free] @ Z
            if B.shape[1] and np.abs(B).max() > 0:
                Q, solve_z = _span(B)
                if Q.shape[1]:
                    dx, t_max = affine_max(x, Q, th, sz)
                    z = solve_z(Q.T @ dx)
                    step[free] = z if Z is None else Z @ z
        if np.abs(step).max(initial=0.0) > 1e-15:
            neg = (~lb) & (step < 0)
            r_lb = c[neg] / -step[neg]
            gs = G @ step
            inc = (~ub) & (gs > 0)
            r_ub = np.maximum(1.0 - G[inc] @ c, 0.0) / gs[inc]
            t_block = min(r_lb.min(initial=np.inf), r_ub.min(initial=np.inf))
            if t_block < t_max:
                # Projected step: go to the working set's maximiser (or along its ray to the
                # first G constraint), clip at c >= 0 and bind every clipped switch at once,
                # if that is feasible and ascends; otherwise the minor cycle below.
                t_p = t_max if np.isfinite(t_max) else r_ub.min(initial=np.inf)
                if np.isfinite(t_p):
                    cp = np.clip(c + t_p * step, 0.0, None)
                    if (np.all(G @ cp <= 1.0 + FEAS_TOL)
                            and objective(x0 + V @ cp, th, sz) > objective(x0 + V @ c, th, sz)):
                        c, lb = cp, cp <= 0.0
                        ub = G @ c >= 1.0 - FEAS_TOL
                        continue
                c = c + t_block * step
                tie = 1e-12 + 1e-9 * t_block
                hit = np.flatnonzero(neg)[r_lb <= t_block + tie]
                c[hit], lb[hit] = 0.0, True
                ub[np.flatnonzero(inc)[r_ub <= t_block + tie]] = True
                continue
            if not np.isfinite(t_max):
                raise RuntimeError("face master: unbounded ray in a bounded face")
            c = c + step
        c[lb] = 0.0
        # Equality optimum of the working set: release wrong-signed multipliers.
        x = x0 + V @ c
        grad = V.T @ (th - sz * x / max(np.linalg.norm(x), 1e-300))  # d f / d c
        tol = 1e-9 * max(np.abs(grad).max(initial=0.0), 1e-300)
        if ub.any():
            piv = _pivots(owner[ub], sw_state, lb)
            if piv is None:
                Aw = np.vstack([-np.eye(k)[lb], G[ub]])
                lam = np.linalg.lstsq(Aw.T, grad, rcond=None)[0]
                nlb = int(lb.sum())
                bad_lb, bad_ub = lam[:nlb] < -tol, lam[nlb:] < -tol
            else:  # grad = G_ub^T lam on the pivots; the bounds take the rest
                lam = np.linalg.solve(G[ub][:, piv].T, grad[piv])
                bad_ub = lam < -tol
                bad_lb = (grad - G[ub].T @ lam)[lb] > tol
        else:
            bad_lb, bad_ub = grad[lb] > tol, np.zeros(0, dtype=bool)
        if not (bad_lb.any() or bad_ub.any()):
            return c
        lb[np.flatnonzero(lb)[bad_lb]] = False
        ub[np.flatnonzero(ub)[bad_ub]] = False
    return c
