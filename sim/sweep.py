"""`python -m sim.sweep --vary {nu,tail,Np,N,k,d1}`: run Algorithm 1 over a grid and seeds, then
fit log-log slopes against the paper's bounds (Theorem 4.1/B.1, Theorem 4.2, Corollary 4.1,
Proposition 1, Remark 3) and draw the figures. Layout and columns: DESIGN.md.

Each (value, seed) task writes its rows to ``parts/`` atomically (temp file + rename) as soon as
it finishes, so an interrupted sweep (Ctrl-C, kill -9) loses nothing finished; re-running the
same command skips finished tasks. runs.csv is re-assembled from the parts in a fixed order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from sim.cli import OneLineParser
from sim.config import SimConfig
from sim.parts import finished, part_name, read_parts, write_csv_atomic, write_part

VARY = ("nu", "tail", "Np", "N", "k", "d1")
SWEEP_METHODS = ("shared", "local", "full", "global", "nuclear", "zero", "oracle")
DEFAULT_METHODS = ("shared", "local", "full", "global", "zero", "oracle")

#: Default grids and the base-config changes each sweep runs on. Doubling grids for N and Np.
GRIDS = {
    "nu": dict(values=[0.025, 0.05, 0.1, 0.2, 0.4], base={}),
    "tail": dict(values=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6], base=dict(Np=800)),
    "Np": dict(values=[50, 100, 200, 400, 800, 1600], base={}),
    "N": dict(values=[5, 10, 20, 40, 80], base=dict(Np=100)),
    "k": dict(values=[1, 2, 3, 4], base=dict(nu=0.05)),
    # S*A = 128 >= d1*d2 = 120 keeps every grid point identifiable (sim.data.check_identifiability).
    "d1": dict(values=[5, 10, 20, 40], base=dict(Np=400, S=32)),
}
QUICK = dict(values=3, seeds=3)
INTEGER_FIELDS = ("Np", "N", "k", "d1")


class SweepError(ValueError):
    """Bad command-line input: reported as one line with exit status 2."""


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(
        prog="python -m sim.sweep",
        description="Sweep one parameter of the simulated P-ShareLoRA pipeline (Algorithm 1) "
                    "over seeds, fit log-log slopes, compare with the paper's bounds, draw figures.")
    p.add_argument("--vary", required=True, choices=VARY, help="parameter to vary")
    p.add_argument("--values", help="comma-separated grid (default: a built-in grid per --vary)")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds 0..S-1 (default 10)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel worker processes (joblib; one BLAS thread each). Default: cores")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated subset of {','.join(SWEEP_METHODS)}")
    p.add_argument("--out", help="output directory (default results/sweep-<vary>)")
    p.add_argument("--save-artifacts", action="store_true",
                   help="also write artifacts/<value>_<seed>.npz (instance, truth, estimates, zeta, policies)")
    p.add_argument("--quick", action="store_true", help="3 grid values x 3 seeds (smoke run)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a base config field, e.g. --set behaviour=uniform (repeatable)")
    p.add_argument("--no-figures", action="store_true", help="skip drawing figures")
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
    grid = GRIDS[args.vary]
    base = dict(grid["base"])
    names = SimConfig.field_names()
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or key not in names:
            raise SweepError(f"--set expects FIELD=VALUE with FIELD in {','.join(names)}; got {item!r}")
        base[key] = _coerce(SimConfig.__dataclass_fields__[key].type, raw, key)
    if args.values:
        try:
            values = [float(v) for v in args.values.split(",") if v.strip()]
        except ValueError:
            raise SweepError(f"--values must be comma-separated numbers, got {args.values!r}") from None
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
    try:
        for v in values:
            if v <= 0:
                raise ValueError(f"{args.vary} must be positive, got {v}")
            cfg.with_(**{args.vary: v})
    except (ValueError, TypeError) as e:
        raise SweepError(f"infeasible --vary {args.vary} value: {e}") from None
    return cfg, values, seeds, methods


def _coerce(kind, raw: str, key: str):
    try:
        return {"int": int, "float": float, "str": str}[str(kind)](raw)
    except (KeyError, ValueError):
        raise SweepError(f"--set {key}: cannot read {raw!r} as {kind}") from None


def _run_task(cfg: SimConfig, vary: str, value, seed: int, methods, out: Path, artifacts: bool) -> Path:
    from sim.pipeline import run_instance

    with threadpool_limits(1):
        art = out / "artifacts" / f"{part_name(value, seed)}.npz" if artifacts else None
        rows = run_instance(cfg.with_(**{vary: value}), seed, methods, artifacts=art)
    df = pd.DataFrame(rows)
    df.insert(0, "value", value)
    df.insert(0, "vary", vary)
    return write_part(out, part_name(value, seed), df)


def assemble(out: Path, values, seeds, methods) -> pd.DataFrame:
    """runs.csv from the finished parts, ordered by value, seed, method (deterministic)."""
    df = read_parts(out)
    order = {m: i for i, m in enumerate(methods)}
    df = df[df["method"].isin(methods)]
    df = df.assign(_m=df["method"].map(order)).sort_values(["value", "seed", "_m"]).drop(columns="_m")
    write_csv_atomic(df, out / "runs.csv")
    return df


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg, values, seeds, methods = plan(args)
    except SweepError as e:
        print(f"sim.sweep: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"results/sweep-{args.vary}")
    spec = dict(vary=args.vary, values=values, seeds=seeds, methods=methods, base=cfg.as_dict())
    if (out / "sweep.json").exists():
        old = json.loads((out / "sweep.json").read_text())
        if {k: old.get(k) for k in ("vary", "base", "methods")} != {k: spec[k] for k in ("vary", "base", "methods")}:
            print(f"sim.sweep: error: {out} holds a different sweep (see its sweep.json); "
                  "choose another --out", file=sys.stderr)
            return 2
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if args.save_artifacts:
        (out / "artifacts").mkdir(exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(spec, indent=2))

    done = finished(out)
    todo = [(v, s) for v in values for s in seeds if part_name(v, s) not in done]
    if len(todo) < len(values) * len(seeds):
        print(f"resuming: {len(values) * len(seeds) - len(todo)} of {len(values) * len(seeds)} runs already done")
    jobs = min(args.jobs if args.jobs > 0 else (os.cpu_count() or 1), max(len(todo), 1))
    tasks = (delayed(_run_task)(cfg, args.vary, v, s, methods, out, args.save_artifacts) for v, s in todo)
    bar = tqdm(total=len(todo), desc=f"sweep {args.vary}", unit="run")
    try:
        if jobs == 1:
            for v, s in todo:
                _run_task(cfg, args.vary, v, s, methods, out, args.save_artifacts)
                bar.update()
        else:
            for _ in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
                bar.update()
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: finished runs are kept in {out}/parts; re-run the same command to resume",
              file=sys.stderr)
        return 130
    bar.close()

    from sim.analysis import write_analysis

    runs = assemble(out, values, seeds, methods)
    from sim.pipeline import warn_unconverged

    if (msg := warn_unconverged(runs)) is not None:  # once per sweep, not once per fit
        print(f"sim.sweep: warning: {msg}", file=sys.stderr)
    slopes = write_analysis(runs, args.vary, out)
    if not args.no_figures:
        from figures.sim_plots import make_sweep_figures

        make_sweep_figures(out)
    print(f"wrote {out}/runs.csv ({len(runs)} rows), slopes.csv, summary.md")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(slopes[["quantity", "method", "bound", "predicted_slope", "measured_slope",
                      "ci_low", "ci_high", "verdict"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
