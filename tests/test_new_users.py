"""Held-out users (issue 18, extension): the frozen-basis fit against an independent conic
solver, recovery as Np_new grows, the new users' truth family, N_new = 0 leaving the training
rows alone, the theory's limits and the crossover equation, the `--vary Np_new` sweep at tiny
size and its bad inputs."""

import os
import subprocess
import sys
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.experiments.new_users import fit_frozen, make_new_users
from sim.experiments.pipeline import run_instance
from sim.model.config import SimConfig
from sim.model.data import PreferenceData, make_preferences
from sim.model.mdp import random_mdp
from sim.model.truth import make_ground_truth
from theory import diversity, new_user

ROOT = Path(__file__).resolve().parents[1]


def _random_data(rng, n_users, m, d1, d2, theta_scale=1.0):
    x0, x1 = rng.normal(size=(2, n_users * m, d1, d2))
    theta = theta_scale * rng.normal(size=(n_users, d1, d2))
    user = np.repeat(np.arange(n_users), m)
    z = np.einsum("mde,mde->m", x0 - x1, theta[user])
    o = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(np.int8)
    return PreferenceData(user=user, x0=x0, x1=x1, o=o, n_users=n_users)


def _cvxpy_frozen(data, basis, B, init, i):
    """User i's W by Clarabel: min mean logistic loss over ||W||_F <= B, DeltaTheta = basis W."""
    rows = data.user == i
    X = data.diff[rows]
    d2 = X.shape[2]
    F = np.einsum("dk,mde->mke", basis, X).reshape(len(X), -1)  # <X, basis W> = F vec(W)
    off = np.einsum("mde,de->m", X, init[i])
    w = cp.Variable(F.shape[1])
    z = F @ w + off
    obj = cp.sum(cp.logistic(z) - cp.multiply(data.o[rows].astype(float), z)) / data.user.size
    prob = cp.Problem(cp.Minimize(obj), [cp.norm(w, 2) <= B])
    prob.solve(solver=cp.CLARABEL)
    return basis @ w.value.reshape(basis.shape[1], d2), prob.value


@pytest.mark.parametrize("seed,m,B", [(0, 6, 0.5), (1, 40, 1.0), (2, 300, 3.0)])
def test_frozen_fit_is_certified_and_agrees_with_clarabel(seed, m, B):
    rng = np.random.default_rng(seed)
    d1, d2, k, n = 5, 2, 2, 3
    data = _random_data(rng, n, m, d1, d2)
    basis = np.linalg.qr(rng.normal(size=(d1, k)))[0]
    init = 0.3 * rng.normal(size=(n, d1, d2))
    est = fit_frozen(data, basis, B, init=init)
    assert est.info["converged"] and est.info["gap"] <= 1e-9
    total = 0.0
    for i in range(n):
        delta, val = _cvxpy_frozen(data, basis, B, init, i)
        assert np.linalg.norm(est.delta[i]) <= B * (1 + 1e-9)
        np.testing.assert_allclose(est.delta[i], delta, atol=2e-4)
        total += val
    # the Frank-Wolfe gap certifies the objective: it is within gap of Clarabel's optimum
    assert est.nll - total <= est.info["gap"] + 1e-7 and total - est.nll <= 1e-6


def test_oracle_new_user_error_falls_like_one_over_np_new():
    rng = np.random.default_rng(0)
    d1, d2, k, N = 8, 2, 2, 10
    truth = make_ground_truth(N, d1, d2, k, 0.1, 0.0, 1.0, rng)
    basis, _, _ = diversity.best_rank_k(truth.delta, k)
    mdp = random_mdp(6, 4, 4, d1, d2, rng, feature_scale=2.0)
    mu = np.full((4, 6, 4), 0.25)
    new = make_new_users(truth, 20, rng)
    errs = []
    for n in (100, 400, 1600):
        data = make_preferences(mdp, new.theta, n, mu, mu, np.random.default_rng(n))
        est = fit_frozen(data, basis, 1.0)
        errs.append(np.mean(np.sum((est.delta - new.delta) ** 2, axis=(1, 2))))
    slope = np.polyfit(np.log([100, 400, 1600]), np.log(errs), 1)[0]
    assert errs[0] > errs[1] > errs[2] and -1.3 < slope < -0.7, (errs, slope)


