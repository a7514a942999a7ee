"""Beyond one process: sim.experiments.sweep on Dask (and Ray) against --jobs 1, and llm/train.py on two
gloo processes against one process with the same effective batch (bit-identical results)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_sweep import TINY, _untimed, sweep

ROOT = Path(__file__).resolve().parents[1]

# 3 values x 3 seeds: enough runs that a kill after the first finished part leaves most undone
ARGS = ["--vary", "Np", "--values", "40,80,160", "--seeds", "3", "--methods", "shared,full",
        *TINY, "--no-figures"]
ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _alive(pgid: int) -> list[int]:
    psutil = pytest.importorskip("psutil")
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """runs.csv of --jobs 1 (in this process: the backends are compared with it)."""
    from sim.experiments.sweep import main

    out = tmp_path_factory.mktemp("ref") / "j1"
    assert main([*ARGS, "--out", str(out)]) == 0
    return pd.read_csv(out / "runs.csv")


def test_dask_local_cluster_matches_jobs_1_and_resumes_after_kill_9(tmp_path, reference):
    pytest.importorskip("distributed")
    out = tmp_path / "dask"
    cmd = [sys.executable, "-m", "sim.sweep", *ARGS, "--backend", "dask", "--jobs", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list((out / "parts").glob("*.csv")) and time.time() < deadline:
            assert proc.poll() is None, "dask sweep ended before the kill"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as a killed job would be
        proc.wait()
        n_done = len(list((out / "parts").glob("*.csv")))
        assert 1 <= n_done < 9
        # the LocalCluster's worker processes do not outlive the driver
        deadline = time.time() + 60
        while _alive(proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert not _alive(proc.pid), "dask workers survived their driver"
    finally:
        for pid in _alive(proc.pid):  # cleanup of this test's own processes only
            os.kill(pid, signal.SIGKILL)
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming: {n_done} of 9 runs already done" in r.stdout
    pd.testing.assert_frame_equal(_untimed(reference), _untimed(pd.read_csv(out / "runs.csv")))


@pytest.mark.slow
def test_ray_local_matches_jobs_1(tmp_path, reference):
    pytest.importorskip("ray")
    r = sweep(*ARGS, "--backend", "ray", "--jobs", "2", "--out", str(tmp_path / "ray"))
    assert r.returncode == 0, r.stderr[-2000:]
    pd.testing.assert_frame_equal(_untimed(reference),
                                  _untimed(pd.read_csv(tmp_path / "ray" / "runs.csv")))


@pytest.mark.parametrize("args, message", [
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --backend dask or ray"),
    (["--backend", "spark"], "invalid choice"),
    (["--backend", "dask", "--scheduler", " "], "non-empty address"),
])
def test_bad_backend_input_exits_2(tmp_path, args, message):
    r = sweep("--vary", "Np", *args, "--out", str(tmp_path / "out"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_exits_2_before_writing(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from sim.experiments import backends
    from sim.experiments import sweep as sweep_mod

    monkeypatch.setattr(backends, "CONNECT_TIMEOUT_S", 1)
    out = tmp_path / "out"
    code = sweep_mod.main(["--vary", "Np", "--values", "40", "--seeds", "1", "--backend", "dask",
                           "--scheduler", "tcp://127.0.0.1:1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach dask scheduler" in err[0]
    assert not out.exists()


def test_missing_backend_package_is_one_line(monkeypatch):
    from sim.experiments import backends

    real = backends.importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec",
                        lambda name: None if name == "ray" else real(name))
    with pytest.raises(backends.BackendError, match=r"needs the 'ray' package: pip install"):
        backends.check_backend("ray", None)


# ---- llm/train.py on two processes ------------------------------------------------------


@pytest.mark.llm
@pytest.mark.usefixtures("torch_one_thread")  # as OMP_NUM_THREADS=1 in the launched processes
def test_two_gloo_processes_equal_one_process_with_the_same_effective_batch(tiny, tmp_path):
    """2 processes x 2 pairs x 1 accumulation step vs 1 process x 2 pairs x 2 steps.

    The micro-batches are the same comparisons (process p of step s takes the rows the single
    process reads at micro-step p), DDP averages the two gradients where the single process
    sums two halves: both are 0.5 (g0 + g1) exactly in floating point, so adapters and
    rewards must agree bit for bit. The 2-process run is also interrupted after 3 steps of its
    second phase (shared-wu: 2 + 5 steps; the second starts from the phase-0 adapter) and
    resumed, so the checkpoints and adapters the main process alone wrote carry the run.
    """
    pytest.importorskip("accelerate")
    pytest.importorskip("torch")
    from safetensors.numpy import load_file

    from llm.cli import build_parser, config_from_args
    from llm.train import run

    common = ["--method", "shared-wu", "--model", str(tiny), "--data",
              str(ROOT / "tests" / "fixtures" / "tldr_tiny"), "--epochs", "1", "--batch-size", "2",
              "--max-length", "64", "--lora-r", "4", "--lr", "1e-3", "--eval-batch-size", "4",
              "--max-steps", "5", "--checkpoint-every", "2", "--no-progress"]
    env = {**ENV, "HF_HUB_OFFLINE": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    # one process, in this one (through the command line's own config path)
    run(config_from_args(build_parser().parse_args([*common, "--grad-accum", "2",
                                                    "--out", str(one)])), progress=False)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "llm/train.py", *common, "--grad-accum", "1",
              "--out", str(two)]
    cut = subprocess.run(launch, cwd=ROOT, env={**env, "LLM_TRAIN_STOP_AFTER_STEPS": "3"},
                         capture_output=True, text=True)
    assert cut.returncode != 0 and "stopping after 3 steps" in cut.stderr, cut.stderr[-3000:]
    assert "processes: 2 (MULTI_CPU); effective batch 2 x 1 x 2 = 4" in cut.stderr
    assert not (two / "metrics.csv").exists()
    r = subprocess.run([*launch, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed phase 1 at step 3/5" in r.stderr
    assert r.stdout.count("# shared-wu on") == 1  # one table: only the main process reports
    assert (one / "metrics.csv").read_text() == (two / "metrics.csv").read_text()
    for name in ("phase0.safetensors", "phase1.safetensors"):
        a, b = load_file(str(one / "adapters" / name)), load_file(str(two / "adapters" / name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    a, b = np.load(one / "eval" / "phase1.npz"), np.load(two / "eval" / "phase1.npz")
    for key in ("user", "r0", "r1", "choice"):  # sharded evaluation gathers the same rewards
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_bench_cluster_tiny_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_cluster", "--tiny", "--parts",
                        "sweep", "--out", str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(tmp_path / "sweep.csv")
    assert {"loky", "dask"} <= set(df["backend"]) and (df["warmed"] >= 1).all()
    assert (df["runs_per_min"] > 0).all()
