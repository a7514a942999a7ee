"""sim.experiments.tail_study can tell the two placements of Sigma_tail apart (Theorem 4.1 vs B.1): on data
generated from either form (with seed noise) it recovers that form's exponent and prefers it
out of sample; the slope caps hold for any constants."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.experiments import tail_study
from theory import bounds

ROW = pd.Series(dict(N=20, d1=12, d2=3, k=2, nu=0.1, delta=0.1, B=1.0, S=10, A=4, H=5,
                     behaviour="uniform", feature_scale=2.0))


def _tables(form, a=0.02, b=0.3, noise=0.05, seeds=10, seed=0):
    rng = np.random.default_rng(seed)
    tail = np.array(tail_study.TAILS)
    out = {}
    for Np in tail_study.NPS:
        stat = float(tail_study._stat(ROW, Np))
        bias = np.sqrt(tail / ROW["N"]) / ROW["nu"]
        dist = np.sqrt(a * stat + b * bias) if form == "inside" else np.sqrt(a * stat) + b * bias
        vals = dist[:, None] * np.exp(noise * rng.normal(size=(len(tail), seeds)))
        out[Np] = pd.DataFrame(vals, index=pd.Index(tail, name="tail"), columns=range(seeds))
    return out


@pytest.mark.erratum(2)
@pytest.mark.parametrize("form,gamma", [("inside", 0.25), ("outside", 0.5)])
def test_recovers_the_generating_form(form, gamma):
    # constants chosen so that the tail term dominates at the top of the grid for both forms
    df = tail_study.analyse(_tables(form, b=0.3 if form == "inside" else 0.05), ROW, n_boot_fit=40)
    rule = "quadrature" if form == "inside" else "additive"
    full = f"tail <= {max(tail_study.TAILS):g}"
    free = df[df["check"].str.startswith("free exponent") & (df["range"] == full)].set_index("check")
    g = free.loc[f"free exponent gamma ({rule})"]
    assert g.ci_low - 0.02 <= gamma <= g.ci_high + 0.02
    other = "outside" if form == "inside" else "inside"
    for fit_np in tail_study.NPS:  # constants fitted on one N_p predict the other better
        rmse = {name: df[(df["check"] == f"{name} form fitted on Np={fit_np}") & (df["range"] == full)]["estimate"].iloc[0]
                for name in ("inside", "outside")}
        assert rmse[form] < 0.5 * rmse[other]
    top = df[(df["check"] == "upper-half slope") & (df["Np"] == max(tail_study.NPS))].iloc[0]
    assert top.above_inside_cap == (form == "outside")
    assert "gamma" in tail_study.markdown(df)


@settings(max_examples=30, deadline=None)
@given(c_tail=st.floats(1e-4, 1e4), c_bracket=st.floats(1e-4, 1e4), Np=st.sampled_from([100, 12800]))
def test_slope_caps_hold_for_any_constants(c_tail, c_bracket, Np):
    t = np.array(tail_study.TAILS)
    kw = dict(N=20, Np=Np, nu=0.1, d1=12, d2=3, k=2, c_tail=c_tail, c_bracket=c_bracket)
    s_in = bounds.local_log_slope(lambda x: bounds.dist_bound(tail=x, placement="inside", **kw), t)
    s_out = bounds.local_log_slope(lambda x: bounds.dist_bound(tail=x, placement="outside", **kw), t)
    assert np.all((s_in >= 0) & (s_in <= tail_study.CAPS["inside (Thm 4.1)"] + 1e-9))
    assert np.all((s_out >= 0) & (s_out <= tail_study.CAPS["outside (Thm B.1)"] + 1e-9))


def test_missing_sweeps_exit_2(tmp_path, capsys):
    assert tail_study.main(["--out", str(tmp_path), "--analyse-only"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
