"""Tests of sim/model/mdp.py, sim/model/truth.py and sim/model/data.py: exact cases, feasibility, BT labels."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.model import data as simdata
from sim.model.mdp import (
    TabularMDP,
    backward_induction,
    occupancy,
    random_mdp,
    sample_trajectories,
    value,
)
from sim.model.truth import balance_rows, make_ground_truth
from theory import diversity


def two_state_mdp():
    # s0 --a0--> s0, s0 --a1--> s1; s1 absorbing. Features: reward 1 for (s1, *), 0 otherwise.
    P = np.zeros((2, 2, 2, 2))
    P[:, 0, 0, 0] = 1
    P[:, 0, 1, 1] = 1
    P[:, 1, :, 1] = 1
    phi = np.zeros((2, 2, 1, 1))
    phi[1, :, 0, 0] = 1.0
    return TabularMDP(P=P, rho=np.array([1.0, 0.0]), phi=phi)


def test_two_state_mdp_by_hand():
    mdp = two_state_mdp()
    pi, v = backward_induction(mdp, mdp.step_rewards(np.ones((1, 1))))
    assert v == pytest.approx(1.0)  # go to s1 at step 1, collect 1 at step 2
    assert pi[0, 0, 1] == 1
    half = np.full((2, 2, 2), 0.5)
    assert value(mdp, half, np.ones((1, 1))) == pytest.approx(0.5)
    d = occupancy(mdp, half)
    np.testing.assert_allclose(d[1].sum(1), [0.5, 0.5])


def test_mdp_validation_names_the_problem():
    mdp = two_state_mdp()
    with pytest.raises(ValueError, match="sum to one"):
        TabularMDP(P=mdp.P * 0.5, rho=mdp.rho, phi=mdp.phi)
    with pytest.raises(ValueError, match="phi must have shape"):
        TabularMDP(P=mdp.P, rho=mdp.rho, phi=np.zeros((3, 2, 1, 1)))
    with pytest.raises(ValueError, match="theta must end in"):
        mdp.step_rewards(np.ones((2, 2)))


def test_monte_carlo_agrees_with_exact_value():
    rng = np.random.default_rng(1)
    mdp = random_mdp(4, 3, 5, 2, 2, rng)
    pi = rng.dirichlet(np.ones(3), size=(5, 4))
    theta = rng.normal(size=(2, 2))
    s, a = sample_trajectories(mdp, pi, 40000, rng)
    mc = np.einsum("nde,de->n", mdp.phi[s, a].sum(1), theta)
    assert mc.mean() == pytest.approx(value(mdp, pi, theta), abs=4 * mc.std() / 200)


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 12), d1=st.integers(2, 10), d2=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_ground_truth_hits_nu_and_tail_exactly(N, d1, d2, seed):
    rng = np.random.default_rng(seed)
    r = min(d1, N * d2)
    k = int(rng.integers(1, r + 1))
    nu = float(rng.uniform(0.01, 1.0 / k))
    tail = 0.0 if r == k else float(rng.uniform(0, 0.9 * nu * N * (r - k)))
    B = np.sqrt((k * nu * N + tail) / N) * 1.01
    try:
        gt = make_ground_truth(N, d1, d2, k, nu, tail, B, rng)
    except ValueError as e:  # only the energy budget may bind here
        assert "energy" in str(e)
        return
    assert diversity.nu(gt.delta, k) == pytest.approx(nu, rel=1e-9)
    assert diversity.tail(gt.delta, k) == pytest.approx(tail, rel=1e-9, abs=1e-12)
    assert np.linalg.norm(gt.delta, axis=(1, 2)).max() <= B * (1 + 1e-9)


def test_balance_rows_keeps_orthonormal_columns():
    rng = np.random.default_rng(3)
    V = np.linalg.qr(rng.normal(size=(12, 4)))[0]
    w = np.array([5.0, 3.0, 1.0, 0.1])
    Vb = balance_rows(V, w)
    np.testing.assert_allclose(Vb.T @ Vb, np.eye(4), atol=1e-12)
    diag = (Vb**2) @ w
    np.testing.assert_allclose(diag, diag.mean(), rtol=1e-10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=30), "exceeds min"),
    (dict(nu=-0.1), "nu must be positive"),
    (dict(tail=-1.0), "tail must be non-negative"),
    (dict(nu=0.5), "energy budget"),
    (dict(nu=0.01, tail=5.0), "spectral gap"),
])
def test_infeasible_truth_requests(kwargs, message):
    args = dict(N=10, d1=20, d2=2, k=3, nu=0.1, tail=0.0, B=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_ground_truth(rng=np.random.default_rng(0), **args)


def test_bradley_terry_label_frequencies():
    rng = np.random.default_rng(5)
    mdp = random_mdp(6, 3, 4, 3, 2, rng)
    gt = make_ground_truth(3, 3, 2, 1, 0.3, 0.0, 1.0, rng)
    mu = simdata.behaviour_policy(mdp, "uniform", rng)
    data = simdata.make_preferences(mdp, gt.theta, [4000, 10, 300], mu, mu, rng)
    np.testing.assert_array_equal(data.sizes, [4000, 10, 300])
    margin = np.einsum("mde,mde->m", data.diff, gt.theta[data.user])
    p = 1 / (1 + np.exp(-margin))
    # calibration: labels match the BT probabilities in aggregate (z-score of the sum)
    z = (data.o.sum() - p.sum()) / np.sqrt(np.sum(p * (1 - p)))
    assert abs(z) < 4
    assert simdata.check_identifiability(data, warn=False) == 6


def test_identifiability_warning():
    rng = np.random.default_rng(0)
    mdp = random_mdp(2, 2, 2, 4, 2, rng)  # 4 (s, a) features cannot span 8 dimensions
    gt = make_ground_truth(2, 4, 2, 1, 0.2, 0.0, 1.0, rng)
    mu = simdata.behaviour_policy(mdp, "uniform", rng)
    data = simdata.make_preferences(mdp, gt.theta, 200, mu, mu, rng)
    with pytest.warns(UserWarning, match="not identifiable"):
        simdata.check_identifiability(data)


def test_poor_behaviour_avoids_the_mean_optimum():
    rng = np.random.default_rng(2)
    mdp = random_mdp(8, 4, 5, 3, 2, rng)
    theta = rng.normal(size=(3, 2))
    poor = simdata.behaviour_policy(mdp, "poor", rng, theta_mean=theta, eps=0.1)
    uni = simdata.behaviour_policy(mdp, "uniform", rng)
    assert value(mdp, poor, theta) < value(mdp, uni, theta)
    # expert: eps-soft around the mean optimum, so within eps of the optimal value scale.
    expert = simdata.behaviour_policy(mdp, "expert", rng, theta_mean=theta, eps=0.1)
    best = value(mdp, backward_induction(mdp, mdp.step_rewards(theta))[0], theta)
    assert value(mdp, uni, theta) < value(mdp, expert, theta) <= best + 1e-12
    np.testing.assert_allclose(expert.sum(-1), 1.0)
    assert expert.min() == pytest.approx(0.1 / mdp.A)
    with pytest.raises(ValueError, match="needs theta_mean"):
        simdata.behaviour_policy(mdp, "expert", rng)
    with pytest.raises(ValueError, match="unknown behaviour"):
        simdata.behaviour_policy(mdp, "greedy", rng)


# ------------------------------------------------------------------ coverage traps, mu_{i,ref}
def test_trap_bandit_by_hand():
    # H = S = d2 = 1: an A-armed bandit whose arm a earns feature_scale * theta[a, 0].
    from sim.model.mdp import trap_mdp

    mdp = trap_mdp(1, 5, 1, 5, 1, np.random.default_rng(0), feature_scale=2.0)
    theta = np.arange(5.0)[:, None]
    np.testing.assert_allclose(mdp.step_rewards(theta), 2.0 * np.arange(5.0)[None])
    pi, v = backward_induction(mdp, mdp.step_rewards(theta))
    assert v == pytest.approx(8.0) and pi[0, 0, 4] == 1.0


def test_trap_value_by_state_groups():
    # J(pi) = sum_h sum_s d_h(s) sum_a pi_h(a|s) scale/sqrt(H) theta[a, s mod d2], by an
    # explicit forward pass (not via occupancy measures or features).
    from sim.model.mdp import trap_behaviour, trap_mdp

    rng = np.random.default_rng(3)
    S, A, H, d2 = 5, 4, 3, 2
    mdp = trap_mdp(S, A, H, A, d2, rng, feature_scale=1.5)
    pi = rng.dirichlet(np.ones(A), size=(H, S))
    theta = rng.normal(size=(A, d2))
    state, total = mdp.rho.copy(), 0.0
    for h in range(H):
        for s in range(S):
            for a in range(A):
                total += state[s] * pi[h, s, a] * 1.5 / np.sqrt(H) * theta[a, s % d2]
        state = np.einsum("s,sa,sat->t", state, pi[h], mdp.P[h])
    assert value(mdp, pi, theta) == pytest.approx(total, rel=1e-12)
    mu = trap_behaviour(H, S, A, 0.2)
    np.testing.assert_allclose(mu.sum(-1), 1.0)
    np.testing.assert_allclose(mu[..., 2:].sum(-1), 0.2)
    np.testing.assert_allclose(mu[..., 0], mu[..., 1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(instance="trap"), "A == d1"),
    (dict(instance="trap", A=12, S=2), "S >= d2"),
    (dict(instance="trap", A=12, rare_mass=1.0), "rare_mass"),
    (dict(instance="maze"), "instance must be"),
    (dict(ref_policy="mine"), "ref_policy must be"),
    (dict(confidence_set="fisher"), "confidence_set must be"),
])
def test_trap_and_reference_config_validation(kwargs, message):
    from sim.model.config import SimConfig

    with pytest.raises(ValueError, match=message):
        SimConfig(**kwargs)


def test_trap_instance_is_a_coverage_trap():
    # build_instance: known base reward on the good rows, behaviour mass rare_mass on the rest,
    # and the data visit the rare actions at that rate.
    from sim.experiments.pipeline import build_instance
    from sim.model.config import SimConfig
    from sim.model.mdp import TRAP_GOOD

    cfg = SimConfig(instance="trap", A=12, rare_mass=0.05, trap_margin=0.3, Np=200, N=4)
    mdp, truth, mu, train, _ = build_instance(cfg, 0)
    np.testing.assert_allclose(truth.init[:, :TRAP_GOOD], 0.3)
    np.testing.assert_allclose(truth.init[:, TRAP_GOOD:], 0.0)
    s0, a0, s1, a1 = train.paths
    rare = np.mean(np.concatenate([a0, a1]) >= TRAP_GOOD)
    assert rare == pytest.approx(0.05, abs=0.01)
    assert np.allclose(mu[..., TRAP_GOOD:].sum(-1), 0.05)


def test_empirical_reference_policy_by_hand_and_recovery():
    # One state, H = 1, two actions: user 0 takes a0 three times and a1 once over its two
    # comparisons' four trajectories; with prior (1/2, 1/2) and strength 1: (3.5/5, 1.5/5).
    mdp = TabularMDP(P=np.ones((1, 1, 2, 1)), rho=np.ones(1), phi=np.ones((1, 2, 1, 1)))
    a0, a1 = np.array([[0], [0]]), np.array([[0], [1]])
    s = np.zeros((2, 1), dtype=int)
    d = simdata.PreferenceData(np.zeros(2, int), np.zeros((2, 1, 1)), np.zeros((2, 1, 1)),
                               np.zeros(2, np.int8), 1, paths=(s, a0, s, a1))
    pi = simdata.empirical_policy(d, np.full((1, 1, 2), 0.5))
    np.testing.assert_allclose(pi[0, 0, 0], [0.7, 0.3])
    # Recovery: with many comparisons each user's empirical policy approaches the behaviour's.
    rng = np.random.default_rng(1)
    mdp = random_mdp(4, 3, 3, 2, 1, rng)
    mu = rng.dirichlet(np.ones(3), size=(3, 4))
    gt = make_ground_truth(2, 2, 1, 1, 0.2, 0.0, 1.0, rng)
    errs = []
    for n in (50, 5000):
        data = simdata.make_preferences(mdp, gt.theta, n, mu, mu, rng)
        pi = simdata.empirical_policy(data, mu)
        occ = occupancy(mdp, mu)
        errs.append(np.max(np.abs(pi - mu) * occ.sum(-1, keepdims=True)))
        assert np.allclose(pi.sum(-1), 1.0)
    assert errs[1] < errs[0] / 3
    with pytest.raises(ValueError, match="paths"):
        simdata.empirical_policy(simdata.PreferenceData(d.user, d.x0, d.x1, d.o, 1), mu)


def test_pipeline_trap_with_sigma_d_and_per_user_references():
    # Smoke of the full path: the runs.csv row carries the new fields, the certified gap holds.
    from sim.experiments.pipeline import run_instance
    from sim.model.config import SimConfig

    cfg = SimConfig(instance="trap", A=12, N=4, Np=60, S=4, H=2, confidence_set="sigma_d",
                    ref_policy="empirical")
    rows = run_instance(cfg, 0, ["full", "shared"])
    for r in rows:
        assert r["instance"] == "trap" and r["ref_policy"] == "empirical"
        assert r["policy_cert_gap"] <= 1e-9 * 10 and 0 <= r["coverage"] <= 1


def test_pessimism_map_cli_tiny_resumes_and_plots(tmp_path):
    import subprocess
    import sys

    import pandas as pd

    out = tmp_path / "map"
    cmd = [sys.executable, "-m", "sim.pessimism_map", "--seeds", "2", "--rare", "0.1",
           "--Np", "15", "--methods", "full", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    cells = pd.read_csv(out / "map.csv")
    assert len(cells) == 4 and set(cells["confidence_set"]) == {"ball", "sigma_d"}
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and {"seed", "instance", "rare_mass", "Np", "confidence_set"} <= set(runs)
    diff = (runs["gap_pess"] - runs["gap_vanilla"]).groupby(
        [runs["instance"], runs["confidence_set"]]).mean()
    np.testing.assert_allclose(cells.set_index(["instance", "confidence_set"])["diff"],
                               diff.loc[list(cells.set_index(["instance", "confidence_set"]).index)],
                               rtol=1e-9)
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.csv")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # resume: no rework
    assert r.returncode == 0 and stamp == {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.csv")}
    r = subprocess.run([sys.executable, "-m", "figures", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "pessimism_map.png").exists() and (out / "pessimism_map.pdf").exists()
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "b"), "--rare", "2"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
