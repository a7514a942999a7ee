"""Validated reading of the result files figures are drawn from (formats: docs/formats.md).

Every reader raises :class:`figures.files.ResultError` with one line naming the file and what is
wrong: missing, not a CSV, lacking columns, a checksum that differs from its ``.ok`` marker,
fewer rows than its ``sweep.json`` / ``study.json`` promises, or values out of range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures.files import ResultError, read_csv_checked, read_json_checked

#: Columns every runs.csv of a sweep has (docs/formats.md), and those that must be set.
#: Columns of every llm metrics.csv (llm.evaluate writes them; docs/formats.md).
METRICS_COLUMNS = (
    "method", "model", "labeler", "n_eval", "accuracy", "accuracy_tie_half",
    "accuracy_tie_right", "ties", "seed", "epochs", "steps", "lora_r", "lora_alpha", "targets",
)
RUNS_COLUMNS = ("vary", "value", "seed", "method", "N", "Np", "d1", "d2", "k", "nu", "tail",
                "dist", "est_err", "gap_pess", "gap_vanilla", "coverage", "zeta")
RUNS_NOT_NULL = ("vary", "value", "seed", "method", "est_err", "gap_pess", "gap_vanilla")
STUDY_RUNS_COLUMNS = ("behaviour", "seed", "method", "Np", "radius", "zeta_c", "gap_pess",
                      "gap_vanilla", "gap_ref")
STUDY_COLUMNS = ("behaviour", "method", "seeds", "gap_pess", "gap_pess_low", "gap_pess_high",
                 "gap_vanilla", "gap_vanilla_low", "gap_vanilla_high")
SLOPES_COLUMNS = ("quantity", "method", "bound", "predicted_slope", "measured_slope", "ci_low",
                  "ci_high")


def _not_null(df: pd.DataFrame, path: Path, columns) -> None:
    for c in columns:
        if df[c].isna().any():
            raise ResultError(f"{path}: column {c} has {int(df[c].isna().sum())} empty "
                              "value(s) (a truncated or damaged file?)")


def _numeric(df: pd.DataFrame, path: Path, columns) -> None:
    for c in columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise ResultError(f"{path}: column {c} is not numeric")


def load_runs(d: Path) -> pd.DataFrame:
    """DIR/runs.csv of a sweep, checked against its marker and DIR/sweep.json."""
    d = Path(d)
    rows = None
    if (d / "sweep.json").exists():
        spec = read_json_checked(d / "sweep.json", ("vary", "values", "seeds", "methods"))
        rows = len(spec["values"]) * len(spec["seeds"]) * len(spec["methods"])
    df = read_csv_checked(d / "runs.csv", RUNS_COLUMNS, rows=rows, require_marker=False)
    if df.empty:
        raise ResultError(f"{d / 'runs.csv'} holds no rows")
    _not_null(df, d / "runs.csv", RUNS_NOT_NULL)
    _numeric(df, d / "runs.csv", ("value", "seed", "est_err", "gap_pess", "gap_vanilla"))
    if df["vary"].nunique() != 1:
        raise ResultError(f"{d / 'runs.csv'} mixes sweeps over {sorted(df['vary'].unique())}")
    return df


def load_slopes(d: Path) -> pd.DataFrame:
    return read_csv_checked(Path(d) / "slopes.csv", SLOPES_COLUMNS, require_marker=False)


def load_study(d: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(study.csv, runs.csv) of a pessimism study, checked against their markers."""
    d = Path(d)
    study = read_csv_checked(d / "study.csv", STUDY_COLUMNS, require_marker=False)
    runs = read_csv_checked(d / "runs.csv", STUDY_RUNS_COLUMNS, require_marker=False)
    if study.empty or runs.empty:
        raise ResultError(f"{d}: study.csv or runs.csv holds no rows")
    _not_null(study, d / "study.csv", STUDY_COLUMNS[:4])
    _not_null(runs, d / "runs.csv", ("behaviour", "seed", "method", "gap_ref"))
    missing = set(zip(study["behaviour"], study["method"])) - set(zip(runs["behaviour"], runs["method"]))
    if missing:
        raise ResultError(f"{d / 'runs.csv'} has no runs for {sorted(missing)} of study.csv")
    return study, runs


def load_map(d: Path) -> pd.DataFrame:
    """map.csv of `python -m sim.pessimism_map` (one row per pessimism-map cell), validated."""
    return read_csv_checked(Path(d) / "map.csv", columns=("method", "diff", "diff_low", "diff_high"), require_marker=False)


def load_metrics(path: Path) -> list[dict]:
    """Rows of one llm metrics.csv: METRICS_COLUMNS, accuracy in [0, 1], every labeler
    0..K-1 and `all` once per (method, seed)."""
    path = Path(path)
    df = read_csv_checked(path, METRICS_COLUMNS, require_marker=False)
    if df.empty:
        raise ResultError(f"{path} holds no rows")
    _not_null(df, path, ("method", "labeler", "accuracy", "seed", "n_eval"))
    acc = pd.to_numeric(df["accuracy"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(acc) & (acc >= 0) & (acc <= 1)).all():
        raise ResultError(f"{path}: accuracy must be numbers in [0, 1]")
    for (method, seed), g in df.groupby(["method", "seed"]):
        labs = [str(x) for x in g["labeler"]]
        users = sorted((x for x in labs if x != "all"), key=lambda x: (len(x), x))
        if labs.count("all") != 1 or users != [str(i) for i in range(len(users))]:
            raise ResultError(f"{path}: {method} seed {seed} lacks labelers (has {labs}; "
                              "expected 0..K-1 and all): truncated?")
    rows = df.astype({"labeler": str, "seed": str, "method": str}).to_dict("records")
    for r in rows:
        r["accuracy"] = float(r["accuracy"])
    return rows
