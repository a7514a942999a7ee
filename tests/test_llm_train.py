"""llm.train / llm.synth command lines: smoke runs of every method, resume, exit status 2."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from figures.inputs import METRICS_COLUMNS  # noqa: E402
from llm.config import METHODS, TrainConfig  # noqa: E402
from llm.train import STOP_ENV, plan_phases, run  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.usefixtures("torch_one_thread")]
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "tldr_tiny"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}




def _cfg(tiny, out, method, **kw):
    base = dict(method=method, model=str(tiny), data=str(FIXTURE), epochs=1.0, batch_size=4,
                grad_accum=2, eval_batch_size=16, max_length=96, lora_r=4, lora_alpha=8.0,
                lr=1e-3, out=str(out))
    return TrainConfig(**{**base, **kw})


def _metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_phases_keep_the_total_epochs_equal():
    for method in METHODS:
        cfg = TrainConfig(method=method)
        phases = plan_phases(cfg, 5)
        users = 5 if method == "local" else 1
        assert sum(p.epochs for p in phases) == pytest.approx(3.0 * users)
    g = plan_phases(TrainConfig(method="shared-g"), 5)
    assert [p.epochs for p in g] == pytest.approx([2.0, 1.0])
    assert g[1].lr == pytest.approx(5e-5 / 3)
    wu = plan_phases(TrainConfig(method="shared-wu"), 5)
    assert [p.epochs for p in wu] == pytest.approx([0.3, 2.7])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_writes_results(tiny, tmp_path, method):
    out = run(_cfg(tiny, tmp_path / method, method, max_steps=2), progress=False)
    rows = _metrics(out)
    assert tuple(rows[0]) == METRICS_COLUMNS
    assert [r["labeler"] for r in rows] == ["0", "1", "2", "3", "4", "all"]
    assert all(r["method"] == method and int(r["n_eval"]) > 0 for r in rows)
    assert (out / "table.md").read_text().count(method) >= 2
    assert TrainConfig.load(out / "adapters" / "config.json") == TrainConfig.load(out / "config.json")
    assert (out / "diversity.csv").exists() == (method != "global")
    if method in ("shared", "shared-g", "shared-wu"):
        # a shared B caps the rank of the aggregate update at r: no tail beyond k = r
        with open(out / "diversity.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                assert float(row["tail"]) <= 1e-9 * max(float(row["energy"]), 1e-30)


def test_resume_continues_an_interrupted_run(tiny, tmp_path, monkeypatch):
    full = run(_cfg(tiny, tmp_path / "full", "shared-wu", checkpoint_every=1), progress=False)
    cfg = _cfg(tiny, tmp_path / "cut", "shared-wu", checkpoint_every=1)
    monkeypatch.setenv(STOP_ENV, "3")
    with pytest.raises(SystemExit) as exc:
        run(cfg, progress=False)
    assert exc.value.code == 3 and not (tmp_path / "cut" / "metrics.csv").exists()
    monkeypatch.delenv(STOP_ENV)
    resumed = run(cfg, resume=True, progress=False)
    assert _metrics(resumed) == _metrics(full)


def test_resume_refuses_changed_settings(tiny, tmp_path):
    run(_cfg(tiny, tmp_path / "r", "global", max_steps=1), progress=False)
    with pytest.raises(ValueError, match="settings differ .* lr"):
        run(_cfg(tiny, tmp_path / "r", "global", max_steps=1, lr=0.5), resume=True)


def test_cli_smoke_synth_then_train(tiny, tmp_path):
    data = tmp_path / "synth"
    subprocess.run([sys.executable, "-m", "llm.synth", "--out", str(data), "--seed", "1",
                    "--train-per-worker", "6", "--valid-per-worker", "3"],
                   check=True, cwd=ROOT, env=ENV, capture_output=True)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "llm/train.py", "--method", "shared", "--model", str(tiny),
         "--data", str(data), "--epochs", "1", "--batch-size", "4", "--grad-accum", "1",
         "--max-length", "64", "--lora-r", "4", "--out", str(out), "--no-progress"],
        cwd=ROOT, env=ENV, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _metrics(out)
    assert tuple(rows[0]) == METRICS_COLUMNS and len(rows) == 6
    assert rows[-1]["n_eval"] == "15"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope"], "argument --method: invalid choice"),
        (["--method", "shared", "--lr", "-1"], "argument --lr: expected a finite positive"),
        (["--method", "shared", "--epochs", "0"], "argument --epochs: expected a finite positive"),
        (["--method", "shared", "--batch-size", "x"], "expected a positive integer"),
        (["--method", "shared", "--data", "/no/such/dir"], "no such file or directory"),
        ([], "the following arguments are required: --method"),
    ],
)
def test_bad_cli_values_exit_2_with_one_line(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llm.train", *args, "--out", str(tmp_path)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2
    assert lines[-1].startswith("python llm/train.py: error:") and message in lines[-1]
    assert "Traceback" not in proc.stderr


def test_bad_synth_value_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llm.synth", "--out", str(tmp_path),
                           "--train-per-worker", "0"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "expected a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bf16_and_gradient_checkpointing_path_runs_on_cpu(tiny, tmp_path):
    # A subprocess: accelerate's state is a per-process singleton fixed to one precision.
    out = tmp_path / "bf16"
    proc = subprocess.run(
        [sys.executable, "-m", "llm.train", "--method", "shared", "--model", str(tiny),
         "--data", str(FIXTURE), "--epochs", "1", "--batch-size", "4", "--grad-accum", "1",
         "--max-length", "64", "--lora-r", "4", "--max-steps", "1", "--precision", "bf16",
         "--gradient-checkpointing", "on", "--out", str(out), "--no-progress"],
        cwd=ROOT, env=ENV, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _metrics(out)
    assert rows[-1]["labeler"] == "all" and 0.0 <= float(rows[-1]["accuracy"]) <= 1.0


def test_non_finite_training_stops_before_metrics(tiny, tmp_path, capsys):
    from llm.train import main

    out = tmp_path / "nan"
    with pytest.raises(SystemExit) as exc:
        main(["--method", "global", "--model", str(tiny), "--data", str(FIXTURE), "--lr", "1e30",
              "--max-steps", "3", "--batch-size", "4", "--grad-accum", "1", "--max-length", "64",
              "--lora-r", "4", "--out", str(out), "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert exc.value.code == 2 and len(err) == 1, err
    assert "non-finite" in err[0] or "is nan" in err[0] or "is inf" in err[0]
    assert not (out / "metrics.csv").exists() and not (out / "eval").exists()


def test_time_based_checkpoint_is_verified_on_resume(tiny, tmp_path, monkeypatch):
    from figures.cli import CliError
    from llm.preflight import check_output

    timed = _cfg(tiny, tmp_path / "timed", "global", max_steps=2, checkpoint_minutes=1e-9)
    run(timed, progress=False)  # no step-based checkpoints: only the clock wrote one
    assert (tmp_path / "timed" / "checkpoint" / "manifest.json").exists()
    with pytest.raises(CliError, match="already holds a finished run"):
        check_output(timed.out, resume=False)
    cfg = _cfg(tiny, tmp_path / "t", "global", max_steps=3)
    monkeypatch.setenv(STOP_ENV, "2")
    with pytest.raises(SystemExit):
        run(cfg, progress=False)
    monkeypatch.delenv(STOP_ENV)
    with pytest.raises(CliError, match="unfinished run; pass --resume"):
        check_output(cfg.out, resume=False)
    check_output(cfg.out, resume=True)  # intact: the manifest matches
    state = tmp_path / "t" / "checkpoint" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-7])
    with pytest.raises(CliError, match="missing or damaged"):
        check_output(cfg.out, resume=True)
