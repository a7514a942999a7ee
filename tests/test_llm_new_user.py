"""New users from a finished run's frozen shared tensors (issue 18): llm.synth --holdout-workers,
the seen/unseen split, llm/train.py --method new-user, and the study's few-shot fits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from llm import train as train_mod  # noqa: E402
from llm.config import TrainConfig  # noqa: E402
from llm.data import load_comparisons  # noqa: E402
from llm.synth import (  # noqa: E402
    D_CONCISE,
    D_EXPRESSIVE,
    HOLDOUT_DIR,
    W_COMMON,
    bayes_accuracy,
    make_holdout_rows,
    make_rows,
    write_dataset,
)

pytestmark = [pytest.mark.llm, pytest.mark.usefixtures("torch_one_thread")]
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _data(tmp_path, workers=5, holdout=3):
    rows, meta = make_rows(2, workers, 16, 6)
    write_dataset(tmp_path / "d", rows, meta)
    hrows, hmeta = make_holdout_rows(meta, holdout, 10, 6)
    write_dataset(tmp_path / "d" / HOLDOUT_DIR, hrows, hmeta, "holdout_meta.json")
    return tmp_path / "d", hrows, hmeta


def _cfg(tiny, out, method, data, **kw):
    base = dict(method=method, model=str(tiny), data=str(data), epochs=1.0, batch_size=4,
                grad_accum=1, eval_batch_size=16, max_length=64, lora_r=4, lora_alpha=8.0,
                lr=1e-2, out=str(out))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def source(tiny, tmp_path_factory):
    """A finished tiny `shared` run on 5 labelers and its data with 3 held-out labelers."""
    tmp = tmp_path_factory.mktemp("src")
    data, hrows, hmeta = _data(tmp)
    out = train_mod.run(_cfg(tiny, tmp / "src", "shared", data, max_steps=3), progress=False)
    return out, data, hrows, hmeta


def test_holdout_labelers_are_from_the_family_and_leave_the_training_rows_alone():
    rows, meta = make_rows(4, 5, 8, 5)
    hrows, hmeta = make_holdout_rows(meta, 6, 9, 40)
    assert make_rows(4, 5, 8, 5)[0] == rows  # drawn from a stream of their own
    dev = np.asarray(hmeta["weights"]) - W_COMMON  # personal part in span(d_concise, d_expr)
    basis = np.stack([D_CONCISE, D_EXPRESSIVE], 1)
    coef, *_ = np.linalg.lstsq(basis, dev.T, rcond=None)
    assert np.allclose(basis @ coef, dev.T, atol=1e-12) and np.linalg.matrix_rank(dev) == 2
    assert not set(hmeta["workers"]) & set(meta["workers"])
    assert not {r["info"]["id"] for r in hrows} & {r["info"]["id"] for r in rows}
    for name in hmeta["workers"]:  # Bayes accuracy from the stored margins
        mine = [r for r in hrows if r["worker"] == name]
        assert sum(r["split"] == "train" for r in mine) == 9
        margins = [r["extra"]["synth_margin"] for r in mine if r["split"] != "train"]
        assert len(margins) == 40
        assert bayes_accuracy(margins) == pytest.approx(hmeta["bayes_valid_accuracy"][name])


def test_no_held_out_pair_reaches_the_source_run(source, tiny, tmp_path):
    out, data, hrows, hmeta = source
    src = TrainConfig.load(out / "config.json")
    seen = load_comparisons(src.data, src.workers, src.seed, src.limit_per_worker)
    held_posts = {r["info"]["id"] for r in hrows}
    assert not {c.post_id for c in seen.train + seen.valid} & held_posts
    assert not set(json.loads((out / "workers.json").read_text())) & set(hmeta["workers"])
    # the guard: a new-user run on the source's own labelers is refused before writing
    with pytest.raises(ValueError, match="were trained in the source run"):
        train_mod.run(_cfg(tiny, tmp_path / "bad", "new-user", data, init_from=str(out)),
                      progress=False)
    assert not (tmp_path / "bad").exists()


def test_unseen_workers_split_is_disjoint_and_covers_the_top(tmp_path):
    rows, meta = make_rows(5, 6, 12, 4)
    write_dataset(tmp_path, rows, meta)
    top = load_comparisons(tmp_path, 6, 0)
    seen = load_comparisons(tmp_path, 4, 0, unseen_workers=2, split_seed=3)
    unseen = load_comparisons(tmp_path, 4, 0, unseen_workers=2, split_seed=3, use_unseen=True)
    assert len(seen.workers) == 4 and len(unseen.workers) == 2
    assert set(seen.workers) | set(unseen.workers) == set(top.workers)
    assert not set(seen.workers) & set(unseen.workers)
    assert not {c.post_id for c in seen.train} & {c.post_id for c in unseen.train + unseen.valid}
    splits = {load_comparisons(tmp_path, 4, 0, unseen_workers=2, split_seed=s,
                               use_unseen=True).workers for s in range(8)}
    assert len(splits) > 1  # the split is random, not the bottom of the ranking


def _snapshot(model):
    return {k: (v.requires_grad, v.detach().cpu().numpy().tobytes())
            for k, v in model.state_dict(keep_vars=True).items()}


@pytest.mark.parametrize("combine", [False, True])
def test_frozen_tensors_are_byte_identical_after_training(source, tiny, tmp_path, monkeypatch,
                                                           combine):
    from safetensors.torch import load_file

    out, data, _, _ = source
    seen = {}
    build, evaluate = train_mod._build_phase_model, train_mod._evaluate_phase

    def spy_build(*a, **kw):
        model = build(*a, **kw)
        seen["before"] = _snapshot(model)
        return model

    def spy_eval(cfg, phase, model, *a, **kw):
        seen["after"] = _snapshot(model)
        return evaluate(cfg, phase, model, *a, **kw)

    monkeypatch.setattr(train_mod, "_build_phase_model", spy_build)
    monkeypatch.setattr(train_mod, "_evaluate_phase", spy_eval)
    cfg = _cfg(tiny, tmp_path / "nu", "new-user", data / HOLDOUT_DIR, workers=3,
               init_from=str(out), combine=combine, epochs=3.0)
    train_mod.run(cfg, progress=False)
    before, after = seen["before"], seen["after"]
    assert before.keys() == after.keys()
    frozen = [k for k, (grad, _) in before.items() if not grad]
    trained = [k for k, (grad, _) in before.items() if grad]
    assert all(before[k][1] == after[k][1] for k in frozen)
    assert trained and all(before[k][1] != after[k][1] for k in trained)  # they did train
    assert {k.rsplit(".", 1)[-1] for k in trained} == {"lora_C" if combine else "lora_A"}
    # the frozen shared tensors are the source run's: B of every layer and the head
    src = load_file(str(out / "adapters" / "phase0.safetensors"))
    state = dict(after)
    for k, v in src.items():
        if k.endswith("lora_B") or "classifier" in k:
            assert state[k][1] == v.numpy().tobytes()
    assert any(k.endswith("basis_A") for k in frozen)
    per_layer = [k for k in trained if k.endswith("lora_A")]
    assert len(per_layer) == (0 if combine else 4)  # query + key in 2 layers


def test_combination_fits_one_weight_per_trained_user(source, tiny):
    from llm.new_user import build_new_user_model

    out, data, _, _ = source
    for combine, expected in ((True, 3 * 5), (False, 3 * 4 * 4 * 32)):
        cfg = _cfg(tiny, "unused", "new-user", data / HOLDOUT_DIR, workers=3,
                   init_from=str(out), combine=combine)
        model = build_new_user_model(cfg, 3, torch.float32)
        # named_parameters counts a tensor shared by all layers once
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_refuses_a_missing_run_or_one_of_another_method(source, tiny, tmp_path):
    out, data, _, _ = source
    glob = train_mod.run(_cfg(tiny, tmp_path / "g", "global", data, max_steps=1), progress=False)
    for run_dir, message in ((tmp_path / "none", "no finished run"),
                             (glob, "a global run has no shared B")):
        proc = subprocess.run(
            [sys.executable, "llm/train.py", "--method", "new-user", "--init-from",
             str(run_dir), "--data", str(data / HOLDOUT_DIR), "--out", str(tmp_path / "x")],
            cwd=ROOT, env=ENV, capture_output=True, text=True)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and message in lines[-1] and "Traceback" not in proc.stderr
    with pytest.raises(ValueError, match="--init-from RUN goes with --method new-user"):
        TrainConfig(method="shared", init_from=str(out))


def _linear_world(seed, n_users, n_pairs, d=8, weights=None):
    """Features x ~ N(0, I); user u prefers summary 0 iff w_u . (x0 - x1) > 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_users * n_pairs, 2, d)).astype(np.float32)
    users = np.repeat(np.arange(n_users), n_pairs)
    margin = np.einsum("nd,nd->n", weights[users], x[:, 0] - x[:, 1])
    choice = (margin < 0).astype(np.int64)
    return (torch.from_numpy(x), torch.from_numpy(choice), torch.from_numpy(users))


