"""`python -m sim.sweep --vary {nu,tail,Np,N,k,d1,Np_new}`: run Algorithm 1 over a grid and seeds,
then fit log-log slopes against the paper's bounds (Theorem 4.1/B.1, Theorem 4.2, Corollary 4.1,
Proposition 1, Remark 3; for Np_new the new-user extension of theory/new_user.py) and draw the
figures. Outputs and columns: docs/formats.md.

Each (value, seed) task writes its rows to ``parts/`` atomically (temp file + rename) as soon as
it finishes, so an interrupted sweep (Ctrl-C, kill -9) loses nothing finished; re-running the
same command skips finished tasks. runs.csv is re-assembled from the parts in a fixed order.
Runs execute on joblib/loky processes, a Dask cluster or Ray (``--backend``, sim/experiments/backends.py);
the driver writes every part as its result arrives.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from figures.cli import (
    CliError,
    OneLineParser,
    check_memory,
    check_out_dir,
    int_at_least,
)
from figures.files import (
    ResultError,
    claim,
    finished,
    part_name,
    read_parts,
    write_csv_atomic,
    write_part,
)
from sim.experiments.backends import BackendError, add_backend_args, check_backend, task_runner
from sim.model.config import NEW_USER_FIELDS, SimConfig, sim_instance_bytes

VARY = ("nu", "tail", "Np", "N", "k", "d1", "Np_new")
SPEC_KEYS = ("vary", "base", "methods")  # a re-run must agree on these to resume
SWEEP_METHODS = ("shared", "local", "full", "global", "nuclear", "zero", "oracle")
DEFAULT_METHODS = ("shared", "local", "full", "global", "zero", "oracle")

#: Default grids and the base-config changes each sweep runs on. Doubling grids for N and Np.
GRIDS = {
    "nu": dict(values=[0.025, 0.05, 0.1, 0.2, 0.4], base={}),
    "tail": dict(values=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6], base=dict(Np=800)),
    "Np": dict(values=[50, 100, 200, 400, 800, 1600], base={}),
    "N": dict(values=[5, 10, 20, 40, 80], base=dict(Np=100)),
    "k": dict(values=[1, 2, 3, 4], base=dict(nu=0.05)),
    # S*A = 128 >= d1*d2 = 120 keeps every grid point identifiable (sim.model.data.check_identifiability).
    "d1": dict(values=[5, 10, 20, 40], base=dict(Np=400, S=32)),
    # New users (extension, sim/experiments/new_users.py) of the default training instance: from the
    # estimation-dominated range (5) past the frozen basis' floor; the grid reaches 6400 so the
    # from-scratch fits can catch up (chosen after a 3-seed look at 5..320, docs/estimators.md).
    "Np_new": dict(values=[5, 10, 20, 50, 100, 200, 400, 800, 1600, 3200, 6400],
                   base=dict(N_new=10)),
}
QUICK = dict(values=3, seeds=3)
INTEGER_FIELDS = ("Np", "N", "k", "d1", "Np_new")


class SweepError(CliError):
    """Bad command-line input: reported as one line with exit status 2."""


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(
        prog="python -m sim.sweep",
        description="Sweep one parameter of the simulated P-ShareLoRA pipeline (Algorithm 1) "
                    "over seeds, fit log-log slopes, compare with the paper's bounds, draw figures.")
    p.add_argument("--vary", required=True, choices=VARY, help="parameter to vary")
    p.add_argument("--values", help="comma-separated grid, e.g. --values 50,100,200 "
                                    "(default: a built-in grid per --vary, sim/experiments/sweep.py::GRIDS)")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds 0..S-1")
    p.add_argument("--jobs", type=int_at_least(-1), default=os.cpu_count() or 1,
                   help="parallel workers (loky processes, LocalCluster workers or Ray CPUs; one BLAS thread each; -1: all cores). "
                        "Default: the number of cores")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated subset of {','.join(SWEEP_METHODS)}")
    p.add_argument("--out", help="output directory (default results/sweep-<vary>)")
    p.add_argument("--save-artifacts", action="store_true",
                   help="also write artifacts/<value>_<seed>.npz (instance, truth, estimates, zeta, policies)")
    p.add_argument("--quick", action="store_true", help="3 grid values x 3 seeds (smoke run)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a base config field, e.g. --set behaviour=uniform (repeatable)")
    p.add_argument("--no-figures", action="store_true", help="skip drawing figures")
    p.add_argument("--analyse-only", action="store_true",
                   help="run nothing: rebuild runs.csv, slopes.csv, summary.md (and figures) of a "
                        "finished sweep with the current analysis code (status 2 if runs are missing)")
    add_backend_args(p)
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[SimConfig, list, list[int], list[str]]:
    """Validate everything up front: base config, grid values, seeds, methods."""
    if args.seeds < 1:
        raise SweepError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.jobs == 0 or args.jobs < -1:
        raise SweepError(f"--jobs must be positive (or -1 for all cores), got {args.jobs}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in SWEEP_METHODS]
    if bad or not methods:
        raise SweepError(f"unknown method(s) {bad or methods}; choose from {','.join(SWEEP_METHODS)}")
    if len(set(methods)) != len(methods):
        raise SweepError(f"--methods lists a method twice: {args.methods!r}")
    grid = GRIDS[args.vary]
    base = dict(grid["base"])
    names = SimConfig.field_names()
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or key not in names:
            raise SweepError(f"--set expects FIELD=VALUE with FIELD in {','.join(names)}; got {item!r}")
        if key == args.vary:
            raise SweepError(f"--set {key}=... conflicts with --vary {key} (the grid sets {key}); "
                             "use --values")
        base[key] = _coerce(SimConfig.__dataclass_fields__[key].type, raw, key)
    if args.values is not None:
        try:
            values = [float(v) for v in args.values.split(",")]
        except ValueError:
            raise SweepError(f"--values must be comma-separated numbers, got {args.values!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise SweepError(f"--values must be finite numbers, got {args.values!r}")
    else:
        values = list(grid["values"])
    if args.vary in INTEGER_FIELDS:
        if any(v != int(v) for v in values):
            raise SweepError(f"--values for {args.vary} must be integers, got {values}")
        values = [int(v) for v in values]
    seeds = list(range(args.seeds))
    if args.quick:
        values = values[:: max(1, len(values) // QUICK["values"])][: QUICK["values"]]
        seeds = seeds[: QUICK["seeds"]]
    if len(set(values)) != len(values) or not values:
        raise SweepError(f"--values must be distinct and non-empty, got {values}")
    try:
        cfg = SimConfig(**base)
    except (ValueError, TypeError) as e:
        raise SweepError(f"bad base config (--set or the grid's base): {e}") from None
    if args.vary == "Np_new" and cfg.N_new < 1:
        raise SweepError(f"--vary Np_new needs held-out users: N_new >= 1, got {cfg.N_new}")
    try:
        for v in values:
            if v <= 0:
                raise ValueError(f"{args.vary} must be positive, got {v}")
            jobs = min(args.jobs if args.jobs > 0 else (os.cpu_count() or 1), len(seeds))
            check_memory(sim_instance_bytes(cfg.with_(**{args.vary: v})) * jobs,
                         f"--vary {args.vary} at {v:g} with --jobs {args.jobs}")
    except CliError as e:
        raise SweepError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise SweepError(f"infeasible --vary {args.vary} value: {e}") from None
    return cfg, values, seeds, methods


def _coerce(kind, raw: str, key: str):
    try:
        value = {"int": int, "float": float, "str": str}[str(kind)](raw)
    except (KeyError, ValueError):
        raise SweepError(f"--set {key}: cannot read {raw!r} as {kind}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise SweepError(f"--set {key}: {raw!r} is not a finite number")
    return value


def _run_task(cfg: SimConfig, vary: str, values, seed: int, methods, out: Path,
              artifacts: bool) -> list[tuple[object, int, pd.DataFrame]]:
    """The (value, seed) runs of one seed on whichever worker the backend picked; the driver
    writes them. One value per task, except for grids over NEW_USER_FIELDS (``--vary
    Np_new``), whose values of a seed share one training run (pipeline.run_instances)."""
    from sim.experiments.pipeline import run_instances

    with threadpool_limits(1):
        arts = [out / "artifacts" / f"{part_name(v, seed)}.npz" if artifacts else None
                for v in values]
        runs = run_instances([cfg.with_(**{vary: v}) for v in values], seed, methods, arts)
    done = []
    for value, rows in zip(values, runs):
        df = pd.DataFrame(rows)
        df.insert(0, "value", value)
        df.insert(0, "vary", vary)
        done.append((value, seed, df))
    return done


def assemble(out: Path, values, seeds, methods) -> pd.DataFrame:
    """runs.csv from the parts of this grid (every one intact, ResultError otherwise), ordered
    by value, seed, method (deterministic)."""
    names = {part_name(v, s) for v in values for s in seeds}
    df = read_parts(out, names)
    if len(df) != len(names) * len(methods):
        raise ResultError(f"{out}/parts holds {len(df)} rows for this grid, expected "
                          f"{len(names) * len(methods)}; re-run the same command to recompute")
    order = {m: i for i, m in enumerate(methods)}
    df = df.assign(_m=df["method"].map(order)).sort_values(["value", "seed", "_m"]).drop(columns="_m")
    write_csv_atomic(df, out / "runs.csv")
    return df


def _execute(args, out: Path, spec: dict, tasks: list[tuple], jobs: int, todo: int,
             total: int) -> int:
    """Run ``tasks`` (``todo`` of the grid's ``total`` runs) on the chosen backend, writing each
    finished run's part at once."""
    # nothing left to run (a finished sweep re-run): start no cluster
    backend, scheduler = (args.backend, args.scheduler) if tasks else ("loky", None)
    with task_runner(backend, jobs, scheduler) as run:
        err = claim(out, "sweep", spec, keys=SPEC_KEYS)  # written once the backend is up
        if err:
            print(f"sim.experiments.sweep: error: {err}", file=sys.stderr)
            return 2
        if args.save_artifacts:
            (out / "artifacts").mkdir(exist_ok=True)
        if todo < total:
            print(f"resuming: {total - todo} of {total} runs already done")
        bar = tqdm(total=todo, desc=f"sweep {args.vary}", unit="run")
        try:
            for runs in run(_run_task, tasks):
                for value, seed, df in runs:
                    write_part(out, part_name(value, seed), df)
                    bar.update()
        except KeyboardInterrupt:
            bar.close()
            print(f"\ninterrupted: finished runs are kept in {out}/parts; re-run the same "
                  "command to resume", file=sys.stderr)
            return 130
        bar.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg, values, seeds, methods = plan(args)
        out = check_out_dir(args.out or f"results/sweep-{args.vary}")
    except CliError as e:
        print(f"sim.experiments.sweep: error: {e}", file=sys.stderr)
        return 2
    try:
        check_backend(args.backend, args.scheduler)
    except BackendError as e:
        print(f"sim.experiments.sweep: error: {e}", file=sys.stderr)
        return 2
    spec = dict(vary=args.vary, values=values, seeds=seeds, methods=methods, base=cfg.as_dict())
    err = claim(out, "sweep", spec, keys=SPEC_KEYS, write=False)
    if err:
        print(f"sim.experiments.sweep: error: {err}", file=sys.stderr)
        return 2
    done = finished(out, rows=len(methods), prog="sim.sweep")
    todo = [(v, s) for v in values for s in seeds if part_name(v, s) not in done]
    if args.analyse_only and todo:
        print(f"sim.experiments.sweep: error: --analyse-only: {len(todo)} of {len(values) * len(seeds)} runs "
              f"are missing in {out}/parts; run without --analyse-only", file=sys.stderr)
        return 2
    if args.vary in NEW_USER_FIELDS:  # one task per seed: its values share the training run
        groups = [([v for v, s in todo if s == seed], seed) for seed in seeds]
        groups = [(vals, seed) for vals, seed in groups if vals]
    else:
        groups = [([v], s) for v, s in todo]
    jobs = min(args.jobs if args.jobs > 0 else (os.cpu_count() or 1), max(len(groups), 1))
    tasks = [(cfg, args.vary, vals, s, methods, out, args.save_artifacts) for vals, s in groups]
    try:
        status = _execute(args, out, spec, tasks, jobs, len(todo), len(values) * len(seeds))
    except BackendError as e:  # unreachable scheduler: reported before anything is written
        print(f"sim.experiments.sweep: error: {e}", file=sys.stderr)
        return 2
    if status:
        return status

    from sim.experiments.analysis import write_analysis

    try:
        runs = assemble(out, values, seeds, methods)
    except ResultError as e:
        print(f"sim.experiments.sweep: error: {e}", file=sys.stderr)
        return 2
    from sim.experiments.pipeline import warn_unconverged

    if (msg := warn_unconverged(runs)) is not None:  # once per sweep, not once per fit
        print(f"sim.experiments.sweep: warning: {msg}", file=sys.stderr)
    slopes = write_analysis(runs, args.vary, out)
    figs = []
    if not args.no_figures:
        from figures.sim_plots import make_sweep_figures

        figs = make_sweep_figures(out)
    print(f"wrote {out}/runs.csv ({len(runs)} rows), {out}/slopes.csv, {out}/summary.md"
          + (f" and {len(figs)} figure files ({', '.join(p.name for p in figs)})" if figs else ""))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(slopes[["quantity", "method", "bound", "predicted_slope", "measured_slope",
                      "ci_low", "ci_high", "verdict"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
