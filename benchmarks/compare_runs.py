"""Compare two sweeps' runs.csv (docs/formats.md) value by value, timing columns (`*_s`) aside.

    python -m benchmarks.compare_runs A/runs.csv B/runs.csv [--ignore policy_solver] [--tol 1e-8]

Rows are matched on (seed, method and every column whose values differ between the sweep's
tasks but are not results: the run's configuration); prints, per column that differs, the
largest absolute difference (numeric) or the number of differing rows (text), and exits 1 if
a numeric column differs by more than --tol relative to max(1, |value|) or a text column
differs at all. Used for the before/after check of docs/performance.md (Eq. 3.7 near the DP
floor): a policy solver change must leave every result within its certificate's tolerance.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from figures.cli import OneLineParser


def compare(a: pd.DataFrame, b: pd.DataFrame, ignore=(), tol: float = 1e-8):
    """{column: (max relative difference or number of differing rows, within tol?)}."""
    if len(a) != len(b):
        raise ValueError(f"the runs differ in length: {len(a)} vs {len(b)} rows")
    keys = [c for c in ("seed", "method", "vary", "value") if c in a.columns]
    a = a.sort_values(keys, kind="stable").reset_index(drop=True)
    b = b.sort_values(keys, kind="stable").reset_index(drop=True)
    out = {}
    for col in a.columns:
        if col.endswith("_s") or col in ignore:
            continue
        if col not in b.columns:
            out[col] = (float("inf"), False)
            continue
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(float), y.to_numpy(float)
            both_nan = np.isnan(xv) & np.isnan(yv)
            diff = np.where(both_nan, 0.0, np.abs(xv - yv) / np.maximum(1.0, np.abs(xv)))
            worst = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff), initial=0.0))
            out[col] = (worst, worst <= tol)
        else:
            n = int((x.astype(str) != y.astype(str)).sum())
            out[col] = (n, n == 0)
    return out


def main(argv=None) -> None:
    ap = OneLineParser(prog="python -m benchmarks.compare_runs", description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--ignore", default="", help="comma-separated columns to skip")
    ap.add_argument("--tol", type=float, default=1e-8)
    args = ap.parse_args(argv)
    try:
        a, b = pd.read_csv(args.a), pd.read_csv(args.b)
        res = compare(a, b, [c for c in args.ignore.split(",") if c], args.tol)
    except (OSError, ValueError, KeyError) as err:
        ap.error(str(err))
    bad = {k: v for k, v in res.items() if not v[1]}
    nonzero = {k: v[0] for k, v in res.items() if v[0]}
    print(f"{len(a)} rows, {len(res)} columns compared (timing columns *_s skipped)")
    for k, v in sorted(nonzero.items(), key=lambda kv: -float(kv[1])):
        print(f"  {k:20s} {'max rel diff' if isinstance(v, float) else 'rows differing'} {v:.3g}"
              + ("" if res[k][1] else "   > tol"))
    print("all within tolerance" if not bad else f"{len(bad)} column(s) beyond tolerance")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
