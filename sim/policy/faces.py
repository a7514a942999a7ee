"""Face-restricted solver of Eq. 3.7 (sim/policy/solver.py's (*)): the pessimistic policy within a few
dynamic-programming passes. An algorithmic extension; the problem solved is the paper's Eq. 3.7.

(*) max_{d in D} f(d) = <v(d), theta_hat> - sqrt(zeta) ||v(d)||, v(d) = Phi^T (d - d_ref), is
concave over the occupancy polytope D, and its optimum mixes the deterministic policies that
are optimal for the worst-case parameter theta* = grad f: it lies on the face of D where every
(h, s) plays only actions tied under theta* (often tens of tied states, so one vertex per
pricing LP -- the LP path -- needs as many LPs). Here each backward induction at a dual point
theta_t yields a whole face at once:

1. DP at theta_t: an optimal deterministic policy, its value g(theta_t) (a certified upper
   bound on (*), weak duality). Base policy pi: the best point's most played action wherever
   that point goes, the DP's elsewhere. One more backward pass with d1 d2-dimensional values
   gives pi's successor features F_h(s, a) (expected summed features after playing a at (h, s) and
   pi thereafter) and state masses m_h(s). Every single-action switch j = (h, s, a) of pi then
   moves v by Delta v_j = m_h(s) (F_h(s, a) - F_h(s, pi_h(s))) and <Delta v_j, theta_t> is its
   advantage -- the neighbourhood of pi in closed form.
2. Face: the switches whose linear loss m |advantage| at theta_t is within FACE_WIDTH times the
   current bound gap, plus the actions the best point so far plays. In the coordinates c of
   the switches the face is the polytope {c >= 0, base action's occupancy >= 0 at every
   switched state} (occupancies are affine in c when the switches' downstream flow follows pi;
   the state masses' dependence on c comes from one batched forward pass).
3. Face master: max f(x0 + V c) over that polytope by a primal active-set method whose
   equality-constrained steps are the closed-form maximiser of (*) on an affine set
   (sim/policy/master.py:affine_max); blocking constraints join the working set, constraints
   with wrong-signed multipliers leave it.
4. theta_{t+1} = grad f at the face optimum; repeat until g(theta) - f <= tol (1 + |g|), the
   same certificate as the LP path. The returned policy is extracted from the face optimum's
   occupancy and re-evaluated exactly.

If the faces do not close the gap within MAX_ROUNDS (or the optimum is the cone's tip v = 0,
where f is not differentiable), the caller falls back to the LP path (sim/policy/solver.py), so the
answer is always certified. Status (docs/performance.md, "Eq. 3.7 near the DP floor"): 6-19
backward inductions per user (median) where the LP path prices 72-348 LPs, but the face
master's active set (one QR factorisation per change) costs as much as the LPs saved, so
this is not the default.
"""

from __future__ import annotations

import numpy as np

from sim.policy.face_master import face_master
from sim.policy.master import objective

#: A switch joins the face when m |advantage| <= FACE_WIDTH * (current bound gap).
FACE_WIDTH = 3.0
#: At most FACE_DIM * d1 d2 switches (the smallest losses) join a face: the optimum ties at
#: most about d1 d2 of them (one equation on theta* each).
FACE_DIM = 1.0
#: Outer rounds (DP + face master) before the caller falls back to the LP path.
MAX_ROUNDS = 40
#: Occupancy mass below which a state counts as unreachable under the base policy.
MASS_TOL = 1e-12


def dp(P2: np.ndarray, rho: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, float]:
    """Backward induction: greedy action indices (H, S) and the optimal value; P2 (H, S A, S)."""
    H, S = P2.shape[0], P2.shape[2]
    A = P2.shape[1] // S
    v = np.zeros(S)
    act = np.empty((H, S), dtype=np.intp)
    for h in range(H - 1, -1, -1):
        q = (rewards.reshape(-1) + P2[h] @ v).reshape(S, A)
        act[h] = a = q.argmax(1)
        v = q[np.arange(S), a]
    return act, float(rho @ v)


