"""`python -m figures.results [--only NAMES] [--collect-only] [--fresh] [--jobs J]`: re-run (or
resume) every experiment behind README's "Results" tables, copy the small result files into
docs/results/, and rewrite README's generated blocks from those files.

Experiments (NAMES): the default sweeps `nu, Np, N, tail, k, d1, Np_new` (`python -m sim.sweep --vary X`
into results/sweep-X), `tail-study` (`python -m sim.tail_study`, Theorem 4.1 vs B.1) and
`remark3` (Remark 3: the default d1 sweep plus the same grid at N_p = 1600 for `shared` and
`full`, seeds 0-2, results/sweep-d1-Np1600) and `llm-new-users` (`python -m llm.study
--new-users`, new labelers from the learned subspace; extension, issue 18). Per experiment docs/results/<name>/ receives slopes.csv,
summary.md, sweep.json and runs.csv.gz (every run with its full config and seed), or the
study's own tables; docs/results/manifest.csv records the commands, the git commit at
collection and the wall time of the run. README's blocks between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` are generated from docs/results only (tests/test_results.py checks
they are equal), so new methods or slopes.csv columns appear without editing this file.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from figures.cli import OneLineParser
from figures.tables import SWEEP_ORDER, write_readme

SWEEPS = SWEEP_ORDER  # the sweeps behind README's tables
STUDIES = ("tail-study", "remark3", "llm-new-users")
NAMES = SWEEPS + STUDIES
REMARK3_HI = dict(Np=1600, methods="shared,full", seeds=3)
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- running


def _commands(name: str, jobs: int, results: Path) -> list[tuple[str, list[str]]]:
    """(module, argv) of every command behind an experiment."""
    if name in SWEEPS:
        return [("sim.sweep", ["--vary", name, "--jobs", str(jobs), "--out", str(results / f"sweep-{name}")])]
    if name == "tail-study":
        return [("sim.tail_study", ["--jobs", str(jobs), "--out", str(results / "tail-study")])]
    if name == "llm-new-users":  # one torch thread: the study's default (jobs does not apply)
        return [("llm.study", ["--new-users", "--out", str(results / "llm-new-users")])]
    hi = results / f"sweep-d1-Np{REMARK3_HI['Np']}"
    return _commands("d1", jobs, results) + [(
        "sim.sweep", ["--vary", "d1", "--set", f"Np={REMARK3_HI['Np']}", "--methods",
                      REMARK3_HI["methods"], "--seeds", str(REMARK3_HI["seeds"]), "--jobs", str(jobs),
                      "--no-figures", "--out", str(hi)]), (
        "sim.experiments.remark3", ["--lo", str(results / "sweep-d1"), "--hi", str(hi),
                                    "--out", str(results / "remark3")])]


def _analyse_only(module: str, argv: list[str]) -> list[str] | None:
    """argv that rebuilds a finished command's tables with the current analysis code without
    running anything new (None: the command has nothing to rebuild, or cannot skip running)."""
    if module in ("sim.sweep", "sim.tail_study"):
        return [*argv, "--analyse-only"]
    return argv if module == "sim.experiments.remark3" else None


def _dirs(name: str, results: Path) -> list[Path]:
    if name in SWEEPS:
        return [results / f"sweep-{name}"]
    if name in ("tail-study", "llm-new-users"):
        return [results / name]
    return [results / "sweep-d1-Np1600", results / "remark3"]  # sweep-d1 belongs to d1


def run(name: str, jobs: int, results: Path, fresh: bool, analyse_only: bool = False
        ) -> tuple[int, float, str]:
    """Run (resume) an experiment's commands, each in its own process; with ``analyse_only``
    only rebuild the tables of finished runs. (status, wall seconds, the commands as one line)."""
    if fresh:
        for d in _dirs(name, results):
            shutil.rmtree(d, ignore_errors=True)
    t0, lines = time.perf_counter(), []
    for module, argv in _commands(name, jobs, results):
        if analyse_only and (argv := _analyse_only(module, argv)) is None:
            continue
        lines.append(f"python -m {module} {' '.join(argv)}")
        rc = subprocess.run([sys.executable, "-m", module, *argv]).returncode
        if rc:
            return rc, time.perf_counter() - t0, " && ".join(lines)
    return 0, time.perf_counter() - t0, " && ".join(lines)


# ----------------------------------------------------------------------------- collecting


def _copy_sweep(src: Path, dst: Path) -> None:
    """A finished sweep's tables (written by the sweep's own analysis) and its runs, gzipped."""
    if not (src / "slopes.csv").exists():
        raise FileNotFoundError(f"{src} has no slopes.csv (the sweep did not finish)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("slopes.csv", "summary.md", "sweep.json", "crossover.csv", "comparison.csv"):
        if (src / f).exists() or f in ("slopes.csv", "summary.md", "sweep.json"):
            shutil.copy2(src / f, dst / f)  # crossover/comparison: Np_new sweeps only
    with open(src / "runs.csv", "rb") as fin, gzip.GzipFile(dst / "runs.csv.gz", "wb", mtime=0) as fout:
        shutil.copyfileobj(fin, fout)


def collect(name: str, results: Path, docs: Path) -> None:
    """Copy an experiment's small result files into docs/results/<name>/."""
    dst = docs / name
    if name in SWEEPS:
        _copy_sweep(results / f"sweep-{name}", dst)
        _copy_figures(results / f"sweep-{name}")
    elif name == "tail-study":
        src = results / "tail-study"
        if not (src / "tail_study.csv").exists():
            raise FileNotFoundError(f"{src} is incomplete")
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("tail_study.csv", "tail_study.md"):
            shutil.copy2(src / f, dst / f)
        for sub in sorted(src.glob("Np*")):
            _copy_sweep(sub, dst / sub.name)
    elif name == "llm-new-users":
        src = results / name
        if not (src / "new_users_summary.md").exists():
            raise FileNotFoundError(f"{src} is incomplete")
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("new_users_summary.md", "study_config.json", "timing.csv"):
            shutil.copy2(src / f, dst / f)
        with open(src / "new_users.csv", "rb") as fin, \
                gzip.GzipFile(dst / "new_users.csv.gz", "wb", mtime=0) as fout:
            shutil.copyfileobj(fin, fout)
        shutil.copy2(src / "llm_new_users_accuracy.png", ROOT / "docs" / "figures")
    else:
        if not (results / "remark3" / "remark3.md").exists():
            raise FileNotFoundError(f"{results / 'remark3'} is incomplete")
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("remark3.csv", "remark3.md"):
            shutil.copy2(results / "remark3" / f, dst / f)
        hi = results / f"sweep-d1-Np{REMARK3_HI['Np']}"
        _copy_sweep(hi, dst / hi.name)


