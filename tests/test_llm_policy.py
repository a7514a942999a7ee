"""Scoring API, candidates, exact best-of-n regret and the Laplace LCB (llm.api/policy/uncertainty)."""

from __future__ import annotations

import csv
import json
from itertools import combinations
from math import comb
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.policy import expected_pick, pick_probabilities, win_probability
from llm.synth import make_candidates, make_rows

FIXTURE = Path(__file__).parent / "fixtures" / "tldr_tiny"


# --------------------------------------------------------------- exact best-of-n (no torch)

@settings(max_examples=40, deadline=None)
@given(st.integers(2, 7), st.data())
def test_pick_probabilities_equal_enumeration_of_subsets(pool, data):
    """P(rank-j candidate is the argmax of a uniform n-subset): closed form vs all subsets."""
    n = data.draw(st.integers(1, pool))
    scores = np.array(data.draw(st.permutations(range(pool))), dtype=float)
    probs = pick_probabilities(scores, n)
    counts = np.zeros(pool)
    for sub in combinations(range(pool), n):
        counts[max(sub, key=lambda c: scores[c])] += 1
    np.testing.assert_allclose(probs, counts / comb(pool, n), atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.data())
def test_win_probability_equals_enumeration(pool, data):
    n = data.draw(st.integers(1, pool))
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    s1, s2 = rng.permutation(pool).astype(float), rng.permutation(pool).astype(float)
    truth = rng.integers(0, 3, size=pool).astype(float)  # ties in the true reward on purpose
    wins = 0.0
    for sub in combinations(range(pool), n):
        a, b = max(sub, key=lambda c: s1[c]), max(sub, key=lambda c: s2[c])
        wins += 1.0 if truth[a] > truth[b] else 0.5 if truth[a] == truth[b] else 0.0
    assert win_probability(s1, s2, truth, n) == pytest.approx(wins / comb(pool, n), abs=1e-12)


def test_oracle_pick_at_full_pool_has_zero_regret_and_random_the_mean_regret():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 9))  # posts x candidates
    regret_full = [truth[p].max() - expected_pick(truth[p], truth[p], 9) for p in range(40)]
    assert np.max(np.abs(regret_full)) < 1e-12
    mean_regret = np.mean(truth.max(1) - truth.mean(1))
    # n = 1 is a uniform draw whatever the scores; a random scorer is one at every n
    for n in (1, 3, 9):
        draws = [np.mean([truth[p].max() - expected_pick(rng.normal(size=9), truth[p], n)
                          for p in range(40)]) for _ in range(300)]
        assert np.mean(draws) == pytest.approx(mean_regret, abs=4 * np.std(draws) / np.sqrt(300) + 1e-12)
    one = np.mean([truth[p].max() - expected_pick(truth[p], truth[p], 1) for p in range(40)])
    assert one == pytest.approx(mean_regret, abs=1e-12)
    # and a monotone property: the oracle's regret falls with n
    r = [np.mean([truth[p].max() - expected_pick(truth[p], truth[p], n) for p in range(40)])
         for n in range(1, 10)]
    assert all(a > b for a, b in zip(r, r[1:]))


# ----------------------------------------------------------------------------- candidates

def test_candidates_record_every_labelers_true_reward():
    rows, meta = make_rows(0, 5, 12, 6)
    posts = make_candidates(meta, n_candidates=6, n_posts=5, seed=0)
    w = np.array(meta["weights"])
    assert len(posts) == 5 and all(len(p["candidates"]) == 6 for p in posts)
    train_posts = {r["info"]["post"] for r in rows}
    for p in posts:
        assert p["post"] not in train_posts and p["prompt"].endswith("TL;DR: ")
        for c in p["candidates"]:
            t = np.array(c["traits"])
            got = np.array([c["reward"][name] for name in meta["workers"]])
            np.testing.assert_allclose(got, w @ t, rtol=1e-12)
    traits = np.array([c["traits"] for p in posts for c in p["candidates"]])
    assert (traits.std(axis=0) > 0).all()  # every trait varies across candidates
    again = make_candidates(meta, n_candidates=6, n_posts=5, seed=0)
    assert again == posts


