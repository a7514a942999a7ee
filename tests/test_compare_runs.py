"""benchmarks/compare_runs.py: the before/after check of a solver change on two runs.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.compare_runs import compare, main


def _runs(seed=0):
    rng = np.random.default_rng(seed)
    n = 6
    return pd.DataFrame({"vary": "nu", "value": np.repeat([0.1, 0.2], 3), "seed": [0, 1, 2] * 2,
                         "method": "shared", "policy_solver": "lp",
                         "gap_pess": rng.random(n), "dist": [np.nan] * n,
                         "policy_s": rng.random(n)})


def test_identical_up_to_timings_and_row_order():
    a = _runs()
    b = a.sample(frac=1.0, random_state=1).copy()
    b["policy_s"] += 5.0  # timings are skipped
    res = compare(a, b)
    assert all(ok for _, ok in res.values()) and res["gap_pess"][0] == 0.0
    assert "policy_s" not in res


def test_differences_are_measured_and_flagged(tmp_path, capsys):
    a, b = _runs(), _runs()
    b.loc[2, "gap_pess"] += 3e-8
    b["policy_solver"] = "face"
    res = compare(a, b)
    assert res["gap_pess"][0] == pytest.approx(3e-8 / max(1.0, abs(a.loc[2, "gap_pess"])), rel=1e-6)
    assert not res["gap_pess"][1] and res["policy_solver"] == (6, False)
    assert compare(a, b, ignore=("policy_solver",), tol=1e-7)["gap_pess"][1]
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--ignore", "policy_solver"])
    assert err.value.code == 1 and "gap_pess" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--ignore", "policy_solver",
              "--tol", "1e-7"])
    assert err.value.code == 0
