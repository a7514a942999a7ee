"""`python -m sim.tail_study`: where does Sigma_tail sit in the subspace bound? (Theorem 4.1 vs
Theorem B.1, theory/README.md erratum 2.)

Theorem 4.1 (Sec. 4.3) puts the tail term inside the square root,
dist <= c1 sqrt(stat + c_t (1/nu) sqrt(tail/N)); Theorem B.1 (App. B) outside it,
dist <= c1 sqrt(stat) + c_t (1/nu) sqrt(tail/N). Whatever the constants, the local log-slope of
the first in tail never exceeds 1/4 and that of the second never exceeds 1/2; both reach their
cap only where the tail term dominates. The default tail sweep (N_p = 800, Sigma_tail <= 1.6)
cannot tell them apart with constants set to 1 (its predicted slopes depend on the constants).
This study runs the `shared` fit on one tail grid reaching Sigma_tail / (nu N k) = 1.6 at two
N_p (800 and 6400: the statistical term shrinks 8-fold), every other field at the SimConfig
default, and reports three constant-free checks:

1. local slopes between neighbouring tail values at each N_p, with a bootstrap CI over seeds,
   against the caps 1/4 (inside) and 1/2 (outside);
2. each form fitted with its two constants free (c1^2 c_bracket, c1^2 c_t) on one N_p and used
   to predict the other (RMSE of log dist out of sample);
3. a free exponent gamma fitted on all N_p under each combination rule,
   dist^2 = a stat(N_p) + b tail^(2 gamma) ("quadrature", the inside form when gamma = 1/4) and
   dist = sqrt(a stat(N_p)) + b tail^gamma ("additive", the outside form when gamma = 1/2),
   with bootstrap CIs over seeds and each rule's RMSE (the rule that fits better is the one
   whose gamma is informative: the other one's is biased by the wrong combination).

Sizes are set by one busy core (see SEEDS). Writes OUT/Np<N_p>/ (sim.experiments.sweep directories: runs.csv with the full config per row,
resumable), OUT/tail_study.csv (one row per check, config columns included) and
OUT/tail_study.md. ``--analyse-only`` re-reads finished sweeps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from figures.cli import OneLineParser
from sim.experiments.analysis import _md, slope_with_ci
from theory import bounds

TAILS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
NPS = (800, 6400)
#: Seeds per N_p (an N_p = 6400 run costs ~6x one at 800).
SEEDS = {800: 10, 6400: 6}
CAPS = {"inside (Thm 4.1)": 0.25, "outside (Thm B.1)": 0.5}
FREE_RULES = ("quadrature", "additive")
#: Largest tail of the "gap-safe" part of the grid: sigma_{k+1}^2 = tail/(d1-k) <= 0.08 sigma_k^2
#: there. Neither form has an eigengap term, and Lemma 5's Davis-Kahan step needs
#: sigma_{k+1} << sigma_k; at tail = 6.4 sigma_{k+1}^2 = 0.32 sigma_k^2. Chosen after seeing the
#: N_p = 6400 data grow faster than either form allows at the top of the grid (reported as such).
GAP_SAFE_MAX = 1.6
N_BOOT_FIT = 200
CONFIG_COLUMNS = ("N", "d1", "d2", "k", "nu", "B", "S", "A", "H", "delta", "behaviour",
                  "feature_scale")


def sweep_args(Np: int, out: Path, seeds: int, jobs: int) -> list[str]:
    return ["--vary", "tail", "--values", ",".join(map(str, TAILS)), "--set", f"Np={Np}",
            "--methods", "shared", "--seeds", str(seeds), "--jobs", str(jobs), "--no-figures",
            "--out", str(out / f"Np{Np}")]


def run(out: Path, seeds: int | None = None, jobs: int = 1, analyse_only: bool = False) -> int:
    """Run (resume) the sweeps; with ``analyse_only`` only rebuild their tables."""
    from sim.experiments.sweep import main as sweep

    for Np in NPS:
        rc = sweep(sweep_args(Np, out, seeds or SEEDS[Np], jobs) + ["--analyse-only"] * analyse_only)
        if rc:
            return rc
    return 0


def load(out: Path) -> dict[int, pd.DataFrame]:
    """{N_p: dist table (index tail, columns seed)} from the finished sweeps."""
    tables = {}
    for Np in NPS:
        f = out / f"Np{Np}" / "runs.csv"
        if not f.exists():
            raise FileNotFoundError(f"{f} missing: run `python -m sim.tail_study` first")
        runs = pd.read_csv(f)
        runs = runs[runs["method"] == "shared"]
        tables[Np] = runs.pivot_table(index="tail", columns="seed", values="dist", aggfunc="first")
    return tables


def _stat(row: pd.Series, Np) -> np.ndarray:
    """Theorem 4.1's statistical term L/(N Np nu) (its constant is fitted)."""
    lb = bounds.log_bracketing("shared", row["N"], Np, row["d1"], row["d2"], row["k"], row["delta"])
    return lb / (row["N"] * np.asarray(Np, dtype=float) * row["nu"])


