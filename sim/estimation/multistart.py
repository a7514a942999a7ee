"""Multi-start for the rank-constrained MLE of Eq. 3.5 over S^ShareLoRA (Eq. 3.4, ``shared``)
and S^LoRA (Eq. 3.3, ``local``): the starts (spectral, the convex Eq. 3.1 estimate's subspace,
screened and Haar-random bases), the Boender-Rinnooy Kan stopping rule, and the best minimum
per basis group. Each start is solved by sim/estimation/lowrank.py (exact W-steps and Newton
or L-BFGS on span U). The problem is non-convex: restarts, not a certificate, make the global
optimum likely (measured in docs/estimators.md; ``python -m benchmarks.fit_restarts``).
"""

from __future__ import annotations

import numpy as np

from sim.estimation.layout import _Problem
from sim.estimation.logistic import ball_logistic
from sim.estimation.lowrank import MATCH_RTOL, _lbfgs, _LowRank, _newton
from theory.diversity import aggregate, column_space

#: Multi-start rule of _fit_lowrank (docs/estimators.md): starts are the spectral start, the
#: top-k subspace of the convex ``full`` estimate, the best of SCREEN random bases, then random
#: bases; at least MIN_STARTS starts, a basis group stops once HITS of its random starts
#: (the screened one included; the deterministic starts are correlated, so they do not count)
#: reached its best objective (within MATCH_RTOL relative) and the Boender-Rinnooy Kan rule
#: (_enough) holds on the random starts' minima; at most MAX_STARTS starts.
MIN_STARTS = 4
HITS = 2
#: Boender-Rinnooy Kan threshold: stop when < UNSEEN local minima are expected to be unseen.
UNSEEN = 1.0
MAX_STARTS = 60
#: Random bases screened by one batched W-step; the best one is the second start.
SCREEN = 32

def _fit_lowrank(prob: _Problem, k: int, B: float, shared: bool, solver: str, tol: float,
                 max_iter: int, max_starts: int = MAX_STARTS, seed: int = 0,
                 basis: np.ndarray | None = None):
    """Eq. 3.5 over S^ShareLoRA (``shared``) or S^LoRA (``local``) by multi-start; returns delta
    (N, d1, d2) and the info dict of ``fit``.

    Starts, in order: spectral, the ``full`` estimate's subspace, the best of SCREEN random
    bases, then random orthonormal bases (Haar, from default_rng(seed)); each is followed by an
    exact W-step and the outer solver, and per basis group the lowest objective is kept.
    Stopping rule (docs/estimators.md): a group is done once at least MIN_STARTS starts ran,
    its incumbent minimum was reached by HITS random starts (objectives within MATCH_RTOL) and
    the Boender-Rinnooy Kan rule holds (``_enough``), or after ``max_starts``. ``local`` with d2 < d1 works on the transposed problem (rank and
    Frobenius norm are transpose-invariant), whose Grassmannian Gr(d2, k) is much smaller.
    ``basis`` (d1, k) fixes the shared column space (method ``oracle``): only the W-step runs.
    """
    if basis is not None:
        lr = _LowRank(prob, k, B, True, tol)
        U = np.asarray(basis, dtype=float)[None]
        W, obj, w_gap = lr.w_step(U, np.zeros((prob.N, k, prob.d2)))
        r, _, delta = lr.residuals(U, W)
        # U is fixed, so only the W-part of the Frank-Wolfe gap measures optimality
        return delta, {"iterations": 0, "gap": float(w_gap.sum()), "objective": float(obj.sum()),
                       "converged": bool(w_gap.sum() <= tol), "n_starts": 1, "nll_spread": 0.0,
                       "w_newton_iterations": lr.n_w_iters, "solver": "w-step"}
    transpose = not shared and prob.d2 < prob.d1
    if transpose:
        prob = _Problem(X=np.ascontiguousarray(prob.X.transpose(0, 1, 3, 2)), c=prob.c,
                        o=prob.o, w=prob.w, M=prob.M)
    lr = _LowRank(prob, k, B, shared, tol)
    rng = np.random.default_rng(seed)
    C = 1 if shared else prob.N
    runner = _newton if solver == "newton" else (
        lambda lr_, U, W, obj, w_gap, n, target: _lbfgs(lr_, U, W, n))
    best = first = None
    hits = np.zeros(C, dtype=int)
    samples: list[list[float]] = [[] for _ in range(C)]
    done = np.zeros(C, dtype=bool)
    n_run, iters, w_iters = 0, 0, 0
    fixed = [lr.spectral_start]
    if max_starts > 1:
        fixed += [lambda: _full_start(lr, B, tol), lambda: _screen(prob, k, B, shared, tol, rng)]
    for s in range(max_starts):
        # after MIN_STARTS, ``local`` restarts only the users that are not done yet
        sel = np.arange(C) if shared or s < MIN_STARTS else np.flatnonzero(~done)
        sub = lr if sel.size == C else _LowRank(_Problem(
            X=prob.X[sel], c=prob.c[sel], o=prob.o[sel], w=prob.w[sel], M=prob.M),
            k, B, False, tol)
        U = fixed[s]() if s < len(fixed) else random_bases(rng, sel.size, prob.d1, k)
        W, obj, w_gap = sub.w_step(U, np.zeros((sub.prob.N, k, prob.d2)))
        U, W, obj, w_gap, info = runner(sub, U, W, obj, w_gap, max_iter,
                                        None if best is None else best["gobj"][sel])
        w_iters += sub.n_w_iters if sub is not lr else 0
        n_run += 1
        iters += info["iterations"]
        gobj = sub.group_sum(obj)
        rand = int(s >= 2)  # only the screened and random starts count as hits
        if best is None:
            best = dict(U=U, W=W, obj=obj, w_gap=w_gap, gobj=gobj, info=info)
            first = gobj.copy()
        else:
            ref = best["gobj"][sel]
            same = (np.abs(gobj - ref) <= MATCH_RTOL * np.abs(ref)) | info.get("reached", False)
            better = (gobj < ref) & ~same
            hits[sel] = np.where(better, rand, hits[sel] + rand * same)
        if rand:  # a random start's local minimum is a sample for the stopping rule
            kept = ~np.asarray(info.get("abandoned", np.zeros(sel.size, dtype=bool)))
            ref = best["gobj"][sel]
            for j, g in enumerate(sel):
                if kept[j]:
                    val = ref[j] if info.get("reached", np.zeros(sel.size, bool))[j] else gobj[j]
                    samples[g].append(float(val))
            done = np.array([_enough(v) for v in samples]) & (hits >= HITS)
            groups = sel[better]
            best["U"][groups], best["gobj"][groups] = U[better], gobj[better]
            users = sub.users_of(better)
            if shared and better[0]:
                best.update(W=W, obj=obj, w_gap=w_gap, info=info)
            elif not shared:
                for key, val in (("W", W), ("obj", obj), ("w_gap", w_gap)):
                    best[key][groups] = val[users]
        if n_run >= min(MIN_STARTS, max_starts) and np.all(done):
            break
    U, W, obj, w_gap = best["U"], best["W"], best["obj"], best["w_gap"]
    r, _, delta = lr.residuals(U, W)
    if transpose:
        delta = delta.transpose(0, 2, 1)
    info = {key: val for key, val in best["info"].items() if key not in ("iterations", "reached")}
    info.update(iterations=iters, gap=lr.joint_gap(U, W, r, w_gap), objective=float(obj.sum()),
                w_newton_iterations=lr.n_w_iters + w_iters, solver=solver, n_starts=n_run,
                nll_spread=float(np.sum(first - best["gobj"])), min_hits=int(hits.min()),
                transposed=transpose)
    info["converged"] = bool(info["gap"] <= tol)
    return delta, info


