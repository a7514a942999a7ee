"""Tests of sim/confidence/sets.py: Eq. 3.6 radii (theory shape, Fisher-calibrated) and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from sim.confidence import sets
from sim.estimation import estimators
from sim.model.data import make_preferences
from sim.model.mdp import random_mdp
from sim.model.truth import make_ground_truth
from theory.bounds import zeta_theory


def test_coverage_by_hand():
    true = np.zeros((3, 1, 2))
    hat = np.array([[[1.0, 0.0]], [[0.0, 2.0]], [[0.0, 0.0]]])  # squared errors 1, 4, 0
    assert sets.coverage(true, hat, 1.0) == pytest.approx(2 / 3)
    assert sets.coverage(true, hat, np.array([0.5, 4.0, 0.0])) == pytest.approx(2 / 3)
    assert sets.coverage(true, hat, 4.0) == 1.0


def test_coverage_bad_input():
    a = np.zeros((2, 1, 1))
    with pytest.raises(ValueError, match="non-negative"):
        sets.coverage(a, a, -1.0)
    with pytest.raises(ValueError, match="shape"):
        sets.coverage(a, a, np.ones(3))
    with pytest.raises(ValueError, match="both be"):
        sets.coverage(a, np.zeros((3, 1, 1)), 1.0)


@pytest.mark.erratum(4)
def test_theory_threshold_falls_like_the_squared_error():
    # Eq. 3.6's sets threshold the *squared* distance, so the theory threshold must fall like
    # the MLE's squared error (1/Np), i.e. be the square of B.1's radius (erratum 4); with the
    # radius itself as threshold it would fall like Np^(-1/2).
    nps = np.array([200, 800, 3200])
    errs = []
    for Np in nps:
        e = []
        for seed in range(3):
            truth, data, k = _setup(seed, Np=int(Np), N=8)
            est = estimators.fit("full", data, k, 1.0)
            e.append(np.mean(np.sum((est.delta - truth.delta) ** 2, axis=(1, 2))))
        errs.append(np.mean(e))
    slope_err = np.polyfit(np.log(nps), np.log(errs), 1)[0]
    thr = [sets.theory_radius(8, Np, 0.2, 0.0, 4, 2, 1) for Np in nps]
    slope_thr = np.polyfit(np.log(nps), np.log(thr), 1)[0]
    assert abs(slope_err + 1) < 0.2, slope_err
    assert abs(slope_thr - slope_err) < 0.25, (slope_thr, slope_err)
    radius = zeta_theory(8, 200, 0.2, 0.0, 4, 2, 1, c=3.0)  # c multiplies the radius
    assert sets.theory_radius(8, 200, 0.2, 0.0, 4, 2, 1, c=3.0) == pytest.approx(radius**2)
    with pytest.raises(ValueError, match="c must be positive"):
        sets.theory_radius(8, 200, 0.2, 0.0, 4, 2, 1, c=0.0)


def _setup(seed, Np=300, N=8, d1=4, d2=2, k=1):
    rng = np.random.default_rng(seed)
    mdp = random_mdp(6, 3, 4, d1, d2, rng, feature_scale=2.0)
    truth = make_ground_truth(N, d1, d2, k, 0.2, 0.0, 1.0, rng)
    mu = np.full((mdp.H, mdp.S, mdp.A), 1 / mdp.A)
    data = make_preferences(mdp, truth.theta, Np, mu, mu, rng)
    return truth, data, k


@pytest.mark.parametrize("method", ["shared", "local", "full", "global"])
def test_calibrated_radius_shape_and_cap(method):
    truth, data, k = _setup(0)
    est = estimators.fit(method, data, k, 1.0)
    z = sets.calibrated_radius(method, est, data, k, 1.0)
    assert z.shape == (truth.N,)
    assert np.all(z > 0) and np.all(z <= 4.0)
    z_loose = sets.calibrated_radius(method, est, data, k, 1.0, delta=0.5)
    assert np.all(z_loose <= z + 1e-12)  # lower level, smaller radius


def test_frozen_basis_radius_with_its_error_is_the_shared_radius():
    # New users reuse a `shared` basis and get its error's share through basis_cov
    # (sim/experiments/new_users.py). On the very users the basis was fitted on, an `oracle`
    # radius in that basis plus basis_cov = basis_error_covariance must be exactly the `shared`
    # radius (same tangent, same pooled J), and without basis_cov strictly smaller.
    truth, data, k = _setup(3, Np=200, N=8)
    est = estimators.fit("shared", data, k, 1.0)
    cov = sets.basis_error_covariance(est, data, 1.0)
    assert cov.shape == (4 * k, 4 * k) and np.allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > -1e-12
    shared = sets.calibrated_radius("shared", est, data, k, 1.0)
    frozen = sets.calibrated_radius("oracle", est, data, k, 1.0, basis_cov=cov)
    np.testing.assert_allclose(frozen, shared, rtol=1e-12)
    assert np.all(sets.calibrated_radius("oracle", est, data, k, 1.0) < shared)
    with pytest.raises(ValueError, match="frozen basis"):
        sets.calibrated_radius("full", est, data, k, 1.0, basis_cov=cov)


def test_calibrated_radius_bad_input():
    truth, data, k = _setup(1, Np=50)
    est = estimators.fit("full", data, k, 1.0)
    with pytest.raises(ValueError, match="unknown method"):
        sets.calibrated_radius("lora", est, data, k, 1.0)
    with pytest.raises(ValueError, match="delta"):
        sets.calibrated_radius("full", est, data, k, 1.0, delta=1.5)
    with pytest.raises(ValueError, match="init must have shape"):
        sets.calibrated_radius("full", est, data, k, 1.0, init=np.zeros((2, 2)))


def test_full_radius_covers_at_large_np():
    # With many comparisons per user the unconstrained MLE is near-Gaussian: coverage ~ 0.9.
    covs = []
    for seed in range(3):
        truth, data, k = _setup(seed, Np=400, N=10)
        est = estimators.fit("full", data, k, 1.0)
        z = sets.calibrated_radius("full", est, data, k, 1.0, delta=0.1)
        covs.append(sets.coverage(truth.delta, est.delta, z))
    assert np.mean(covs) >= 0.75


@pytest.mark.slow
@pytest.mark.parametrize("method,floor", [("full", 0.85), ("shared", 0.85), ("local", 0.85)])
def test_calibrated_coverage_over_seeds(method, floor):
    """Requirement: coverage >= 1 - delta - 0.05 over many seeds (docs/pessimism.md)."""
    covs = []
    for seed in range(20):
        truth, data, k = _setup(100 + seed, Np=200, N=10)
        est = estimators.fit(method, data, k, 1.0)
        z = sets.calibrated_radius(method, est, data, k, 1.0, delta=0.1)
        covs.append(sets.coverage(truth.delta, est.delta, z))
    assert np.mean(covs) >= floor, f"{method}: coverage {np.mean(covs):.3f}"


@pytest.mark.parametrize("method", ["shared", "local", "full", "global"])
def test_sigma_d_set_is_the_data_moment_with_a_monte_carlo_quantile(method):
    # M_i must be (1/n_i) sum_j x_j x_j^T + lambda I (an explicit loop over comparisons), and
    # beta_i the (1 - delta) quantile of e^T M_i e for e ~ N(0, Sigma_i): checked against a
    # Monte Carlo quantile of draws from error_covariance (Satterthwaite is approximate: 15%).
    truth, data, k = _setup(0, Np=300, N=6)
    est = estimators.fit(method, data, k, 1.0)
    metric, beta = sets.sigma_d_ellipsoid(method, est, data, k, 1.0, delta=0.1)
    _, cov = sets.error_covariance(method, est, data, k, 1.0)
    x = data.diff.reshape(len(data.o), -1)
    D = x.shape[1]
    rng = np.random.default_rng(0)
    for i in range(6):
        rows = range(len(x)) if method == "global" else np.flatnonzero(data.user == i)
        mom = sum(np.outer(x[j], x[j]) for j in rows) / len(rows)
        lam = sets.SIGMA_D_RIDGE * np.trace(mom) / D
        np.testing.assert_allclose(metric[i], mom + lam * np.eye(D), rtol=1e-10, atol=1e-12)
        w, v = np.linalg.eigh(cov[i])
        e = rng.normal(size=(40000, D)) * np.sqrt(np.clip(w, 0, 4.0)) @ v.T
        q = np.quantile(np.einsum("nd,de,ne->n", e, metric[i], e), 0.9)
        assert beta[i] == pytest.approx(q, rel=0.15)


@pytest.mark.parametrize("method", ["shared", "full"])
def test_sigma_d_set_covers(method):
    covs = []
    for seed in range(3):
        truth, data, k = _setup(seed, Np=400, N=10)
        est = estimators.fit(method, data, k, 1.0)
        metric, beta = sets.sigma_d_ellipsoid(method, est, data, k, 1.0, delta=0.1)
        assert metric.shape == (10, 8, 8) and np.all(np.linalg.eigvalsh(metric) > 0)
        e = (truth.delta - est.delta).reshape(10, -1)
        by_hand = np.mean(np.einsum("nd,nde,ne->n", e, metric, e) <= beta)
        covs.append(sets.coverage(truth.delta, est.delta, beta, metric))
        assert covs[-1] == by_hand
    assert np.mean(covs) >= 0.85
    with pytest.raises(ValueError, match="unknown method"):
        sets.sigma_d_ellipsoid("lora", est, data, k, 1.0)


def test_sigma_d_beta_is_capped_by_the_ball():
    # With 3 comparisons per user in 8 dimensions most directions carry no information; every
    # error lies in the 2B-ball, so beta never exceeds lambda_max(M) (2B)^2.
    truth, data, k = _setup(1, Np=3, N=4)
    est = estimators.fit("full", data, k, 1.0)
    metric, beta = sets.sigma_d_ellipsoid("full", est, data, k, 1.0)
    assert np.all(beta <= np.linalg.eigvalsh(metric)[:, -1] * 4.0 * (1 + 1e-12))
    assert sets.coverage(truth.delta, est.delta, beta, metric) == 1.0


def test_fisher_information_matches_a_direct_sum():
    from scipy.special import expit

    from sim.confidence.sets import fisher_information
    from sim.model.data import PreferenceData

    rng = np.random.default_rng(7)
    user = rng.integers(0, 3, size=40)
    x0, x1 = rng.normal(size=(2, 40, 2, 2))
    data = PreferenceData(user=user, x0=x0, x1=x1, o=rng.integers(0, 2, 40), n_users=3)
    theta = rng.normal(size=(3, 2, 2))
    info = fisher_information(theta, data)
    for i in range(3):
        direct = np.zeros((4, 4))
        for j in np.flatnonzero(user == i):
            x = (x0[j] - x1[j]).reshape(-1)
            p = expit(x @ theta[i].reshape(-1))
            direct += p * (1 - p) * np.outer(x, x)
        np.testing.assert_allclose(info[i], direct, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- parametric bootstrap (sim/confidence/bootstrap.py)


def test_radius_from_errors_is_the_conformal_order_statistic():
    from sim.confidence.bootstrap import radius_from_errors

    errs = np.arange(1.0, 21.0)[:, None] * np.array([[0.01, 0.1]])  # 20 replicates, 2 users
    # rank ceil(21 * 0.9) = 19: the 19th smallest of each column
    np.testing.assert_allclose(radius_from_errors(errs, B=1.0, delta=0.1), [0.19, 1.9])
    np.testing.assert_allclose(radius_from_errors(errs, B=0.5, delta=0.1), [0.19, 1.0])  # (2B)^2 cap
    # rank ceil(6 * 0.9) = 6 > 5 replicates: no finite-sample guarantee below the cap
    np.testing.assert_allclose(radius_from_errors(errs[:5], B=1.0, delta=0.1), [4.0, 4.0])


def test_debiased_world_matches_the_energy_moment():
    from sim.confidence.bootstrap import debiased_world

    hat = np.zeros((3, 2, 1))
    hat[0, 0, 0], hat[1, 1, 0] = 2.0, 0.5  # energies 4, 0.25, 0
    errs = np.array([[0.5, 1.0, 0.1], [1.5, 1.0, 0.3]])  # mean squared errors 1, 1, 0.2
    world = debiased_world(hat, errs)
    np.testing.assert_allclose(np.sum(world**2, axis=(1, 2)), [3.0, 0.0, 0.0])
    np.testing.assert_allclose(world[0] / np.linalg.norm(world[0]), hat[0] / 2.0)  # same direction


def _boot_radius(seed, Np, method="shared", n_boot=20, debias=True, **kw):
    from sim.confidence.bootstrap import bootstrap_radius

    truth, data, k = _setup(seed, Np=Np, N=6, **kw)
    est = estimators.fit(method, data, k, 1.0)
    z = bootstrap_radius(method, est, data, k, 1.0, n_boot=n_boot, seed=seed, debias=debias)
    return truth, est, z


def test_bootstrap_radius_is_deterministic_and_seeded():
    _, _, z1 = _boot_radius(3, 100, n_boot=4)
    _, _, z2 = _boot_radius(3, 100, n_boot=4)
    np.testing.assert_array_equal(z1, z2)
    # the default is the larger radius of the two worlds; stage 1 draws first from the same stream
    _, _, z_max = _boot_radius(3, 100, n_boot=9)
    _, _, z_plain = _boot_radius(3, 100, n_boot=9, debias=False)
    assert np.all(z_plain < 4.0) and np.all(z_max >= z_plain)
    from sim.confidence.bootstrap import bootstrap_errors

    truth, data, k = _setup(3, Np=100, N=6)
    est = estimators.fit("full", data, k, 1.0)
    e1 = bootstrap_errors("full", est, data, k, 1.0, n_boot=3, seed=0)
    assert not np.array_equal(e1, bootstrap_errors("full", est, data, k, 1.0, n_boot=3, seed=1))
    np.testing.assert_array_equal(e1, bootstrap_errors("full", est, data, k, 1.0, n_boot=3, seed=0))


def test_bootstrap_radius_shrinks_like_one_over_np():
    # Squared error ~ (dimension) / (Fisher information) ~ 1/Np: 4x the comparisons, ~1/4 the
    # radius (averaged over users and two instances; tolerance for the finite n_boot and the
    # non-asymptotic regime).
    ratios = []
    for seed in (0, 1):
        _, _, z_small = _boot_radius(seed, 200, method="full", n_boot=20, debias=False)
        _, _, z_big = _boot_radius(seed, 800, method="full", n_boot=20, debias=False)
        ratios.append(z_big.mean() / z_small.mean())
    assert 0.15 <= np.mean(ratios) <= 0.4, ratios


def test_bootstrap_radius_bad_input():
    from sim.confidence.bootstrap import bootstrap_errors, bootstrap_radius, radius_from_errors

    truth, data, k = _setup(1, Np=30, N=4)
    est = estimators.fit("full", data, k, 1.0)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2"):
        bootstrap_radius("full", est, data, k, 1.0, n_boot=1)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2"):
        bootstrap_errors("full", est, data, k, 1.0, n_boot=2.5)
    with pytest.raises(ValueError, match=r"delta must lie in \(0, 1\)"):
        bootstrap_radius("full", est, data, k, 1.0, delta=1.0)
    with pytest.raises(ValueError, match=r"delta must lie in \(0, 1\)"):
        radius_from_errors(np.ones((3, 2)), 1.0, delta=0.0)
    with pytest.raises(ValueError, match="unknown method"):
        bootstrap_radius("lora", est, data, k, 1.0)
    with pytest.raises(ValueError, match="world must have shape"):
        bootstrap_errors("full", est, data, k, 1.0, world=np.zeros((2, 2)))


def test_pipeline_bootstrap_radius_matches_the_function():
    from sim.confidence import bootstrap
    from sim.experiments.pipeline import build_instance, radius
    from sim.model.config import SimConfig

    cfg = SimConfig(N=4, d1=4, d2=1, k=1, S=4, A=3, H=3, Np=40, n_test=10, radius="bootstrap",
                    n_boot=3)
    _, truth, _, train, _ = build_instance(cfg, 5)
    est = estimators.fit("shared", train, 1, 1.0, init=truth.init)
    z = radius(cfg, "shared", est, train, truth, 5)
    direct = bootstrap.bootstrap_radius("shared", est, train, 1, 1.0, n_boot=3, init=truth.init,
                                        seed=bootstrap.boot_seed(5, "shared"))
    np.testing.assert_array_equal(z, direct)
    with pytest.raises(ValueError, match="n_boot must be"):
        SimConfig(n_boot=1)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["shared", "full"])
def test_bootstrap_coverage_over_seeds(method):
    """Requirement: coverage >= 1 - delta - 0.05 over many seeds (docs/pessimism.md)."""
    covs = []
    for seed in range(20):
        truth, est, z = _boot_radius(200 + seed, 200, method=method, n_boot=20)
        covs.append(sets.coverage(truth.delta, est.delta, z))
    assert np.mean(covs) >= 0.85, f"{method}: coverage {np.mean(covs):.3f}"


def test_coverage_cli(tmp_path, capsys):
    import pandas as pd

    from sim.experiments import coverage

    assert coverage.main(["--settings", "100:bad", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Np:behaviour" in err
    assert coverage.main(["--n-boot", "1", "--out", str(tmp_path)]) == 2
    assert "--n-boot must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        coverage.main(["--seeds", "many"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert coverage.main(["--seeds", "2", "--methods", "global", "--n-boot", "2",
                          "--settings", "20:uniform", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "coverage.csv")
    assert len(df) == 2 * 4 and set(df["seed"]) == {0, 1} and (df["Np"] == 20).all()
    assert set(df["radius_kind"]) == {"fisher", "boot_plain", "boot_debiased", "bootstrap"}
    # n_boot = 2 < the rank ceil(3 * 0.9) = 3: the bootstrap radii are the (2B)^2 cap
    assert (df.loc[df["radius_kind"] != "fisher", "zeta"] == 4.0).all()


def test_underdetermined_users_get_the_cap():
    # n <= p feature differences are linearly independent: every labelling is separable, the
    # ball fixes the estimate, and the bootstrap radius is the (2B)^2 cap for those users.
    from sim.confidence.bootstrap import bootstrap_radius, underdetermined

    truth, data, k = _setup(4, Np=8, N=4)  # d1 * d2 = 8 parameters per user
    x = data.diff.reshape(-1, 8)
    for i in range(4):
        assert np.linalg.matrix_rank(x[data.user == i]) == 8  # Np_i = 8 independent rows
    assert underdetermined("full", data, k).all()
    assert not underdetermined("shared", data, k).any()  # k d2 = 2 < 8
    assert not underdetermined("global", data, k).any()  # 32 comparisons pooled > 8
    est = estimators.fit("full", data, k, 1.0)
    np.testing.assert_array_equal(bootstrap_radius("full", est, data, k, 1.0), np.full(4, 4.0))
    # a user with more comparisons than parameters gets a bootstrap radius below the cap
    from sim.model.data import PreferenceData

    more = _setup(4, Np=40, N=4)[1]  # same seed: same truth and MDP, 40 comparisons each
    keep = (more.user != 0) & (np.arange(more.user.size) % 5 == 0) | (more.user == 0)
    more = more.subset(keep)  # user 0: 40 comparisons, the others 8
    assert isinstance(more, PreferenceData) and list(underdetermined("full", more, k)) == [0, 1, 1, 1]
    z = bootstrap_radius("full", estimators.fit("full", more, k, 1.0), more, k, 1.0, n_boot=9)
    assert z[0] < 4.0 and np.all(z[1:] == 4.0)