def _design(tables, row, nps):
    tail = np.concatenate([tables[n].index.to_numpy(dtype=float) for n in nps])
    stat = np.concatenate([np.full(len(tables[n]), float(_stat(row, n))) for n in nps])
    bias = np.sqrt(tail / row["N"]) / row["nu"]
    return tail, stat, bias


def _form(name: str, p: np.ndarray, stat, bias, tail):
    """log dist of a form; p = log constants (a, b[, gamma])."""
    a, b = np.exp(p[0]), np.exp(p[1])
    if name == "inside":
        return 0.5 * np.log(a * stat + b * bias)
    if name == "outside":
        return np.log(np.sqrt(a * stat) + b * bias)
    if name == "quadrature":  # free exponent gamma = p[2]
        return 0.5 * np.log(a * stat + b * tail ** (2 * p[2]))
    return np.log(np.sqrt(a * stat) + b * tail ** p[2])  # "additive"


def fit_form(name: str, y: np.ndarray, stat, bias, tail) -> np.ndarray:
    free = name in FREE_RULES
    x0 = np.array([0.0, -2.0] + ([0.35] if free else []))
    lo = [-30, -30] + ([0.0] if free else [])
    hi = [30, 30] + ([2.0] if free else [])
    res = least_squares(lambda p: _form(name, p, stat, bias, tail) - y, x0, bounds=(lo, hi))
    return res.x


def _medians(tables, nps, cols=None):
    """log seed-medians, stacked over nps; cols: {N_p: seed positions} for a bootstrap draw."""
    return np.concatenate([np.log(np.nanmedian(
        (tables[n] if cols is None else tables[n].iloc[:, cols[n]]).to_numpy(dtype=float), axis=1))
        for n in nps])


def _half_slope(rows, name, Np, sub, rng):
    s, lo, hi = slope_with_ci(sub, rng)
    rows.append(dict(check=name, Np=Np, tail_low=sub.index[0], tail_high=sub.index[-1], estimate=s,
                     ci_low=lo, ci_high=hi, above_inside_cap=bool(lo > CAPS["inside (Thm 4.1)"]),
                     above_outside_cap=bool(lo > CAPS["outside (Thm B.1)"])))


def _fits(rows, tables, row, rng, n_boot_fit, label):
    """Checks 2 and 3 on the given (possibly truncated) tables; label names the tail range."""
    nps = list(tables)
    for fit_np in nps:  # 2. fit on one N_p, predict the others
        tail, stat, bias = _design(tables, row, [fit_np])
        others = [n for n in nps if n != fit_np]
        t_o, s_o, b_o = _design(tables, row, others)
        y, y_o = _medians(tables, [fit_np]), _medians(tables, others)
        for name in ("inside", "outside"):
            p = fit_form(name, y, stat, bias, tail)
            rmse_in = float(np.sqrt(np.mean((_form(name, p, stat, bias, tail) - y) ** 2)))
            rmse_out = float(np.sqrt(np.mean((_form(name, p, s_o, b_o, t_o) - y_o) ** 2)))
            rows.append(dict(check=f"{name} form fitted on Np={fit_np}", range=label, Np=fit_np,
                             estimate=rmse_out, rmse_in_sample=rmse_in,
                             predicted=",".join(map(str, others)),
                             const_stat=float(np.exp(p[0])), const_tail=float(np.exp(p[1]))))
    tail, stat, bias = _design(tables, row, nps)  # 3. free exponent, CI over seeds
    y = _medians(tables, nps)
    n_seeds = {n: t.shape[1] for n, t in tables.items()}  # seeds resampled within each N_p
    draws = [{n: rng.integers(0, m, m) for n, m in n_seeds.items()} for _ in range(n_boot_fit)]
    for rule in FREE_RULES:
        p = fit_form(rule, y, stat, bias, tail)
        boots = [fit_form(rule, _medians(tables, nps, d), stat, bias, tail)[2] for d in draws]
        lo, hi = np.quantile(boots, [0.025, 0.975])
        rmse = float(np.sqrt(np.mean((_form(rule, p, stat, bias, tail) - y) ** 2)))
        rows.append(dict(check=f"free exponent gamma ({rule})", range=label, Np=0,
                         tail_low=tail.min(), tail_high=tail.max(), estimate=float(p[2]),
                         ci_low=float(lo), ci_high=float(hi), rmse_in_sample=rmse,
                         above_inside_cap=bool(lo > 0.25), above_outside_cap=bool(lo > 0.5)))


