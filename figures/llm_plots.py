"""Figures 1-3 of the paper from llm metrics.csv files (reads result files only).

- Figure 1: mean validation accuracy over labelers per method (seed mean, std as error bar).
- Figure 2: accuracy per labeler and method.
- Figure 3: sharing the up-projection B (`shared`) vs the down-projection A (`shared-a`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

# docs/formats.md method order; paper labels in brackets for the legend.
METHOD_ORDER = ("global", "local", "share-rep", "shared", "shared-g", "shared-wu", "shared-a")
LABELS = {
    "global": "LoRA-global", "local": "LoRA-local", "share-rep": "Share Rep",
    "shared": "PSL (SI)", "shared-g": "PSL (G)", "shared-wu": "PSL (WU)",
    "shared-a": "share A", "new-user": "new user: own A, B frozen",
    "new-user-comb": "new user: A = sum c_i A_i",
}


def metrics_files(result_dirs: list[Path]) -> list[Path]:
    """Every metrics.csv in ``result_dirs`` (a file, a run dir, or a dir of run dirs)."""
    files = []
    for d in map(Path, result_dirs):
        files += [d] if d.is_file() else ([d / "metrics.csv"] if (d / "metrics.csv").exists()
                                          else sorted(d.glob("*/metrics.csv")))
    return files


def read_llm_metrics(result_dirs: list[Path]) -> list[dict]:
    """Rows of every metrics.csv in ``result_dirs``, each file validated (figures.inputs)."""
    from figures.inputs import load_metrics

    return [row for f in metrics_files(result_dirs) for row in load_metrics(f)]


def _stats(rows, method, labeler):
    vals = [r["accuracy"] for r in rows if r["method"] == method and r["labeler"] == labeler]
    return (float(np.mean(vals)), float(np.std(vals)), len(vals)) if vals else None


def _methods(rows):
    present = {r["method"] for r in rows}
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def plot_mean_accuracy(rows):
    """Figure 1. Returns (fig, ax)."""
    import matplotlib.pyplot as plt

    methods = _methods(rows)
    stats = [_stats(rows, m, "all") for m in methods]
    fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 2, 3.5))
    x = np.arange(len(methods))
    multi_seed = any(s[2] > 1 for s in stats)
    ax.bar(x, [s[0] for s in stats], yerr=[s[1] for s in stats] if multi_seed else None,
           color=[f"C{i}" for i in range(len(methods))], capsize=3 if multi_seed else 0)
    for xi, s in zip(x, stats):
        ax.text(xi, s[0] + 0.005, f"{s[0]:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [LABELS.get(m, m) for m in methods], rotation=20)
    ax.set_ylabel("mean validation accuracy")
    lo = min(s[0] for s in stats)
    ax.set_ylim(max(0.0, lo - 0.1), min(1.0, max(s[0] for s in stats) + 0.06))
    ax.set_title("Prediction accuracy of different algorithms (Fig. 1)")
    fig.tight_layout()
    return fig, ax


def plot_per_labeler(rows, methods=None, title="Accuracy per labeler (Fig. 2)"):
    """Figure 2 (and 3 with ``methods=['shared', 'shared-a']``). Returns (fig, ax)."""
    import matplotlib.pyplot as plt

    methods = methods or _methods(rows)
    labelers = sorted({r["labeler"] for r in rows if r["labeler"] != "all"}, key=int)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.2 * len(labelers) + 3, 3.5))
    for i, m in enumerate(methods):
        vals = [(_stats(rows, m, lab) or (np.nan, 0, 0))[0] for lab in labelers]
        ax.bar(np.arange(len(labelers)) + (i - (len(methods) - 1) / 2) * width, vals, width,
               label=LABELS.get(m, m), color=f"C{METHOD_ORDER.index(m) if m in METHOD_ORDER else i}")
    ax.set_xticks(np.arange(len(labelers)), [f"labeler {lab}" for lab in labelers])
    ax.set_ylabel("validation accuracy")
    finite = [r["accuracy"] for r in rows if r["method"] in methods and r["labeler"] != "all"]
    ax.set_ylim(max(0.0, min(finite) - 0.1), min(1.0, max(finite) + 0.05))
    ax.legend(fontsize=7, ncol=min(4, len(methods)))
    ax.set_title(title)
    fig.tight_layout()
    return fig, ax


def make_llm_figures(result_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Draw Figures 1-3 from the metrics.csv files under ``result_dirs``; PNG and PDF each."""
    import matplotlib

    matplotlib.use("Agg")
    from figures._save import save_png_pdf

    rows = read_llm_metrics(result_dirs)
    if not rows:
        raise ValueError(f"no llm metrics.csv under {', '.join(map(str, result_dirs))}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {"llm_fig1_mean_accuracy": plot_mean_accuracy(rows)[0],
               "llm_fig2_per_labeler": plot_per_labeler(rows)[0]}
    present = {r["method"] for r in rows}
    if {"shared", "shared-a"} <= present:
        figures["llm_fig3_share_a_vs_b"] = plot_per_labeler(
            rows, ["shared", "shared-a"], "Share B (P-ShareLoRA) vs share A (Fig. 3)")[0]
    else:
        print(f"figures: Figure 3 (share B vs share A) skipped in {out_dir}: it needs runs of "
              f"both shared and shared-a, found {', '.join(sorted(present))}")
    return [p for name, fig in figures.items() for p in save_png_pdf(fig, out_dir / name)]


