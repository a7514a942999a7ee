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
collection (when sim.analysis rewrote slopes.csv) and the wall time of the run. README's blocks between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` are generated from docs/results only (tests/test_results.py checks
they are equal), so new methods or slopes.csv columns appear without editing this file.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from figures.cli import OneLineParser

SWEEPS = ("nu", "Np", "N", "tail", "k", "d1", "Np_new")
STUDIES = ("tail-study", "remark3", "llm-new-users")
NAMES = SWEEPS + STUDIES
REMARK3_HI = dict(Np=1600, methods="shared,full", seeds=3)
VARY_LABEL = {"nu": "ν", "Np": "N_p", "N": "N", "tail": "Σ_tail", "k": "k", "d1": "d1",
               "Np_new": "N_p,new"}
KNOWN = ["quantity", "vary", "predicted_slope", "measured_slope", "ci_low", "ci_high", "n_points",
         "verdict", "constant_free", "pred_low", "pred_high", "method", "bound"]
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
    return _commands("d1", jobs, results) + [(
        "sim.sweep", ["--vary", "d1", "--set", f"Np={REMARK3_HI['Np']}", "--methods",
                      REMARK3_HI["methods"], "--seeds", str(REMARK3_HI["seeds"]), "--jobs", str(jobs),
                      "--no-figures",
                      "--out", str(results / f"sweep-d1-Np{REMARK3_HI['Np']}")])]


def _dirs(name: str, results: Path) -> list[Path]:
    if name in SWEEPS:
        return [results / f"sweep-{name}"]
    if name in ("tail-study", "llm-new-users"):
        return [results / name]
    return [results / "sweep-d1-Np1600"]  # sweep-d1 belongs to the d1 experiment


def run(name: str, jobs: int, results: Path, fresh: bool) -> tuple[int, float, str]:
    """Run (resume) an experiment; (status, wall seconds, the commands as one line)."""
    import importlib

    if fresh:
        for d in _dirs(name, results):
            shutil.rmtree(d, ignore_errors=True)
    t0, lines = time.perf_counter(), []
    for module, argv in _commands(name, jobs, results):
        lines.append(f"python -m {module} {' '.join(argv)}")
        rc = importlib.import_module(module).main(argv)
        if rc:
            return rc, time.perf_counter() - t0, " && ".join(lines)
    return 0, time.perf_counter() - t0, " && ".join(lines)


# ----------------------------------------------------------------------------- collecting


def _copy_sweep(src: Path, dst: Path) -> None:
    from sim.experiments.analysis import write_analysis

    runs = pd.read_csv(src / "runs.csv")
    write_analysis(runs, str(runs["vary"].iloc[0]), src)  # the current analysis code
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("slopes.csv", "summary.md", "sweep.json", "crossover.csv"):
        if f != "crossover.csv" or (src / f).exists():  # crossover.csv: Np_new sweeps only
            shutil.copy2(src / f, dst / f)
    with open(src / "runs.csv", "rb") as fin, gzip.GzipFile(dst / "runs.csv.gz", "wb", mtime=0) as fout:
        shutil.copyfileobj(fin, fout)


def collect(name: str, results: Path, docs: Path) -> None:
    """Copy an experiment's small result files into docs/results/<name>/."""
    dst = docs / name
    if name in SWEEPS:
        _copy_sweep(results / f"sweep-{name}", dst)
        _copy_figures(results / f"sweep-{name}")
    elif name == "tail-study":
        from sim.experiments import tail_study

        if tail_study.main(["--out", str(results / "tail-study"), "--analyse-only"]):
            raise FileNotFoundError(f"{results / 'tail-study'} is incomplete")
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("tail_study.csv", "tail_study.md"):
            shutil.copy2(results / "tail-study" / f, dst / f)
        for sub in sorted((results / "tail-study").glob("Np*")):
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
        from sim.experiments.analysis import remark3_markdown, remark3_table

        hi = results / f"sweep-d1-Np{REMARK3_HI['Np']}"
        lo_runs, hi_runs = pd.read_csv(results / "sweep-d1" / "runs.csv"), pd.read_csv(hi / "runs.csv")
        dst.mkdir(parents=True, exist_ok=True)
        remark3_table(lo_runs, hi_runs).to_csv(dst / "remark3.csv", index=False, float_format="%.6g")
        (dst / "remark3.md").write_text(remark3_markdown(lo_runs, hi_runs) + "\n")
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


