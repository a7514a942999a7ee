"""The LP path of Eq. 3.7 (sim/policy/solver.py's ``"lp"``): simplicial decomposition, i.e.
fully corrective Frank-Wolfe on (*) over occupancy measures. Each major step prices one LP
max_d <v(d), theta_c> by backward induction (sim/policy/certificate.py), whose value is a
certified upper bound and whose optimal vertex (a deterministic policy) joins the candidates;
the restricted master over their mixtures is solved in closed form (sim/policy/master.py).
"""

from __future__ import annotations

import numpy as np

from sim.model.mdp import occupancy
from sim.policy.certificate import Problem
from sim.policy.master import master_step, objective, tip_step

#: Default LP budget per user: MAX_LP_PER_DIM (d1 d2 + 1) + MAX_LP_BASE pricing LPs. By
#: Caratheodory an optimum mixes at most d1 d2 + 1 vertices; users with sqrt(zeta) within ~1%
#: of ||P_W theta_hat|| (the kink) have needed up to ~16 (d1 d2 + 1) LPs. Beyond the budget the
#: best policy is returned with its certified gap (a RuntimeWarning; strict=True raises).
MAX_LP_PER_DIM = 20
MAX_LP_BASE = 200
#: ||v|| below TIP_TOL * (largest candidate ||v||) counts as the tip v = 0 of the cone in (*).
TIP_TOL = 1e-12
#: Weight of the best-bound dual point in the smoothed pricing point (Wentges smoothing).
SMOOTHING = 0.5
#: A smoothed pricing vertex counts as a mis-price unless it ascends from the master's point
#: by at least this fraction of the current bound gap.
MISPRICE = 0.01


def solve_lp(prob: Problem, theta_hat, zeta, root=None):
    """Simplicial decomposition (fully corrective Frank-Wolfe) for (*); see the module doc.

    With a metric (root = (M^(-1/2), M^(1/2))) the master works in the coordinates
    v' = M^(-1/2) v, theta' = M^(1/2) theta_hat, and pricing at u' prices theta_hat -
    sqrt(zeta) M^(-1/2) u' in the original ones.
    """
    mdp = prob.mdp
    th = theta_hat.reshape(-1)
    sz = float(np.sqrt(zeta))
    to_master = (lambda v: v) if root is None else (lambda v: root[0] @ v)
    th_m = th if root is None else root[1] @ th
    # LP 1 at u = 0 (in the unit ball): the plug-in vertex, and the bound max <v, theta_hat>.
    pi0, ub = prob.price(th)
    d0 = occupancy(mdp, pi0).reshape(-1)
    occ = np.stack([prob.d_ref.reshape(-1), d0])        # candidate occupancies (m, H S A)
    pts = np.column_stack([np.zeros(th.size), to_master(prob.v(d0))])  # (D, m)
    lam = master_step(pts, np.array([0.0, 1.0]), th_m, sz)
    n_lp, obj = 1, objective(pts @ lam, th_m, sz)
    u_best = np.zeros_like(th_m)  # dual point of the best bound so far (LP 1 priced u = 0)
    while not prob.converged(ub, obj):
        x = pts @ lam
        norm = np.linalg.norm(x)
        at_tip = norm <= TIP_TOL * np.linalg.norm(pts, axis=0).max()
        if at_tip:
            stepped, u_cur = tip_step(pts, lam, th_m, sz)
            if stepped is not None:  # leave the tip inside conv(candidates), no LP needed
                lam = master_step(pts, stepped, th_m, sz)
                obj = max(obj, objective(pts @ lam, th_m, sz))
                continue
        else:
            u_cur = x / norm
        g_cur = th_m - sz * u_cur
        # Wentges smoothing: price first at a dual point between the best-bound one and
        # u_cur (the dual of the master); if that vertex does not ascend from x (a
        # mis-price), price at u_cur, whose vertex ascends unless the bound closes the gap.
        tries = (u_cur,) if at_tip else (SMOOTHING * u_best + (1 - SMOOTHING) * u_cur, u_cur)
        d_new = None
        for u in tries:
            if n_lp >= prob.max_lp:
                break
            lifted = u if root is None else root[0] @ u
            pi_new, bound = prob.price(th - sz * lifted)  # a certified bound
            n_lp += 1
            if bound < ub:
                ub, u_best = bound, u
            d = occupancy(mdp, pi_new).reshape(-1)
            if at_tip or (to_master(prob.v(d)) - x) @ g_cur > MISPRICE * (ub - obj):
                d_new = d
                break
        if prob.converged(ub, obj):
            break
        if d_new is None:
            prob.report_gap(ub, obj)
            break
        keep = (lam > 0) | at_tip  # at the tip all candidates span the cone K
        occ = np.vstack([occ[keep], d_new])
        pts = np.column_stack([pts[:, keep], to_master(prob.v(d_new))])
        lam = master_step(pts, np.r_[lam[keep], 0.0], th_m, sz)
        new_obj = objective(pts @ lam, th_m, sz)
        if new_obj <= obj and not at_tip:
            # Impossible in exact arithmetic (the new vertex is an ascent direction).
            prob.report_gap(ub, obj, why="the restricted master stalled")
            break
        obj = max(obj, new_obj)
    d = (lam @ occ).reshape(mdp.H, mdp.S, mdp.A)
    if not (np.all(np.isfinite(d)) and np.isfinite(ub) and np.isfinite(obj)):
        raise RuntimeError("pessimistic LP path failed: non-finite occupancy or bound "
                           f"(upper bound {ub}, objective {obj})")
    return prob.finish(d, th, sz, root, ub, n_lp)
