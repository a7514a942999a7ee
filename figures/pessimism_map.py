"""Heat map of where pessimism helps (``python -m sim.pessimism_map --out DIR``; map.csv).

One panel per (confidence set, method): rows are the instances (default; traps by margin and
rare-action mass), columns N_p; the colour is the mean of gap_pess - gap_vanilla (blue: the
pessimistic policy of Eq. 3.7 has the smaller gap), each cell annotated with the mean and its
paired 95% t interval, in bold where the interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from figures._save import save_png_pdf  # noqa: E402
from figures.inputs import load_map  # noqa: E402

METHOD_ORDER = ("shared", "local", "full", "global")
SET_LABELS = {"ball": "ball (Eq. 3.6)", "sigma_d": "sigma_d ellipsoid"}


def _row_label(r) -> str:
    if r["instance"] != "trap":
        return "default"
    return f"trap m={r['rare']:g}" + ("" if pd.isna(r.get("margin")) else f" (margin {r['margin']:g})")


def plot_map(cells: pd.DataFrame):
    """(fig, axes) of the map; cells: map.csv."""
    cells = cells.assign(row=[_row_label(r) for _, r in cells.iterrows()])
    rows = list(dict.fromkeys(cells.sort_values(["instance", "margin", "rare"], na_position="first")["row"]))
    nps = sorted(cells["Np"].unique())
    sets = [s for s in SET_LABELS if s in set(cells["confidence_set"])]
    present = list(dict.fromkeys(cells["method"]))
    methods = [m for m in METHOD_ORDER if m in present] + [m for m in present if m not in METHOD_ORDER]
    lim = float(np.nanmax(np.abs(cells["diff"]))) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
    fig, axes = plt.subplots(len(sets), len(methods), squeeze=False, layout="constrained",
                             figsize=(2.8 + 2.6 * len(methods), 1.2 + 0.6 * len(rows) * len(sets)))
    for a, cset in enumerate(sets):
        for b, method in enumerate(methods):
            ax = axes[a, b]
            sel = cells[(cells["confidence_set"] == cset) & (cells["method"] == method)]
            grid = np.full((len(rows), len(nps)), np.nan)
            for _, r in sel.iterrows():
                i, j = rows.index(r["row"]), nps.index(r["Np"])
                grid[i, j] = r["diff"]
                bold = r["diff_high"] < 0 or r["diff_low"] > 0
                ax.text(j, i, f"{r['diff']:+.2f}\n[{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]",
                        ha="center", va="center", fontsize=6.5,
                        fontweight="bold" if bold else "normal")
            im = ax.imshow(grid, cmap="RdBu_r", norm=norm, aspect="auto")
            ax.set_xticks(range(len(nps)), [str(n) for n in nps], fontsize=7)
            ax.set_yticks(range(len(rows)), rows if b == 0 else [""] * len(rows), fontsize=7)
            ax.set_title(f"{method}, {SET_LABELS[cset]}", fontsize=8)
            if a == len(sets) - 1:
                ax.set_xlabel("N_p", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="gap_pess - gap_vanilla (< 0: pessimism helps)")
    fig.suptitle(f"pessimism minus plug-in, mean [paired 95% t interval] over "
                 f"{int(cells['seeds'].min())} seeds; bold: interval excludes 0", fontsize=9)
    return fig, axes


def make_map_figure(result_dir: Path) -> list[Path]:
    """DIR/map.csv -> DIR/pessimism_map.png and .pdf."""
    result_dir = Path(result_dir)
    fig, _ = plot_map(load_map(result_dir))
    return save_png_pdf(fig, result_dir / "pessimism_map")
