"""Analysis of a `--vary Np_new` sweep (held-out users, extension, issue 18): slopes of
est_err_new against the new-user rates of theory/new_user.py, the frozen basis' floor against
the one predicted from the measured dist, where `shared` beats a from-scratch fit (paired
differences with 95% CIs) and the crossover n_new. Pure pandas/numpy; used by sim/experiments/analysis.py."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from sim.experiments.analysis import (
    CI,
    CONSTANT_FACTORS,
    CONSTANT_FREE_TOL,
    N_BOOT,
    _md,
    loglog_slope,
    slope_with_ci,
    verdict,
)
from sim.experiments.new_users import FROZEN, SCRATCH
from theory import bounds, new_user

#: An est_err_new point is estimation-dominated when k d2 / n >= ESTIMATION_FACTOR * floor
#: (constants 1, floor predicted from the measured dist): theory.new_user.estimation_dominated.
ESTIMATION_FACTOR = 4.0
#: Row order of the slopes of a Np_new sweep.
ORDER = ("oracle", "shared", "nuclear", "local", "full")


def _table(runs: pd.DataFrame, method: str, col: str = "est_err_new") -> pd.DataFrame:
    sub = runs[runs["method"] == method]
    return sub.pivot_table(index="value", columns="seed", values=col, aggfunc="first")


def _truth_terms(row: pd.Series) -> tuple[float, float]:
    """(head energy k nu, user tail Sigma_tail / N) of every new user (sim/experiments/new_users.py)."""
    return float(row["k"] * row["nu"]), float(row["tail"] / row["N"])


def predicted_floor(runs: pd.DataFrame, method: str) -> float:
    """theory.new_user.representation_floor at c_rep = 1 from the method's median measured dist."""
    sub = runs[runs["method"] == method]
    head, tail = _truth_terms(sub.iloc[0])
    dist = 0.0 if method == "oracle" else float(sub["dist"].median())
    return float(new_user.representation_floor(dist, head, int(sub["k"].iloc[0]), tail))


def _scratch_dim(method: str, row: pd.Series) -> int:
    return bounds.class_dimension(method, 1, int(row["d1"]), int(row["d2"]), int(row["k"]))


def _curve(method: str, row: pd.Series, floor: float, c_est: float, c_rep: float):
    k, d2 = int(row["k"]), int(row["d2"])
    if method in SCRATCH:
        return lambda x: new_user.from_scratch_error(x, _scratch_dim(method, row), c_est)
    return lambda x: c_est * k * d2 / np.asarray(x, dtype=float) + c_rep * floor


def _pred_slopes(method, row, floor, x):
    one = loglog_slope(x, _curve(method, row, floor, 1.0, 1.0)(x))
    found = [loglog_slope(x, _curve(method, row, floor, a, b)(x))
             for a, b in itertools.product(CONSTANT_FACTORS, repeat=2)]
    return one, float(np.nanmin(found)), float(np.nanmax(found))