def test_synth_command_writes_candidates_without_changing_the_comparisons(tmp_path):
    from llm.policy import load_candidates
    from llm.synth import CANDIDATE_POSTS, main

    small = ["--workers", "5", "--train-per-worker", "3", "--valid-per-worker", "2"]
    assert main(["--out", str(tmp_path / "a"), *small]) == 0
    assert main(["--out", str(tmp_path / "b"), *small, "--candidates", "3"]) == 0
    for f in (tmp_path / "a" / "comparisons").glob("*.json"):
        assert f.read_text() == (tmp_path / "b" / "comparisons" / f.name).read_text()
    c = load_candidates(tmp_path / "b")
    assert c["pool"] == 3 and len(c["prompts"]) == CANDIDATE_POSTS
    assert c["truth"]["synth-worker-00"].shape == (CANDIDATE_POSTS, 3)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "c"), "--candidates", "-1"])
    assert exc.value.code == 2


# ------------------------------------------------------------------- scoring API (torch)

def _train(tiny, out, method, **kw):
    from llm.config import TrainConfig
    from llm.train import run

    base = dict(method=method, model=str(tiny), data=str(FIXTURE), epochs=1.0, batch_size=4,
                grad_accum=2, eval_batch_size=16, max_length=96, lora_r=4, lora_alpha=8.0,
                lr=3e-2, head_lr=3e-2, out=str(out), max_steps=3)
    return run(TrainConfig(**{**base, **kw}), progress=False)


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    pytest.importorskip("peft")
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    out = {m: _train(tiny, root / m, m) for m in ("global", "local", "shared-wu")}
    out["shared"] = _train(tiny, root / "shared", "shared", per_user_head=True)
    torch.set_num_threads(old)
    return out


@pytest.mark.llm
@pytest.mark.usefixtures("torch_one_thread")
@pytest.mark.parametrize("method", ["global", "local", "shared-wu", "shared"])
def test_scores_equal_the_trainers_own_validation_rewards(runs, method):
    """RewardModel.score on the validation texts == eval/phase*.npz written by llm.train."""
    from llm import RewardModel
    from llm.config import TrainConfig
    from llm.data import load_comparisons

    run = runs[method]
    cfg = TrainConfig.load(run / "config.json")
    data = load_comparisons(cfg.data, cfg.workers, cfg.seed, cfg.limit_per_worker,
                            cfg.eval_limit_per_worker)
    files = sorted((run / "eval").glob("phase*.npz"))
    ref = {k: np.concatenate([np.load(f)[k] for f in files]) for k in ("user", "r0", "r1")}
    comps = sorted(data.valid, key=lambda c: c.user) if method == "local" else data.valid
    assert [c.user for c in comps] == ref["user"].tolist()
    rm = RewardModel.load(run, device="cpu", batch_size=5)  # other batches than the trainer's
    rev = np.arange(len(comps))[::-1]  # and another row order, users mixed
    got = {}
    for which in (0, 1):
        s = rm.score([comps[i].prompt for i in rev], [comps[i].summaries[which] for i in rev],
                     user=[comps[i].user for i in rev])
        got[which] = s[np.argsort(rev)]
    np.testing.assert_allclose(got[0], ref["r0"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], ref["r1"], rtol=1e-5, atol=1e-5)
    if method != "global":  # personal: the same text gets different rewards per user
        c = comps[0]
        per_user = [rm.score([c.prompt], [c.summaries[0]], user=u)[0] for u in range(5)]
        assert np.ptp(per_user) > 0  # bit-identical only if the users shared one adapter
        assert rm.score([c.prompt], [c.summaries[0]], user=rm.workers[2])[0] == per_user[2]


@pytest.mark.llm
@pytest.mark.usefixtures("torch_one_thread")
def test_features_are_the_score_heads_input(runs):
    """reward = <w_u, h> + b with h the captured head input (what the Laplace LCB uses)."""
    import torch
    from safetensors.torch import load_file

    from llm import RewardModel

    rm = RewardModel.load(runs["shared"], device="cpu")
    state = load_file(str(runs["shared"] / "adapters" / "phase0.safetensors"))
    w = state["backbone.classifier.weight"].numpy()[:, 0, :]  # (users, hidden)
    b = state["backbone.classifier.bias"].numpy()[:, 0]
    prompts, responses = ["SUBREDDIT: r/cooking\nTITLE: t\nPOST: p\nTL;DR: "] * 3, ["a", "b c", "lol"]
    for u in (0, 3):
        r, h = rm.features(prompts, responses, user=u)
        np.testing.assert_allclose(r, h @ w[u] + b[u], rtol=1e-5, atol=1e-6)
    assert torch.get_num_threads() == 1


@pytest.mark.llm
def test_load_rejects_a_directory_that_is_not_a_run(tmp_path):
    from llm import RewardModel

    with pytest.raises(ValueError, match="not a finished"):
        RewardModel.load(tmp_path)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.llm
