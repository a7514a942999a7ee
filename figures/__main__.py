"""`python -m figures [DIR ...]`: rebuild every figure and table from result directories.

A directory with study.csv is a pessimism study (``python -m sim.algorithm1 --study --out``);
one with runs.csv (and no study.csv) is a simulator sweep (figures.sim_plots); one with
metrics.csv (or subdirectories holding metrics.csv) is an llm run (figures.llm_plots). Default: every directory
under results/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sim.cli import OneLineParser


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m figures", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="*", help="result directories (default: results/*)")
    args = p.parse_args(argv)
    dirs = [Path(d) for d in args.dirs] or sorted(d for d in Path("results").glob("*") if d.is_dir())
    if not dirs:
        print("figures: error: no result directories given and none under results/", file=sys.stderr)
        return 2
    written = []
    for d in dirs:
        if not d.is_dir():
            print(f"figures: error: {d} is not a directory", file=sys.stderr)
            return 2
        if (d / "study.csv").exists():  # python -m sim.algorithm1 --study --out d
            from figures.sim_plots import make_study_figure

            written += make_study_figure(d)
        elif (d / "runs.csv").exists():
            import pandas as pd

            from figures.sim_plots import make_sweep_figures
            from sim.analysis import write_analysis  # slopes/summary are tables: rebuild them too

            runs = pd.read_csv(d / "runs.csv")
            write_analysis(runs, str(runs["vary"].iloc[0]), d)
            written += make_sweep_figures(d)
        llm_dirs = [d] if (d / "metrics.csv").exists() else sorted(p.parent for p in d.glob("*/metrics.csv"))
        if llm_dirs:
            from figures.llm_plots import make_llm_figures

            written += make_llm_figures(llm_dirs, d)
        if (d / "policy_study.csv").exists():  # python -m llm.policy_study --out d
            from figures.llm_policy_plots import make_policy_figure

            written += make_policy_figure(d)
        if not (d / "runs.csv").exists() and not llm_dirs and not (d / "policy_study.csv").exists():
            print(f"figures: warning: {d} holds neither runs.csv nor metrics.csv; skipped", file=sys.stderr)
    print(f"figures: wrote {len(written)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