def test_a_new_user_in_the_span_is_learned_from_few_pairs():
    import copy

    from llm.evaluate import pairwise_accuracy
    from llm.lora import freeze_for_new_users
    from llm.new_user_study import NewUserStudyConfig
    from llm.study_model import fit_new_users, score, train_method

    d, n_src = 8, 4
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    w_src = (basis @ rng.normal(size=(2, n_src)) * 3).T
    w_new = (basis @ rng.normal(size=(2, 2)) * 3).T  # new users in the trained users' span
    cfg = NewUserStudyConfig(lora_r=4, lora_alpha=8.0, batch_size=32, epochs=10.0, model="-")
    dense = torch.nn.Linear(d, 16)
    torch.manual_seed(0)
    x, ch, u = _linear_world(1, n_src, 400, d, w_src)
    shared = train_method("shared", cfg, dense, x, ch, u, np.arange(len(u)), n_src, 0,
                          400)[0][None]
    xt, cht, ut = _linear_world(2, 2, 40, d, w_new)
    xv, chv, uv = _linear_world(3, 2, 500, d, w_new)

    def acc(model):
        r0, r1 = score({None: model}, xv, uv)
        return pairwise_accuracy(uv.numpy(), r0, r1, chv.numpy(), 2)[-1]["accuracy"]

    start = copy.deepcopy(shared)  # the fits' starting point: the trained users' mean A
    freeze_for_new_users([start.lora], 2)
    for combine in (True, False):
        model, steps, losses = fit_new_users(shared, combine, cfg, xt, cht, ut,
                                             np.arange(len(ut)), 2, 0, 40, min_steps=30)
        assert steps >= 30 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
        print(combine, acc(start), acc(model))
        assert acc(model) > max(0.8, acc(start) + 0.1)


