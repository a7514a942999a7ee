"""Pessimistic policy of Eq. 3.7: the LP path (simplicial decomposition, pricing LPs by backward
induction), the experimental face rounds (sim/policy/faces.py) and the exact SOCP (cvxpy + Clarabel,
compiled once with Parameters), side by side on the same users, each also as a multiple of
one plug-in DP pass (backward induction for theta_hat, the floor of any method).

    python -m benchmarks.bench_policy [--users 50] [--seed 0] [--S 20 --A 5 --H 10 --d1 20 --d2 4]
                                      [--metric-cond C] [--solvers lp,face,socp]
    python -m benchmarks.bench_policy --instance sweep [--set ball|sigma_d] [--seeds 2]
    python -m benchmarks.bench_policy --scaling [--users 10]
    python -m benchmarks.bench_policy --floor [--instance sweep]

Random instance (default): users get theta_hat = a random direction of norm --theta-norm and
radii zeta spread so that sqrt(zeta)/||theta_hat|| is uniform in [0, --max-ratio] (ratio >= 1
is the trivial case, answered exactly without any solve). With --metric-cond C every user gets
an ellipsoid (the sigma_d set's shape, sim.confidence.sets.sigma_d_ellipsoid): a metric M with
random eigenvectors and eigenvalues spread geometrically over [1/C, 1], and the ratio is
sqrt(zeta)/||P_W' M^(1/2) theta_hat|| (P_W' the projection on M^(-1/2) W, the span of the
achievable feature differences), the same scale at which mu_ref becomes optimal.
--instance sweep: the users of the default sweep's instance (sim.model.config.SimConfig defaults,
seeds 0 .. --seeds - 1, the `shared` and `local` fits), their radii (ball) or sigma_d
ellipsoids, as sim/experiments/pipeline.py builds them. --scaling: per-user time of each solver and of
the DP pass against S*A*H and against d1*d2 (four sizes each), with log-log exponents.
--floor: the cost of the ingredients a certified solver is built from, as multiples of the DP
pass measured in the same run (issue #20's cost floor, docs/performance.md): the randomising
states of the optimum per user, one backward induction on given rewards, the occupancy of a
deterministic policy, its d1 d2-dimensional successor features, a QR factorisation of a face of
the optimum's size, an entropy-smoothed backward induction, and one backward induction per user
when all users' DPs run as one array pass.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: no BLAS threads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from figures.cli import OneLineParser  # noqa: E402
from sim.model.mdp import random_mdp  # noqa: E402
from sim.policy.exact import vanilla_policy  # noqa: E402
from sim.policy.solver import SOLVERS, PessimisticSolver  # noqa: E402


def random_users(args, rng, mdp, span_basis):
    """(thetas (U, d1, d2), zetas (U,), metrics list) of the random instance (module doc)."""
    thetas = rng.normal(size=(args.users, args.d1, args.d2))
    thetas *= args.theta_norm / np.linalg.norm(thetas, axis=(1, 2), keepdims=True)
    ratios = rng.uniform(0, args.max_ratio, args.users)
    zetas = (ratios * args.theta_norm) ** 2
    metrics = [None] * args.users
    if args.metric_cond is not None:
        D = args.d1 * args.d2
        for u in range(args.users):
            q = np.linalg.qr(rng.normal(size=(D, D)))[0]
            lam = np.geomspace(1.0, 1.0 / args.metric_cond, D)
            metrics[u] = (q * lam) @ q.T
            w = np.linalg.qr((q / np.sqrt(lam)) @ q.T @ span_basis)[0]
            lift = (q * np.sqrt(lam)) @ q.T @ thetas[u].reshape(-1)
            zetas[u] = (ratios[u] * np.linalg.norm(w.T @ lift)) ** 2
    return thetas, zetas, metrics


def random_instance(args):
    """(mdp, mu, thetas, zetas, metrics) of the random instance (module doc) from args.seed."""
    rng = np.random.default_rng(args.seed)
    mdp = random_mdp(args.S, args.A, args.H, args.d1, args.d2, rng, feature_scale=2.0)
    mu = rng.dirichlet(np.ones(args.A), size=(args.H, args.S))
    basis = PessimisticSolver(mdp, mu, "lp")._span_basis
    return (mdp, mu, *random_users(args, rng, mdp, basis))


def sweep_users(cset: str, seeds: int):
    """[(mdp, mu, thetas, zetas, metrics)] of the default sweep instance, one per seed."""
    from sim.experiments.pipeline import build_instance, confidence_set, fit_method
    from sim.model.config import SimConfig

    cfg = SimConfig(confidence_set=cset)
    out = []
    for seed in range(seeds):
        mdp, truth, mu, train, _ = build_instance(cfg, seed)
        for method in ("shared", "local"):
            est, _ = fit_method(cfg, method, train, truth)
            metric, zeta = confidence_set(cfg, method, est, train, truth, seed)
            metrics = [None] * cfg.N if metric is None else list(metric)
            out.append((mdp, mu, truth.init + est.delta, np.asarray(zeta, float), metrics))
    return out


def run(mdp, mu, thetas, zetas, metrics, solvers):
    """Per-user DP time and {solver: results} on one MDP."""
    t0 = time.perf_counter()
    for _ in range(5):
        for t in thetas:
            vanilla_policy(mdp, t)
    t_dp = (time.perf_counter() - t0) / (5 * len(thetas))
    res = {}
    for name in solvers:
        s = PessimisticSolver(mdp, mu, name)
        if name == "socp":  # the first solve compiles the cvxpy problems
            s.solve(thetas[0], zetas[0], metric=metrics[0])
            s._last = None
        res[name] = [s.solve(t, z, metric=m) for t, z, m in zip(thetas, zetas, metrics)]
    return t_dp, res


def report(t_dp, res, n_users):
    print(f"plug-in DP pass {1e3 * t_dp:.3f} ms/user; per user as multiples of it:")
    ref = res.get("socp")
    for name, rs in res.items():
        secs = np.array([r.seconds for r in rs])
        n = np.array([r.n_lp for r in rs])
        gap = max((r.upper_bound - r.objective) / (1 + abs(r.upper_bound)) for r in rs)
        line = (f"  {name:5s} {1e3 * secs.mean():8.2f} ms  x{secs.mean() / t_dp:8.1f} mean"
                f"  x{secs.max() / t_dp:8.1f} worst   DPs/user median {np.median(n):.0f} "
                f"p90 {np.percentile(n, 90):.0f} max {n.max()}   worst certified gap {gap:.1e}")
        if ref is not None:
            diff = max(abs(a.objective - b.objective) / max(1.0, abs(b.objective))
                       for a, b in zip(rs, ref))
            line += f"   max |obj - socp| {diff:.1e}"
        print(line + f"   unconverged {sum(not r.converged for r in rs)}/{n_users}")


def _per_call(fn, reps: int = 200) -> float:
    """Best of 3 mean wall times of fn() over reps calls, in seconds."""
    fn()
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def floor(mdp, mu, thetas, zetas, metrics) -> None:
    """--floor: ingredient costs as multiples of the plug-in DP pass (module doc)."""
    from scipy.linalg import qr

    from sim.model.mdp import occupancy
    from sim.policy.faces import dp, successor

    H, S, A, D = mdp.H, mdp.S, mdp.A, mdp.d1 * mdp.d2
    P2, phi2 = mdp.P.reshape(H, S * A, S), mdp.phi.reshape(S * A, D)
    solver = PessimisticSolver(mdp, mu, "lp")
    mixed = []
    for t, z, m in zip(thetas, zetas, metrics):
        pi = solver.solve(t, z, metric=m).pi
        reach = occupancy(mdp, pi).sum(-1) > 1e-12
        mixed.append(int(((pi > 1e-9).sum(-1) > 1)[reach].sum()))
    k = int(min(D, max(1, np.median(mixed))))
    th = thetas[0].reshape(-1)
    act, _ = dp(P2, mdp.rho, phi2 @ th)
    pi_det = np.zeros((H, S, A))
    np.put_along_axis(pi_det, act[..., None], 1.0, axis=2)
    face = np.random.default_rng(0).normal(size=(D, k))
    rewards = phi2 @ np.stack([t.reshape(-1) for t in thetas], axis=1)  # (S A, U)
    scale = np.abs(rewards).max()

    def batched_dp():  # every user's backward induction in one array pass
        v = np.zeros((S, rewards.shape[1]))
        for h in range(H - 1, -1, -1):
            v = (rewards + P2[h] @ v).reshape(S, A, -1).max(1)
        return v

    def soft_dp(tau=1e-3 * scale):  # entropy-smoothed backward induction (log-sum-exp)
        v, r = np.zeros(S), rewards[:, 0]
        for h in range(H - 1, -1, -1):
            q = (r + P2[h] @ v).reshape(S, A)
            top = q.max(1)
            v = top + tau * np.log(np.exp((q - top[:, None]) / tau).sum(1))
        return v

    t_dp = _per_call(lambda: vanilla_policy(mdp, thetas[0]))
    rows = [("backward induction on given rewards (argmax policy, value)",
             _per_call(lambda: dp(P2, mdp.rho, phi2 @ th))),
            ("occupancy of a deterministic policy", _per_call(lambda: occupancy(mdp, pi_det))),
            (f"successor features of a deterministic policy ({D}-dimensional backward pass)",
             _per_call(lambda: successor(P2, mdp.rho, phi2.reshape(S, A, D), act))),
            (f"pivoted QR of a ({D}, {k}) face matrix (k = median randomising states)",
             _per_call(lambda: qr(face, mode="economic", pivoting=True, check_finite=False))),
            ("entropy-smoothed backward induction (log-sum-exp)", _per_call(soft_dp)),
            (f"backward induction per user, {len(thetas)} users in one array pass",
             _per_call(batched_dp) / len(thetas))]
    print(f"plug-in DP pass {1e3 * t_dp:.3f} ms; randomising (tied) states of the optimum per "
          f"user: median {np.median(mixed):.0f}, mean {np.mean(mixed):.1f}, max {max(mixed)} "
          f"(of H*S = {H * S})")
    for name, sec in rows:
        print(f"  x{sec / t_dp:6.2f}  {name}")


def scaling(args, solvers):
    """Per-user times against S*A*H and d1*d2 (module doc), log-log exponents."""
    series = {"S*A*H": [dict(S=s, A=5, H=10, d1=20, d2=4) for s in (5, 10, 20, 40)],
              "d1*d2": [dict(S=20, A=5, H=10, d1=d, d2=4) for d in (5, 10, 20, 40)]}
    for label, sizes in series.items():
        rows = []
        for size in sizes:
            rng = np.random.default_rng(args.seed)
            mdp = random_mdp(size["S"], size["A"], size["H"], size["d1"], size["d2"], rng,
                             feature_scale=2.0)
            mu = rng.dirichlet(np.ones(size["A"]), size=(size["H"], size["S"]))
            a = type(args)(**{**vars(args), **size})
            basis = PessimisticSolver(mdp, mu, "lp")._span_basis
            t_dp, res = run(mdp, mu, *random_users(a, rng, mdp, basis), solvers)
            x = size["S"] * size["A"] * size["H"] if label == "S*A*H" else size["d1"] * size["d2"]
            rows.append((x, t_dp, {k: np.mean([r.seconds for r in v]) for k, v in res.items()}))
            print(f"{label}={x:5d}  DP {1e3 * t_dp:7.3f} ms  "
                  + "  ".join(f"{k} {1e3 * v:8.2f} ms (x{v / t_dp:7.1f})" for k, v in rows[-1][2].items()))
        lx = np.log([r[0] for r in rows])
        fits = {"DP": np.polyfit(lx, np.log([r[1] for r in rows]), 1)[0]}
        for k in solvers:
            fits[k] = np.polyfit(lx, np.log([r[2][k] for r in rows]), 1)[0]
        print(f"exponents in {label}: " + "  ".join(f"{k} {v:.2f}" for k, v in fits.items()))


def main(argv=None) -> None:
    ap = OneLineParser(prog="python -m benchmarks.bench_policy", description=__doc__.split("\n\n")[0])
    for name, default in (("S", 20), ("A", 5), ("H", 10), ("d1", 20), ("d2", 4), ("users", 50),
                          ("seed", 0), ("seeds", 2)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--theta-norm", type=float, default=1.0)
    ap.add_argument("--max-ratio", type=float, default=0.9,
                    help="largest sqrt(zeta)/||theta_hat|| among the users")
    ap.add_argument("--metric-cond", type=float, default=None,
                    help="ellipsoidal sets with metrics of this condition number (default: ball)")
    ap.add_argument("--instance", choices=("random", "sweep"), default="random")
    ap.add_argument("--set", choices=("ball", "sigma_d"), default="ball",
                    help="confidence set of --instance sweep")
    ap.add_argument("--solvers", default="lp,face,socp")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--floor", action="store_true",
                    help="ingredient costs as multiples of the DP pass (issue #20's floor)")
    args = ap.parse_args(argv)
    if args.metric_cond is not None and not args.metric_cond >= 1:
        ap.error(f"--metric-cond must be >= 1, got {args.metric_cond}")
    solvers = args.solvers.split(",")
    if not solvers or any(s not in SOLVERS for s in solvers):
        ap.error(f"--solvers must be a comma-separated subset of {','.join(SOLVERS)}")
    if args.scaling:
        scaling(args, solvers)
        return
    if args.floor:
        if args.instance == "sweep":
            mdp, mu, thetas, zetas, metrics = sweep_users(args.set, 1)[0]
            print(f"sweep default instance ({args.set}), seed 0, shared: {len(thetas)} users")
        else:
            mdp, mu, thetas, zetas, metrics = random_instance(args)
            print(f"bench instance S={args.S} A={args.A} H={args.H} d1*d2={args.d1 * args.d2}, "
                  f"{args.users} users")
        floor(mdp, mu, thetas, zetas, metrics)
        return
    if args.instance == "sweep":
        t_dp, res, n = 0.0, {}, 0
        for mdp, mu, thetas, zetas, metrics in sweep_users(args.set, args.seeds):
            t, r = run(mdp, mu, thetas, zetas, metrics, solvers)
            t_dp += t * len(thetas)
            n += len(thetas)
            for k, v in r.items():
                res.setdefault(k, []).extend(v)
        print(f"sweep default instance ({args.set}), seeds 0..{args.seeds - 1}, shared + local: "
              f"{n} users")
        report(t_dp / n, res, n)
        return
    mdp, mu, thetas, zetas, metrics = random_instance(args)
    print(f"S={args.S} A={args.A} H={args.H} d1*d2={args.d1 * args.d2} users={args.users} "
          f"sqrt(zeta)/||theta|| in [0, {args.max_ratio}]"
          + ("" if args.metric_cond is None else f", ellipsoids of condition {args.metric_cond:g}"))
    t_dp, res = run(mdp, mu, thetas, zetas, metrics, solvers)
    report(t_dp, res, args.users)


if __name__ == "__main__":
    main()