def _copy_figures(src: Path) -> None:
    """Refresh the README's figures (docs/figures/<quantity>_vs_<vary>.png) from a sweep."""
    from figures.sim_plots import make_sweep_figures

    make_sweep_figures(src)
    for png in (ROOT / "docs" / "figures").glob("*_vs_*.png"):
        if (src / png.name).exists():
            shutil.copy2(src / png.name, png)


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def record(docs: Path, name: str, command: str, wall_s: float | None) -> None:
    f = docs / "manifest.csv"
    old = pd.read_csv(f) if f.exists() else pd.DataFrame(columns=["name", "command", "commit", "wall_s"])
    prev = old[old["name"] == name]
    if wall_s is None and len(prev):  # collect-only: keep the run's own record
        return
    row = pd.DataFrame([dict(name=name, command=command, commit=_git_commit(),
                             wall_s=round(wall_s, 1) if wall_s is not None else float("nan"))])
    new = pd.concat([old[old["name"] != name], row], ignore_index=True)
    new["order"] = new["name"].map({n: i for i, n in enumerate(NAMES)})
    new.sort_values("order").drop(columns="order").to_csv(f, index=False)


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m figures.results", description=__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)} (default: all)")
    p.add_argument("--collect-only", action="store_true",
                   help="run nothing new: rebuild finished runs' tables (--analyse-only) and collect them")
    p.add_argument("--fresh", action="store_true", help="delete the experiments' results/ dirs first")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers per sweep (default 1)")
    p.add_argument("--results", default="results", help="where the runs live (default results/)")
    p.add_argument("--docs", default=str(ROOT / "docs" / "results"), help="docs/results directory")
    p.add_argument("--readme", default=str(ROOT / "README.md"), help="README to rewrite")
    args = p.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(NAMES)).split(",") if n.strip()]
    bad = [n for n in names if n not in NAMES]
    if bad or not names:
        p.error(f"--only: unknown experiment(s) {bad or names}; choose from {','.join(NAMES)}")
    if args.fresh and args.collect_only:
        p.error("--fresh and --collect-only exclude each other")
    results, docs = Path(args.results), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    for name in names:
        wall, command = None, " && ".join(f"python -m {m} {' '.join(a)}" for m, a in _commands(name, args.jobs, results))
        if args.collect_only:  # rebuild the tables of finished runs with the current code
            rc, _, _ = run(name, args.jobs, results, False, analyse_only=True)
        else:
            rc, wall, command = run(name, args.jobs, results, args.fresh)
        if rc:
            print(f"figures.results: error: {name} failed (status {rc})", file=sys.stderr)
            return rc
        try:
            collect(name, results, docs)
        except (FileNotFoundError, KeyError) as e:
            print(f"figures.results: error: {name}: {e}", file=sys.stderr)
            return 2
        record(docs, name, command, wall)
    try:
        write_readme(Path(args.readme), docs)
    except KeyError as e:
        print(f"figures.results: error: {e.args[0]}", file=sys.stderr)
        return 2
    print(f"figures.results: collected {', '.join(names)} into {docs}; README blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