def successor(P2: np.ndarray, rho: np.ndarray, phi3: np.ndarray, act: np.ndarray):
    """Successor features F (H, S, A, D) and state masses m (H, S) of the deterministic policy act.

    F_h(s, a) = phi(s, a) + sum_s' P_h(s' | s, a) F_{h+1}(s', act_{h+1}(s')); m_h the state
    distribution at step h under act. phi3: (S, A, D).
    """
    H, S = act.shape
    A, D = phi3.shape[1], phi3.shape[2]
    rows = np.arange(S)
    F = np.empty((H, S, A, D))
    nxt = np.zeros((S, D))
    for h in range(H - 1, -1, -1):
        F[h] = phi3 + (P2[h] @ nxt).reshape(S, A, D)
        nxt = F[h][rows, act[h]]
    m = np.empty((H, S))
    m[0] = rho
    P4 = P2.reshape(H, S, A, S)
    for h in range(H - 1):
        m[h + 1] = m[h] @ P4[h][rows, act[h]]
    return F, m


class Face:
    """The face of D around a deterministic policy spanned by a set of single-action switches.

    Switch j = (h_j, s_j, a_j). Coordinates c (k,): the occupancy is d_pi plus, for each
    switch, c_j m_{h_j}(s_j) moved from (s_j, pi(s_j)) to (s_j, a_j) at step h_j, with the
    downstream flow following pi. Constraints: c >= 0 and, per switched state t, the base
    action's occupancy mass_t(c) - m_t sum_{j at t} c_j >= 0, i.e. G c <= 1 with G (n_t, k).
    """

    def __init__(self, P2, rho, act, m, F, sw_h, sw_s, sw_a, ref_feat, to_master):
        H, S = act.shape
        self.P2, self.rho, self.act = P2, rho, act
        self.sw = (sw_h, sw_s, sw_a)
        k = sw_h.size
        base = F[sw_h, sw_s, act[sw_h, sw_s]]
        mj = m[sw_h, sw_s]
        self.mj = mj
        self.x0 = to_master(rho @ F[0][np.arange(S), act[0]] - ref_feat)
        self.V = to_master(((F[sw_h, sw_s, sw_a] - base) * mj[:, None]).T)  # (D, k)
        # Switched states t and the state-mass change of each switch at every t (forward pass).
        key = sw_h * S + sw_s
        states, inv = np.unique(key, return_inverse=True)
        th_, ts_ = np.divmod(states, S)
        P4 = P2.reshape(H, S, -1, S)
        rows = np.arange(S)
        dm = np.zeros((k, S))
        G = np.zeros((states.size, k))
        G[inv, np.arange(k)] = 1.0
        for h in range(H):
            at = th_ == h
            if at.any() and h > 0:
                G[at] -= dm[:, ts_[at]].T / m[h, ts_[at]][:, None]
            here = sw_h == h
            if h + 1 < H:
                if here.any():
                    src = np.zeros((k, S))
                    j = np.flatnonzero(here)
                    src[j] = mj[j, None] * (P4[h, sw_s[j], sw_a[j]] - P4[h, sw_s[j], act[h, sw_s[j]]])
                    dm = dm @ P4[h][rows, act[h]] + src
                else:
                    dm = dm @ P4[h][rows, act[h]]
        self.G = G
        self.owner, self.sw_state = states, key  # state id of each row of G / each switch

    def occupancy(self, c: np.ndarray) -> np.ndarray:
        """Occupancy (H, S, A) at coordinates c (clipped at 0 against rounding)."""
        H, S = self.act.shape
        A = self.P2.shape[1] // S
        P4 = self.P2.reshape(H, S, A, S)
        sw_h, sw_s, sw_a = self.sw
        rows = np.arange(S)
        d = np.zeros((H, S, A))
        mass = self.rho
        for h in range(H):
            d[h, rows, self.act[h]] = mass
            j = sw_h == h
            if j.any():
                w = c[j] * self.mj[j]
                np.add.at(d[h], (sw_s[j], sw_a[j]), w)
                np.add.at(d[h], (sw_s[j], self.act[h, sw_s[j]]), -w)
            d[h] = np.clip(d[h], 0.0, None)
            if h + 1 < H:
                mass = np.einsum("sa,sat->t", d[h], P4[h])
        return d


