"""Scaling checks of a sweep: log-log slopes of seed medians with bootstrap CIs, compared with
the local slope of the paper's bound on the same grid (Theorem 4.1 / B.1 with Proposition 1,
Corollary 4.1, and the Np^-1 rate of the MLE behind Proposition 1). Writes slopes.csv and
summary.md; pure pandas/numpy (figures are drawn by figures/)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from theory import bounds

N_BOOT = 2000
CI = 0.95

SLOPE_COLUMNS = ["quantity", "vary", "predicted_slope", "measured_slope", "ci_low", "ci_high",
                 "n_points", "verdict", "constant_free", "pred_low", "pred_high", "method", "bound"]
#: Each term constant of a bound is scaled by these factors (all combinations) to find the range
#: of predicted slopes the unknown constants allow; constants inside logarithms are not varied.
CONSTANT_FACTORS = (1e-3, 1.0, 1e3)
#: A predicted slope is constant-free when that range is narrower than this (half the 0.01
#: precision the README reports).
CONSTANT_FREE_TOL = 0.005


def _cfg_args(row: pd.Series, vary: str, x):
    args = dict(N=row["N"], Np=row["Np"], nu=row["nu"], tail=row["tail"], d1=row["d1"],
                d2=row["d2"], k=row["k"], delta=row["delta"])
    args[vary] = x
    return args


def _prop1_rate(a, method, c=1.0):
    dim = bounds.class_dimension(method, a["N"], a["d1"], a["d2"], a["k"])
    return c * dim * np.log(a["N"] * a["Np"] / a["delta"]) / (a["N"] * a["Np"])


def _bound_constants(name: str, method: str) -> tuple[str, ...]:
    """Names of the per-term constants of a bound (an overall multiplier never moves a slope)."""
    if name.startswith("Thm"):
        return ("c_bracket", "c_tail")
    if name == "Cor 4.1":
        return ("c_bracket", "c_personal", "c_tail") if method == "shared" else ("c_bracket", "c_bias")
    return ()


def _bound_fun(name: str, vary: str, row: pd.Series, method: str = "shared", **consts):
    """The bound as a function of the varied parameter, other parameters from the sweep's rows;
    consts: the per-term constants of :func:`_bound_constants` (default 1)."""
    def f(x):
        a = _cfg_args(row, vary, x)
        if name == "Thm 4.1 (tail inside root)":
            return bounds.dist_bound(**a, placement="inside", **consts)
        if name == "Thm B.1 (tail outside root)":
            return bounds.dist_bound(**a, placement="outside", **consts)
        if name == "Cor 4.1":  # each method's own class (theory.bounds.gap_bound_class)
            return bounds.gap_bound_class(method, **a, **consts)
        if name == "Prop 1 (dim log(N Np)/(N Np))":
            return _prop1_rate(a, method)
        raise KeyError(name)
    return f


def predicted_slopes(name: str, vary: str, row: pd.Series, method: str, x: np.ndarray):
    """(slope with every constant 1, lowest and highest slope over CONSTANT_FACTORS^terms)."""
    def slope(**consts):
        return loglog_slope(x, np.array([float(_bound_fun(name, vary, row, method, **consts)(v))
                                         for v in x]))

    names = _bound_constants(name, method)
    found = [slope(**dict(zip(names, combo)))
             for combo in itertools.product(CONSTANT_FACTORS, repeat=len(names))]
    return slope(), float(np.nanmin(found)), float(np.nanmax(found))


def bound_label(name: str, method: str) -> str:
    """The bound column: Cor 4.1 for `shared`, the class analogue for the other methods."""
    if name == "Cor 4.1" and method != "shared":
        return f"Cor 4.1 form, {bounds.METHOD_CLASSES[method]} class"
    return name


#: (quantity, methods, bound) checked for each varied parameter.
CHECKS = {
    "Np": [("dist", ("shared",), "Thm 4.1 (tail inside root)"),
           ("est_err", ("shared", "local", "full"), "Prop 1 (dim log(N Np)/(N Np))"),
           ("gap_pess", ("shared", "local", "full", "global"), "Cor 4.1"),
           ("gap_vanilla", ("shared",), "Cor 4.1")],
    "nu": [("dist", ("shared",), "Thm 4.1 (tail inside root)"),
           ("gap_pess", ("shared",), "Cor 4.1")],
    "N": [("dist", ("shared",), "Thm 4.1 (tail inside root)"),
          ("est_err", ("shared", "local", "full"), "Prop 1 (dim log(N Np)/(N Np))"),
          ("gap_pess", ("shared",), "Cor 4.1")],
    "tail": [("dist", ("shared",), "Thm 4.1 (tail inside root)"),
             ("dist", ("shared",), "Thm B.1 (tail outside root)"),
             ("gap_pess", ("shared",), "Cor 4.1")],
    "k": [("dist", ("shared",), "Thm 4.1 (tail inside root)"),
          ("est_err", ("shared", "local", "full"), "Prop 1 (dim log(N Np)/(N Np))")],
    "d1": [("dist", ("shared",), "Thm 4.1 (tail inside root)"),
           ("est_err", ("shared", "local", "full"), "Prop 1 (dim log(N Np)/(N Np))"),
           ("gap_pess", ("shared", "full"), "Cor 4.1")],
}


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """OLS slope of log y on log x (NaN when fewer than two finite positive points)."""
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _ols_slopes(lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """OLS slopes of each column of ly (n, m) on lx (n,)."""
    xc = lx - lx.mean()
    return xc @ (ly - ly.mean(axis=0)) / (xc @ xc)


def slope_with_ci(table: pd.DataFrame, rng: np.random.Generator) -> tuple[float, float, float]:
    """table: index = grid value, columns = seed, entries = the quantity. Slope of the seed
    median; CI from resampling seeds with replacement (paired across grid values)."""
    x = table.index.to_numpy(dtype=float)
    y = table.to_numpy(dtype=float)
    slope = loglog_slope(x, np.nanmedian(y, axis=1))
    idx = rng.integers(0, y.shape[1], size=(N_BOOT, y.shape[1]))
    with np.errstate(all="ignore"):
        med = np.nanmedian(y[:, idx], axis=2)  # (grid, N_BOOT)
    clean = np.all((med > 0) & np.isfinite(med), axis=0) & np.all(x > 0)
    boots = np.full(N_BOOT, np.nan)
    if clean.any():  # vectorised OLS; the few draws with a bad median go through loglog_slope
        boots[clean] = _ols_slopes(np.log(x), np.log(med[:, clean]))
    boots[~clean] = [loglog_slope(x, med[:, b]) for b in np.flatnonzero(~clean)]
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return slope, float("nan"), float("nan")
    lo, hi = np.quantile(boots, [(1 - CI) / 2, (1 + CI) / 2])
    return slope, float(lo), float(hi)


def verdict(pred: float, lo: float, hi: float) -> str:
    """agrees: pred in CI; steeper: |measured| exceeds |predicted| (for a decay: faster decay,
    the bound is loose there); shallower: |measured| below |predicted|."""
    if not np.all(np.isfinite([pred, lo, hi])):
        return "undetermined"
    if lo <= pred <= hi:
        return "agrees"
    measured_above = lo > pred
    return "steeper" if measured_above == (pred > 0) else "shallower"


def compute_slopes(runs: pd.DataFrame, vary: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    if vary == "Np_new":  # held-out users (extension): sim/experiments/new_user_analysis.py
        from sim.experiments.new_user_analysis import new_user_slopes

        return pd.DataFrame(new_user_slopes(runs, rng), columns=SLOPE_COLUMNS)
    rows = []
    first = runs.iloc[0]
    for quantity, methods, bound in CHECKS[vary]:
        for method in methods:
            sub = runs[runs["method"] == method]
            if sub.empty or sub[quantity].isna().all():
                continue
            table = sub.pivot_table(index="value", columns="seed", values=quantity, aggfunc="first")
            slope, lo, hi = slope_with_ci(table, rng)
            x = table.index.to_numpy(dtype=float)
            pred, p_lo, p_hi = predicted_slopes(bound, vary, first, method, x)
            rows.append(dict(quantity=quantity, vary=vary, predicted_slope=pred, measured_slope=slope,
                             ci_low=lo, ci_high=hi, n_points=len(x), verdict=verdict(pred, lo, hi),
                             constant_free=bool(p_hi - p_lo <= CONSTANT_FREE_TOL),
                             pred_low=p_lo, pred_high=p_hi, method=method,
                             bound=bound_label(bound, method)))
    return pd.DataFrame(rows, columns=SLOPE_COLUMNS)


def bracketing_table(runs: pd.DataFrame) -> pd.DataFrame:
    """est_err * N * Np / dim per class (Proposition 1's "bracketing" check), seed medians."""
    out = []
    for method in ("shared", "local", "full"):
        sub = runs[runs["method"] == method]
        if sub.empty:
            continue
        dim = np.array([bounds.class_dimension(method, n, d1, d2, k)
                        for n, d1, d2, k in sub[["N", "d1", "d2", "k"]].itertuples(index=False)])
        ratio = sub["est_err"] * sub["N"] * sub["Np"] / dim
        med = ratio.groupby(sub["value"]).median()
        out.append(med.rename(method))
    return pd.concat(out, axis=1) if out else pd.DataFrame()


def write_analysis(runs: pd.DataFrame, vary: str, out: Path) -> pd.DataFrame:
    slopes = compute_slopes(runs, vary)
    tmp = out / "slopes.csv.tmp"
    slopes.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(out / "slopes.csv")
    extra = None
    if vary == "Np_new":  # crossover.csv, comparison.csv; summary.md shows the same tables
        from sim.experiments.new_user_analysis import tables

        extra = tables(runs)
        for name, table in extra.items():
            table.to_csv(out / f"{name}.csv.tmp", index=False, float_format="%.6g")
            (out / f"{name}.csv.tmp").replace(out / f"{name}.csv")
    (out / "summary.md").write_text(summary_markdown(runs, slopes, vary, extra))
    return slopes


def _md(df: pd.DataFrame, floatfmt=".4g") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(runs: pd.DataFrame, slopes: pd.DataFrame, vary: str,
                     extra: dict | None = None) -> str:
    """summary.md of a sweep; ``extra``: a Np_new sweep's new_user_analysis.tables (computed
    here when None)."""
    seeds = runs["seed"].nunique()
    cols = ["dist", "est_err", "gap_pess", "gap_vanilla", "coverage", "acc_heldout"]
    if vary == "Np_new":
        cols = ["dist", "est_err_new", "floor_new", "pred_err_new", "gap_pess_new",
                "gap_vanilla_new", "coverage_new"]
    med = runs.groupby(["method", "value"])[cols].median().reset_index()
    parts = [
        f"# Sweep over `{vary}`",
        "",
        f"{len(runs)} runs: {runs['value'].nunique()} values x {seeds} seeds x "
        f"{runs['method'].nunique()} methods. Medians over seeds; slopes are OLS fits of log median "
        f"against log {vary}, 95% CI by resampling seeds ({N_BOOT} bootstrap draws).",
        "Verdict: `agrees` = predicted slope inside the CI; `steeper` = |measured slope| larger "
        "than the bound's (for a decay: the data decay faster, the bound is loose there); "
        "`shallower` = smaller (the bound fails, or the regime is not yet asymptotic). "
        "`predicted_slope` has every constant of the bound set to 1; `pred_low`..`pred_high` is "
        f"the range when each term's constant is scaled by {CONSTANT_FACTORS}; `constant_free` "
        "is true when that range is narrower than "
        f"{CONSTANT_FREE_TOL}. A row with constant_free = False is not a confirmation, "
        "whatever its verdict.",
        "",
        "## Slopes",
        "",
        _md(slopes.drop(columns=["vary"])),
        "",
        "## Seed medians",
        "",
        _md(med),
    ]
    if vary == "d1":
        from sim.experiments.remark3 import remark3_markdown

        parts += ["", "## Sample complexity (Remark 3)", "", remark3_markdown(runs)]
    if vary == "Np_new":
        from sim.experiments.new_user_analysis import markdown, tables

        parts += ["", markdown(extra if extra is not None else tables(runs))]
    if vary in ("Np", "N", "k", "d1"):
        parts += ["", "## Bracketing check (Proposition 1)", "",
                  "Median of est_err * N * Np / dim, dim = k(d1+N d2) (shared), N k(d1+d2) (local), "
                  "N d1 d2 (full). Roughly equal columns mean the error tracks the class dimension.",
                  "", _md(bracketing_table(runs).reset_index())]
    return "\n".join(parts) + "\n"
