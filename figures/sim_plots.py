"""Log-log scaling figures of a sweep directory (runs.csv + slopes.csv -> PNG and PDF).

One figure per check of sim/experiments/analysis.py: seed median per method with a 25-75% band, the fitted
line, and the paper bound's reference slope anchored at the first median point.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter  # noqa: E402

from figures._save import save_png_pdf  # noqa: E402

COLORS = {"shared": "C0", "local": "C1", "full": "C2", "global": "C3", "nuclear": "C4",
          "zero": "0.5", "oracle": "k"}
# Distinct markers and line styles, and a small horizontal offset per method (DODGE, a factor
# on the log axis), so that methods with equal values never hide one another.
MARKERS = {"shared": "o", "local": "s", "full": "^", "global": "D", "nuclear": "v",
           "zero": "x", "oracle": "*"}
STYLES = {"shared": "-", "local": "--", "full": "-.", "global": ":", "nuclear": "-",
          "zero": ":", "oracle": "--"}
DODGE = 0.025
LABELS = {"dist": "dist(B-hat, B-diamond)", "est_err": "(1/N) sum ||dTheta-hat_i - dTheta*_i||_F^2",
          "gap_pess": "mean value gap, pessimistic", "gap_vanilla": "mean value gap, plug-in",
          "coverage": "coverage of Delta Theta*_i by R_i",
          "gap_pess_new": "new users: mean value gap, pessimistic",
          "gap_vanilla_new": "new users: mean value gap, plug-in",
          "coverage_new": "new users: coverage of Delta Theta*_new"}
VARY_LABELS = {"nu": "nu = sigma_k^2 / N", "tail": "Sigma_tail", "Np": "N_p (comparisons per user)",
               "N": "N (users)", "k": "k (rank)", "d1": "d1",
               "Np_new": "Np_new (comparisons per new user)"}


def plot_quantity(runs: pd.DataFrame, slopes: pd.DataFrame, quantity: str, vary: str):
    """Figure of one quantity against the varied parameter; returns (fig, ax)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    rows = slopes[slopes["quantity"] == quantity]
    shown = [m for m in runs["method"].unique() if not runs.loc[runs["method"] == m, quantity].isna().all()]
    for j, method in enumerate(shown):
        sub = runs[runs["method"] == method]
        g = sub.groupby("value")[quantity]
        x = g.median().index.to_numpy(dtype=float)
        xd = x * (1 + DODGE) ** (j - (len(shown) - 1) / 2)
        med, lo, hi = g.median().to_numpy(), g.quantile(0.25).to_numpy(), g.quantile(0.75).to_numpy()
        c = COLORS.get(method, None)
        ax.plot(xd, med, marker=MARKERS.get(method, "o"), ls=STYLES.get(method, "-"), color=c,
                label=method, lw=1.5, ms=4, mfc="none" if j % 2 else c)
        ax.fill_between(xd, lo, hi, color=c, alpha=0.18, lw=0)
        for _, s in rows[rows["method"] == method].iterrows():
            if not np.isfinite(s["measured_slope"]) or np.any(med <= 0):
                continue
            gm = np.exp(np.mean(np.log(med)) - s["measured_slope"] * np.mean(np.log(x)))
            ax.plot(x, gm * x ** s["measured_slope"], "-", color=c, lw=0.8, alpha=0.7)
            ax.plot(x, med[0] * (x / x[0]) ** s["predicted_slope"], ":", color="k", lw=1.2,
                    label=f"{s['bound']}: slope {s['predicted_slope']:.2f} (fit {method} "
                          f"{s['measured_slope']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}])")
    ax.set_xscale("log")
    ax.set_yscale("log")
    grid = np.sort(runs["value"].unique().astype(float))
    ax.xaxis.set_major_locator(FixedLocator(grid))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{v:g}" for v in grid]))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(VARY_LABELS.get(vary, vary))
    ax.set_ylabel(LABELS.get(quantity, quantity))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=6.5, loc="best")
    fig.tight_layout()
    return fig, ax


def make_sweep_figures(result_dir: Path, tables=None) -> list[Path]:
    """Write <quantity>_vs_<vary>.png/.pdf for every quantity checked in slopes.csv;
    ``tables``: (runs, slopes) already read by figures.inputs (read here if None)."""
    from figures.inputs import load_runs, load_slopes

    result_dir = Path(result_dir)
    runs, slopes = tables or (load_runs(result_dir), load_slopes(result_dir))
    vary = str(runs["vary"].iloc[0])
    written = []
    extra = ["gap_vanilla", "coverage"]
    if vary == "Np_new":  # held-out users: their own curves, not the training users'
        from figures.new_user_plots import plot_new_users

        floor = slopes.loc[(slopes["quantity"] == "est_err_new floor")
                           & (slopes["method"] == "shared"), "predicted_slope"]
        fig, _ = plot_new_users(runs, float(floor.iloc[0]) if len(floor) else None)
        written += save_png_pdf(fig, result_dir / f"est_err_new_vs_{vary}")
        slopes = slopes[slopes["quantity"] != "est_err_new"]
        extra = ["gap_pess_new", "gap_vanilla_new", "coverage_new"]
    for quantity in list(dict.fromkeys(list(slopes["quantity"]) + extra)):
        if quantity not in runs or runs[quantity].isna().all():
            continue
        fig, _ = plot_quantity(runs, slopes, quantity, vary)
        written += save_png_pdf(fig, result_dir / f"{quantity}_vs_{vary}")
    return written


def make_study_figure(result_dir: Path) -> list[Path]:
    """Pessimism study (``python -m sim.algorithm1 --study --out DIR``): per behaviour and
    method, the mean value gap of the pessimistic and plug-in policies with their 95% t
    intervals over seeds (study.csv), and mu_ref's own gap (runs.csv) -> pessimism.png/.pdf."""
    from figures.inputs import load_study

    result_dir = Path(result_dir)
    study, runs = load_study(result_dir)
    ref = runs.groupby(["behaviour", "method"])["gap_ref"].mean()
    labels = [f"{b}\n{m}" for b, m in zip(study["behaviour"], study["method"])]
    x = np.arange(len(study))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(study), 3.6))
    for off, col, name in ((-0.2, "gap_pess", "pessimistic (Eq. 3.7)"),
                           (0.2, "gap_vanilla", "plug-in (zeta = 0)")):
        err = np.vstack([study[col] - study[f"{col}_low"], study[f"{col}_high"] - study[col]])
        ax.bar(x + off, study[col], width=0.4, yerr=err, capsize=3, label=name)
    ax.scatter(x, [ref[(b, m)] for b, m in zip(study["behaviour"], study["method"])],
               marker="_", s=600, color="k", label="mu_ref's own gap", zorder=3)
    ax.set_xticks(x, labels)
    ax.set_ylabel("mean value gap J(pi*) - J(pi)")
    first = runs.iloc[0]
    radius = first["radius"] + (f" (c={first['zeta_c']:g})" if first["radius"] == "theory" else "")
    ax.set_title(f"Np={first['Np']}, radius={radius}, set={first.get('confidence_set', 'ball')}, "
                 f"{int(study['seeds'].iloc[0])} seeds (95% t intervals)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png_pdf(fig, result_dir / "pessimism")
