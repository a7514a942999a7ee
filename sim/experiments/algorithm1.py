"""Runnable demo of Algorithm 1 (P-ShareLoRA for RLHF): fit (Eq. 3.5) -> confidence sets
(Eq. 3.6) -> pessimistic policies (Eq. 3.7) -> exact value gaps (Theorem 4.2's left side).

    python -m sim.algorithm1 [--seed S] [--behaviour uniform|poor] [--Np N] [--methods ...]
    python -m sim.algorithm1 --study [--seeds 20] [--Np 20] [--out DIR]

The reference policy is mu_ref = mu1, the behaviour policy of the second trajectory in each
comparison (here mu0 = mu1): Eq. 3.7 then measures improvement over what the data covers, so
pessimism falls back to the data's own policy where the estimate is uncertain.
"""

from __future__ import annotations

import os

# Tiny matrices: multithreaded BLAS only adds contention (see docs/pessimism.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from figures import files  # noqa: E402
from figures.cli import (  # noqa: E402
    CliError,
    OneLineParser,
    check_memory,
    check_out_dir,
    int_at_least,
    nonneg_int,
    positive_float,
)
from sim.estimation import estimators  # noqa: E402
from sim.experiments.pipeline import run_instance  # noqa: E402
from sim.model.config import CONFIDENCE_SETS, RADII, SimConfig, sim_instance_bytes  # noqa: E402
from sim.model.data import BEHAVIOURS  # noqa: E402


def run(cfg: SimConfig, seed: int, methods=("shared", "local", "full", "global")) -> list[dict]:
    """Algorithm 1 on one instance (sim.experiments.pipeline.run_instance); one row per method."""
    return run_instance(cfg, seed, methods)


def study(cfg: SimConfig, seeds: int, methods=("shared",), out: Path | None = None
          ) -> tuple[list[dict], pd.DataFrame]:
    """Pessimism vs plug-in over seeds 0..seeds-1, for every behaviour: mean gaps with 95% CIs.

    Returns one summary row per (behaviour, method) -- mean gap_pess / gap_vanilla, their t
    intervals over seeds, the paired difference gap_pess - gap_vanilla with its interval --
    and the per-seed runs.csv-style rows (full config and seed). With ``out``, every finished
    (behaviour, seed) is kept in out/parts (figures.files): an interrupted study resumes.
    """
    done = set() if out is None else files.finished(out, rows=len(methods), prog="sim.algorithm1")
    rows = []
    for behaviour in BEHAVIOURS:
        for s in tqdm(range(seeds), desc=f"pessimism study, {behaviour}", unit="run"):
            name = files.part_name(behaviour, s)
            if name in done:
                continue
            r = run(cfg.with_(behaviour=behaviour), s, methods)
            if out is not None:
                files.write_part(out, name, r)
            rows += r
    names = [files.part_name(b, s) for b in BEHAVIOURS for s in range(seeds)]
    runs = pd.DataFrame(rows) if out is None else files.read_parts(out, names)
    runs = runs[runs["seed"].lt(seeds) & runs["method"].isin(methods)]
    summary = []
    for behaviour in BEHAVIOURS:
        for method in methods:
            sel = runs[(runs["behaviour"] == behaviour) & (runs["method"] == method)]
            p, v = sel["gap_pess"].to_numpy(), sel["gap_vanilla"].to_numpy()
            summary.append(dict(behaviour=behaviour, method=method, Np=cfg.Np, seeds=seeds,
                                gap_pess=mean_ci(p), gap_vanilla=mean_ci(v), diff=mean_ci(p - v),
                                coverage=float(sel["coverage"].mean())))
    return summary, runs


def _flat(row: dict) -> dict:
    """Summary row with each (mean, low, high) triple as three columns."""
    out = {}
    for key, val in row.items():
        if isinstance(val, tuple):
            out.update({key: val[0], f"{key}_low": val[1], f"{key}_high": val[2]})
        else:
            out[key] = val
    return out


def mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t interval over seeds (NaN bounds for fewer than two)."""
    m = float(np.mean(x))
    if x.size < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, x.size - 1) * np.std(x, ddof=1) / np.sqrt(x.size))
    return m, m - h, m + h


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m sim.algorithm1", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=nonneg_int, default=0, help="instance seed (SeedSequence)")
    ap.add_argument("--behaviour", choices=BEHAVIOURS, default="poor",
                    help="behaviour policy mu0 = mu1 = mu_ref")
    ap.add_argument("--Np", type=int_at_least(1), default=None,
                    help="comparisons per user (default 100; 20 with --study)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated estimator names (default shared,local,full,global; "
                         "shared with --study)")
    ap.add_argument("--study", action="store_true",
                    help="pessimism vs plug-in over seeds, both behaviours, with 95%% CIs")
    ap.add_argument("--seeds", type=int_at_least(2), default=20, help="seeds of the study")
    ap.add_argument("--radius", choices=RADII, default="calibrated",
                    help="confidence radius of Eq. 3.6 (SimConfig.radius)")
    ap.add_argument("--confidence-set", choices=CONFIDENCE_SETS, default="ball",
                    help="shape of R_i: Eq. 3.6's ball, or the data-shaped sigma_d ellipsoid "
                         "(extension, not in the paper; sim.confidence.sets.sigma_d_ellipsoid)")
    ap.add_argument("--zeta-c", type=positive_float, default=1.0,
                    help="constant c of the theory radius (with --radius theory)")
    ap.add_argument("--out", type=Path, default=None,
                    help="with --study: write DIR/runs.csv (one row per behaviour, seed and "
                         "method, full config) and DIR/study.csv (the summary table)")
    args = ap.parse_args(argv)
    methods = tuple(m.strip() for m in (args.methods or ("shared" if args.study else
                                                         "shared,local,full,global")).split(","))
    bad = [m for m in methods if m not in estimators.METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; expected some of {estimators.METHODS}")
    if len(set(methods)) != len(methods):
        ap.error(f"--methods lists a method twice: {args.methods!r}")
    if args.out is not None and not args.study:
        ap.error("--out needs --study (the single-instance demo only prints)")
    np_ = args.Np if args.Np is not None else (20 if args.study else 100)
    try:
        cfg = SimConfig(Np=np_, behaviour=args.behaviour, radius=args.radius, zeta_c=args.zeta_c,
                        confidence_set=args.confidence_set)
        check_memory(sim_instance_bytes(cfg), f"--Np {np_}")
        if args.out is not None:
            check_out_dir(args.out)
    except (CliError, ValueError) as e:
        ap.error(str(e))
    if args.study:
        if args.out is not None:
            spec = dict(base={k: v for k, v in cfg.as_dict().items() if k != "behaviour"},
                        methods=list(methods))
            err = files.claim(args.out, "study", spec)
            if err:
                ap.error(err)
        try:
            summary, runs = study(cfg, args.seeds, methods, args.out)
        except KeyboardInterrupt:
            where = f"; finished runs are kept in {args.out}/parts, re-run to resume" if args.out else ""
            print(f"\ninterrupted{where}", file=sys.stderr)
            return 130
        except files.ResultError as e:
            ap.error(str(e))
        if args.out is not None:
            files.write_csv_atomic(runs, args.out / "runs.csv")
            files.write_csv_atomic(pd.DataFrame([_flat(r) for r in summary]), args.out / "study.csv")
            print(f"wrote {args.out / 'runs.csv'} ({len(runs)} rows) and {args.out / 'study.csv'}")
        print(f"study: Np={np_}, seeds 0..{args.seeds - 1}, mean gap [95% CI] over seeds")
        for r in summary:
            f = "{0:.4f} [{1:.4f}, {2:.4f}]".format
            print(f"{r['behaviour']:8s} {r['method']:8s} gap_pess {f(*r['gap_pess'])}  "
                  f"gap_vanilla {f(*r['gap_vanilla'])}  pess-van {f(*r['diff'])}  "
                  f"coverage {r['coverage']:.3f}")
        return 0
    print(f"{'method':8s} {'est_err':>9s} {'gap_pess':>9s} {'gap_van':>9s} {'coverage':>8s} "
          f"{'zeta':>8s} {'policy_s':>8s}")
    print(f"(instance: sim.model.config.SimConfig defaults with Np={np_}, behaviour={args.behaviour})")
    for r in run(cfg, args.seed, methods):
        print(f"{r['method']:8s} {r['est_err']:9.4f} {r['gap_pess']:9.4f} {r['gap_vanilla']:9.4f} "
              f"{r['coverage']:8.3f} {r['zeta']:8.4f} {r['policy_s']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
