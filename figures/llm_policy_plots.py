"""Best-of-n regret figure of ``python -m llm.policy_study`` (reads policy_study.csv only).

Left: regret vs n at the largest pairs-per-labeler size; right: regret vs pairs per labeler at
the largest n. Plug-in solid, pessimistic (LCB) dashed; bars: 95% t-intervals over users x seeds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from figures._save import save_png_pdf  # noqa: E402

ORDER = ("global", "local", "shared", "true-reward", "random")


def _ci(x):
    from scipy import stats

    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return (x.mean() if len(x) else np.nan), 0.0
    return x.mean(), stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))


def make_policy_figure(result_dir: Path, beta: float | None = None) -> list[Path]:
    """``beta``: the LCB multiplier shown (default: the first in the file)."""
    import pandas as pd

    result_dir = Path(result_dir)
    df = pd.read_csv(result_dir / "policy_study.csv")
    df = df[df["beta"] == (df["beta"].iloc[0] if beta is None else beta)]
    big, top = df["size"].max(), df["n"].max()
    methods = [m for m in ORDER if m in set(df["method"])] + sorted(
        set(df["method"]) - set(ORDER))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (xcol, fixed, val) in zip(axes, (("n", "size", big), ("size", "n", top))):
        sub = df[df[fixed] == val]
        for i, m in enumerate(methods):
            g = sub[sub["method"] == m]
            if g.empty:
                continue
            for col, style in (("regret", "-"), ("regret_pess", "--")):
                if g[col].isna().all():
                    continue
                xs = sorted(g[xcol].unique())
                stats_ = [_ci(g[g[xcol] == x][col]) for x in xs]
                ax.errorbar(xs, [s[0] for s in stats_], yerr=[s[1] for s in stats_],
                            fmt=style, marker="o", color=f"C{i}", capsize=3,
                            label=f"{m}{' (LCB)' if col == 'regret_pess' else ''}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("best-of-n" if xcol == "n" else "train pairs per labeler")
        ax.set_ylabel("regret (true reward of best in pool - pick)")
        ax.set_title(f"{fixed} = {val}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_png_pdf(fig, result_dir / "llm_policy_regret")
