"""`python -m figures [DIR ...]`: rebuild every figure from result directories.

Figures only: the tables (a sweep's slopes.csv and summary.md, a study's summaries) are written
by the command that produced the results; `python -m sim.sweep ... --analyse-only` rebuilds a
finished sweep's tables with the current analysis code. ``figures`` imports nothing from
``sim`` or ``llm``.

A directory with map.csv is a pessimism map (``python -m sim.pessimism_map --out``); one with
study.csv is a pessimism study (``python -m sim.algorithm1 --study --out``);
one with runs.csv (and no study.csv) is a simulator sweep (figures.sim_plots); one with
metrics.csv (or subdirectories holding metrics.csv) is an llm run (figures.llm_plots). Default: every directory
under results/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from figures.cli import OneLineParser


def _plan(d: Path) -> tuple[str, list[Path], object]:
    """(kind, llm run dirs, the validated sweep (runs, slopes) or None) of one result
    directory, every input validated (figures.inputs)."""
    from figures import inputs
    from figures.llm_plots import metrics_files

    kind = ("map" if (d / "map.csv").exists() else "study" if (d / "study.csv").exists()
            else "sweep" if (d / "runs.csv").exists()
            else "policy" if (d / "policy_study.csv").exists() else "")
    runs = None
    if kind == "map":
        inputs.load_map(d)
    elif kind == "study":
        inputs.load_study(d)
    elif kind == "sweep":
        runs = (inputs.load_runs(d), inputs.load_slopes(d))
    llm = metrics_files([d])
    for f in llm:
        inputs.load_metrics(f)
    return kind, llm, runs


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m figures", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="*", help="result directories (default: results/*)")
    args = p.parse_args(argv)
    dirs = [Path(d) for d in args.dirs] or sorted(d for d in Path("results").glob("*") if d.is_dir())
    if not dirs:
        return p.fail("no result directories given and none under results/")
    from figures.files import ResultError

    plans = []
    for d in dirs:  # validate everything before writing anything
        if not d.is_dir():
            return p.fail(f"{d} is not a directory")
        try:
            plans.append((d, *_plan(d)))
        except ResultError as err:
            return p.fail(err)
    written = []
    for d, kind, llm, runs in plans:
        if kind == "map":  # python -m sim.pessimism_map --out d
            from figures.pessimism_map import make_map_figure

            written += make_map_figure(d)
        elif kind == "study":  # python -m sim.algorithm1 --study --out d
            from figures.sim_plots import make_study_figure

            written += make_study_figure(d)
        elif kind == "sweep":
            from figures.sim_plots import make_sweep_figures

            written += make_sweep_figures(d, runs)
        if llm:
            from figures.llm_plots import make_llm_figures

            written += make_llm_figures(llm, d)
        if kind == "policy":  # python -m llm.policy_study --out d
            from figures.llm_policy_plots import make_policy_figure

            written += make_policy_figure(d)
        if not kind and not llm:
            print(f"figures: warning: {d} holds neither runs.csv nor metrics.csv; skipped",
                  file=sys.stderr)
    print(f"figures: wrote {len(written)} files:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
