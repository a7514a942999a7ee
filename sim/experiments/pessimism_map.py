"""`python -m sim.pessimism_map`: where does the pessimism of Eq. 3.7 help? A map over
instance (default, and coverage traps of rare-action mass m) x N_p x confidence set (Eq. 3.6's
ball, the data-shaped sigma_d ellipsoid) x method, reporting gap_pess - gap_vanilla (the
paired difference of Theorem 4.2's left-hand side with and without pessimism) with a 95% t
interval over seeds per cell.

    python -m sim.pessimism_map [--seeds 20] [--rare 0.02,0.1,0.3] [--Np 25,100,400]
                                [--margins 0.2] [--no-default]
                                [--methods shared,local,full,global] [--out DIR]

Every instance is SimConfig's defaults with Np changed; traps also set instance='trap',
A = d1 and rare_mass (docs/pessimism.md). Per (instance, seed) the data and each method's
fit are shared by both sets, so the two sets' cells are paired too. DIR (default
results/pessimism-map) gets runs.csv (one row per instance x seed x method x set, full config
and seed), map.csv (the cells) and, via `python -m figures DIR`, the figure; an interrupted
run resumes from DIR/parts (figures.files).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads only contend
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from figures import files  # noqa: E402
from figures.cli import OneLineParser  # noqa: E402
from sim.confidence import sets  # noqa: E402
from sim.estimation import estimators  # noqa: E402
from sim.experiments import pipeline  # noqa: E402
from sim.experiments.algorithm1 import mean_ci  # noqa: E402
from sim.model.config import CONFIDENCE_SETS, SimConfig  # noqa: E402
from sim.policy.solver import PessimisticSolver  # noqa: E402

METHODS = ("shared", "local", "full", "global")


def instance_configs(base: SimConfig, rare, nps, margins=(0.2,), default=True) -> list[SimConfig]:
    """The map's instances per Np: the default instance (unless default=False) and one trap per
    (base-reward margin, rare-action mass)."""
    cfgs = []
    for np_ in nps:
        cfgs += [base.with_(Np=np_)] if default else []
        cfgs += [base.with_(Np=np_, instance="trap", A=base.d1, rare_mass=m, trap_margin=g)
                 for g in margins for m in rare]
    return cfgs


def run_cell(cfg: SimConfig, seed: int, methods=METHODS) -> list[dict]:
    """One instance and seed: per method one fit, then both confidence sets; one row per
    (method, set) with the pessimistic and plug-in gaps on the same fit. Every step is a stage
    of sim.experiments.pipeline (the one instance runner)."""
    mdp, truth, mu, train, _ = pipeline.build_instance(cfg, seed)
    solver = PessimisticSolver(mdp, mu, solver=cfg.policy_solver)
    j_star = pipeline.optimal_values(mdp, truth.theta)
    gap_ref = pipeline.reference_gap(mdp, truth, mu, j_star)
    refs = pipeline.reference_policies(cfg, train, mu)
    rows = []
    for method in methods:
        est, _ = pipeline.fit_method(cfg, method, train, truth)
        theta_hat = truth.init + est.delta
        gaps_v = pipeline.plugin_gaps(mdp, truth.theta, j_star, theta_hat)  # set-independent
        for cset in CONFIDENCE_SETS:
            c = cfg.with_(confidence_set=cset)
            metric, zeta = pipeline.confidence_set(c, method, est, train, truth, seed)
            t0 = time.perf_counter()
            gaps_p, res = pipeline.policy_gaps(mdp, solver, truth.theta, j_star, theta_hat, zeta,
                                               metric, refs)
            policy_s = time.perf_counter() - t0
            rows.append(dict(
                **c.as_dict(), seed=seed, method=method,
                gap_pess=float(np.mean(gaps_p)), gap_vanilla=float(np.mean(gaps_v)),
                gap_ref=gap_ref,
                coverage=sets.coverage(truth.delta, est.delta, zeta, metric),
                zeta=float(np.mean(zeta)),
                at_ref=float(np.mean([r.n_lp == 0 and r.objective == 0.0 for r in res])),
                n_lp=float(np.mean([r.n_lp for r in res])),
                policy_cert_gap=pipeline.certificate_gap(res),
                policy_converged=all(r.converged for r in res),
                est_err=float(np.mean(pipeline.user_errors(est.delta, truth.delta))),
                policy_s=policy_s))
    return rows


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean pess - plug-in with its paired 95% t interval over seeds, the mean
    gaps, coverage, zeta and the fraction of users whose pessimistic policy is mu_ref."""
    runs = runs.assign(rare=np.where(runs["instance"] == "trap", runs["rare_mass"], np.nan))
    runs = runs.assign(margin=np.where(runs["instance"] == "trap", runs["trap_margin"], np.nan))
    keys = ["instance", "margin", "rare", "Np", "confidence_set", "method"]
    out = []
    for key, g in runs.groupby(keys, sort=True, dropna=False):
        d = (g["gap_pess"] - g["gap_vanilla"]).to_numpy()
        mean, lo, hi = mean_ci(d)
        out.append(dict(zip(keys, key), seeds=len(g), diff=mean, diff_low=lo, diff_high=hi,
                        verdict="helps" if hi < 0 else ("hurts" if lo > 0 else "no difference"),
                        gap_pess=g["gap_pess"].mean(), gap_vanilla=g["gap_vanilla"].mean(),
                        gap_ref=g["gap_ref"].mean(), coverage=g["coverage"].mean(),
                        zeta=g["zeta"].mean(), at_ref=g["at_ref"].mean(),
                        max_cert_gap=g["policy_cert_gap"].max()))
    return pd.DataFrame(out)


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m sim.pessimism_map", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20, help="seeds 0..S-1 per instance")
    ap.add_argument("--rare", default="0.02,0.1,0.3", help="rare-action masses of the traps")
    ap.add_argument("--Np", default="25,100,400", help="comparisons per user")
    ap.add_argument("--margins", default="0.2", help="base-reward margins of the traps")
    ap.add_argument("--no-default", action="store_true", help="traps only")
    ap.add_argument("--methods", default=",".join(METHODS), help="estimators (docs/formats.md names)")
    ap.add_argument("--out", type=Path, default=Path("results/pessimism-map"))
    args = ap.parse_args(argv)
    try:
        rare = [float(x) for x in args.rare.split(",")]
        nps = [int(x) for x in args.Np.split(",")]
        margins = [float(x) for x in args.margins.split(",")]
    except ValueError as e:
        ap.error(f"--rare and --Np take comma-separated numbers: {e}")
    methods = tuple(args.methods.split(","))
    bad = [m for m in methods if m not in estimators.METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; expected some of {estimators.METHODS}")
    if args.seeds < 2:
        ap.error(f"--seeds must be at least 2, got {args.seeds}")
    try:
        cfgs = instance_configs(SimConfig(), rare, nps, margins, not args.no_default)
    except ValueError as e:
        ap.error(str(e))
    err = files.claim(args.out, "pessimism_map", dict(rare=rare, Np=nps, margins=margins,
                                                           default=not args.no_default,
                                                           methods=list(methods)))
    if err:
        ap.error(err)
    done = files.finished(args.out)
    tasks = [(c, s) for c in cfgs for s in range(args.seeds)]
    try:
        for c, s in tqdm(tasks, desc="pessimism map", unit="run"):
            name = files.part_name(c.instance, c.trap_margin, c.rare_mass, c.Np, s)
            if name not in done:
                files.write_part(args.out, name, run_cell(c, s, methods))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are kept in {args.out}/parts, re-run to resume",
              file=sys.stderr)
        return 130
    runs = files.read_parts(args.out)
    runs = runs[runs["seed"].lt(args.seeds) & runs["method"].isin(methods)]
    cells = summarise(runs)
    files.write_csv_atomic(runs, args.out / "runs.csv")
    files.write_csv_atomic(cells, args.out / "map.csv")
    print(f"wrote {args.out / 'runs.csv'} ({len(runs)} rows) and map.csv ({len(cells)} cells)")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(cells[["instance", "margin", "rare", "Np", "confidence_set", "method", "diff", "diff_low",
                     "diff_high", "gap_vanilla", "gap_ref", "coverage", "at_ref"]]
              .round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
