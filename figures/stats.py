"""Interval estimates over seeds for result tables (pure functions on arrays and rows).

Used by the llm studies' tables (llm.study, llm.new_user_study) and by their figures, so that a
table and its plot always show the same interval.
"""

from __future__ import annotations

import numpy as np


def ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval over seeds (0 for one value).
    ``values``: (n_seeds,), one number per seed."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def per_seed(rows: list[dict], method: str, size: int) -> dict[int, float]:
    """Labeler-``all`` accuracy per seed, averaged over that seed's draws of the shots
    (rows of llm.study --new-users' new_users.csv)."""
    acc: dict[int, list[float]] = {}
    for r in rows:
        if (r["labeler"] == "all" and r["method"] == method
                and int(r["pairs_per_labeler"]) == size):
            acc.setdefault(int(r["seed"]), []).append(float(r["accuracy"]))
    return {s: float(np.mean(v)) for s, v in acc.items()}