# ----------------------------------------------------------------------------- README blocks


def _fmt(v, nd=2) -> str:
    if isinstance(v, str):
        return v
    if pd.isna(v):
        return "–"
    s = f"{v:.{nd}f}".replace("-", "−")
    return "0.00" if s == "−0.00" else s


def _vary_label(spec: dict) -> str:
    from sim.model.config import SimConfig

    default = SimConfig().as_dict()
    changed = [f"{VARY_LABEL.get(k, k)}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
               for k, v in spec["base"].items() if k != spec["vary"] and default.get(k) != v]
    label = VARY_LABEL.get(spec["vary"], spec["vary"])
    return f"{label} ({', '.join(changed)})" if changed else label


def slopes_block(docs: Path) -> str:
    """The slopes table of every docs/results/<sweep>/slopes.csv (default sweeps first)."""
    names = [n for n in SWEEPS if (docs / n / "slopes.csv").exists()]
    names += sorted(p.parent.name for p in docs.glob("*/slopes.csv") if p.parent.name not in names)
    frames = []
    for n in names:
        df = pd.read_csv(docs / n / "slopes.csv")
        df.insert(0, "vary_label", _vary_label(json.loads((docs / n / "sweep.json").read_text())))
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    extra = [c for c in table.columns if c not in KNOWN and c != "vary_label"]
    head = ["vary", "quantity", "method", "bound", "predicted", "measured", "95% CI", "verdict", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        r = r._asdict()
        free = str(r["constant_free"]).lower() == "true"
        pred = _fmt(r["predicted_slope"]) + ("" if free else
                                             f" ({_fmt(r['pred_low'])} … {_fmt(r['pred_high'])})")
        cells = [r["vary_label"], r["quantity"], r["method"], r["bound"], pred, _fmt(r["measured_slope"]),
                 f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", r["verdict"] + ("" if free else " †"),
                 *[_fmt(r[c], 3) for c in extra]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def tail_block(docs: Path) -> str:
    df = pd.read_csv(docs / "tail-study" / "tail_study.csv")
    rows = df[df["check"].str.endswith("half slope") | df["check"].str.startswith("free exponent")]
    lines = ["| check | N_p | Σ_tail range | estimate | 95% CI | CI above ¼ (inside cap) | CI above ½ (outside cap) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        np_ = "all" if r.Np == 0 else f"{int(r.Np)}"
        lines.append(f"| {r.check} | {np_} | {r.tail_low:g}–{r.tail_high:g} | {_fmt(r.estimate)} | "
                     f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] | {'yes' if r.above_inside_cap else 'no'} | "
                     f"{'yes' if r.above_outside_cap else 'no'} |")
    fits = df[df["check"].str.contains("form fitted")]
    lines += ["", "| Σ_tail range | constants fitted on | form | RMSE of log dist in sample | predicting N_p | RMSE there |",
              "|---|---|---|---|---|---|"]
    for r in fits.itertuples():
        lines.append(f"| {r.range.replace('<=', '≤')} | N_p = {int(r.Np)} | {r.check.split()[0]} | "
                     f"{r.rmse_in_sample:.3f} | {_nps(r.predicted)} | {r.estimate:.3f} |")
    return "\n".join(lines)


def _nps(v) -> str:
    """'800,6400' or 6400.0 (pandas reads a single value as a number) -> '800, 6400'."""
    return ", ".join(f"{float(x):g}" for x in str(v).split(","))


def remark3_block(docs: Path) -> str:
    return (docs / "remark3" / "remark3.md").read_text().strip()


def levels_block(docs: Path) -> str:
    """Seed-median est_err and pred_err of every method at each N_p of the N_p sweep, so that
    each method is seen between `zero` (learned nothing) and `oracle` (knew B⋄)."""
    runs = pd.read_csv(docs / "Np" / "runs.csv.gz")
    med = runs.groupby(["method", "value"])[["est_err", "pred_err"]].median()
    order = [m for m in ("oracle", "shared", "zero", "global", "local", "full", "nuclear")
             if m in set(runs["method"])]
    values = sorted(runs["value"].unique())
    lines = ["| method | " + " | ".join(f"N_p = {v:g}" for v in values) + " |",
             "|---|" + "---|" * len(values)]
    for m in order:
        cells = [f"{med.loc[(m, v), 'est_err']:.3f} / {med.loc[(m, v), 'pred_err']:.3f}"
                 for v in values]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def llm_new_users_block(docs: Path) -> str:
    """The new-labeler table (llm.study --new-users) from docs/results/llm-new-users."""
    import csv
    import io

    from llm.new_user_study import summary_table

    text = gzip.decompress((docs / "llm-new-users" / "new_users.csv.gz").read_bytes()).decode()
    return summary_table(list(csv.DictReader(io.StringIO(text)))).strip()


def _ci(v, lo, hi, nd=3) -> str:
    return f"{_fmt(v, nd)} [{_fmt(lo, nd)}, {_fmt(hi, nd)}]"


def new_users_block(docs: Path) -> str:
    """Held-out users (`--vary Np_new`): est_err_new seed medians per method, the paired
    differences scratch − shared with 95% CIs, and the crossover n_new against the theory."""
    from sim.experiments.new_user_analysis import comparison_table

    runs = pd.read_csv(docs / "Np_new" / "runs.csv.gz")
    comp = comparison_table(runs)
    meds = [c for c in comp.columns if c.startswith("median ")]
    diffs = [m for m in ("local", "full") if f"{m} − shared" in comp]
    head = ["N_p,new", *[f"`{c[7:]}`" for c in meds], *[f"{m} − shared (95% CI)" for m in diffs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in comp.to_dict("records"):
        cells = [f"{r['Np_new']:g}", *[_fmt(r[c], 3) for c in meds],
                 *[_ci(r[f"{m} − shared"], r[f"{m} − shared low"], r[f"{m} − shared high"])
                   for m in diffs]]
        lines.append("| " + " | ".join(cells) + " |")
    cross = pd.read_csv(docs / "Np_new" / "crossover.csv")
    lines += ["", "| from scratch | crossover n_new measured (95% CI) | theory, constants 1 | "
              "crossing of the fitted a/n + f curves | predicted floor of `shared` | fitted floor |",
              "|---|---|---|---|---|---|"]
    for r in cross.to_dict("records"):
        meas = (f"> {r['grid_max']:g} (not on the grid)" if not pd.notna(r["crossover_measured"])
                or r["crossover_measured"] == float("inf") else
                f"{r['crossover_measured']:.0f} [{r['ci_low']:.0f}, {r['ci_high']:.0f}]")
        lines.append(f"| `{r['method']}` | {meas} | {r['crossover_theory_c1']:.0f} | "
                     f"{r['crossover_fitted_curves']:.0f} | {r['floor_predicted']:.4f} | "
                     f"{r['floor_fitted']:.4f} |")
    return "\n".join(lines)


BLOCKS = {"slopes": slopes_block, "levels": levels_block, "tail-study": tail_block,
          "remark3": remark3_block, "new-users": new_users_block,
          "llm-new-users": llm_new_users_block}


def render_blocks(docs: Path) -> dict[str, str]:
    return {k: f(docs) for k, f in BLOCKS.items()
            if k == "slopes" or (docs / {"levels": "Np", "new-users": "Np_new"}.get(k, k)).exists()}


def readme_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in
            re.finditer(r"<!-- results:([\w-]+) -->\n(.*?)<!-- /results:\1 -->", text, flags=re.S)}


def write_readme(readme: Path, docs: Path) -> None:
    text = readme.read_text()
    for key, body in render_blocks(docs).items():
        pat = re.compile(rf"(<!-- results:{re.escape(key)} -->\n).*?(<!-- /results:{re.escape(key)} -->)", re.S)
        if not pat.search(text):
            raise KeyError(f"README has no <!-- results:{key} --> block")
        text = pat.sub(lambda m, b=body: m.group(1) + b.strip() + "\n" + m.group(2), text)
    readme.write_text(text)


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m figures.results", description=__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)} (default: all)")
    p.add_argument("--collect-only", action="store_true", help="do not run; collect existing results")
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
        if not args.collect_only:
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