def solve(P2, rho, phi3, ref_feat, th, sz, tol, root=None, max_rounds=MAX_ROUNDS, max_face=None):
    """(*) for one user by face rounds (module doc); None when they do not certify in time.

    P2 (H, S A, S) transitions, rho (S,), phi3 (S, A, D) features, ref_feat (D,) Phi^T d_ref,
    th (D,) theta_hat, sz sqrt(zeta), root None (ball) or (M^(-1/2), M^(1/2)) (ellipsoid).
    Returns (occupancy (H, S, A), objective of the face optimum, certified upper bound,
    number of backward inductions, rounds).
    """
    if root is None:
        to_master, th_m, lift = (lambda v: v), th, (lambda u: u)
    else:
        to_master, th_m, lift = (lambda v: root[0] @ v), root[1] @ th, (lambda u: root[0] @ u)
    max_face = int(max_face or FACE_DIM * th.size)
    act, val = dp(P2, rho, phi3 @ th)
    n_dp, ub = 1, val - ref_feat @ th
    F, m = successor(P2, rho, phi3, act)
    none = np.zeros(0, dtype=np.intp)
    best = (Face(P2, rho, act, m, F, none, none, none, ref_feat, to_master), np.zeros(0))
    x = best[0].x0
    lb = objective(x, th_m, sz)
    width, rounds = FACE_WIDTH, 0
    while rounds < max_rounds:
        rounds += 1
        if ub - lb <= tol * (1.0 + abs(ub)):
            break
        nx = np.linalg.norm(x)
        if nx == 0.0:
            return None  # the cone's tip: f is not differentiable there (LP path's tip_step)
        theta = th - sz * lift(x / nx)
        act, val = dp(P2, rho, phi3 @ theta)
        n_dp += 1
        ub = min(ub, val - ref_feat @ theta)
        if ub - lb <= tol * (1.0 + abs(ub)):
            break
        # Base: the best point's most played action wherever it goes (so that it lies in the
        # face and base occupancies stay away from 0), the DP policy elsewhere.
        y_best = best[0].occupancy(best[1])
        mass_b = y_best.sum(-1)
        keep = mass_b > MASS_TOL
        act = np.where(keep, y_best.argmax(-1), act)
        F, m = successor(P2, rho, phi3, act)
        Q = F @ theta
        base_q = np.take_along_axis(Q, act[..., None], axis=2)
        loss = m[..., None] * (base_q - Q)
        reach = m[..., None] > MASS_TOL
        np.put_along_axis(loss, act[..., None], np.inf, axis=2)
        loss[~reach[..., 0]] = np.inf
        cand = loss <= width * (ub - lb)
        if cand.sum() > max_face:  # the max_face smallest losses
            cut = np.partition(loss.reshape(-1), max_face - 1)[max_face - 1]
            cand &= loss <= cut
        cand |= (y_best > 0) & reach  # the best point's support
        np.put_along_axis(cand, act[..., None], False, axis=2)
        sw_h, sw_s, sw_a = np.nonzero(cand)
        face = Face(P2, rho, act, m, F, sw_h, sw_s, sw_a, ref_feat, to_master)
        c0 = y_best[sw_h, sw_s, sw_a] / face.mj
        if not np.allclose(face.occupancy(c0), y_best, rtol=0.0, atol=1e-12):
            c0 = None  # the best point is not in this face: start at its base vertex
        c = face_master(face.V, face.x0, face.G, th_m, sz, c0, face.owner, face.sw_state)
        x_new = face.x0 + face.V @ c
        f_new = objective(x_new, th_m, sz)
        if f_new > lb:
            lb, best, x = f_new, (face, c), x_new
        else:
            width *= 10.0  # no ascent: the face was too narrow
    if ub - lb > tol * (1.0 + abs(ub)):
        return None
    return best[0].occupancy(best[1]), lb, ub, n_dp, rounds


def solve_for(prob, theta_hat, zeta, root=None):
    """The "face" path of sim/policy/solver.py: (pi, objective, ub, DPs, theta_worst).

    The face rounds of :func:`solve` on the user's problem ``prob``
    (sim/policy/certificate.py); the LP path (sim/policy/lp_path.py) when they do not certify
    within MAX_ROUNDS, at the cone's tip, or when a face master meets an unbounded ray (its DPs
    then count the rounds as MAX_ROUNDS + 1)."""
    from sim.policy.lp_path import solve_lp

    mdp = prob.mdp
    th, sz = theta_hat.reshape(-1), float(np.sqrt(zeta))
    try:
        out = solve(mdp.P.reshape(mdp.H, mdp.S * mdp.A, mdp.S), mdp.rho,
                    prob.phi.reshape(mdp.S, mdp.A, -1), prob.ref_feat, th, sz, prob.tol, root)
    except RuntimeError:  # a face master that hit an unbounded ray
        out = None
    if out is None:
        pi, obj, ub, n_lp, theta_worst = solve_lp(prob, theta_hat, zeta, root)
        return pi, obj, ub, n_lp + MAX_ROUNDS + 1, theta_worst
    d, _, ub, n_dp, _ = out
    return prob.finish(d, th, sz, root, ub, n_dp)