def new_user_slopes(runs: pd.DataFrame, rng: np.random.Generator) -> list[dict]:
    """slopes.csv rows of a Np_new sweep (columns of sim.experiments.analysis.SLOPE_COLUMNS)."""
    rows = []
    methods = [m for m in ORDER if m in set(runs["method"])]
    for method in methods:
        table = _table(runs, method)
        if table.isna().all().all():
            continue
        row = runs[runs["method"] == method].iloc[0]
        floor = predicted_floor(runs, method) if method in FROZEN else 0.0
        x = table.index.to_numpy(dtype=float)
        if method in ("shared", "nuclear"):
            keep = new_user.estimation_dominated(x, int(row["k"]), int(row["d2"]), floor,
                                                 factor=ESTIMATION_FACTOR)
            table, x = table[keep], x[keep]
            bound = f"k d2/n + floor, estimation range (k d2/n >= {ESTIMATION_FACTOR:g} floor)"
        elif method == "oracle":
            bound = "k d2/n + tail_new (frozen B⋄)"
        else:
            bound = f"{'d1 d2' if method == 'full' else 'k(d1+d2-k)'}/n (from scratch)"
        if len(x) < 2:
            continue
        slope, lo, hi = slope_with_ci(table, rng)
        pred, p_lo, p_hi = _pred_slopes(method, row, floor, x)
        rows.append(dict(quantity="est_err_new", vary="Np_new", predicted_slope=pred,
                         measured_slope=slope, ci_low=lo, ci_high=hi, n_points=len(x),
                         verdict=verdict(pred, lo, hi),
                         constant_free=bool(p_hi - p_lo <= CONSTANT_FREE_TOL), pred_low=p_lo,
                         pred_high=p_hi, method=method, bound=bound))
    for method in ("shared", "nuclear"):
        if method not in set(runs["method"]):
            continue
        table = _table(runs, method)
        _, f, f_lo, f_hi = fit_floor(table, rng)
        pred = predicted_floor(runs, method)
        v = ("agrees" if f_lo <= pred <= f_hi else "above (c_rep > 1)" if f_lo > pred
             else "below (contradicts the lower bound)")
        rows.append(dict(quantity="est_err_new floor", vary="Np_new", predicted_slope=pred,
                         measured_slope=f, ci_low=f_lo, ci_high=f_hi, n_points=len(table),
                         verdict=v, constant_free=False, pred_low=pred,
                         pred_high=pred * CONSTANT_FACTOR_MAX, method=method,
                         bound="level, not slope: nu dist^2 + tail/N (c_rep >= 1)"))
    return rows


#: Upper end of the floor's unknown constant c_rep (as the slopes' CONSTANT_FACTORS).
CONSTANT_FACTOR_MAX = 1e3


