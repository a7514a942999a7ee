"""Scaling checks of a sweep: log-log slopes of seed medians with bootstrap CIs, compared with
the local slope of the paper's bound on the same grid (Theorem 4.1 / B.1 with Proposition 1,
Corollary 4.1, and the Np^-1 rate of the MLE behind Proposition 1). Writes slopes.csv and
summary.md; pure pandas/numpy (figures are drawn by figures/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from theory import bounds

N_BOOT = 2000
CI = 0.95

SLOPE_COLUMNS = ["quantity", "vary", "predicted_slope", "measured_slope", "ci_low", "ci_high",
                 "n_points", "verdict", "method", "bound"]


def _cfg_args(row: pd.Series, vary: str, x):
    args = dict(N=row["N"], Np=row["Np"], nu=row["nu"], tail=row["tail"], d1=row["d1"],
                d2=row["d2"], k=row["k"], delta=row["delta"])
    args[vary] = x
    return args


def _bound_fun(name: str, vary: str, row: pd.Series, method: str = "shared"):
    """The bound as a function of the varied parameter, other parameters from the sweep's rows."""
    def f(x):
        a = _cfg_args(row, vary, x)
        if name == "Thm 4.1 (tail inside root)":
            return bounds.dist_bound(**a, placement="inside")
        if name == "Thm B.1 (tail outside root)":
            return bounds.dist_bound(**a, placement="outside")
        if name == "Cor 4.1":
            return bounds.gap_bound_average(**a)
        if name == "Prop 1 (dim log(N Np)/(N Np))":
            dim = bounds.class_dimension(method, a["N"], a["d1"], a["d2"], a["k"])
            return dim * np.log(a["N"] * a["Np"] / a["delta"]) / (a["N"] * a["Np"])
        raise KeyError(name)
    return f


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


def slope_with_ci(table: pd.DataFrame, rng: np.random.Generator) -> tuple[float, float, float]:
    """table: index = grid value, columns = seed, entries = the quantity. Slope of the seed
    median; CI from resampling seeds with replacement (paired across grid values)."""
    x = table.index.to_numpy(dtype=float)
    y = table.to_numpy(dtype=float)
    slope = loglog_slope(x, np.nanmedian(y, axis=1))
    idx = rng.integers(0, y.shape[1], size=(N_BOOT, y.shape[1]))
    boots = np.array([loglog_slope(x, np.nanmedian(y[:, i], axis=1)) for i in idx])
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
            pred = loglog_slope(x, np.array([float(_bound_fun(bound, vary, first, method)(v)) for v in x]))
            rows.append(dict(quantity=quantity, vary=vary, predicted_slope=pred, measured_slope=slope,
                             ci_low=lo, ci_high=hi, n_points=len(x), verdict=verdict(pred, lo, hi),
                             method=method, bound=bound))
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


def remark3_markdown(runs: pd.DataFrame) -> str:
    """N_p needed to reach a target est_err, extrapolated with the 1/N_p rate of Prop. 1.

    In the asymptotic regime est_err ~ C dim / (N N_p), so at a fixed N_p the N_p needed for a
    target error is N_p * est_err / target: its growth in d1 is est_err's. Remark 3 predicts
    (d1 k + N d2 k)/N for `shared` and d1 d2 for `full`.
    """
    med = runs.groupby(["method", "value"])["est_err"].median().unstack(0)
    if not {"shared", "full"} <= set(med.columns):
        return "(needs `shared` and `full`)"
    r = runs.iloc[0]
    target = float(med["full"].min())
    need = med[["shared", "full"]] * r["Np"] / target
    d1 = need.index.to_numpy(dtype=float)
    pred_shared = (d1 * r["k"] + r["N"] * r["d2"] * r["k"]) / r["N"]
    pred_full = d1 * r["d2"]
    table = pd.DataFrame({
        "d1": d1, "Np_needed shared": need["shared"].to_numpy(), "Np_needed full": need["full"].to_numpy(),
        "Remark 3 shared (d1k+Nd2k)/N": pred_shared, "Remark 3 full d1 d2": pred_full,
    })
    lines = [f"Target est_err = {target:.4g} (the best median of `full` on this grid); N_p needed = "
             f"N_p x est_err / target at N_p = {int(r['Np'])}, valid once est_err decays like 1/N_p "
             "(check the Np sweep). Remark 3's orders are shown up to their unknown constants: "
             "compare growth with d1, not levels.", "", _md(table)]
    return "\n".join(lines)


def write_analysis(runs: pd.DataFrame, vary: str, out: Path) -> pd.DataFrame:
    slopes = compute_slopes(runs, vary)
    tmp = out / "slopes.csv.tmp"
    slopes.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(out / "slopes.csv")
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
    med = (runs.groupby(["method", "value"])[["dist", "est_err", "gap_pess", "gap_vanilla",
                                               "coverage", "acc_heldout"]].median().reset_index())
    parts = [
        f"# Sweep over `{vary}`",
        "",
        f"{len(runs)} runs: {runs['value'].nunique()} values x {seeds} seeds x "
        f"{runs['method'].nunique()} methods. Medians over seeds; slopes are OLS fits of log median "
        f"against log {vary}, 95% CI by resampling seeds ({N_BOOT} bootstrap draws).",
        "Verdict: `agrees` = predicted slope inside the CI; `steeper` = |measured slope| larger "
        "than the bound's (for a decay: the data decay faster, the bound is loose there); "
        "`shallower` = smaller (the bound fails, or the regime is not yet asymptotic).",
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
    if vary in ("Np", "N", "k", "d1"):
        parts += ["", "## Bracketing check (Proposition 1)", "",
                  "Median of est_err * N * Np / dim, dim = k(d1+N d2) (shared), N k(d1+d2) (local), "
                  "N d1 d2 (full). Roughly equal columns mean the error tracks the class dimension.",
                  "", _md(bracketing_table(runs).reset_index())]
    return "\n".join(parts) + "\n"