@pytest.mark.parametrize("tail", [0.0, 0.5])
def test_new_users_share_the_column_space_and_the_energies(tail):
    rng = np.random.default_rng(3)
    N, d1, d2, k, nu = 12, 10, 3, 2, 0.1
    truth = make_ground_truth(N, d1, d2, k, nu, tail, 1.0, rng)
    new = make_new_users(truth, 7, rng)
    b, _, _ = diversity.best_rank_k(truth.delta, k)
    head = b @ (b.T @ new.delta)
    np.testing.assert_allclose(np.sum(head**2, axis=(1, 2)), k * nu, rtol=1e-10)
    np.testing.assert_allclose(np.sum((new.delta - head) ** 2, axis=(1, 2)), tail / N,
                               rtol=1e-10, atol=1e-14)
    # the training users have the same average energies (sim/model/truth.py)
    train_head = b @ (b.T @ truth.delta)
    assert np.isclose(np.mean(np.sum(train_head**2, axis=(1, 2))), k * nu)
    assert np.all(np.linalg.norm(new.delta, axis=(1, 2)) <= 1.0)


TINY = dict(N=4, d1=4, d2=1, k=1, S=4, A=3, H=3, n_test=20, Np=40)


def test_n_new_zero_leaves_training_rows_and_fills_new_columns():
    methods = ["shared", "local", "global", "zero", "oracle"]
    off = pd.DataFrame(run_instance(SimConfig(**TINY), 1, methods))
    on = pd.DataFrame(run_instance(SimConfig(**TINY, N_new=3, Np_new=30), 1, methods))
    new_cols = ["est_err_new", "pred_err_new", "gap_pess_new", "gap_vanilla_new", "coverage_new"]
    assert off[new_cols].isna().all().all() and on[new_cols].notna().all().all()
    same = [c for c in off.columns if c not in new_cols and not c.endswith("_s")
            and c not in ("N_new", "Np_new", "zeta_new", "floor_new", "fit_gap_new",
                          "policy_cert_gap_new")]
    pd.testing.assert_frame_equal(off[same], on[same])
    on = on.set_index("method")
    assert on.loc["zero", "est_err_new"] == pytest.approx(TINY["k"] * 0.1)  # ||DeltaTheta*_new||^2
    assert on.loc["oracle", "floor_new"] == pytest.approx(0.0, abs=1e-20)  # tail = 0
    assert (on.loc[["shared", "oracle"], "fit_gap_new"] <= 1e-9).all()


def test_grouped_new_user_runs_equal_one_run_per_config():
    # `--vary Np_new` runs the training users once per seed (pipeline.run_instances); every
    # non-timing value must equal a separate run_instance per config, bit for bit.
    from sim.experiments.pipeline import run_instances

    methods = ["shared", "local", "oracle"]
    cfgs = [SimConfig(**TINY, N_new=3, Np_new=n) for n in (10, 80)]
    grouped = run_instances(cfgs, 2, methods)
    for cfg, rows in zip(cfgs, grouped):
        alone = pd.DataFrame(run_instance(cfg, 2, methods))
        together = pd.DataFrame(rows)
        keep = [c for c in alone.columns if not c.endswith("_s")]
        pd.testing.assert_frame_equal(alone[keep], together[keep], check_exact=True)
    assert grouped[0][0]["est_err_new"] != grouped[1][0]["est_err_new"]  # the new users differ
    with pytest.raises(ValueError, match="differ only in"):
        run_instances([cfgs[0], cfgs[1].with_(Np=41)], 2, methods)


def test_theory_limits_pure_rate():
    n = np.array([5.0, 50.0, 500.0])
    np.testing.assert_allclose(new_user.frozen_basis_error(n, 2, 3, 0.0, 0.2, 0.0), 6 / n)
    assert new_user.crossover_n(2, 3, 36, 0.0) == float("inf")
    assert new_user.crossover_n(2, 3, 6, 0.01) == 0.0
    assert new_user.estimation_dominated(n, 2, 3, 0.0).all()
    with pytest.raises(ValueError):
        new_user.frozen_basis_error(0, 2, 3, 0.1, 0.2, 0.0)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 4), d2=st.integers(1, 4), extra=st.integers(1, 40),
       dist=st.floats(0.01, 1.0), head=st.floats(0.01, 2.0), tail=st.floats(0.0, 0.5),
       c_est=st.floats(0.1, 10.0), c_scr=st.floats(0.1, 10.0), c_rep=st.floats(1.0, 5.0))