def _fit_a_f(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """a, f >= 0 minimising sum ((a / x + f) / y - 1)^2 (relative least squares, NNLS)."""
    ok = np.isfinite(y) & (y > 0)
    A = np.column_stack([1.0 / (x[ok] * y[ok]), 1.0 / y[ok]])
    (a, f), _ = nnls(A, np.ones(ok.sum()))
    return float(a), float(f)


def fit_floor(table: pd.DataFrame, rng: np.random.Generator):
    """(a, f, f_low, f_high): est_err_new ~ a / n + f fitted to the seed medians; 95% CI of f by
    resampling seeds."""
    x = table.index.to_numpy(dtype=float)
    y = table.to_numpy(dtype=float)
    a, f = _fit_a_f(x, np.nanmedian(y, axis=1))
    idx = rng.integers(0, y.shape[1], size=(N_BOOT, y.shape[1]))
    with np.errstate(all="ignore"):
        boots = [_fit_a_f(x, np.nanmedian(y[:, i], axis=1))[1] for i in idx]
    lo, hi = np.quantile(boots, [(1 - CI) / 2, (1 + CI) / 2])
    return a, f, float(lo), float(hi)


def _crossing(x: np.ndarray, diff: np.ndarray) -> float:
    """First n where diff = err_scratch - err_shared turns <= 0, log-linearly interpolated in n
    between grid points; inf if it never does on the grid, x[0] if it already is at x[0]."""
    below = np.flatnonzero(diff <= 0)
    if below.size == 0:
        return float("inf")
    j = int(below[0])
    if j == 0:
        return float(x[0])
    t = diff[j - 1] / (diff[j - 1] - diff[j])
    return float(np.exp(np.log(x[j - 1]) + t * (np.log(x[j]) - np.log(x[j - 1]))))


def _quantiles(v: np.ndarray) -> tuple[float, float]:
    """The CI's order statistics of v (which may hold inf: no crossing on the grid)."""
    v = np.sort(v)
    i = np.clip(np.round(np.array([(1 - CI) / 2, (1 + CI) / 2]) * (v.size - 1)).astype(int), 0,
                v.size - 1)
    return float(v[i[0]]), float(v[i[1]])


def crossover_table(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per from-scratch method: the measured crossover n_new (seed medians, 95% CI by resampling
    seeds) where it catches `shared`, against theory.new_user.crossover_n with (a) every constant
    1 and (b) the constants of the two fitted curves a / n + f."""
    if "shared" not in set(runs["method"]):
        return pd.DataFrame()
    rng = np.random.default_rng(seed)
    sh = _table(runs, "shared")
    x = sh.index.to_numpy(dtype=float)
    row = runs.iloc[0]
    a_s, f_s = _fit_a_f(x, np.nanmedian(sh.to_numpy(dtype=float), axis=1))
    floor = predicted_floor(runs, "shared")
    out = []
    for m in SCRATCH:
        if m not in set(runs["method"]):
            continue
        sc = _table(runs, m).reindex(index=sh.index, columns=sh.columns)
        ys, ym = sh.to_numpy(dtype=float), sc.to_numpy(dtype=float)
        meas = _crossing(x, np.nanmedian(ym, axis=1) - np.nanmedian(ys, axis=1))
        idx = rng.integers(0, ys.shape[1], size=(N_BOOT, ys.shape[1]))
        boots = np.array([_crossing(x, np.nanmedian(ym[:, i], axis=1) - np.nanmedian(ys[:, i], axis=1))
                          for i in idx])
        lo, hi = _quantiles(boots)
        dim = _scratch_dim(m, row)
        a_m, f_m = _fit_a_f(x, np.nanmedian(ym, axis=1))
        fitted = (a_m - a_s) / (f_s - f_m) if f_s > f_m and a_m > a_s else float("inf")
        out.append(dict(method=m, dim_scratch=dim, k_d2=int(row["k"] * row["d2"]),
                        floor_predicted=floor, crossover_theory_c1=new_user.crossover_n(
                            int(row["k"]), int(row["d2"]), dim, floor),
                        a_shared=a_s, floor_fitted=f_s, a_scratch=a_m, floor_scratch=f_m,
                        crossover_fitted_curves=fitted, crossover_measured=meas,
                        ci_low=float(lo), ci_high=float(hi), grid_max=float(x.max())))
    return pd.DataFrame(out)


def comparison_table(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per Np_new: seed medians of est_err_new per method, and the mean paired difference
    (scratch - shared) with a 95% bootstrap CI over seeds (> 0: the frozen basis is better)."""
    rng = np.random.default_rng(seed)
    methods = [m for m in ("oracle", "shared", "nuclear", "local", "full", "global", "zero")
               if m in set(runs["method"])]
    med = runs.groupby(["value", "method"])["est_err_new"].median().unstack()[methods]
    out = med.rename(columns=lambda m: f"median {m}")
    if "shared" in methods:
        sh = _table(runs, "shared")
        for m in [m for m in SCRATCH if m in methods]:
            d = (_table(runs, m) - sh).to_numpy(dtype=float)
            idx = rng.integers(0, d.shape[1], size=(N_BOOT, d.shape[1]))
            boots = np.nanmean(d[:, idx], axis=2)
            out[f"{m} − shared"] = np.nanmean(d, axis=1)
            out[f"{m} − shared low"] = np.quantile(boots, (1 - CI) / 2, axis=1)
            out[f"{m} − shared high"] = np.quantile(boots, (1 + CI) / 2, axis=1)
    return out.reset_index().rename(columns={"value": "Np_new"})


def tables(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables a Np_new sweep writes next to slopes.csv: {file stem: table}."""
    return {"crossover": crossover_table(runs), "comparison": comparison_table(runs)}


def markdown(tabs: dict[str, pd.DataFrame]) -> str:
    """The summary.md section of a Np_new sweep from its :func:`tables`."""
    cross, comp = tabs["crossover"], tabs["comparison"]
    return "\n".join([
        "## New users: est_err_new per method, paired differences (95% CI over seeds)", "",
        _md(comp), "",
        "## Crossover n_new (from-scratch fit catches `shared`)", "",
        "theory_c1: theory.new_user.crossover_n with every constant 1 and the floor predicted from "
        "the median measured dist (c_rep = 1); fitted_curves: the crossing of a/n + f fitted to "
        "each method's medians; measured: first crossing of the seed medians on the grid "
        "(inf: none on the grid).", "",
        _md(cross) if len(cross) else "(needs `shared` and a from-scratch method)",
    ])
