"""Pairwise accuracy per labeler, metrics.csv / table.md / diversity.csv, cross-method tables.

A comparison is correct when the preferred summary gets the strictly larger fp32 reward. A tie
is |r0 - r1| <= TIE_TOL in fp32 (exactly equal rewards); ``accuracy`` counts ties as wrong,
``accuracy_tie_half`` as 1/2 and ``accuracy_tie_right`` as right (the authors' TRL version), and
``ties`` counts them. ``python -m llm.evaluate DIR ... [--out FILE]`` prints the mean
accuracy per method (Figure 1) and per labeler (Figure 2) of several run directories.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np

from figures.cli import OneLineParser
from figures.inputs import METRICS_COLUMNS

DIVERSITY_COLUMNS = (
    "method", "seed", "layer", "N", "k", "nu", "tail", "energy", "top_energy_fraction",
    "singular_values",
)
TIE_TOL = 0.0


def pairwise_accuracy(
    users: np.ndarray, r0: np.ndarray, r1: np.ndarray, choice: np.ndarray, n_users: int
) -> list[dict]:
    """Per-labeler accuracy and ties, then labeler ``all`` (mean over labelers, as Figure 1).

    users, choice: (n,) ints; r0, r1: (n,) fp32 rewards of summary 0 and 1.
    """
    users = np.asarray(users)
    r0 = np.asarray(r0, dtype=np.float32)
    r1 = np.asarray(r1, dtype=np.float32)
    choice = np.asarray(choice)
    diff = np.where(choice == 0, r0 - r1, r1 - r0)
    tie = np.abs(r0 - r1) <= TIE_TOL
    correct = (diff > 0) & ~tie
    rows = []
    for u in range(n_users):
        sel = users == u
        n = int(sel.sum())
        acc = float(correct[sel].mean()) if n else float("nan")
        t = float(tie[sel].mean()) if n else float("nan")
        rows.append({
            "labeler": str(u),
            "n_eval": n,
            "accuracy": acc,
            "accuracy_tie_half": acc + 0.5 * t,
            "accuracy_tie_right": acc + t,
            "ties": int(tie[sel].sum()),
        })
    mean = {k: float(np.nanmean([r[k] for r in rows]))
            for k in ("accuracy", "accuracy_tie_half", "accuracy_tie_right")}
    rows.append({
        "labeler": "all",
        "n_eval": int(sum(r["n_eval"] for r in rows)),
        **mean,
        "ties": int(sum(r["ties"] for r in rows)),
    })
    return rows


def metrics_rows(cfg, per_labeler: list[dict], steps: dict | None = None) -> list[dict]:
    """Attach the run's settings to every labeler row (metrics.csv columns of docs/formats.md).

    ``steps[labeler]``: optimizer steps that trained the model scored in that row (missing:
    empty).
    """
    fixed = {
        "method": cfg.method, "model": cfg.model, "seed": cfg.seed, "epochs": cfg.epochs,
        "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "targets": "+".join(cfg.targets),
    }
    steps = steps or {}
    return [{c: {**fixed, "steps": steps.get(row["labeler"], ""), **row}[c]
             for c in METRICS_COLUMNS} for row in per_labeler]


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    """Write atomically, then the completeness marker path.ok (figures.files, docs/formats.md)."""
    from figures.files import write_checked

    fh = io.StringIO(newline="")
    w = csv.DictWriter(fh, fieldnames=list(columns))
    w.writeheader()
    for row in rows:
        w.writerow({c: _fmt(row[c]) for c in columns})
    write_checked(path, fh.getvalue().encode(), len(rows), columns)


def read_metrics(paths: list[Path]) -> list[dict]:
    rows = []
    for p in paths:
        p = Path(p)
        p = p / "metrics.csv" if p.is_dir() else p
        with open(p, newline="") as fh:
            for row in csv.DictReader(fh):
                row["accuracy"] = float(row["accuracy"])
                rows.append(row)
    return rows


def method_table(rows: list[dict]) -> str:
    """Markdown: mean accuracy per method (Figure 1) and per labeler (Figure 2), seed-averaged."""
    from llm.config import METHODS

    present = list(dict.fromkeys(r["method"] for r in rows))
    methods = [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]
    labelers = sorted({r["labeler"] for r in rows if r["labeler"] != "all"}, key=int)
    seeds = {m: sorted({r["seed"] for r in rows if r["method"] == m}, key=int) for m in methods}

    def mean_acc(m, lab):
        vals = [r["accuracy"] for r in rows if r["method"] == m and r["labeler"] == lab]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), 0.0)

    lines = ["| method | mean accuracy | seeds |", "|---|---|---|"]
    for m in methods:
        mu, sd = mean_acc(m, "all")
        spread = f" ± {sd:.3f}" if len(seeds[m]) > 1 else ""
        lines.append(f"| {m} | {mu:.3f}{spread} | {','.join(seeds[m])} |")
    lines += ["", "| method | " + " | ".join(f"labeler {lab}" for lab in labelers) + " |",
              "|---|" + "---|" * len(labelers)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{mean_acc(m, lab)[0]:.3f}" for lab in labelers)
                     + " |")
    return "\n".join(lines) + "\n"


def diversity_rows(cfg, factors: dict[str, tuple[np.ndarray, np.ndarray]], n_users: int) -> list[dict]:
    """Definition 4.1 (nu, Sigma_tail) of the stacked per-user updates of every adapted layer.

    factors[layer] = (A: (n_a, r, d_in), B: (n_b, d_out, r)) with scaling folded into B;
    n_a, n_b are 1 (shared) or n_users (personal). k = lora_r.
    """
    from llm.lora import reduced_users
    from theory.diversity import diversity_metrics

    rows = []
    for layer, (a, b) in factors.items():
        a = np.broadcast_to(a, (n_users, *a.shape[1:]))
        b = np.broadcast_to(b, (n_users, *b.shape[1:]))
        users = reduced_users(a, b)
        k = min(cfg.lora_r, min(users.shape[1], n_users * users.shape[2]))
        d = diversity_metrics(users, k)
        rows.append({
            "method": cfg.method, "seed": cfg.seed, "layer": layer, "N": d["N"], "k": d["k"],
            "nu": d["nu"], "tail": d["tail"], "energy": d["energy"],
            "top_energy_fraction": d["top_energy_fraction"],
            "singular_values": ";".join(f"{s:.6g}" for s in d["singular_values"][: 2 * k]),
        })
    return rows


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m llm.evaluate", description="Combine metrics.csv files into one table."
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories or metrics.csv files")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not (d / "metrics.csv" if d.is_dir() else d).exists()]
    if missing:
        return parser.fail(f"no metrics.csv in {', '.join(missing)}")
    from figures.cli import CliError, check_out_dir
    from figures.files import ResultError
    from figures.inputs import load_metrics  # the validated reader (docs/formats.md)

    try:
        if args.out:
            if args.out.is_dir():
                raise CliError(f"--out {args.out} is a directory; give a file name")
            check_out_dir(args.out.parent)
        for d in args.dirs:
            load_metrics(d / "metrics.csv" if d.is_dir() else d)
    except (CliError, ResultError) as err:
        return parser.fail(err)
    table = method_table(read_metrics(args.dirs))
    print(table, end="")
    if args.out:
        args.out.write_text(table)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