def plot_study(study_csv: Path, out_dir: Path) -> list[Path]:
    """The CPU study (llm.study): held-out accuracy (mean over labelers) vs pairs per labeler,
    one line per method with its 95% t-interval over seeds, the labelers' own (Bayes) accuracy
    as the ceiling and the best single reward's accuracy. PNG and PDF."""
    with open(study_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["labeler"] == "all"]
    if not rows:
        raise ValueError(f"{study_csv}: no rows")
    sizes = sorted({int(r["pairs_per_labeler"]) for r in rows})
    curves = {m: {s: [float(r["accuracy"]) for r in rows
                      if r["method"] == m and int(r["pairs_per_labeler"]) == s] for s in sizes}
              for m in _methods(rows)}
    n_seeds = len({r["seed"] for r in rows})
    return _accuracy_curves(curves, rows[0], "train pairs per labeler",
                            "held-out accuracy (mean over labelers)",
                            f"CPU study on llm.synth ({n_seeds} seeds, 95% CI)",
                            Path(out_dir) / "llm_study_accuracy")


def plot_new_users(csv_path: Path, out_dir: Path) -> list[Path]:
    """The new-labeler study (llm.study --new-users; extension, issue 18): held-out accuracy of
    the new labelers vs pairs per new labeler, per method the mean over seeds of each seed's
    mean over its draws of the shots, with the 95% t-interval over seeds; the new labelers'
    Bayes ceiling and the training labelers' mean reward. PNG and PDF."""
    from figures.stats import per_seed

    with open(csv_path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["labeler"] == "all"]
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    sizes = sorted({int(r["pairs_per_labeler"]) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))  # the study's order
    curves = {m: {s: list(per_seed(rows, m, s).values()) for s in sizes} for m in methods}
    n_seeds = len({r["seed"] for r in rows})
    return _accuracy_curves(curves, rows[0], "pairs per new labeler (shots)",
                            "new labelers' held-out accuracy",
                            f"New labelers on llm.synth ({n_seeds} seeds, 95% CI)",
                            Path(out_dir) / "llm_new_users_accuracy",
                            ref_label="training labelers' mean reward")


def _accuracy_curves(curves, ref_row, xlabel, ylabel, title, stem,
                     ref_label="best single reward") -> list[Path]:
    """Lines of mean ± 95% t-interval per method ({method: {size: values}}), log x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from figures._save import save_png_pdf
    from figures.stats import ci95

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (m, by_size) in enumerate(curves.items()):
        pts = [(s, *ci95(v)) for s, v in sorted(by_size.items()) if v]
        x, mu, h = (np.array(v) for v in zip(*pts))
        color = f"C{METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER) + i}"
        ax.plot(x, mu, "o-", color=color, label=LABELS.get(m, m), ms=3)
        ax.fill_between(x, mu - h, mu + h, color=color, alpha=0.18, lw=0)
    ax.axhline(float(ref_row["bayes_accuracy"]), color="k", ls="--", lw=1,
               label="labelers' own reward (Bayes)")
    ax.axhline(float(ref_row["mean_reward_accuracy"]), color="gray", ls=":", lw=1,
               label=ref_label)
    sizes = sorted({s for by_size in curves.values() for s in by_size})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    return save_png_pdf(fig, stem)
