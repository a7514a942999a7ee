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
    if vary == "Np_new":  # held-out users (extension): sim/new_user_analysis.py
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


#: A measured est_err rate above this (in N_p) is "not decaying": no N_p needed is extrapolated.
MIN_DECAY = -0.1


def _np_needed(e1: float, e2: float, np1: float, np2: float, target: float) -> tuple[float, str]:
    """N_p at which est_err reaches target, by the log-log line through (np1, e1), (np2, e2)
    (rate 1/N_p when e2 is NaN); how it was obtained."""
    if not np.isfinite(e2):
        return np1 * e1 / target, "assumed 1/N_p"
    rate = np.log(e2 / e1) / np.log(np2 / np1)
    if rate > MIN_DECAY:  # no usable rate: the method is not in a decaying regime yet
        return float("inf"), "not decaying"
    anchor, e_anchor = (np1, e1) if target >= e2 else (np2, e2)
    need = anchor * (target / e_anchor) ** (1 / rate)
    how = "interpolated" if e2 <= target <= e1 else (
        "extrapolated below grid" if target > e1 else "extrapolated above grid")
    return float(need), how


def remark3_table(runs: pd.DataFrame, runs_hi: pd.DataFrame | None = None) -> pd.DataFrame:
    """Remark 3: N_p each of `shared` and `full` needs to reach a target est_err, per d1.

    Target: the best seed-median est_err of `full` at the lower N_p (a level both methods can
    reach), over the seeds of ``runs_hi`` when given. With ``runs_hi`` (the same d1 grid and seeds at a higher N_p) each method is
    interpolated / extrapolated along its *own* measured rate between the two N_p; without it
    the 1/N_p rate of Proposition 1 is assumed and the table says so.
    """
    if runs_hi is not None:  # the same seeds at both N_p (common random numbers)
        runs = runs[runs["seed"].isin(runs_hi["seed"].unique())]
    med = runs.groupby(["method", "value"])["est_err"].median().unstack(0)
    if not {"shared", "full"} <= set(med.columns):
        raise ValueError("Remark 3 needs `shared` and `full` runs")
    r = runs.iloc[0]
    np1 = float(r["Np"])
    hi, np2 = None, float("nan")
    if runs_hi is not None:
        hi = runs_hi.groupby(["method", "value"])["est_err"].median().unstack(0)
        np2 = float(runs_hi["Np"].iloc[0])
        if not np2 > np1:
            raise ValueError(f"runs_hi must be at a higher N_p than {np1:g}, got {np2:g}")
    target = float(med["full"].min())
    rows = []
    for d1 in med.index:
        row = {"d1": int(d1)}
        for m in ("shared", "full"):
            e1 = float(med.loc[d1, m])
            e2 = float(hi.loc[d1, m]) if hi is not None and d1 in hi.index else float("nan")
            need, how = _np_needed(e1, e2, np1, np2, target)
            rate = np.log(e2 / e1) / np.log(np2 / np1) if np.isfinite(e2) else -1.0
            row |= {f"est_err {m} (Np={np1:g})": e1, f"est_err {m} (Np={np2:g})": e2,
                    f"rate {m}": rate, f"Np_needed {m}": need, f"how {m}": how}
        row["Remark 3 shared (d1k+Nd2k)/N"] = (d1 * r["k"] + r["N"] * r["d2"] * r["k"]) / r["N"]
        row["Remark 3 full d1 d2"] = d1 * r["d2"]
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["target"] = target
    return table.dropna(axis=1, how="all")


def remark3_markdown(runs: pd.DataFrame, runs_hi: pd.DataFrame | None = None) -> str:
    """The Remark 3 table with the d1-growth slopes of N_p needed against Remark 3's orders."""
    try:
        table = remark3_table(runs, runs_hi)
    except ValueError as e:
        return f"({e})"
    d1 = table["d1"].to_numpy(dtype=float)
    growth = []
    for m, pred in (("shared", "Remark 3 shared (d1k+Nd2k)/N"), ("full", "Remark 3 full d1 d2")):
        need = table[f"Np_needed {m}"].to_numpy(dtype=float)
        ok = np.isfinite(need)
        span = "" if ok.all() else f" over d1 = {', '.join(f'{v:g}' for v in d1[ok])} (not decaying elsewhere)"
        growth.append(f"`{m}`: N_p needed grows like d1^{loglog_slope(d1[ok], need[ok]):.2f}{span} "
                      f"(Remark 3: d1^{loglog_slope(d1[ok], table[pred].to_numpy(dtype=float)[ok]):.2f})")
    rates = "each method's own measured rate between the two N_p" if runs_hi is not None else \
        "the 1/N_p rate of Proposition 1 (assumed: no higher-N_p run given)"
    lines = [f"Target est_err = {table.attrs['target']:.4g} (the best median of `full` on this grid "
             f"at N_p = {int(runs['Np'].iloc[0])}); N_p needed along {rates}. Remark 3's orders "
             "are shown up to their unknown constants: compare growth with d1, not levels.",
             "", _md(table), "", "; ".join(growth) + "."]
    return "\n".join(lines)


def write_analysis(runs: pd.DataFrame, vary: str, out: Path) -> pd.DataFrame:
    slopes = compute_slopes(runs, vary)
    tmp = out / "slopes.csv.tmp"
    slopes.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(out / "slopes.csv")
    if vary == "Np_new":
        from sim.experiments.new_user_analysis import crossover_table

        crossover_table(runs).to_csv(out / "crossover.csv.tmp", index=False, float_format="%.6g")
        (out / "crossover.csv.tmp").replace(out / "crossover.csv")
    (out / "summary.md").write_text(summary_markdown(runs, slopes, vary))
    return slopes


def _md(df: pd.DataFrame, floatfmt=".4g") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(runs: pd.DataFrame, slopes: pd.DataFrame, vary: str) -> str:
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
        parts += ["", "## Sample complexity (Remark 3)", "", remark3_markdown(runs)]
    if vary == "Np_new":
        from sim.experiments.new_user_analysis import markdown

        parts += ["", markdown(runs, _md)]
    if vary in ("Np", "N", "k", "d1"):
        parts += ["", "## Bracketing check (Proposition 1)", "",
                  "Median of est_err * N * Np / dim, dim = k(d1+N d2) (shared), N k(d1+d2) (local), "
                  "N d1 d2 (full). Roughly equal columns mean the error tracks the class dimension.",
                  "", _md(bracketing_table(runs).reset_index())]
    return "\n".join(parts) + "\n"
