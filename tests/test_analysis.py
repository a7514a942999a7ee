"""sim/experiments/analysis.py: constant_free flags, per-class Cor 4.1 predictions and the Remark 3 table,
checked against closed forms and synthetic sweeps with known exponents."""

import numpy as np
import pandas as pd
import pytest

from sim.experiments import analysis, remark3


def _runs(vary="Np", values=(50, 100, 200, 400, 800), tail=0.0, seeds=4, rate=-1.0):
    rng = np.random.default_rng(0)
    rows = []
    for v in values:
        for s in range(seeds):
            for m in ("shared", "local", "full", "global"):
                cfg = dict(N=20, Np=100, nu=0.1, tail=tail, d1=12, d2=3, k=2, delta=0.1)
                cfg[vary] = v
                noise = np.exp(0.02 * rng.normal())
                rows.append(dict(vary=vary, value=v, seed=s, method=m, **cfg,
                                 dist=(v ** (rate / 2) * noise) if m == "shared" else np.nan,
                                 est_err=v ** rate * noise, gap_pess=v ** (rate / 2) * noise,
                                 gap_vanilla=v ** (rate / 2) * noise))
    return pd.DataFrame(rows)


def test_constant_free_flags_and_per_class_predictions():
    slopes = analysis.compute_slopes(_runs(), "Np").set_index(["quantity", "method"])
    assert set(analysis.SLOPE_COLUMNS) == set(slopes.reset_index().columns)
    # one-term bounds (tail 0): the constants cannot move the slope
    assert slopes.loc[("dist", "shared"), "constant_free"]
    assert slopes.loc[("est_err", "full"), "constant_free"]
    # Cor 4.1 mixes log(N Np)/Np with 1/Np: between -1/2 and the log-corrected -1/2
    row = slopes.loc[("gap_pess", "shared")]
    assert not row.constant_free and row.pred_low <= row.predicted_slope <= row.pred_high
    assert row.pred_low == pytest.approx(-0.5, abs=1e-3)
    # full's class bound by hand: sqrt(N d1 d2 log(N Np / delta) / (N Np)), OLS over the grid
    x = np.array([50, 100, 200, 400, 800.0])
    by_hand = np.polyfit(np.log(x), 0.5 * np.log(20 * 36 * np.log(20 * x / 0.1) / (20 * x)), 1)[0]
    full = slopes.loc[("gap_pess", "full")]
    assert full.predicted_slope == pytest.approx(by_hand) and full.constant_free
    assert full.bound == "Cor 4.1 form, S class"
    assert not slopes.loc[("gap_pess", "global"), "constant_free"]  # heterogeneity term


def test_tail_rows_depend_on_the_constants():
    slopes = analysis.compute_slopes(_runs("tail", (0.05, 0.2, 0.8, 1.6), rate=0.5), "tail")
    dist = slopes[slopes["quantity"] == "dist"]
    assert len(dist) == 2 and not dist["constant_free"].any()
    inside = dist[dist["bound"].str.contains("inside")].iloc[0]
    outside = dist[dist["bound"].str.contains("outside")].iloc[0]
    assert 0 <= inside.pred_low and inside.pred_high <= 0.25 + 1e-6  # the caps of the two forms
    assert outside.pred_high <= 0.5 + 1e-6 and outside.pred_high > 0.4


@pytest.mark.parametrize("target", [0.05, 0.02, 0.003])
def test_np_needed_follows_the_measured_rate(target):
    # est_err = 3 Np^-0.6 exactly: any target is reached at (3 / target)^(1/0.6)
    e = lambda n: 3 * n ** -0.6  # noqa: E731
    need, how = remark3._np_needed(e(400), e(1600), 400, 1600, target)
    assert need == pytest.approx((3 / target) ** (1 / 0.6), rel=1e-9)
    assert how == ("interpolated" if e(1600) <= target <= e(400) else
                   "extrapolated below grid" if target > e(400) else "extrapolated above grid")
    assert remark3._np_needed(e(400), float("nan"), 400, float("nan"), target)[1] == "assumed 1/N_p"


def test_remark3_table_uses_each_methods_own_rate():
    def runs(np_, rates):
        rows = []
        for d1 in (5, 10, 20):
            for s in range(3):
                for m, r in rates.items():
                    rows.append(dict(method=m, value=d1, seed=s, Np=np_, N=20, d2=3, k=2,
                                     est_err=(d1 / 5) * np_ ** r))
        return pd.DataFrame(rows)

    rates = {"shared": -1.0, "full": -0.5}
    table = remark3.remark3_table(runs(400, rates), runs(1600, rates)).set_index("d1")
    np.testing.assert_allclose(table["rate full"], -0.5)
    target = 400 ** -0.5  # full at d1 = 5, Np = 400
    np.testing.assert_allclose(table["Np_needed full"], (np.array([1, 2, 4]) / target) ** 2)
    np.testing.assert_allclose(table["Np_needed shared"], np.array([1, 2, 4]) / target)
    assert "own measured rate" in remark3.remark3_markdown(runs(400, rates), runs(1600, rates))
    with pytest.raises(ValueError, match="higher N_p"):
        remark3.remark3_table(runs(400, rates), runs(400, rates))