def test_tiny_new_user_study_is_reproducible_resumes_and_counts_parameters(tiny, tmp_path,
                                                                          monkeypatch):
    from llm import new_user_study as nus

    cfg = nus.NewUserStudyConfig(sizes=(3, 6), seeds=2, draws=2, workers=3, holdout=2,
                                 source_pairs=20, eval_per_labeler=6, min_steps=3, epochs=2.0,
                                 batch_size=4, lora_r=4, model=str(tiny))
    a = nus.run_new_user_study(cfg, tmp_path / "a", progress=False)
    monkeypatch.setenv(nus.STOP_ENV, "5")
    with pytest.raises(SystemExit):
        nus.run_new_user_study(cfg, tmp_path / "b", progress=False)
    monkeypatch.delenv(nus.STOP_ENV)
    b = nus.run_new_user_study(cfg, tmp_path / "b", progress=False)
    assert (a / "new_users.csv").read_bytes() == (b / "new_users.csv").read_bytes()
    import csv

    with open(a / "new_users.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # seeds x (n=3: 2 draws x 3 fitted methods + global; n=6 = pool: 1 draw x 4) x (2 + all)
    assert len(rows) == 2 * (2 * 3 + 1 + 4) * 3
    per = {r["method"]: int(r["trainable_per_user"]) for r in rows}
    d_in = 32 + 1  # tiny hidden size + the length feature
    assert per == {"new-user": 4 * d_in, "new-user-comb": 3, "global": 0,
                   "local": 4 * d_in + 32 * 4 + 32 + 1}
    assert all(r["seed"] != "" and r["lr"] == "0.01" for r in rows)
    assert (a / "llm_new_users_accuracy.png").exists()
    assert "new-user-comb − local (paired)" in (a / "new_users_summary.md").read_text()
    with pytest.raises(ValueError, match="other settings"):
        nus.run_new_user_study(nus.NewUserStudyConfig(**{**cfg.__dict__, "lr": 0.5}), a,
                               progress=False)


def test_study_refuses_overlapping_new_labelers(tmp_path):
    from llm.new_user_study import check_disjoint

    rows, meta = make_rows(1, 3, 6, 3)
    write_dataset(tmp_path, rows, meta)
    data = load_comparisons(tmp_path, 3, 0)
    with pytest.raises(ValueError, match="overlap the source data"):
        check_disjoint(data, data)


def test_seen_unseen_protocol_end_to_end(tiny, tmp_path):
    """Real-data protocol on official-schema rows: the source trains on the seen workers, the
    new-user run fits the unseen ones on n shots; the two sets are disjoint."""
    rows, meta = make_rows(6, 5, 12, 4)
    write_dataset(tmp_path / "d", rows, meta)
    split = dict(workers=3, unseen_workers=2, split_seed=1)
    src = train_mod.run(_cfg(tiny, tmp_path / "src", "shared", tmp_path / "d", max_steps=2,
                             **split), progress=False)
    nu = train_mod.run(_cfg(tiny, tmp_path / "nu", "new-user", tmp_path / "d", max_steps=2,
                            init_from=str(src), limit_per_worker=5, seed=4, **split),
                       progress=False)
    seen = json.loads((src / "workers.json").read_text())
    unseen = json.loads((nu / "workers.json").read_text())
    assert len(seen) == 3 and len(unseen) == 2 and not set(seen) & set(unseen)
    assert set(seen) | set(unseen) == set(load_comparisons(tmp_path / "d", 5, 0).workers)
    with open(nu / "metrics.csv") as fh:
        assert [ln.split(",")[2] for ln in fh.read().splitlines()[1:]] == ["0", "1", "all"]
