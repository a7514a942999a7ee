"""Speed of the rank-constrained MLE of Eq. 3.5 over S^ShareLoRA (Eq. 3.4), measured side by side.

``fit("shared")`` (exact batched W-steps + Newton on span(U), sim/estimation/lowrank.py) with its default
multi-start (the global-optimum rule of docs/estimators.md) and with the spectral start only
(``max_starts=1``, the single-start fit of earlier versions), against a plain torch autograd +
Adam baseline on the same factored objective DeltaTheta_i = U W_i with the same feasible set
(after every Adam step: QR of U with R folded into W, then W_i projected onto the ball
||W_i||_F <= B) from the same spectral start. The baseline runs until its objective is within
1e-6 (relative) of the single-start fit's objective (the minimum of the same basin), or until
a wall-time cap.

    python -m benchmarks.bench_fit [--cap SECONDS]

Both sides use one thread (fit limits BLAS itself; torch.set_num_threads(1)).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from figures.cli import OneLineParser
from sim.estimation.estimators import _layout, _LowRank, fit
from sim.model.data import behaviour_policy, make_preferences
from sim.model.mdp import random_mdp
from sim.model.truth import make_ground_truth

N, D1, D2, K, NP = 50, 20, 4, 3, 500
NU, TAIL, B = 0.15, 0.05, 1.0
REL_TOL = 1e-6


def make_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    mdp = random_mdp(20, 5, 10, D1, D2, rng)
    gt = make_ground_truth(N, D1, D2, K, NU, TAIL, B, rng)
    mu = behaviour_policy(mdp, "uniform", rng)
    return make_preferences(mdp, gt.theta, NP, mu, mu, rng)


def torch_adam(data, target: float, cap_s: float, lr: float = 0.02):
    """Projected Adam on (U, W) from the spectral start; returns (seconds, objective, steps)."""
    import torch

    torch.set_num_threads(1)
    lr_ = _LowRank(_layout(data, None), K, B, True, 1e-9)
    U0 = lr_.spectral_start()[0]
    X = torch.tensor(data.diff, dtype=torch.float64)
    o = torch.tensor(data.o, dtype=torch.float64)
    user = torch.tensor(data.user)
    U = torch.tensor(U0, requires_grad=True)
    W = torch.zeros((N, K, D2), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([U, W], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=50)
    start = time.perf_counter()
    best, steps = np.inf, 0
    while time.perf_counter() - start < cap_s:
        opt.zero_grad()
        delta = torch.matmul(U, W)                       # (N, d1, d2)
        z = torch.einsum("mde,mde->m", X, delta[user])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, o)
        loss.backward()
        opt.step()
        steps += 1
        with torch.no_grad():  # back onto the feasible set {U orthonormal, ||W_i|| <= B}
            q, r = torch.linalg.qr(U)
            U.copy_(q)
            W.copy_(torch.matmul(r, W))
            norms = torch.linalg.norm(W.reshape(N, -1), dim=1).clamp(min=B)
            W.mul_((B / norms)[:, None, None])
        best = min(best, float(loss.detach()))
        sched.step(float(loss.detach()))
        if best <= target * (1 + REL_TOL):
            break
    # objective at the final (feasible) iterate
    with torch.no_grad():
        z = torch.einsum("mde,mde->m", X, torch.matmul(U, W)[user])
        final = float(torch.nn.functional.binary_cross_entropy_with_logits(z, o))
    return time.perf_counter() - start, min(best, final), steps


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m benchmarks.bench_fit", description=__doc__)
    p.add_argument("--cap", type=float, default=60.0, help="wall-time cap of the baseline (s)")
    args = p.parse_args(argv)
    if not args.cap > 0:
        print(f"python -m benchmarks.bench_fit: error: --cap must be positive, got {args.cap}",
              file=sys.stderr)
        return 2
    data = make_problem()
    fit("shared", data, K, B, max_starts=1)  # warm-up (imports, thread pools)
    one = fit("shared", data, K, B, max_starts=1)
    multi = fit("shared", data, K, B)
    secs, obj, steps = torch_adam(data, one.nll, args.cap)
    reached = obj <= one.nll * (1 + REL_TOL)
    print(f"problem: d1={D1} d2={D2} N={N} k={K} Np={NP} (M={N * NP} comparisons)")
    for name, est in (("spectral start only", one), ("multi-start (default)", multi)):
        print(f"fit('shared') {name:22s} {est.info['fit_s']:8.3f} s  objective {est.nll:.10f}  "
              f"gap {est.info['gap']:.1e}  starts {est.info['n_starts']}  "
              f"outer iterations {est.info['iterations']}")
    print(f"torch Adam (spectral start)          {secs:8.3f} s  objective {obj:.10f}  steps "
          f"{steps}  {'reached' if reached else 'did NOT reach'} the single-start objective "
          f"within 1e-6 relative{'' if reached else f' (cap {args.cap:g} s)'}")
    lb = "" if reached else " (lower bound)"
    print(f"ratio Adam / single-start fit: {secs / one.info['fit_s']:.1f}x{lb}; "
          f"Adam / multi-start fit: {secs / multi.info['fit_s']:.1f}x{lb}; "
          f"multi-start / single-start: {multi.info['fit_s'] / one.info['fit_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
