"""Scaling of the simulator: estimator fit, pessimistic policy, and the sweep CLI, side by side.

    python -m benchmarks.sim_scaling [--quick | --tiny] [--parts fit,policy,sweep,profile,seeds]
                                     [--out DIR]

- ``fit``: wall time of ``sim.estimation.estimators.fit("shared")`` (Eq. 3.5 over S^ShareLoRA, Eq. 3.4) as
  Np grows at fixed N, as N grows at fixed Np (each over a 10x range, so N*Np grows 10x) and as
  d1 grows; log-log exponents fitted by least squares.
- ``policy``: time per user of ``PessimisticSolver.solve`` (Eq. 3.7) as S*A*H grows, the LP
  (simplicial decomposition, backward-induction LPs) and the cvxpy SOCP (Clarabel) paths on the same users, and the largest
  objective difference between them.
- ``sweep``: wall time of ``python -m sim.sweep --vary nu`` (the default grid) with --jobs 1
  and --jobs 2 (separate --out directories under /tmp).
- ``profile``: cProfile of the same sweep with --jobs 1: the top functions by cumulative and by
  own time.
- ``seeds``: wall time and runs.csv size of the --quick nu grid with 2, 4, 8 seeds.

Timings are the minimum over ``--repeats`` runs (the machine is shared with other work; the
load average is printed with every part). Everything goes to DIR (default
results/bench/sim_scaling): one CSV per part and ``report.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from figures.cli import CliError, OneLineParser, check_out_dir
from sim.experiments.analysis import loglog_slope
from sim.experiments.pipeline import build_instance
from sim.model.config import SimConfig

PARTS = ("fit", "policy", "sweep", "profile", "seeds")
# Grids per mode: (Np values at fixed N, N values at fixed Np, d1 values, (S, A, H) sizes).
GRIDS = {
    "full": dict(Np=[50, 100, 200, 500], N=[5, 10, 20, 50], d1=[5, 10, 20, 40],
                 large=[500, 1000, 2000, 5000],
                 sah=[(4, 2, 5), (8, 4, 5), (16, 4, 10), (32, 4, 10), (32, 8, 10), (64, 8, 10)]),
    "quick": dict(Np=[50, 100, 500], N=[5, 10, 50], d1=[5, 10, 20],
                  sah=[(4, 2, 5), (8, 4, 5), (16, 4, 10)]),
    "tiny": dict(Np=[20, 40], N=[3, 6], d1=[4, 6], sah=[(3, 2, 3), (4, 2, 4)]),
}
POLICY_USERS = 5  # users solved per MDP size (per-user time is their mean)
POLICY_ZETA = 0.05  # squared radius of the confidence ball; the scale calibrated radii take
SEED_COUNTS = (2, 4, 8)
TOP = 25  # profile rows reported


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} cores"


def instance(cfg: SimConfig, seed: int = 0):
    """MDP, truth, behaviour policy and training data exactly as the sweep draws them."""
    mdp, truth, mu, data, _ = build_instance(cfg, seed)
    return mdp, truth, mu, data


def fit_scaling(grid: dict, repeats: int, method: str = "shared") -> pd.DataFrame:
    """Fit time of ``method`` along three axes around the default SimConfig."""
    from sim.estimation.estimators import fit

    base = SimConfig()
    points = [("Np", dict(Np=v)) for v in grid["Np"]] + [("N", dict(N=v)) for v in grid["N"]]
    points += [("d1", dict(d1=v)) for v in grid["d1"]]
    # the same Np axis at N = 50 and 10x more data: where the per-comparison work dominates
    points += [("Np@N=50", dict(N=50, Np=v)) for v in grid.get("large", [])]
    rows = []
    for axis, change in points:
        cfg = base.with_(**change)
        _, truth, _, data = instance(cfg)
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            est = fit(method, data, cfg.k, cfg.B, init=truth.init)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        rows.append(dict(axis=axis, method=method, N=cfg.N, Np=cfg.Np, d1=cfg.d1, d2=cfg.d2,
                         k=cfg.k, NxNp=cfg.N * cfg.Np, fit_s=min(wall), cpu_s=min(cpu),
                         iterations=est.info.get("iterations"), gap=est.info.get("gap")))
    return pd.DataFrame(rows)


def fit_exponents(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for axis, x in (("Np", "NxNp"), ("N", "NxNp"), ("d1", "d1"), ("Np@N=50", "NxNp")):
        sub = df[df["axis"] == axis]
        if len(sub) >= 2:
            rows.append(dict(axis=axis, regressor=x, exponent_wall=loglog_slope(sub[x], sub["fit_s"]),
                             exponent_cpu=loglog_slope(sub[x], sub["cpu_s"]),
                             range=f"{sub[x].min()}..{sub[x].max()}"))
    nn = df[df["axis"].isin(["Np", "N"])]
    rows.append(dict(axis="Np and N", regressor="NxNp", exponent_wall=loglog_slope(nn["NxNp"], nn["fit_s"]),
                     exponent_cpu=loglog_slope(nn["NxNp"], nn["cpu_s"]),
                     range=f"{nn['NxNp'].min()}..{nn['NxNp'].max()}"))
    return pd.DataFrame(rows)


def policy_scaling(grid: dict, repeats: int, cap_s: float) -> pd.DataFrame:
    """Per-user solve time of the LP and SOCP paths of Eq. 3.7 as S*A*H grows.

    A solver whose users at one size take more than ``cap_s`` in total is not run at larger
    sizes (row with ``per_user_s`` NaN and a note), and is timed once instead of ``repeats``.
    """
    from sim.policy.solver import PessimisticSolver

    rows, capped = [], set()
    for S, A, H in grid["sah"]:
        cfg = SimConfig(S=S, A=A, H=H, N=POLICY_USERS)
        mdp, truth, mu, _ = instance(cfg)
        objectives = {}
        for solver in ("lp", "socp"):
            row = dict(S=S, A=A, H=H, SAH=S * A * H, solver=solver)
            if solver in capped:
                rows.append(dict(row, note=f"skipped: over {cap_s:.0f} s at a smaller size"))
                continue
            t0 = time.perf_counter()
            ps = PessimisticSolver(mdp, mu, solver=solver)
            row["setup_s"] = time.perf_counter() - t0
            best, res, spent = np.inf, [], 0.0
            for _ in range(repeats):
                res, t0 = [], time.perf_counter()
                for th in truth.theta:
                    res.append(ps.solve(th, POLICY_ZETA))
                    if time.perf_counter() - t0 > cap_s:
                        break
                elapsed = time.perf_counter() - t0
                spent += elapsed
                best = min(best, elapsed / len(res))
                if spent > cap_s:
                    capped.add(solver)
                    break
            objectives[solver] = np.array([r.objective for r in res])
            rows.append(dict(row, per_user_s=best, users=len(res),
                             n_lp=float(np.mean([r.n_lp for r in res])), note=""))
        if len(objectives) == 2:
            m = min(len(objectives["lp"]), len(objectives["socp"]))
            diff = float(np.max(np.abs(objectives["lp"][:m] - objectives["socp"][:m])))
            rows[-1]["max_obj_diff"] = rows[-2]["max_obj_diff"] = diff
    return pd.DataFrame(rows)


def run_sweep(args: list[str], out: Path, profile: Path | None = None,
              solver: str = "default") -> dict:
    """``python -m sim.sweep ARGS --out OUT`` from scratch: wall time, rows, runs.csv size.

    solver "default" runs the code as it is; "lp"/"socp"/"face" add ``--set
    policy_solver=SOLVER``. A failing sweep is reported (exit status, last error line, tasks
    finished), not raised.
    """
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "sim.sweep", *args, "--out", str(out)]
    cmd += [] if solver == "default" else ["--set", f"policy_solver={solver}"]
    env = dict(os.environ)
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - t0
    runs = out / "runs.csv"
    row = dict(command="python -m sim.sweep " + " ".join(args) + f" --out {out}", solver=solver,
               rc=proc.returncode, wall_s=wall, load_before=before, load_after=load())
    if proc.returncode == 0 and runs.exists():
        df = pd.read_csv(runs)
        row.update(rows=len(df), runs_csv_bytes=runs.stat().st_size,
                   fit_s_sum=float(df["fit_s"].sum()), policy_s_sum=float(df["policy_s"].sum()))
    else:
        errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln]
        row.update(error=errors[-1] if errors else proc.stderr.strip().splitlines()[-1:],
                   tasks_done=len(list((out / "parts").glob("*.csv"))))
    return row


def profile_table(prof: Path, sort: str, n: int = TOP, repo_only: bool = False) -> str:
    """Top ``n`` rows of a cProfile dump sorted by ``sort``; ``repo_only``: this repo's code."""
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    if repo_only:
        root = str(Path(__file__).resolve().parents[1]) + os.sep
        stats.sort_stats(sort).print_stats(f"{root}(sim|theory|figures)/", n)
        text = buf.getvalue().replace(root, "")
    else:
        stats.strip_dirs().sort_stats(sort).print_stats(n)
        text = buf.getvalue()
    return text[text.find("   ncalls"):].rstrip()


