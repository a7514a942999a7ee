"""Pessimistic policy of Eq. 3.7: the LP path (simplicial decomposition, pricing LPs by backward
induction) vs the exact SOCP (cvxpy + Clarabel, compiled once with Parameters), side by side
on the same users.

    python -m benchmarks.bench_policy [--users 50] [--seed 0] [--S 20 --A 5 --H 10 --d1 20 --d2 4]
                                      [--metric-cond C]

Users get theta_hat = a random direction of norm --theta-norm and radii zeta spread so that
sqrt(zeta)/||theta_hat|| is uniform in [0, --max-ratio] (ratio >= 1 is the trivial case,
answered exactly without any solve); prints both totals, the ratio and the largest relative
objective difference. With --metric-cond C every user gets an ellipsoid (the sigma_d set's
shape, sim.confidence.sets.sigma_d_ellipsoid): a metric M with random eigenvectors and eigenvalues
spread geometrically over [1/C, 1], and the ratio is sqrt(zeta)/||P_W' M^(1/2) theta_hat||
(P_W' the projection on M^(-1/2) W, the span of the achievable feature differences), the
same scale at which mu_ref becomes optimal.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: no BLAS threads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from figures.cli import OneLineParser  # noqa: E402
from sim.model.mdp import random_mdp  # noqa: E402
from sim.policy import PessimisticSolver  # noqa: E402


def main(argv=None) -> None:
    ap = OneLineParser(prog="python -m benchmarks.bench_policy", description=__doc__.split("\n\n")[0])
    for name, default in (("S", 20), ("A", 5), ("H", 10), ("d1", 20), ("d2", 4), ("users", 50),
                          ("seed", 0)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--theta-norm", type=float, default=1.0)
    ap.add_argument("--max-ratio", type=float, default=0.9,
                    help="largest sqrt(zeta)/||theta_hat|| among the users")
    ap.add_argument("--metric-cond", type=float, default=None,
                    help="ellipsoidal sets with metrics of this condition number (default: ball)")
    args = ap.parse_args(argv)
    if args.metric_cond is not None and not args.metric_cond >= 1:
        ap.error(f"--metric-cond must be >= 1, got {args.metric_cond}")
    rng = np.random.default_rng(args.seed)
    mdp = random_mdp(args.S, args.A, args.H, args.d1, args.d2, rng, feature_scale=2.0)
    mu = rng.dirichlet(np.ones(args.A), size=(args.H, args.S))
    thetas = rng.normal(size=(args.users, args.d1, args.d2))
    thetas *= args.theta_norm / np.linalg.norm(thetas, axis=(1, 2), keepdims=True)
    ratios = rng.uniform(0, args.max_ratio, args.users)
    zetas = (ratios * args.theta_norm) ** 2

    t0 = time.perf_counter()
    lp = PessimisticSolver(mdp, mu, "lp")
    build_lp = time.perf_counter() - t0
    metrics = [None] * args.users
    if args.metric_cond is not None:
        D = args.d1 * args.d2
        for u in range(args.users):
            q = np.linalg.qr(rng.normal(size=(D, D)))[0]
            lam = np.geomspace(1.0, 1.0 / args.metric_cond, D)
            metrics[u] = (q * lam) @ q.T
            w = np.linalg.qr((q / np.sqrt(lam)) @ q.T @ lp._span_basis)[0]
            lift = (q * np.sqrt(lam)) @ q.T @ thetas[u].reshape(-1)
            zetas[u] = (ratios[u] * np.linalg.norm(w.T @ lift)) ** 2
    t0 = time.perf_counter()
    socp = PessimisticSolver(mdp, mu, "socp")
    socp.solve(thetas[0], zetas[0], metric=metrics[0])  # first solve compiles the cvxpy problem
    build_socp = time.perf_counter() - t0

    t0 = time.perf_counter()
    res_lp = [lp.solve(t, z, metric=m) for t, z, m in zip(thetas, zetas, metrics)]
    t_lp = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_socp = [socp.solve(t, z, metric=m) for t, z, m in zip(thetas, zetas, metrics)]
    t_socp = time.perf_counter() - t0

    rel = max(abs(a.objective - b.objective) / max(1.0, abs(b.objective))
              for a, b in zip(res_lp, res_socp))
    n_lp = np.array([r.n_lp for r in res_lp])
    slowest = max(r.seconds for r in res_lp)
    print(f"S={args.S} A={args.A} H={args.H} d1*d2={args.d1 * args.d2} users={args.users} "
          f"sqrt(zeta)/||theta|| in [0, {args.max_ratio}]"
          + ("" if args.metric_cond is None else f", ellipsoids of condition {args.metric_cond:g}"))
    print(f"setup      lp {build_lp:8.3f} s   socp (incl. compile) {build_socp:8.3f} s")
    print(f"solve      lp {t_lp:8.3f} s   socp {t_socp:8.3f} s   ratio socp/lp {t_socp / t_lp:6.1f}x")
    print(f"per user   lp {1e3 * t_lp / args.users:8.2f} ms  socp {1e3 * t_socp / args.users:8.2f} ms"
          f"   slowest lp user {1e3 * slowest:.1f} ms")
    print(f"LPs/user   mean {n_lp.mean():.1f} max {n_lp.max()}")
    higher = sum(a.objective >= b.objective for a, b in zip(res_lp, res_socp))
    print(f"max relative objective difference {rel:.2e}; LP objective >= SOCP's on "
          f"{higher}/{args.users} users; LP unconverged on "
          f"{sum(not r.converged for r in res_lp)}; worst LP certified relative gap "
          f"{max((r.upper_bound - r.objective) / (1 + abs(r.upper_bound)) for r in res_lp):.1e}")


if __name__ == "__main__":
    main()
