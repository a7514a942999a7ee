"""Study: best-of-n regret per user vs n and vs pairs per labeler, plug-in and pessimistic
(Algorithm 2's last stage on llm.synth data; pessimism as in Eq. 3.7 via llm.uncertainty).

    python -m llm.policy_study [--sizes 50,100] [--methods global,local,shared] [--seeds 1]
                               [--posts 80] [--pool 8] [--n 1,2,4,8] [--out DIR]

Writes OUT/data (synthetic comparisons), OUT/candidates, OUT/runs/<method>-n<size>-s<seed>
(llm.train runs, CPU-sized as in docs/llm.md), OUT/scores (cached scores), OUT/policy_study.csv
(policy.csv columns + ``size``), OUT/summary.md (means with 95% CIs) and the figure
(figures.llm_policy_plots). Resumes: finished runs and cached scores are not redone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from figures.cli import OneLineParser

STUDY_COLUMNS = ("size",)


def _ints(text: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"--{name} must be comma-separated integers, got {text!r}") from err
    if not vals or min(vals) < 1:
        raise ValueError(f"--{name} values must be >= 1, got {text!r}")
    return vals


def prepare_data(out: Path, max_size: int, posts: int, pool: int) -> Path:
    from llm.synth import make_candidates, make_rows, write_candidates, write_dataset

    if not (out / "data" / "synth_meta.json").exists():
        rows, meta = make_rows(0, 5, max_size, 100)
        write_dataset(out / "data", rows, meta)
        write_candidates(out / "data", make_candidates(meta, pool, posts, seed=0), meta)
    return out / "data"


def train_run(data: Path, run_dir: Path, method: str, size: int, seed: int, epochs: float,
              model: str) -> Path:
    from llm.config import TrainConfig
    from llm.train import run

    if (run_dir / "metrics.csv").exists():
        return run_dir
    cfg = TrainConfig(method=method, model=model, data=str(data), seed=seed, epochs=epochs,
                      limit_per_worker=size, eval_limit_per_worker=50, max_length=64,
                      batch_size=8, grad_accum=2, lr=1e-3, head_lr=1e-2, out=str(run_dir),
                      checkpoint_every=20)
    return run(cfg, resume=(run_dir / "progress.json").exists(), progress=True)


def ci95(x) -> tuple[float, float, float]:
    """Mean and the 95% t-interval over independent units (user x seed)."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return (float(x.mean()) if len(x) else np.nan, np.nan, np.nan)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def summary_markdown(df) -> str:
    """Means over users x seeds with 95% CIs; differences are paired by (user, seed)."""
    lines = ["| pairs/labeler | method | n | regret [95% CI] | regret_pess [95% CI] | "
             "pess - plug-in [95% CI] | regret - global's [95% CI] | win_vs_global |",
             "|---|---|---|---|---|---|---|---|"]
    ref = df[df["method"] == "global"].set_index(["size", "n", "user", "seed"])["regret"]
    for (size, method, n), g in df.groupby(["size", "method", "n"], sort=False):
        m, lo, hi = ci95(g["regret"])
        keys = list(zip(g["size"], g["n"], g["user"], g["seed"]))
        if method in ("global", "true-reward", "random") or not set(keys) <= set(ref.index):
            vs = "-"
        else:
            vm, vlo, vhi = ci95(g["regret"].to_numpy() - ref.loc[keys].to_numpy())
            vs = f"{vm:+.3f} [{vlo:+.3f}, {vhi:+.3f}]"
        cell = f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
        if g["regret_pess"].notna().any():
            pm, plo, phi = ci95(g["regret_pess"])
            dm, dlo, dhi = ci95(g["regret_pess"] - g["regret"])
            pess, diff = f"{pm:.3f} [{plo:.3f}, {phi:.3f}]", f"{dm:+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
        else:
            pess = diff = "-"
        win = g["win_vs_global"].mean()
        lines.append(f"| {size} | `{method}` | {n} | {cell} | {pess} | {diff} | {vs} | "
                     f"{'-' if np.isnan(win) else f'{win:.3f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m llm.policy_study", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,100", help="train pairs per labeler")
    p.add_argument("--methods", default="global,local,shared")
    p.add_argument("--seeds", type=int, default=1, help="training seeds 0..S-1")
    p.add_argument("--posts", type=int, default=80, help="held-out posts with candidates")
    p.add_argument("--pool", type=int, default=8, help="candidates per post")
    p.add_argument("--n", default="1,2,4,8", help="best-of-n sizes (<= pool)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--model", default="minilm")
    p.add_argument("--betas", default="1,0.3,3",
                   help="LCB multipliers; the first is the headline, the rest a sensitivity check")
    p.add_argument("--prior-precision", type=float, default=1.0)
    p.add_argument("--out", default="results/llm-policy-study")
    args = p.parse_args(argv)
    try:
        from llm.config import METHODS
        from llm.policy import POLICY_COLUMNS, load_candidates, parse_sizes, policy_rows, score_run

        sizes, methods = _ints(args.sizes, "sizes"), [m for m in args.methods.split(",") if m]
        bad = [m for m in methods if m not in METHODS]
        if bad or args.seeds < 1 or args.posts < 1 or args.pool < 2:
            raise ValueError(f"bad --methods {bad} or --seeds/--posts/--pool values")
        ns = parse_sizes(args.n, args.pool)
        betas = [float(b) for b in args.betas.split(",") if b.strip()]
        if not betas or min(betas) < 0:
            raise ValueError(f"--betas must be >= 0, got {args.betas!r}")
    except ValueError as err:
        p.error(str(err))
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    data = prepare_data(out, max(sizes), args.posts, args.pool)
    cands = load_candidates(data)
    rows = []
    for size in sizes:
        for seed in range(args.seeds):
            scored = []
            for method in methods:
                run_dir = train_run(data, out / "runs" / f"{method}-n{size}-s{seed}", method,
                                    size, seed, args.epochs, args.model)
                scored.append((str(run_dir), score_run(run_dir, cands, args.prior_precision,
                                                       out / "scores")))
            for beta in betas:
                part = policy_rows(scored, cands, ns, beta, args.prior_precision)
                rows += [r | {"size": size} for r in part
                         if r["method"] not in ("true-reward", "random") or seed == 0]
            df = pd.DataFrame(rows, columns=[*POLICY_COLUMNS, *STUDY_COLUMNS])
            df.to_csv(out / "policy_study.csv", index=False)
    head = df[df["beta"] == betas[0]]
    text = f"Headline: beta = {betas[0]}\n\n{summary_markdown(head)}"
    for beta in betas[1:]:
        sub = df[(df["beta"] == beta) & (df["n"] == max(ns))]
        text += f"\nSensitivity: beta = {beta}, n = {max(ns)}\n\n{summary_markdown(sub)}"
    (out / "summary.md").write_text(text)
    from figures.llm_policy_plots import make_policy_figure

    make_policy_figure(out, beta=betas[0])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