def markdown(df: pd.DataFrame, fmt: str = ".4g") -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    def cell(v):
        return format(v, fmt) if isinstance(v, float | np.floating) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def run_parts(parts, mode: str, repeats: int, out: Path, tmp: Path, cap_s: float,
              blas_threads: int | None, sweep_solvers=()) -> str:
    """Run the chosen parts; write their CSVs to ``out``; return the markdown report."""
    grid = GRIDS[mode]
    report = [f"# sim_scaling ({mode})\n", f"machine: {os.cpu_count()} cores; start {load()}\n"]
    if "fit" in parts:
        with threadpool_limits(blas_threads):
            df = fit_scaling(grid, repeats)
        exps = fit_exponents(df)
        df.to_csv(out / "fit.csv", index=False)
        exps.to_csv(out / "fit_exponents.csv", index=False)
        report += ["## fit('shared') time\n", markdown(df, ".4g"), "",
                   markdown(exps, ".3f"), f"\n({load()})\n"]
    if "policy" in parts:
        with threadpool_limits(blas_threads):
            df = policy_scaling(grid, repeats, cap_s)
        df.to_csv(out / "policy.csv", index=False)
        wide = df.pivot_table(index=["S", "A", "H", "SAH"], columns="solver", values="per_user_s")
        wide["socp/lp"] = wide["socp"] / wide["lp"]
        ok = df.dropna(subset=["per_user_s"])
        slopes = {s: loglog_slope(g["SAH"], g["per_user_s"]) if len(g) > 1 else float("nan")
                  for s, g in ok.groupby("solver")}
        report += [f"## pessimistic policy, seconds per user (BLAS threads: {blas_threads or 'default'})\n", markdown(df, ".4g"),
                   "", markdown(wide.reset_index(), ".4g"),
                   f"\nlog-log exponent in S*A*H: lp {slopes['lp']:.2f}, socp {slopes['socp']:.2f}"
                   f"\n({load()})\n"]
    sweep_args = ["--vary", "nu"] if mode == "full" else ["--vary", "nu", "--quick"]
    if mode == "tiny":
        sweep_args = ["--vary", "nu", "--values", "0.1", "--seeds", "1", "--no-figures"]
    solvers = ["default", *(x for x in sweep_solvers if x != "default")]
    if "sweep" in parts:
        rows = [dict(jobs=j, **run_sweep([*sweep_args, "--jobs", str(j)], tmp / f"sweep-{sv}-j{j}",
                                         solver=sv))
                for sv in solvers for j in (1, 2)]
        df = pd.DataFrame(rows)
        df.to_csv(out / "sweep.csv", index=False)
        report += ["## sweep wall time, --jobs 1 vs 2\n", markdown(df, ".4g"), ""]
        for sv in solvers:
            ok = df[(df["solver"] == sv) & (df["rc"] == 0)].set_index("jobs")["wall_s"]
            if {1, 2} <= set(ok.index):
                report.append(f"speed-up jobs 2 / jobs 1 ({sv} policy solver): {ok[1] / ok[2]:.2f}x")
        report.append("")
    if "profile" in parts:
        for sv in solvers:
            prof = out / f"sweep-{sv}.prof"
            info = run_sweep([*sweep_args, "--jobs", "1"], tmp / f"sweep-prof-{sv}", profile=prof,
                             solver=sv)
            status = "ok" if info["rc"] == 0 else f"FAILED after {info.get('tasks_done')} tasks: {info.get('error')}"
            report += [f"## cProfile of `{info['command']}`, policy solver {sv} "
                       f"({info['wall_s']:.1f} s under the profiler; {status})\n",
                       "### by cumulative time\n", "```", profile_table(prof, "cumulative"), "```",
                       "### by cumulative time, this repo's functions only\n", "```",
                       profile_table(prof, "cumulative", repo_only=True), "```",
                       "### by own time\n", "```", profile_table(prof, "tottime"), "```\n"]
    if "seeds" in parts:
        values = "0.1" if mode == "tiny" else "0.025,0.05,0.1"  # the --quick nu grid
        counts = (1, 2) if mode == "tiny" else SEED_COUNTS
        rows = [dict(seeds=n, **run_sweep(["--vary", "nu", "--values", values, "--seeds", str(n),
                                           "--jobs", "2"], tmp / f"seeds-{sv}-{n}", solver=sv))
                for sv in solvers for n in counts]
        df = pd.DataFrame(rows)
        if "rows" in df:
            df["bytes_per_row"] = df["runs_csv_bytes"] / df["rows"]
        df.to_csv(out / "seeds.csv", index=False)
        report += ["## growth with --seeds (nu grid " + values + ", --jobs 2)\n", markdown(df, ".4g"), ""]
        for sv in solvers:
            ok = df[(df["solver"] == sv) & (df["rc"] == 0)]
            if len(ok) >= 2:
                report.append(f"{sv}: log-log exponent of wall time in seeds "
                              f"{loglog_slope(ok['seeds'], ok['wall_s']):.2f}; of runs.csv bytes "
                              f"{loglog_slope(ok['seeds'], ok['runs_csv_bytes']):.2f}")
        report.append("")
    report.append(f"end {load()}\n")
    return "\n".join(report)


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m benchmarks.sim_scaling",
                                description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller grids, --quick sweeps")
    size.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats (min taken); default 3, tiny 1")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads for the fit and policy parts (1: as sim.experiments.sweep runs them; "
                        "0: the library default)")
    p.add_argument("--sweep-solvers", default="default,socp",
                   help="policy solvers the sweep/profile/seeds parts run with: 'default' (the "
                        "code as it is) and/or lp, socp made PessimisticSolver's default")
    p.add_argument("--policy-cap-s", type=float, default=60.0,
                   help="stop growing S*A*H for a solver once one size takes longer than this")
    p.add_argument("--out", default="results/bench/sim_scaling", help="directory for CSVs and report.md")
    p.add_argument("--tmp", default="/tmp/sim_scaling", help="scratch directory for the sweeps' --out")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in args.parts if s not in PARTS]
    if bad or not args.parts:
        p.error(f"--parts must be a subset of {','.join(PARTS)}, got {bad or args.parts}")
    args.sweep_solvers = [x.strip() for x in args.sweep_solvers.split(",") if x.strip()]
    if not set(args.sweep_solvers) <= {"default", "lp", "socp"}:
        p.error(f"--sweep-solvers must be a subset of default,lp,socp, got {args.sweep_solvers}")
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def p_fail(err) -> int:
    print(f"python -m benchmarks.sim_scaling: error: {err}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    repeats = args.repeats or (1 if args.tiny else 3)
    try:
        out, tmp = check_out_dir(args.out), check_out_dir(args.tmp, "--tmp")
    except CliError as err:
        return p_fail(err)
    out.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    report = run_parts(args.parts, mode, repeats, out, tmp, args.policy_cap_s,
                       args.blas_threads or None, args.sweep_solvers)
    (out / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