def _enough(values: list[float]) -> bool:
    """Stopping rule of Boender & Rinnooy Kan (1987) for multi-start: with n sampled local
    minima of which w are distinct (relative MATCH_RTOL), the posterior mean number of local
    minima is w (n - 1) / (n - w - 2); stop once fewer than UNSEEN are expected to be unseen."""
    n = len(values)
    if n < 3:
        return False
    v = np.sort(np.asarray(values))
    w = 1 + int(np.sum(np.diff(v) > MATCH_RTOL * np.abs(v[1:])))
    return n - w - 2 > 0 and w * (n - 1) / (n - w - 2) <= w + UNSEEN


def _full_start(lr: _LowRank, B: float, tol: float) -> np.ndarray:
    """(C, d1, k): top-k left singular vectors of the Eq. 3.1 (``full``, convex) estimate:
    of the aggregate for ``shared``, of every user's DeltaTheta_i for ``local``."""
    p = lr.prob
    n, m, d1, d2 = p.X.shape
    v = ball_logistic(lr.Xf, p.c, p.o, p.w, B, tol=tol / n, max_iter=100).v.reshape(n, d1, d2)
    if lr.shared:
        return column_space(aggregate(v), lr.k)[None]
    return np.ascontiguousarray(np.linalg.svd(v)[0][:, :, :lr.k])


def _screen(prob: _Problem, k: int, B: float, shared: bool, tol: float,
            rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """(C, d1, k): per basis group the best of ``n`` (default SCREEN) random bases by the
    exact W-step objective g(span U), all evaluated in one batched W-step (the data tiled n
    times, every copy of a user with its own basis)."""
    n = SCREEN if n is None else n
    C = 1 if shared else prob.N
    cand = random_bases(rng, n * C, prob.d1, k)                   # copy r, group c at r C + c
    tiled = _Problem(X=np.concatenate([prob.X] * n), c=np.concatenate([prob.c] * n),
                     o=np.concatenate([prob.o] * n), w=np.concatenate([prob.w] * n), M=prob.M)
    lr = _LowRank(tiled, k, B, False, tol)
    per_user = cand.reshape(n, C, prob.d1, k)
    per_user = np.broadcast_to(per_user, (n, prob.N, prob.d1, k)) if shared else per_user
    _, obj, _ = lr.w_step(np.ascontiguousarray(per_user.reshape(-1, prob.d1, k)),
                          np.zeros((n * prob.N, k, prob.d2)))
    g = obj.reshape(n, prob.N).sum(1, keepdims=True) if shared else obj.reshape(n, prob.N)
    pick = np.argmin(g, axis=0)                                    # (C,)
    return cand.reshape(n, C, prob.d1, k)[pick, np.arange(C)]


def random_bases(rng: np.random.Generator, C: int, d: int, k: int) -> np.ndarray:
    """(C, d, k) independent Haar-distributed orthonormal bases (QR of Gaussians, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((C, d, k)))
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
