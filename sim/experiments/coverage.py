"""`python -m sim.coverage`: coverage of the Eq. 3.6 radii over seeds -- the Fisher radius
(sim.confidence.calibrated_radius) against the parametric bootstrap (sim.confidence.bootstrap).

    python -m sim.coverage [--seeds 20] [--settings 100:poor,100:uniform,20:poor,20:uniform]
                           [--methods shared,local,full,global] [--n-boot 50] [--out DIR]

Every setting is SimConfig's defaults with Np and behaviour changed. One CSV row per
(setting, seed, method, radius) with the config and seed in every row goes to
DIR/coverage.csv (default results/coverage), assembled from DIR/parts (an interrupted run
resumes); the table printed at the end gives the mean
coverage over seeds and users with a 95% t interval over seeds, mean zeta, mean est_err and
the radius's seconds per seed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from figures import files  # noqa: E402
from figures.cli import (  # noqa: E402
    CliError,
    OneLineParser,
    check_memory,
    check_out_dir,
)
from sim.confidence import (
    bootstrap,  # noqa: E402
    sets,  # noqa: E402
)
from sim.experiments.algorithm1 import mean_ci  # noqa: E402
from sim.experiments.pipeline import (  # noqa: E402
    build_instance,
    fit_method,
    user_errors,
)
from sim.model.config import SimConfig, sim_instance_bytes  # noqa: E402
from sim.model.data import BEHAVIOURS  # noqa: E402

DEFAULT_SETTINGS = "100:poor,100:uniform,20:poor,20:uniform"


def run_seed(cfg: SimConfig, seed: int, methods) -> list[dict]:
    """Rows for one instance: every method x radius -- 'fisher' (calibrated_radius),
    'boot_plain' (stage 1 alone = bootstrap_radius with debias=False), 'boot_debiased' (stage 2
    alone) and 'bootstrap' (their maximum = bootstrap_radius, the default)."""
    _, truth, _, train, _ = build_instance(cfg, seed)
    rows = []
    for method in methods:
        est, _ = fit_method(cfg, method, train, truth)
        err = user_errors(est.delta, truth.delta)
        t0 = time.perf_counter()
        z_f = sets.calibrated_radius(method, est, train, cfg.k, cfg.B, cfg.delta, truth.init)
        t1 = time.perf_counter()
        z_b, z_d, errs, errs2 = bootstrap.bootstrap_stages(
            method, est, train, cfg.k, cfg.B, cfg.delta, truth.init, cfg.n_boot,
            seed=bootstrap.boot_seed(seed, method))  # exactly what bootstrap_radius computes
        t3 = time.perf_counter()
        e1, e2 = (np.nan, np.nan) if errs is None else (errs.mean(), errs2.mean())
        for name, z, secs, boot_err in (("fisher", z_f, t1 - t0, np.nan),
                                        ("boot_plain", z_b, np.nan, e1),
                                        ("boot_debiased", z_d, np.nan, e2),
                                        ("bootstrap", np.maximum(z_b, z_d), t3 - t1, np.nan)):
            rows.append(dict(**cfg.as_dict(), seed=seed, method=method, radius_kind=name,
                             coverage=float(np.mean(err <= z)), zeta=float(z.mean()),
                             est_err=float(err.mean()), boot_err=float(boot_err),
                             radius_s=secs))
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean coverage with a 95% t interval over seeds, mean zeta / est_err / seconds per seed."""
    out = []
    keys = ["Np", "behaviour", "method", "radius_kind"]
    for key, g in df.groupby(keys, sort=False):
        c = g["coverage"].to_numpy()
        mean, low, high = mean_ci(c)
        out.append(dict(zip(keys, key), seeds=c.size, coverage=mean, ci_low=low,
                        ci_high=high, zeta=g["zeta"].mean(), est_err=g["est_err"].mean(),
                        radius_s=g["radius_s"].mean()))
    return pd.DataFrame(out)


def _settings(text: str) -> list[tuple[int, str]]:
    out = []
    for item in text.split(","):
        np_, sep, beh = item.strip().partition(":")
        if not sep or not np_.isdigit() or int(np_) < 1 or beh not in BEHAVIOURS:
            raise ValueError(f"--settings expects Np:behaviour items with Np a positive integer "
                             f"and behaviour in {BEHAVIOURS}, got {item!r}")
        out.append((int(np_), beh))
    return out


def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m sim.coverage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20, help="seeds 0..S-1 (at least 2)")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="comma-separated Np:behaviour")
    ap.add_argument("--methods", default="shared,local,full,global", help="estimators")
    ap.add_argument("--n-boot", type=int, default=bootstrap.DEFAULT_N_BOOT,
                    help="bootstrap replicates per stage")
    ap.add_argument("--out", default="results/coverage", help="output directory")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        if args.seeds < 2:
            raise ValueError(f"--seeds must be at least 2 (for the interval), got {args.seeds}")
        if args.n_boot < 2:
            raise ValueError(f"--n-boot must be at least 2, got {args.n_boot}")
        bad = [m for m in methods if m not in sets.CALIBRATED_METHODS]
        if bad or not methods:
            raise ValueError(f"unknown method(s) {bad or methods}; "
                             f"choose from {','.join(sets.CALIBRATED_METHODS)}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"--methods lists a method twice: {args.methods!r}")
        settings = _settings(args.settings)
        if len(set(settings)) != len(settings):
            raise ValueError(f"--settings lists a setting twice: {args.settings!r}")
        cfgs = [SimConfig(Np=n, behaviour=b, n_boot=args.n_boot) for n, b in settings]
        for c in cfgs:
            check_memory(sim_instance_bytes(c), f"--settings {c.Np}:{c.behaviour}")
        out = check_out_dir(args.out)
    except (CliError, ValueError) as e:
        print(f"sim.experiments.coverage: error: {e}", file=sys.stderr)
        return 2
    err = files.claim(out, "coverage", dict(methods=methods, n_boot=args.n_boot))
    if err:
        print(f"sim.experiments.coverage: error: {err}", file=sys.stderr)
        return 2
    done = files.finished(out, rows=4 * len(methods), prog="sim.coverage")
    tasks = [(c, s) for c in cfgs for s in range(args.seeds)]
    try:
        for cfg, seed in tqdm(tasks, desc="coverage", unit="seed"):
            name = files.part_name(cfg.Np, cfg.behaviour, seed)
            if name not in done:  # finished (setting, seed) parts survive an interruption
                files.write_part(out, name, run_seed(cfg, seed, methods))
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished seeds are kept in {out}/parts; re-run to resume",
              file=sys.stderr)
        return 130
    try:
        df = files.read_parts(out, [files.part_name(c.Np, c.behaviour, s) for c, s in tasks])
    except files.ResultError as e:
        print(f"sim.experiments.coverage: error: {e}", file=sys.stderr)
        return 2
    files.write_csv_atomic(df, out / "coverage.csv")
    table = summarise(df)
    print(f"wrote {out / 'coverage.csv'} ({len(df)} rows); target coverage >= "
          f"{1 - cfgs[0].delta - 0.05:.2f}")
    with pd.option_context("display.width", 160, "display.max_rows", 200,
                           "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
