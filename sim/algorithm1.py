"""Runnable demo of Algorithm 1 (P-ShareLoRA for RLHF): fit (Eq. 3.5) -> confidence sets
(Eq. 3.6) -> pessimistic policies (Eq. 3.7) -> exact value gaps (Theorem 4.2's left side).

    python -m sim.algorithm1 [--seed S] [--behaviour uniform|poor] [--Np N] [--methods ...]
    python -m sim.algorithm1 --study [--seeds 20] [--Np 20]

The reference policy is mu_ref = mu1, the behaviour policy of the second trajectory in each
comparison (here mu0 = mu1): Eq. 3.7 then measures improvement over what the data covers, so
pessimism falls back to the data's own policy where the estimate is uncertain.
"""

from __future__ import annotations

import os

# Tiny matrices: multithreaded BLAS only adds contention (see docs/pessimism.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from sim import confidence, estimators, policy  # noqa: E402
from sim.data import BEHAVIOURS, behaviour_policy, make_preferences  # noqa: E402
from sim.mdp import random_mdp  # noqa: E402
from sim.truth import make_ground_truth  # noqa: E402


@dataclass(frozen=True)
class DemoConfig:
    """One instance of Algorithm 1 (defaults: the small sweep size)."""

    N: int = 20
    """Users."""
    Np: int = 100
    """Comparisons per user."""
    d1: int = 10
    d2: int = 2
    k: int = 2
    nu: float = 0.1
    """Diversity sigma_k^2 / N of the truth."""
    tail: float = 0.0
    B: float = 1.0
    S: int = 8
    A: int = 4
    H: int = 5
    behaviour: str = "poor"
    """mu0 = mu1 = mu_ref: 'uniform' or 'poor' (eps-soft anti-optimal)."""
    eps: float = 0.2
    feature_scale: float = 2.0
    delta: float = 0.1
    """Confidence level of the calibrated radius (coverage target 1 - delta)."""

    def __post_init__(self):
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {self.behaviour!r}")
        for name in ("N", "Np", "d1", "d2", "k", "S", "A", "H"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")


def run(cfg: DemoConfig, seed: int, methods=("shared", "local", "full", "global")) -> list[dict]:
    """Algorithm 1 on one instance; one row per method (est_err, gaps, coverage, zeta)."""
    s_mdp, s_truth, s_data = np.random.SeedSequence(seed).spawn(3)
    mdp = random_mdp(cfg.S, cfg.A, cfg.H, cfg.d1, cfg.d2, np.random.default_rng(s_mdp),
                     feature_scale=cfg.feature_scale)
    truth = make_ground_truth(cfg.N, cfg.d1, cfg.d2, cfg.k, cfg.nu, cfg.tail, cfg.B,
                              np.random.default_rng(s_truth))
    rng = np.random.default_rng(s_data)
    mu = behaviour_policy(mdp, cfg.behaviour, rng, theta_mean=truth.theta.mean(0), eps=cfg.eps)
    data = make_preferences(mdp, truth.theta, cfg.Np, mu, mu, rng)
    solver = policy.PessimisticSolver(mdp, mu)  # mu_ref = mu1 = mu
    rows = []
    for method in methods:
        est = estimators.fit(method, data, cfg.k, cfg.B, init=truth.init)
        zeta = confidence.calibrated_radius(method, est, data, cfg.k, cfg.B, delta=cfg.delta,
                                            init=truth.init)
        theta_hat = truth.init + est.delta
        t0 = time.perf_counter()
        gp, gv = [], []
        for i in range(cfg.N):
            res = solver.solve(theta_hat[i], float(zeta[i]))
            gp.append(policy.value_gap(mdp, truth.theta[i], res.pi))
            gv.append(policy.value_gap(mdp, truth.theta[i], policy.vanilla_policy(mdp, theta_hat[i])))
        rows.append(dict(
            seed=seed, method=method, behaviour=cfg.behaviour, Np=cfg.Np,
            est_err=float(np.mean(np.sum((est.delta - truth.delta) ** 2, axis=(1, 2)))),
            gap_pess=float(np.mean(gp)), gap_vanilla=float(np.mean(gv)),
            coverage=confidence.coverage(truth.delta, est.delta, zeta),
            zeta=float(np.mean(zeta)), policy_s=time.perf_counter() - t0))
    return rows


def study(cfg: DemoConfig, seeds: int, methods=("shared",)) -> list[dict]:
    """Pessimism vs plug-in over seeds 0..seeds-1, for both behaviours: mean gaps with 95% CIs.

    Returns one summary row per (behaviour, method): mean gap_pess / gap_vanilla, their t
    intervals over seeds, and the paired difference gap_pess - gap_vanilla with its interval.
    """
    out = []
    for behaviour in BEHAVIOURS:
        c = DemoConfig(**{**asdict(cfg), "behaviour": behaviour})
        rows = [r for s in range(seeds) for r in run(c, s, methods)]
        for method in methods:
            sel = [r for r in rows if r["method"] == method]
            p = np.array([r["gap_pess"] for r in sel])
            v = np.array([r["gap_vanilla"] for r in sel])
            out.append(dict(behaviour=behaviour, method=method, Np=cfg.Np, seeds=seeds,
                            gap_pess=_ci(p), gap_vanilla=_ci(v), diff=_ci(p - v),
                            coverage=float(np.mean([r["coverage"] for r in sel]))))
    return out


def _ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t interval over seeds."""
    m = float(np.mean(x))
    if x.size < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, x.size - 1) * np.std(x, ddof=1) / np.sqrt(x.size))
    return m, m - h, m + h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="instance seed (SeedSequence)")
    ap.add_argument("--behaviour", choices=BEHAVIOURS, default="poor",
                    help="behaviour policy mu0 = mu1 = mu_ref")
    ap.add_argument("--Np", type=int, default=None,
                    help="comparisons per user (default 100; 20 with --study)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated estimator names (default shared,local,full,global; "
                         "shared with --study)")
    ap.add_argument("--study", action="store_true",
                    help="pessimism vs plug-in over seeds, both behaviours, with 95%% CIs")
    ap.add_argument("--seeds", type=int, default=20, help="seeds of the study")
    args = ap.parse_args(argv)
    methods = tuple((args.methods or ("shared" if args.study else "shared,local,full,global"))
                    .split(","))
    bad = [m for m in methods if m not in estimators.METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; expected some of {estimators.METHODS}")
    if args.seeds < 2:
        ap.error(f"--seeds must be at least 2, got {args.seeds}")
    np_ = args.Np if args.Np is not None else (20 if args.study else 100)
    if np_ < 1:
        ap.error(f"--Np must be positive, got {np_}")
    cfg = DemoConfig(Np=np_, behaviour=args.behaviour)
    if args.study:
        print(f"study: Np={np_}, seeds 0..{args.seeds - 1}, mean gap [95% CI] over seeds")
        for r in study(cfg, args.seeds, methods):
            f = "{0:.4f} [{1:.4f}, {2:.4f}]".format
            print(f"{r['behaviour']:8s} {r['method']:8s} gap_pess {f(*r['gap_pess'])}  "
                  f"gap_vanilla {f(*r['gap_vanilla'])}  pess-van {f(*r['diff'])}  "
                  f"coverage {r['coverage']:.3f}")
        return 0
    print(f"{'method':8s} {'est_err':>9s} {'gap_pess':>9s} {'gap_van':>9s} {'coverage':>8s} "
          f"{'zeta':>8s} {'policy_s':>8s}")
    for r in run(cfg, args.seed, methods):
        print(f"{r['method']:8s} {r['est_err']:9.4f} {r['gap_pess']:9.4f} {r['gap_vanilla']:9.4f} "
              f"{r['coverage']:8.3f} {r['zeta']:8.4f} {r['policy_s']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
