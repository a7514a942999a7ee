"""Subprocess smoke tests of `python -m sim.sweep` and `python -m figures` at tiny size:
outputs and columns, determinism, resume after interruption, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim.experiments.analysis import verdict

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "N=4", "--set", "d1=4", "--set", "d2=1", "--set", "k=1", "--set", "S=4",
        "--set", "A=3", "--set", "H=3", "--set", "n_test=20", "--jobs", "1"]
REQUIRED = ["vary", "value", "seed", "method", "N", "Np", "d1", "d2", "k", "nu", "tail", "S", "A",
            "H", "delta", "dist", "est_err", "gap_pess", "gap_vanilla", "coverage", "zeta",
            "nll_train", "fit_s", "policy_s"]
SLOPES = ["quantity", "vary", "predicted_slope", "measured_slope", "ci_low", "ci_high",
          "n_points", "verdict"]


def sweep(*args, cwd=ROOT):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "sim.sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _untimed(df):
    return df[[c for c in df.columns if not c.endswith("_s")]]


def test_sweep_outputs_determinism_and_resume(tmp_path):
    args = ["--vary", "Np", "--values", "40,80,160", "--seeds", "2", "--methods", "shared,full", *TINY]
    a, b = tmp_path / "a", tmp_path / "b"
    r = sweep(*args, "--out", str(a), "--save-artifacts")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(a / "runs.csv")
    assert set(REQUIRED) <= set(runs.columns)
    assert len(runs) == 3 * 2 * 2
    assert runs["dist"].notna().sum() == 6 and runs.loc[runs.method == "full", "dist"].isna().all()
    slopes = pd.read_csv(a / "slopes.csv")
    assert list(slopes.columns[: len(SLOPES)]) == SLOPES
    assert (a / "summary.md").exists() and (a / "dist_vs_Np.png").exists() and (a / "dist_vs_Np.pdf").exists()
    assert len(list((a / "artifacts").glob("*.npz"))) == 6
    # same command, other directory: identical apart from timing columns
    assert sweep(*args, "--out", str(b), "--no-figures").returncode == 0
    pd.testing.assert_frame_equal(_untimed(runs), _untimed(pd.read_csv(b / "runs.csv")))
    # interrupted sweep: drop two finished parts, re-run resumes and reproduces runs.csv
    parts = sorted((b / "parts").glob("*.csv"))
    for p in parts[:2]:
        p.unlink()
    r = sweep(*args, "--out", str(b), "--no-figures")
    assert r.returncode == 0 and "resuming: 4 of 6" in r.stdout
    pd.testing.assert_frame_equal(_untimed(runs), _untimed(pd.read_csv(b / "runs.csv")))
    # figures rebuild from the result files alone
    f = subprocess.run([sys.executable, "-m", "figures", str(b)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, MPLBACKEND="Agg"))
    assert f.returncode == 0, f.stderr
    assert (b / "est_err_vs_Np.pdf").exists()


@pytest.mark.parametrize("args, message", [
    (["--vary", "foo"], "invalid choice"),
    (["--vary", "nu", "--values", "0.1,2.0"], "energy budget"),
    (["--vary", "Np", "--values", "10,-5"], "positive"),
    (["--vary", "Np", "--values", "10.5"], "integers"),
    (["--vary", "nu", "--seeds", "0"], "--seeds"),
    (["--vary", "nu", "--methods", "shared,lora"], "unknown method"),
    (["--vary", "nu", "--set", "S=-1"], "bad base config (--set or the grid's base): S must"),
    (["--vary", "nu", "--set", "confidence_set=fisher"], "confidence_set must be one of"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    r = sweep(*args, "--out", str(out))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize("pred, lo, hi, expected", [
    (-0.5, -0.6, -0.4, "agrees"), (-0.5, -0.9, -0.7, "steeper"), (-0.5, -0.3, -0.1, "shallower"),
    (0.25, 0.4, 0.6, "steeper"), (0.5, 0.1, 0.3, "shallower"),
])
def test_verdicts(pred, lo, hi, expected):
    assert verdict(pred, lo, hi) == expected


def test_algorithm1_demo_prints_every_method():
    r = subprocess.run([sys.executable, "-m", "sim.algorithm1", "--Np", "30", "--methods", "shared,full"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln.split() for ln in r.stdout.splitlines()]
    rows = {ln[0]: ln for ln in lines if ln and ln[0] in ("shared", "full")}
    assert set(rows) == {"shared", "full"} and all(len(v) == 7 for v in rows.values())
    bad = subprocess.run([sys.executable, "-m", "sim.algorithm1", "--Np", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2


def test_algorithm1_study_writes_tidy_csvs(tmp_path):
    import pandas as pd

    from sim.model.data import BEHAVIOURS

    r = subprocess.run([sys.executable, "-m", "sim.algorithm1", "--study", "--seeds", "2",
                        "--Np", "20", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "runs.csv")
    summary = pd.read_csv(tmp_path / "study.csv")
    assert len(runs) == 2 * len(BEHAVIOURS) and set(runs.behaviour) == set(BEHAVIOURS)
    assert {"seed", "Np", "radius", "policy_solver", "gap_pess", "gap_vanilla"} <= set(runs.columns)
    assert (runs.gap_pess >= 0).all() and (runs.gap_vanilla >= 0).all()
    for _, row in summary.iterrows():  # the summary is the mean of the per-seed rows
        sel = runs[runs.behaviour == row.behaviour]
        assert row["diff"] == pytest.approx((sel.gap_pess - sel.gap_vanilla).mean())
    again = subprocess.run([sys.executable, "-m", "sim.algorithm1", "--study", "--seeds", "2",
                            "--Np", "20", "--out", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]  # resumed from parts/: same table
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "study.csv"), summary)
    f = subprocess.run([sys.executable, "-m", "figures", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert f.returncode == 0, f.stderr[-2000:]
    assert (tmp_path / "pessimism.png").exists() and (tmp_path / "pessimism.pdf").exists()
    bad = subprocess.run([sys.executable, "-m", "sim.algorithm1", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.erratum(4, 9)
def test_theory_radius_run_is_the_square_of_eq_b1(tmp_path):
    import numpy as np

    from sim.experiments.pipeline import run_instance
    from sim.model.config import SimConfig

    cfg = SimConfig(N=4, d1=4, d2=1, k=1, S=4, A=3, H=3, n_test=10, tail=0.05, radius="theory",
                    zeta_c=0.5)
    art = tmp_path / "a.npz"
    row = run_instance(cfg, 0, ["shared"], artifacts=art)[0]
    z = np.load(art)
    agg = z["delta_true"][:, :, 0].T  # (d1, N) aggregate; b_i by hand from its SVD
    u, s, vt = np.linalg.svd(agg, full_matrices=False)
    min_bias = np.min(np.sum((agg - (u[:, :1] * s[:1]) @ vt[:1]) ** 2, axis=0))
    N, Np, nu, tail, d1, d2, k, delta = 4, cfg.Np, cfg.nu, cfg.tail, 4, 1, 1, cfg.delta
    bracket = (min_bias + k * (d1 + N * d2) * np.log(N * Np / delta) / (N * Np * nu)
               + np.sqrt(tail / N) / nu + (k * d2 + np.log(N / delta)) / Np)
    np.testing.assert_allclose(z["shared__zeta"], (0.5 * np.sqrt(bracket)) ** 2)  # (c zeta_B1)^2
    assert row["zeta"] == pytest.approx(0.25 * bracket)
    err = np.sum((z["shared__delta"] - z["delta_true"]) ** 2, axis=(1, 2))
    assert row["coverage"] == pytest.approx(np.mean(err <= 0.25 * bracket))
    assert row["gap_pess"] >= 0