def analyse(tables: dict[int, pd.DataFrame], row: pd.Series, seed: int = 0,
            n_boot_fit: int = N_BOOT_FIT) -> pd.DataFrame:
    """The three checks of the module docstring as tidy rows; checks 2 and 3 on the whole grid
    and on the gap-safe part (tail <= GAP_SAFE_MAX)."""
    rng = np.random.default_rng(seed)
    rows = []
    for Np, t in tables.items():  # 1. local slopes, and over each half of the grid
        for lo_i in range(len(t) - 1):
            _half_slope(rows, "local slope", Np, t.iloc[lo_i:lo_i + 2], rng)
        half = (len(t) + 1) // 2
        _half_slope(rows, "lower-half slope", Np, t.iloc[:half], rng)
        _half_slope(rows, "upper-half slope", Np, t.iloc[half - 1:], rng)
    _fits(rows, tables, row, rng, n_boot_fit, f"tail <= {max(t.index.max() for t in tables.values()):g}")
    safe = {n: t[t.index <= GAP_SAFE_MAX] for n, t in tables.items()}
    if all(len(t) >= 3 for t in safe.values()) and any(len(s) < len(t) for s, t in zip(safe.values(), tables.values())):
        _fits(rows, safe, row, rng, n_boot_fit, f"tail <= {GAP_SAFE_MAX:g}")
    df = pd.DataFrame(rows)
    for c in CONFIG_COLUMNS:
        df[c] = row[c]
    n_seeds = {n: t.shape[1] for n, t in tables.items()}
    df["n_seeds"] = [n_seeds.get(n, min(n_seeds.values())) for n in df["Np"]]
    return df


def verdict_text(df: pd.DataFrame) -> str:
    free = df[df["check"].str.startswith("free exponent")]
    halves = df[df["check"].str.endswith("half slope")].sort_values(["check", "Np"])
    fits = df[df["check"].str.contains("form fitted")]
    lines = ["Free exponent gamma (inside form: 0.25 in quadrature, outside form: 0.50 "
             "additive): " + "; ".join(
                 f"{r.range}, {r.check[len('free exponent gamma '):]} {r.estimate:.2f} "
                 f"[{r.ci_low:.2f}, {r.ci_high:.2f}], RMSE {r.rmse_in_sample:.3f}"
                 for r in free.itertuples()) + ".",
             "Slopes over half the grid (cap 0.25 inside, 0.50 outside): " + "; ".join(
                 f"N_p = {int(r.Np)}, tail {r.tail_low:g}-{r.tail_high:g}: {r.estimate:.2f} "
                 f"[{r.ci_low:.2f}, {r.ci_high:.2f}]" for r in halves.itertuples()) + ".",
             "Out-of-sample RMSE of log dist (constants fitted on one N_p): " + "; ".join(
                 f"{r.range}, {r.check}: {r.estimate:.3f} (in sample {r.rmse_in_sample:.3f})"
                 for r in fits.itertuples()) + "."]
    return " ".join(lines)


def markdown(df: pd.DataFrame) -> str:
    slopes = df[df["check"].str.endswith("slope") | df["check"].str.startswith("free exponent")][
        ["check", "range", "Np", "tail_low", "tail_high", "estimate", "ci_low", "ci_high",
         "above_inside_cap", "above_outside_cap"]].fillna({"range": ""})
    fits = df[df["check"].str.contains("form fitted")][
        ["check", "range", "predicted", "estimate", "rmse_in_sample", "const_stat", "const_tail"]].rename(
        columns={"estimate": "rmse_out_of_sample"})
    return "\n".join([
        "# Where Sigma_tail sits (Theorem 4.1 vs B.1)", "",
        "`shared` only, seeds per N_p: " + ", ".join(
            f"{int(n)}: {int(m)}" for n, m in df[df["Np"] > 0].groupby("Np")["n_seeds"].first().items())
        + f"; N = {df['N'].iloc[0]}, "
        f"nu = {df['nu'].iloc[0]}, k = {df['k'].iloc[0]}; slopes of log seed-median dist "
        f"against log Sigma_tail, 95% CI by resampling seeds. `above_*_cap`: the CI's lower "
        "end exceeds the largest slope that form allows for any constants.", "",
        verdict_text(df), "", "## Slopes", "", _md(slopes), "",
        "## Fitted forms (constants free, fitted on one N_p, predicting the others)", "",
        _md(fits), ""])


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m sim.tail_study", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/tail-study", help="output directory")
    p.add_argument("--seeds", type=int, help=f"seeds per point (default per N_p: {SEEDS})")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers for the sweeps")
    p.add_argument("--analyse-only", action="store_true",
                   help="run nothing new: re-analyse the finished sweeps (sim.experiments.sweep --analyse-only)")
    args = p.parse_args(argv)
    if args.seeds is not None and args.seeds < 2:
        p.error(f"--seeds must be at least 2, got {args.seeds}")
    out = Path(args.out)
    if rc := run(out, args.seeds, args.jobs, analyse_only=args.analyse_only):
        return rc
    try:
        tables = load(out)
    except FileNotFoundError as e:
        print(f"sim.experiments.tail_study: error: {e}", file=sys.stderr)
        return 2
    row = pd.read_csv(out / f"Np{NPS[0]}" / "runs.csv").iloc[0]
    df = analyse(tables, row)
    df.to_csv(out / "tail_study.csv", index=False, float_format="%.6g")
    (out / "tail_study.md").write_text(markdown(df))
    print(verdict_text(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