def test_crossover_solves_the_equality_it_claims(k, d2, extra, dist, head, tail, c_est, c_scr,
                                                  c_rep):
    dim = k * d2 + extra
    floor = new_user.representation_floor(dist, head, k, tail, c_rep)
    n = new_user.crossover_n(k, d2, dim, floor, c_est=c_est, c_scratch=c_scr)
    if c_scr * dim <= c_est * k * d2:
        assert n == 0.0
        return
    frozen = new_user.frozen_basis_error(n, k, d2, dist, head, tail, c_est=c_est, c_rep=c_rep)
    scratch = new_user.from_scratch_error(n, dim, c_est=c_scr)
    assert frozen == pytest.approx(scratch, rel=1e-9)
    # before the crossover the frozen basis is better, after it worse
    for f, better in ((0.5, True), (2.0, False)):
        fz = new_user.frozen_basis_error(f * n, k, d2, dist, head, tail, c_est=c_est, c_rep=c_rep)
        assert (fz < new_user.from_scratch_error(f * n, dim, c_est=c_scr)) == better


def _sweep(*args):
    return subprocess.run([sys.executable, "-m", "sim.sweep", *args], cwd=ROOT, timeout=600,
                          env=dict(os.environ, MPLBACKEND="Agg"), capture_output=True, text=True)


TINY_ARGS = [f"--set={k}={v}" for k, v in TINY.items()] + ["--jobs", "1"]


def test_sweep_vary_np_new_smoke(tmp_path):
    out = tmp_path / "s"
    r = _sweep("--vary", "Np_new", "--values", "10,40,160", "--seeds", "2", "--set", "N_new=3",
               "--methods", "shared,local,full,oracle,zero", *TINY_ARGS, "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 * 2 * 5 and runs["est_err_new"].notna().all()
    assert sorted(runs["Np_new"].unique()) == [10, 40, 160]
    slopes = pd.read_csv(out / "slopes.csv")
    assert {"est_err_new", "est_err_new floor"} <= set(slopes["quantity"])
    assert slopes.loc[slopes["method"].isin(["local", "full"]), "constant_free"].all()
    assert not slopes.loc[slopes["quantity"] == "est_err_new floor", "constant_free"].any()
    cross = pd.read_csv(out / "crossover.csv")
    assert set(cross["method"]) == {"local", "full"}
    assert (out / "est_err_new_vs_Np_new.png").exists() and (out / "summary.md").exists()
    # resume: drop one value's part of seed 1; the re-run recomputes only it (one task for the
    # seed's missing values), and runs.csv is unchanged apart from timings
    (out / "parts" / "40_1.csv").unlink()
    r = _sweep("--vary", "Np_new", "--values", "10,40,160", "--seeds", "2", "--set", "N_new=3",
               "--methods", "shared,local,full,oracle,zero", *TINY_ARGS, "--out", str(out),
               "--no-figures")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming: 5 of 6 runs already done" in r.stdout
    again = pd.read_csv(out / "runs.csv")
    keep = [c for c in runs.columns if not c.endswith("_s")]
    pd.testing.assert_frame_equal(runs[keep], again[keep])


@pytest.mark.parametrize("args,needle", [
    (["--set", "N_new=-1"], "N_new"),
    (["--values", "0,10"], "Np_new"),
    (["--set", "N_new=0"], "N_new"),
    (["--set", "N_new=2", "--set", "radius=theory"], "radius"),
])
def test_bad_new_user_input_is_one_line(tmp_path, args, needle):
    out = tmp_path / "bad"
    r = _sweep("--vary", "Np_new", "--seeds", "1", *args, "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def test_config_rejects_bad_np_new():
    with pytest.raises(ValueError, match="Np_new"):
        SimConfig(Np_new=0)
    with pytest.raises(ValueError, match="N_new"):
        SimConfig(N_new=1.5)


def test_floor_lower_bound_matches_the_theory_for_the_simulated_family():
    """E ||P_perp DeltaTheta*_new||^2 = nu dist^2 + Sigma_tail/N (1 - overlap) for the new users'
    isotropic head: theory.new_user.representation_floor at c_rep = 1 (Monte Carlo, 4000 users)."""
    rng = np.random.default_rng(5)
    N, d1, d2, k, nu, tail = 10, 8, 2, 2, 0.1, 0.3
    truth = make_ground_truth(N, d1, d2, k, nu, tail, 1.0, rng)
    b, _, _ = diversity.best_rank_k(truth.delta, k)
    b_hat = np.linalg.qr(b + 0.3 * rng.normal(size=b.shape))[0]
    dist = diversity.principal_angle_distance(b_hat, b)
    new = make_new_users(truth, 4000, rng)
    perp = np.eye(d1) - b_hat @ b_hat.T
    floor = np.mean(np.sum((perp @ new.delta) ** 2, axis=(1, 2)))
    pred = new_user.representation_floor(dist, k * nu, k, tail / N)
    # the tail's overlap with span B_hat lowers the floor by at most tail/N dist^2/(r - k)
    assert pred - tail / N * dist**2 / (d1 - k) - 0.03 * pred <= floor <= pred * 1.03
