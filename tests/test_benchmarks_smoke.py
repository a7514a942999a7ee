"""Smoke tests of the benchmark scripts at tiny sizes: they run and write their outputs.

No timing assertions: the benchmarks report speed, the tests only check that they run.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.llm
def test_llm_throughput_tiny(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    out = tmp_path / "llm.csv"
    proc = _run(["benchmarks.llm_throughput", "--tiny", "--out", str(out), "--steps", "1",
                 "--warmup", "0", "--only", "tiny-llama", "--methods", "global", "shared",
                 "--options", "base", "--repeats", "2"])
    assert "NOT GPU figures" in proc.stdout
    assert "projected training time" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert {r["method"] for r in rows} == {"global", "shared"}
    assert {r["layout"] for r in rows} >= {"fixed", "tldr-random", "tldr-grouped"}
    assert all(float(r["tokens_s"]) > 0 and r["device"].startswith("cpu-tiny") for r in rows)
    # repeats alternate within a group; the median lies inside the reported spread
    assert all(r["repeats"] == "2" and float(r["tokens_s_min"]) <= float(r["tokens_s"])
               <= float(r["tokens_s_max"]) for r in rows)
    assert all(float(r["mfu_measured"]) > 0 for r in rows)  # no datasheet peak for a CPU: mfu NaN


def test_llm_throughput_datasheet_peaks():
    from benchmarks.llm_throughput import datasheet_tflops

    assert datasheet_tflops("NVIDIA H200") == 989.4
    assert datasheet_tflops("NVIDIA H200 NVL") == 835.5  # the NVL part is not the SXM one
    assert datasheet_tflops("NVIDIA H100 PCIe") == 756.5
    assert datasheet_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert datasheet_tflops("cpu") != datasheet_tflops("cpu")  # NaN: unknown


def test_tldr_lengths_and_batches():
    import numpy as np

    from benchmarks.llm_throughput import Case, pair_batches, tldr_pair_lengths

    lengths = tldr_pair_lengths(10_000, np.random.default_rng(0))
    assert lengths.shape == (10_000, 2) and lengths.max() <= 512 and lengths.min() >= 2
    assert 300 <= np.median(lengths) <= 360
    random = pair_batches(Case("tiny-llama", "shared", "tldr-random", 16, 512), 20)
    grouped = pair_batches(Case("tiny-llama", "shared", "tldr-grouped", 16, 512), 20)

    def pad(batches):
        return 1 - sum(b.sum() for b in batches) / sum(b.max() * len(b) for b in batches)

    assert all(b.shape == (16,) for b in random + grouped)
    assert pad(grouped) < pad(random)


def test_sim_scaling_tiny(tmp_path):
    out = tmp_path / "sim"
    proc = _run(["benchmarks.sim_scaling", "--tiny", "--parts", "fit,policy",
                 "--out", str(out), "--tmp", str(tmp_path / "scratch")])
    assert "exponent" in proc.stdout
    for name in ("fit.csv", "fit_exponents.csv", "policy.csv", "report.md"):
        assert (out / name).exists(), name


def test_sim_scaling_sweep_tiny(tmp_path):
    pytest.importorskip("sim.pipeline")  # the sweep needs the whole simulator
    out = tmp_path / "sim"
    _run(["benchmarks.sim_scaling", "--tiny", "--parts", "sweep", "--sweep-solvers", "default",
          "--out", str(out), "--tmp", str(tmp_path / "scratch")])
    for name in ("sweep.csv", "report.md"):
        assert (out / name).exists(), name


def test_bench_policy_ellipsoid_tiny():
    proc = _run(["benchmarks.bench_policy", "--users", "3", "--S", "4", "--A", "3", "--H", "3",
                 "--d1", "3", "--d2", "2", "--metric-cond", "100"])
    assert "ellipsoids of condition 100" in proc.stdout
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln.startswith("  ")}
    assert set(lines) == {"lp", "face", "socp"}
    assert "unconverged 0/3" in lines["lp"] and "unconverged 0/3" in lines["face"]


def test_bench_policy_sweep_instance_and_scaling_tiny():
    proc = _run(["benchmarks.bench_policy", "--instance", "sweep", "--set", "sigma_d",
                 "--seeds", "1", "--solvers", "lp,face"])
    assert "sweep default instance (sigma_d)" in proc.stdout
    assert proc.stdout.count("unconverged 0/40") == 2


def test_bench_policy_floor_tiny():
    import re

    proc = _run(["benchmarks.bench_policy", "--floor", "--users", "4", "--S", "4", "--A", "3",
                 "--H", "3", "--d1", "3", "--d2", "2"])
    tied = re.search(r"median (\d+), mean [\d.]+, max (\d+) \(of H\*S = 12\)", proc.stdout)
    assert tied and int(tied.group(2)) <= 12
    multiples = [float(m) for m in re.findall(r"^  x\s*([\d.]+)", proc.stdout, re.M)]
    assert len(multiples) == 6 and all(m > 0 for m in multiples)


def test_fit_restarts_tiny():
    proc = _run(["benchmarks.fit_restarts", "--Np", "30", "--behaviours", "uniform",
                 "--seeds", "1", "--restarts", "2", "--max-starts", "1"])
    assert "random restarts improved the NLL" in proc.stdout and "of 1 instances" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.fit_restarts", "--Np", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
