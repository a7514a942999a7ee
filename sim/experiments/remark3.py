"""Remark 3: the N_p that `shared` and `full` need to reach a target estimation error, per d1,
each along its own measured rate between two N_p (the d1 sweep and the same grid at a higher
N_p; theory/README.md erratum 12).

    python -m sim.experiments.remark3 --lo results/sweep-d1 --hi results/sweep-d1-Np1600 --out DIR

writes DIR/remark3.csv and DIR/remark3.md from the two sweeps' runs.csv (figures.results runs it
for README's Remark 3 block).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from figures.cli import OneLineParser
from figures.files import ResultError, read_csv_checked
from sim.experiments.analysis import _md, loglog_slope

#: A measured est_err rate above this (in N_p) is "not decaying": no N_p needed is extrapolated.
MIN_DECAY = -0.1


def _np_needed(e1: float, e2: float, np1: float, np2: float, target: float) -> tuple[float, str]:
    """N_p at which est_err reaches target, by the log-log line through (np1, e1), (np2, e2)
    (rate 1/N_p when e2 is NaN); how it was obtained."""
    if not np.isfinite(e2):
        return np1 * e1 / target, "assumed 1/N_p"
    rate = np.log(e2 / e1) / np.log(np2 / np1)
    if rate > MIN_DECAY:  # no usable rate: the method is not in a decaying regime yet
        return float("inf"), "not decaying"
    anchor, e_anchor = (np1, e1) if target >= e2 else (np2, e2)
    need = anchor * (target / e_anchor) ** (1 / rate)
    how = "interpolated" if e2 <= target <= e1 else (
        "extrapolated below grid" if target > e1 else "extrapolated above grid")
    return float(need), how


def remark3_table(runs: pd.DataFrame, runs_hi: pd.DataFrame | None = None) -> pd.DataFrame:
    """Remark 3: N_p each of `shared` and `full` needs to reach a target est_err, per d1.

    Target: the best seed-median est_err of `full` at the lower N_p (a level both methods can
    reach), over the seeds of ``runs_hi`` when given. With ``runs_hi`` (the same d1 grid and seeds at a higher N_p) each method is
    interpolated / extrapolated along its *own* measured rate between the two N_p; without it
    the 1/N_p rate of Proposition 1 is assumed and the table says so.
    """
    if runs_hi is not None:  # the same seeds at both N_p (common random numbers)
        runs = runs[runs["seed"].isin(runs_hi["seed"].unique())]
    med = runs.groupby(["method", "value"])["est_err"].median().unstack(0)
    if not {"shared", "full"} <= set(med.columns):
        raise ValueError("Remark 3 needs `shared` and `full` runs")
    r = runs.iloc[0]
    np1 = float(r["Np"])
    hi, np2 = None, float("nan")
    if runs_hi is not None:
        hi = runs_hi.groupby(["method", "value"])["est_err"].median().unstack(0)
        np2 = float(runs_hi["Np"].iloc[0])
        if not np2 > np1:
            raise ValueError(f"runs_hi must be at a higher N_p than {np1:g}, got {np2:g}")
    target = float(med["full"].min())
    rows = []
    for d1 in med.index:
        row = {"d1": int(d1)}
        for m in ("shared", "full"):
            e1 = float(med.loc[d1, m])
            e2 = float(hi.loc[d1, m]) if hi is not None and d1 in hi.index else float("nan")
            need, how = _np_needed(e1, e2, np1, np2, target)
            rate = np.log(e2 / e1) / np.log(np2 / np1) if np.isfinite(e2) else -1.0
            row |= {f"est_err {m} (Np={np1:g})": e1, f"est_err {m} (Np={np2:g})": e2,
                    f"rate {m}": rate, f"Np_needed {m}": need, f"how {m}": how}
        row["Remark 3 shared (d1k+Nd2k)/N"] = (d1 * r["k"] + r["N"] * r["d2"] * r["k"]) / r["N"]
        row["Remark 3 full d1 d2"] = d1 * r["d2"]
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["target"] = target
    return table.dropna(axis=1, how="all")


def remark3_markdown(runs: pd.DataFrame, runs_hi: pd.DataFrame | None = None) -> str:
    """The Remark 3 table with the d1-growth slopes of N_p needed against Remark 3's orders."""
    try:
        table = remark3_table(runs, runs_hi)
    except ValueError as e:
        return f"({e})"
    d1 = table["d1"].to_numpy(dtype=float)
    growth = []
    for m, pred in (("shared", "Remark 3 shared (d1k+Nd2k)/N"), ("full", "Remark 3 full d1 d2")):
        need = table[f"Np_needed {m}"].to_numpy(dtype=float)
        ok = np.isfinite(need)
        span = "" if ok.all() else f" over d1 = {', '.join(f'{v:g}' for v in d1[ok])} (not decaying elsewhere)"
        growth.append(f"`{m}`: N_p needed grows like d1^{loglog_slope(d1[ok], need[ok]):.2f}{span} "
                      f"(Remark 3: d1^{loglog_slope(d1[ok], table[pred].to_numpy(dtype=float)[ok]):.2f})")
    rates = "each method's own measured rate between the two N_p" if runs_hi is not None else \
        "the 1/N_p rate of Proposition 1 (assumed: no higher-N_p run given)"
    lines = [f"Target est_err = {table.attrs['target']:.4g} (the best median of `full` on this grid "
             f"at N_p = {int(runs['Np'].iloc[0])}); N_p needed along {rates}. Remark 3's orders "
             "are shown up to their unknown constants: compare growth with d1, not levels.",
             "", _md(table), "", "; ".join(growth) + "."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m sim.experiments.remark3", description=__doc__.splitlines()[0])
    p.add_argument("--lo", required=True, help="the d1 sweep's directory (its runs.csv)")
    p.add_argument("--hi", required=True, help="the same grid at a higher N_p (its runs.csv)")
    p.add_argument("--out", required=True, help="where remark3.csv and remark3.md go")
    args = p.parse_args(argv)
    try:
        lo, hi = (read_csv_checked(Path(d) / "runs.csv", ("method", "value", "seed", "Np", "est_err"))
                  for d in (args.lo, args.hi))
        table = remark3_table(lo, hi)
    except (ResultError, ValueError) as e:
        return p.fail(e)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "remark3.csv", index=False, float_format="%.6g")
    (out / "remark3.md").write_text(remark3_markdown(lo, hi) + "\n")
    print(f"wrote {out}/remark3.csv and {out}/remark3.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
