"""Bad inputs and damaged files across every command line: exit status 2, exactly one line on
stderr, no traceback, and nothing new (or changed) on disk (issue 14, docs/formats.md).

Most cases call the entry point's ``main`` in-process (cheap: one import for the table);
a few run the real command in a subprocess to check what a user sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import benchmarks.llm_throughput as bench_llm
import benchmarks.sim_scaling as bench_sim
import figures.__main__ as figures_cli
import llm.data as llm_data
import llm.evaluate as llm_evaluate
import llm.synth as llm_synth
import llm.train as llm_train
import sim.experiments.algorithm1 as algorithm1
import sim.experiments.coverage as coverage
import sim.experiments.demo as demo
import sim.experiments.sweep as sweep
from figures import files
from figures.inputs import METRICS_COLUMNS, RUNS_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tldr_tiny"
HUGE = str(10**12)
DEAD_HUB = "http://127.0.0.1:9"  # the discard port: connection refused at once


# ---- fixtures written before a case runs (setup(work) -> extra argv) ---------------------------

def _file(work: Path) -> str:
    (work / "afile").write_text("not a directory\n")
    return str(work / "afile")


def _runs_frame(n_values=2, seeds=2) -> pd.DataFrame:
    rows = [dict(vary="nu", value=v, seed=s, method=m, N=4, Np=20, d1=4, d2=1, k=1, nu=v, tail=0,
                 dist=0.1, est_err=0.2, gap_pess=0.3, gap_vanilla=0.2, coverage=0.9, zeta=0.5)
            for v in (0.05, 0.1)[:n_values] for s in range(seeds) for m in ("shared", "local")]
    return pd.DataFrame(rows)[list(RUNS_COLUMNS)]


def _sweep_dir(work: Path, runs: bytes | None = None, marker=True, spec=True) -> str:
    d = work / "sweep"
    d.mkdir()
    df = _runs_frame()
    if spec:
        (d / "sweep.json").write_text(json.dumps(dict(vary="nu", values=[0.05, 0.1], seeds=[0, 1],
                                                      methods=["shared", "local"], base={})))
    files.write_csv_atomic(df, d / "runs.csv")
    if runs is not None:
        (d / "runs.csv").write_bytes(runs)
    if not marker:
        files.marker_path(d / "runs.csv").unlink()
    return str(d)


def _truncated_runs(work: Path, marker: bool) -> str:
    full = _runs_frame().to_csv(index=False).encode()
    return _sweep_dir(work, full[: int(len(full) * 0.6)], marker=marker)


def _metrics_dir(work: Path, text: str | None = None, drop_all=False, acc=0.6) -> str:
    d = work / "llm" / "shared-s0"
    d.mkdir(parents=True)
    rows = [dict(method="shared", model="m", labeler=lab, n_eval=10, accuracy=acc, ties=0,
                 accuracy_tie_half=acc, accuracy_tie_right=acc, steps=5,
                 seed=0, epochs=1, lora_r=4, lora_alpha=8, targets="query+key")
            for lab in ("0", "1", "2", "all")]
    df = pd.DataFrame(rows[:-1] if drop_all else rows)[list(METRICS_COLUMNS)]
    df.to_csv(d / "metrics.csv", index=False)
    if text is not None:
        (d / "metrics.csv").write_text(text)
    return str(work / "llm")


def _study_dir(work: Path) -> str:
    d = work / "study"
    d.mkdir()
    (d / "study.csv").write_text("behaviour,method\nuniform,shared\n")
    (d / "runs.csv").write_text("x\n1\n")
    return str(d)


def _record(kind: str, text: str):
    def setup(work: Path) -> str:
        d = work / "out"
        (d / "parts").mkdir(parents=True)
        (d / f"{kind}.json").write_text(text)
        return str(d)
    return setup


def _fake_model(work: Path) -> str:
    (work / "model").mkdir()
    (work / "model" / "config.json").write_text("{}\n")
    return str(work / "model")


def _bert_config(work: Path) -> str:
    (work / "bert").mkdir()
    (work / "bert" / "config.json").write_text(json.dumps(
        dict(hidden_size=384, num_hidden_layers=6, max_position_embeddings=512)))
    return str(work / "bert")


def _bad_data(work: Path) -> str:
    (work / "data").mkdir()
    (work / "data" / "a.json").write_text('{"x": 1}\n')
    return str(work / "data")


def _train_run(done: bool, step: int = 0):
    def setup(work: Path) -> str:
        d = work / "run"
        d.mkdir()
        (d / "config.json").write_text("{}\n")
        (d / "progress.json").write_text(json.dumps(dict(phase=0, step=step, done=done)))
        return str(d)
    return setup


# ---- the table -------------------------------------------------------------------------------
# (id, main, argv, {placeholder: setup}, env). Placeholders in argv ("@OUT", "@FILE", ...) are
# replaced by the setup's return value; "@W" is the working directory itself.

TINY = ["--set", "N=4", "--set", "d1=4", "--set", "d2=1", "--set", "k=1", "--set", "S=4",
        "--set", "A=3", "--set", "H=3", "--set", "n_test=20", "--jobs", "1"]
S, A1, COV, DEMO, SYN, TR, FIG, DATA = (sweep.main, algorithm1.main, coverage.main, demo.main,
                                         llm_synth.main, llm_train.main, figures_cli.main,
                                         llm_data.main)
EVAL = llm_evaluate.main
BENCH = (bench_sim.main, bench_llm.main)
OFFLINE = {"HF_HUB_OFFLINE": "1"}
ONLINE_DEAD = {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_DATASETS_OFFLINE": None,
               "HF_ENDPOINT": DEAD_HUB}
M = {"@M": _fake_model}

CASES = [
    # sim.experiments.sweep
    ("sweep-vary", S, ["--vary", "foo"], {}, {}),
    ("sweep-energy", S, ["--vary", "nu", "--values", "0.1,2.0"], {}, {}),
    ("sweep-negative-values", S, ["--vary", "Np", "--values", "10,-5"], {}, {}),
    ("sweep-leading-negative", S, ["--vary", "nu", "--values", "-0.1,0.2"], {}, {}),
    ("sweep-fractional-int", S, ["--vary", "Np", "--values", "10.5"], {}, {}),
    ("sweep-empty-values", S, ["--vary", "nu", "--values", ""], {}, {}),
    ("sweep-nan-value", S, ["--vary", "nu", "--values", "0.1,nan"], {}, {}),
    ("sweep-inf-value", S, ["--vary", "nu", "--values", "0.1,inf"], {}, {}),
    ("sweep-duplicate-values", S, ["--vary", "nu", "--values", "0.1,0.1"], {}, {}),
    ("sweep-huge", S, ["--vary", "Np", "--values", f"100,{HUGE}"], {}, {}),
    ("sweep-seeds-0", S, ["--vary", "nu", "--seeds", "0"], {}, {}),
    ("sweep-seeds-negative", S, ["--vary", "nu", "--seeds", "-3"], {}, {}),
    ("sweep-jobs-0", S, ["--vary", "nu", "--jobs", "0"], {}, {}),
    ("sweep-unknown-method", S, ["--vary", "nu", "--methods", "shared,lora"], {}, {}),
    ("sweep-duplicate-method", S, ["--vary", "nu", "--methods", "shared,shared"], {}, {}),
    ("sweep-set-vary", S, ["--vary", "nu", "--set", "nu=0.3"], {}, {}),
    ("sweep-set-unknown", S, ["--vary", "nu", "--set", "foo=1"], {}, {}),
    ("sweep-set-nan", S, ["--vary", "nu", "--set", "eps=nan"], {}, {}),
    ("sweep-set-bad-int", S, ["--vary", "nu", "--set", "S=-1"], {}, {}),
    ("sweep-fisher-socp", S, ["--vary", "nu", "--set", "confidence_set=fisher", "--set",
                              "policy_solver=socp"], {}, {}),
    ("sweep-out-file", S, ["--vary", "nu", "--out", "@F"], {"@F": _file}, {}),
    ("sweep-out-unwritable", S, ["--vary", "nu", "--out", "/proc/no-such/out"], {}, {}),
    ("sweep-broken-record", S, ["--vary", "nu", *TINY, "--out", "@O"],
     {"@O": _record("sweep", "{broken")}, {}),
    ("sweep-other-record", S, ["--vary", "nu", *TINY, "--out", "@O"],
     {"@O": _record("sweep", json.dumps(dict(vary="Np", base={}, methods=["shared"])))}, {}),
    # sim.experiments.algorithm1
    ("alg1-seed-negative", A1, ["--seed", "-1"], {}, {}),
    ("alg1-zeta-nan", A1, ["--radius", "theory", "--zeta-c", "nan"], {}, {}),
    ("alg1-zeta-inf", A1, ["--radius", "theory", "--zeta-c", "inf"], {}, {}),
    ("alg1-zeta-negative", A1, ["--radius", "theory", "--zeta-c", "-1"], {}, {}),
    ("alg1-Np-0", A1, ["--Np", "0"], {}, {}),
    ("alg1-Np-huge", A1, ["--Np", HUGE], {}, {}),
    ("alg1-unknown-method", A1, ["--methods", "nope"], {}, {}),
    ("alg1-duplicate-method", A1, ["--methods", "shared,shared"], {}, {}),
    ("alg1-out-without-study", A1, ["--out", "@W/x"], {}, {}),
    ("alg1-study-seeds-1", A1, ["--study", "--seeds", "1"], {}, {}),
    ("alg1-study-out-file", A1, ["--study", "--out", "@F"], {"@F": _file}, {}),
    ("alg1-study-out-unwritable", A1, ["--study", "--out", "/proc/no-such/x"], {}, {}),
    ("alg1-study-broken-record", A1, ["--study", "--out", "@O"],
     {"@O": _record("study", "[1, 2")}, {}),
    # sim.experiments.coverage
    ("cov-seeds-1", COV, ["--seeds", "1"], {}, {}),
    ("cov-bad-setting", COV, ["--settings", "20:sometimes"], {}, {}),
    ("cov-duplicate-setting", COV, ["--settings", "20:poor,20:poor"], {}, {}),
    ("cov-huge-setting", COV, ["--settings", f"{HUGE}:poor"], {}, {}),
    ("cov-n-boot-1", COV, ["--n-boot", "1"], {}, {}),
    ("cov-unknown-method", COV, ["--methods", "nope"], {}, {}),
    ("cov-out-file", COV, ["--out", "@F"], {"@F": _file}, {}),
    ("cov-broken-record", COV, ["--out", "@O"], {"@O": _record("coverage", "")}, {}),
    # sim.experiments.demo
    ("demo-seed-negative", DEMO, ["--seed", "-1"], {}, {}),
    ("demo-Np-0", DEMO, ["--Np", "0"], {}, {}),
    ("demo-unknown-method", DEMO, ["--methods", "nope"], {}, {}),
    # llm.synth
    ("synth-train-0", SYN, ["--train-per-worker", "0"], {}, {}),
    ("synth-seed-negative", SYN, ["--seed", "-1"], {}, {}),
    ("synth-huge", SYN, ["--train-per-worker", HUGE], {}, {}),
    ("synth-out-file", SYN, ["--out", "@F"], {"@F": _file}, {}),
    ("synth-out-unwritable", SYN, ["--out", "/proc/no-such/synth"], {}, {}),
    # llm.train (argument checks and preflight: nothing is loaded or written)
    ("train-no-method", TR, [], {}, {}),
    ("train-unknown-method", TR, ["--method", "nope"], {}, {}),
    ("train-lr-negative", TR, ["--method", "shared", "--lr", "-1"], {}, {}),
    ("train-lr-inf", TR, ["--method", "shared", "--lr", "inf"], {}, {}),
    ("train-lr-nan", TR, ["--method", "shared", "--lr", "nan"], {}, {}),
    ("train-lr-overflow", TR, ["--method", "shared", "--lr", "1e300", "--model", "@M",
                               "--data", str(FIXTURE)], M, {}),
    ("train-epochs-0", TR, ["--method", "shared", "--epochs", "0"], {}, {}),
    ("train-epochs-inf", TR, ["--method", "shared", "--epochs", "inf"], {}, {}),
    ("train-batch-size-text", TR, ["--method", "shared", "--batch-size", "x"], {}, {}),
    ("train-seed-negative", TR, ["--method", "shared", "--seed", "-1"], {}, {}),
    ("train-warmup-1.5", TR, ["--method", "shared", "--warmup-ratio", "1.5"], {}, {}),
    ("train-model-missing", TR, ["--method", "shared", "--model", "/nonexistent"], {}, {}),
    ("train-model-not-a-model", TR, ["--method", "shared", "--model", "@W"], {}, {}),
    ("train-hub-model-offline", TR, ["--method", "shared", "--model", "no-org/no-model"], {},
     OFFLINE),
    ("train-hub-model-unreachable", TR, ["--method", "shared", "--model", "no-org/no-model"], {},
     ONLINE_DEAD),
    ("train-hub-data-unreachable", TR, ["--method", "shared", "--model", "@M"], M, ONLINE_DEAD),
    ("train-batch-huge", TR, ["--method", "shared", "--batch-size", HUGE, "--model", "@B"],
     {"@B": _bert_config}, {}),
    ("train-data-missing", TR, ["--method", "shared", "--model", "@M", "--data", "/no/such"], M,
     {}),
    ("train-data-malformed", TR, ["--method", "shared", "--model", "@M", "--data", "@D"],
     {**M, "@D": _bad_data}, OFFLINE),
    ("train-out-file", TR, ["--method", "shared", "--out", "@F"], {"@F": _file}, {}),
    ("train-out-unfinished", TR, ["--method", "shared", "--out", "@R"],
     {"@R": _train_run(False, 3)}, {}),
    ("train-out-finished", TR, ["--method", "shared", "--out", "@R"],
     {"@R": _train_run(True)}, {}),
    ("train-resume-damaged-checkpoint", TR, ["--method", "shared", "--resume", "--out", "@R"],
     {"@R": _train_run(False, 3)}, {}),
    # llm.data
    ("data-missing", DATA, ["--data", "/no/such"], {}, {}),
    ("data-workers-0", DATA, ["--data", str(FIXTURE), "--workers", "0"], {}, {}),
    # llm.evaluate
    ("eval-missing", EVAL, ["@W/none"], {}, {}),
    ("eval-truncated-metrics", EVAL, ["@L/shared-s0"], {"@L": lambda w: _metrics_dir(w, drop_all=True)}, {}),
    ("eval-out-unwritable", EVAL, ["@L/shared-s0", "--out", "/proc/no-such/table.md"],
     {"@L": _metrics_dir}, {}),
    # benchmarks
    ("bench-sim-out-file", BENCH[0], ["--tiny", "--out", "@F"], {"@F": _file}, {}),
    ("bench-sim-tmp-unwritable", BENCH[0], ["--tiny", "--tmp", "/proc/no-such"], {}, {}),
    ("bench-llm-out-unwritable", BENCH[1], ["--tiny", "--out", "/proc/no-such/x.csv"], {}, {}),
    # figures
    ("fig-not-a-dir", FIG, ["@F"], {"@F": _file}, {}),
    ("fig-runs-garbage", FIG, ["@S"], {"@S": lambda w: _sweep_dir(w, b"garbage\n", marker=False)},
     {}),
    ("fig-runs-empty", FIG, ["@S"], {"@S": lambda w: _sweep_dir(w, b"", marker=False)}, {}),
    ("fig-runs-binary", FIG, ["@S"], {"@S": lambda w: _sweep_dir(w, b"\x00\xff\xfe\x01")}, {}),
    ("fig-runs-truncated", FIG, ["@S"], {"@S": lambda w: _truncated_runs(w, True)}, {}),
    ("fig-runs-truncated-no-marker", FIG, ["@S"], {"@S": lambda w: _truncated_runs(w, False)},
     {}),
    ("fig-runs-rows-dropped", FIG, ["@S"],
     {"@S": lambda w: _sweep_dir(w, _runs_frame(1).to_csv(index=False).encode(), marker=False)},
     {}),
    ("fig-sweep-json-broken", FIG, ["@S"],
     {"@S": lambda w: (_sweep_dir(w), (w / "sweep" / "sweep.json").write_text("{"))[0]}, {}),
    ("fig-metrics-garbage", FIG, ["@L"], {"@L": lambda w: _metrics_dir(w, "\x00garbage")}, {}),
    ("fig-metrics-empty", FIG, ["@L"], {"@L": lambda w: _metrics_dir(w, "")}, {}),
    ("fig-metrics-truncated", FIG, ["@L"], {"@L": lambda w: _metrics_dir(w, drop_all=True)}, {}),
    ("fig-metrics-accuracy", FIG, ["@L"], {"@L": lambda w: _metrics_dir(w, acc=1.5)}, {}),
    ("fig-study-broken", FIG, ["@T"], {"@T": _study_dir}, {}),
]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0,
                                       p.stat().st_mtime_ns if p.is_file() else 0)
            for p in root.rglob("*")}


def test_table_has_at_least_40_cases_over_every_cli():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1] for c in CASES} == {S, A1, COV, DEMO, SYN, TR, FIG, DATA, EVAL, *BENCH}


@pytest.mark.parametrize("name, main, argv, setups, env", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_one_line_nothing_written(name, main, argv, setups, env, tmp_path,
                                                    monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default output locations (results/...) land here
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    values = {"@W": str(work)}
    for key, setup in setups.items():
        values[key] = setup(work)
    for key, value in values.items():
        argv = [a.replace(key, value) for a in argv]
    before = _snapshot(work)
    capsys.readouterr()
    t0 = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, out[-500:], err[-1000:])
    assert len(lines) == 1 and "error" in lines[0], err
    assert "Traceback" not in err + out
    assert _snapshot(work) == before, "bad input left or changed files"
    if "hub" in name:  # no retries: the unreachable hub is reported at once
        assert seconds < 10, f"took {seconds:.1f} s"


@pytest.mark.parametrize("main", sorted({c[1] for c in CASES}, key=lambda m: m.__module__),
                         ids=lambda m: m.__module__)
def test_help_has_text_and_one_default_per_flag(main, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0 and "(default: None)" not in text
    options = text[text.index("options:"):]
    blocks = re.split(r"\n  (?=-)", options)[1:]
    assert blocks
    for block in blocks:
        flag, _, rest = block.strip().partition("  ")
        assert rest.strip() or "\n" in block, f"{flag}: no help text"
        assert block.count("(default:") <= 1 and "default: None" not in block, block


# ---- the real commands, as a user runs them ---------------------------------------------------

@pytest.mark.parametrize("cmd", [
    ["llm/train.py", "--method", "shared", "--epochs", "inf"],
    ["-m", "sim.sweep", "--vary", "nu", "--values", ""],
    ["-m", "figures", "no-such-results-dir"],
], ids=["train.py", "sim.sweep", "figures"])
def test_real_command_prints_one_line(cmd, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    before = _snapshot(ROOT / "tests")
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and _snapshot(ROOT / "tests") == before
