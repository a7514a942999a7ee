"""est_err_new against Np_new per method (a `--vary Np_new` sweep, held-out users, issue 18):
log-log, seed medians with 95% bootstrap CI bands of the median, the floor predicted from
`shared`'s measured dist (theory/new_user.py, c_rep = 1) and a 1/n reference."""

from __future__ import annotations

import numpy as np
import pandas as pd

from figures.sim_plots import COLORS, MARKERS, STYLES, plt

N_BOOT = 2000


def median_ci(table: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, low, high) per row of table (index = grid value, columns = seeds): 95% CI of the
    seed median by resampling seeds."""
    y = table.to_numpy(dtype=float)
    idx = np.random.default_rng(seed).integers(0, y.shape[1], size=(N_BOOT, y.shape[1]))
    boots = np.nanmedian(y[:, idx], axis=2)
    lo, hi = np.nanquantile(boots, [0.025, 0.975], axis=1)
    return np.nanmedian(y, axis=1), lo, hi


def plot_new_users(runs: pd.DataFrame, floor: float | None = None):
    """Figure of est_err_new vs Np_new; ``floor``: the predicted floor of `shared` (a dotted
    line). Returns (fig, ax)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    order = [m for m in ("oracle", "shared", "nuclear", "local", "full", "global", "zero")
             if m in set(runs["method"])]
    x = None
    for method in order:
        table = runs[runs["method"] == method].pivot_table(index="value", columns="seed",
                                                           values="est_err_new", aggfunc="first")
        x = table.index.to_numpy(dtype=float)
        med, lo, hi = median_ci(table)
        c = COLORS.get(method)
        ax.plot(x, med, marker=MARKERS.get(method, "o"), ls=STYLES.get(method, "-"), color=c,
                label=method, lw=1.5, ms=4)
        ax.fill_between(x, lo, hi, color=c, alpha=0.2, lw=0)
    if x is not None:
        first = runs[runs["method"] == order[0]]
        ref = float(first.loc[first["value"] == x[0], "est_err_new"].median())
        ax.plot(x, ref * x[0] / x, ":", color="0.3", lw=1, label="slope −1")
    if floor is not None and np.isfinite(floor) and floor > 0:
        ax.axhline(floor, color=COLORS["shared"], ls=(0, (1, 3)), lw=1.2,
                   label=f"predicted floor of shared ν dist² + tail/N = {floor:.3g}")
    r = runs.iloc[0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Np_new (comparisons per new user)")
    ax.set_ylabel("(1/N_new) Σ ||ΔΘ̂_new − ΔΘ*_new||²_F")
    ax.set_title(f"new users: N_new={int(r['N_new'])}, trained on N={int(r['N'])}, "
                 f"N_p={int(r['Np'])}; {runs['seed'].nunique()} seeds, 95% CI", fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    return fig, ax