@pytest.mark.usefixtures("torch_one_thread")
def test_policy_command_writes_exact_rows(runs, tmp_path):
    from llm.policy import POLICY_COLUMNS, main
    from llm.synth import write_candidates

    meta = json.loads((FIXTURE / "synth_meta.json").read_text())
    write_candidates(tmp_path / "c", make_candidates(meta, n_candidates=4, n_posts=6), meta)
    args = ["--run", str(runs["global"]), "--run", str(runs["shared"]), "--candidates",
            str(tmp_path / "c"), "--n", "1,2,4"]
    assert main(args + ["--out", str(tmp_path / "p")]) == 0
    rows = _read_csv(tmp_path / "p" / "policy.csv")
    assert tuple(rows[0]) == POLICY_COLUMNS
    assert {r["method"] for r in rows} == {"global", "shared", "true-reward", "random"}
    assert len(rows) == 4 * 5 * 3
    by = {(r["method"], int(r["user"]), int(r["n"])): r for r in rows}
    for u in range(5):
        assert float(by["true-reward", u, 4]["regret"]) == pytest.approx(0.0, abs=1e-9)
        assert float(by["global", u, 2]["win_vs_global"]) == pytest.approx(0.5)
        for m in ("global", "shared"):  # n = 1 is a uniform pick whatever the model
            assert float(by[m, u, 1]["regret"]) == pytest.approx(float(by["random", u, 4]["regret"]), rel=1e-5)
            assert float(by[m, u, 1]["win_vs_global"]) == pytest.approx(0.5)
    # beta = 0: the pessimistic pick is the plug-in pick (scores come from the cache)
    assert main(args + ["--out", str(tmp_path / "p"), "--beta", "0"]) == 0
    zero = _read_csv(tmp_path / "p" / "policy.csv")
    assert all(r["regret_pess"] == r["regret"] for r in zero if r["method"] in ("global", "shared"))
    with pytest.raises(SystemExit) as exc:
        main(args[:-1] + ["1,9", "--out", str(tmp_path / "bad")])
    assert exc.value.code == 2


@pytest.mark.llm
def test_laplace_width_matches_a_direct_posterior_draw():
    """sqrt(z^T Sigma z) is the sd of <w, z> under w ~ N(w_hat, Sigma): check by sampling."""
    from llm.uncertainty import fisher, lcb_width, posterior_covariance

    rng = np.random.default_rng(1)
    d = rng.normal(size=(50, 4))
    m = rng.normal(size=50)
    f = fisher(d, m)
    p = 1 / (1 + np.exp(-m))
    np.testing.assert_allclose(f, sum(pk * (1 - pk) * np.outer(x, x) for pk, x in zip(p, d)))
    sigma = posterior_covariance(d, m, 2.0)
    np.testing.assert_allclose(np.linalg.inv(sigma), 2.0 * np.eye(4) + f, atol=1e-10)
    h = rng.normal(size=(6, 4))
    w = rng.multivariate_normal(np.zeros(4), sigma, size=200_000)
    z = h - h.mean(0)
    np.testing.assert_allclose(lcb_width(h, sigma), (w @ z.T).std(0), rtol=0.02)
    more = posterior_covariance(np.vstack([d, d]), np.concatenate([m, m]), 2.0)
    assert (lcb_width(h, more) < lcb_width(h, sigma)).all()  # more pairs, narrower bound


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.usefixtures("torch_one_thread")
def test_policy_study_end_to_end(tiny, tmp_path):
    import pandas as pd

    from llm.policy_study import main

    out = tmp_path / "study"
    args = ["--model", str(tiny), "--sizes", "4,8", "--posts", "4", "--pool", "4", "--n", "1,4",
            "--epochs", "1", "--betas", "1,0", "--out", str(out)]
    assert main(args) == 0
    df = pd.read_csv(out / "policy_study.csv")
    assert set(df["size"]) == {4, 8} and set(df["beta"]) == {0.0, 1.0}
    learned = df[df["method"].isin(["global", "local", "shared"])]
    assert len(learned) == 3 * 5 * 2 * 2 * 2  # methods x users x n x sizes x betas
    zero = learned[learned["beta"] == 0]
    np.testing.assert_allclose(zero["regret_pess"], zero["regret"])
    assert (out / "llm_policy_regret.png").exists() and "Headline" in (out / "summary.md").read_text()
    assert main(args) == 0  # resumes: finished runs and cached scores are reused
