"""llm.train batch construction: length-grouped batches, reproducibility, resume, checkpointing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

import llm.train as train  # noqa: E402
from llm.cli import build_parser, config_from_args  # noqa: E402
from llm.config import TrainConfig  # noqa: E402
from llm.data import load_comparisons  # noqa: E402
from llm.model import load_tokenizer  # noqa: E402
from llm.train import (  # noqa: E402
    STOP_ENV,
    batch_stream,
    epoch_order,
    pair_lengths,
    plan_phases,
)

pytestmark = [pytest.mark.llm, pytest.mark.usefixtures("torch_one_thread")]
FIXTURE = Path(__file__).parent / "fixtures" / "tldr_tiny"
WIDTH = 256  # the tiny backbone's position limit; the fixture's texts are 61-115 tokens




@pytest.fixture(scope="module")
def fixture_data(tiny):
    """The fixture's train pairs, each text's token count and each pair's longer one."""
    data = load_comparisons(str(FIXTURE), 5, 0, None, None)
    tok = load_tokenizer(str(tiny))
    texts = [c.text(w) for w in (0, 1) for c in data.train]
    ids = tok(texts, truncation=True, max_length=WIDTH)["input_ids"]
    per_text = np.array([len(x) for x in ids]).reshape(2, -1).T  # (pairs, 2)
    return data, per_text, pair_lengths(tok, data.train, WIDTH)


def _cfg(method="shared", **kw):
    return TrainConfig(method=method, **{"batch_size": 4, **kw})


def _synthetic(n_pairs: int, n_users: int = 5, seed: int = 0):
    """A stand-in for TLDRData (only .train[i].user is read) and random pair lengths."""
    rng = np.random.default_rng(seed)
    data = SimpleNamespace(train=[SimpleNamespace(user=i % n_users) for i in range(n_pairs)])
    return data, rng.integers(20, 500, n_pairs)


def _padding_share(stream: np.ndarray, per_text: np.ndarray, b: int) -> float:
    """Padding / processed tokens when every batch of b pairs (2b texts) pads to its longest."""
    real = padded = 0
    for s in range(0, len(stream) - b + 1, b):
        lens = per_text[stream[s : s + b]]
        real += int(lens.sum())
        padded += lens.size * int(lens.max())
    return 1.0 - real / padded


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize(("n_pairs", "batch"), [(60, 4), (61, 7), (1000, 4), (1003, 8)])
def test_every_pair_once_per_epoch(group, n_pairs, batch):
    data, lengths = _synthetic(n_pairs)
    cfg = _cfg(batch_size=batch, group_by_length=group)
    phase = plan_phases(cfg, 5)[0]
    epochs = 3
    stream = batch_stream(cfg, phase, data, epochs * n_pairs + 5, lengths)
    assert len(stream) == epochs * n_pairs + 5
    for e in range(epochs):
        assert sorted(stream[e * n_pairs : (e + 1) * n_pairs]) == list(range(n_pairs))
    # local: a phase's pool is one user's pairs, visited once per epoch as well
    local = plan_phases(_cfg("local", batch_size=batch, group_by_length=group), 5)[2]
    pool = [i for i in range(n_pairs) if i % 5 == 2]
    stream = batch_stream(cfg, local, data, 2 * len(pool), lengths)
    assert sorted(stream[: len(pool)]) == pool and sorted(stream[len(pool) :]) == pool


@pytest.mark.parametrize("group", [True, False])
def test_same_seed_same_batches(group):
    data, lengths = _synthetic(1003)
    phase = plan_phases(_cfg(), 5)[0]
    a = batch_stream(_cfg(group_by_length=group, seed=3), phase, data, 2500, lengths)
    b = batch_stream(_cfg(group_by_length=group, seed=3), phase, data, 2500, lengths)
    c = batch_stream(_cfg(group_by_length=group, seed=4), phase, data, 2500, lengths)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # a pure function of (seed, phase, epoch): epoch 2 alone equals its slice of the stream
    pool = np.arange(1003)
    alone = epoch_order(_cfg(group_by_length=group, seed=3), phase, pool, 2, lengths)
    assert np.array_equal(alone[:494], a[2006:2500])
    assert np.array_equal(batch_stream(_cfg(group_by_length=group, seed=3), phase, data, 700,
                                       lengths), a[:700])


def test_without_grouping_the_order_is_the_previous_one():
    """--no-group-by-length keeps the batch order of the trainer before grouping existed."""
    data, lengths = _synthetic(61)
    cfg, phase = _cfg(group_by_length=False, seed=5), plan_phases(_cfg(), 5)[0]
    rng = np.random.default_rng(np.random.SeedSequence([5, 1000 + phase.index]))
    old = np.concatenate([rng.permutation(61) for _ in range(3)])[:150]
    assert np.array_equal(batch_stream(cfg, phase, data, 150, lengths), old)


def test_grouped_batches_hold_similar_lengths_and_mixed_users():
    data, lengths = _synthetic(1024 * 4)
    b = 8
    phase = plan_phases(_cfg(), 5)[0]
    grouped = batch_stream(_cfg(batch_size=b), phase, data, len(data.train), lengths)
    rand = batch_stream(_cfg(batch_size=b, group_by_length=False), phase, data,
                        len(data.train), lengths)
    spread = lambda s: np.mean([np.ptp(lengths[s[i : i + b]]) for i in range(0, len(s), b)])  # noqa: E731
    assert spread(grouped) < 0.1 * spread(rand)
    users = [len({data.train[i].user for i in grouped[s : s + b]}) for s in range(0, len(grouped), b)]
    assert np.mean(users) > 3  # users are not grouped: 8 pairs of 5 users
    # the batches are shuffled across the epoch, not visited from short to long
    first = lengths[grouped[: len(grouped) // 2]].mean()
    assert abs(first - lengths.mean()) < 0.1 * lengths.mean()


@pytest.mark.parametrize("b", [4, 8])
def test_grouping_lowers_padding_on_the_fixture(fixture_data, b):
    data, per_text, lengths = fixture_data
    phase = plan_phases(_cfg(), 5)[0]
    n = 3 * len(data.train)  # three epochs
    on = _padding_share(batch_stream(_cfg(batch_size=b), phase, data, n, lengths), per_text, b)
    off = _padding_share(batch_stream(_cfg(batch_size=b, group_by_length=False), phase, data, n,
                                      lengths), per_text, b)
    print(f"fixture padding share, batch {b} pairs: grouped {on:.1%}, random {off:.1%}")
    assert on < 0.6 * off


def test_resume_after_k_steps_reproduces_the_rest_of_the_epoch(tiny, tmp_path, monkeypatch):
    seen: list[list[tuple]] = []
    original = train._pair_loss

    def recording(model, tok, comps, cfg, accel, *rest):
        seen.append([(c.user, c.post_id, c.summaries, c.choice) for c in comps])
        return original(model, tok, comps, cfg, accel, *rest)

    monkeypatch.setattr(train, "_pair_loss", recording)

    def cfg(name):
        return TrainConfig(method="shared", model=str(tiny), data=str(FIXTURE), epochs=1.0,
                           batch_size=4, grad_accum=2, eval_batch_size=32, max_length=128,
                           lora_r=2, lora_alpha=4.0, lr=1e-3, checkpoint_every=1,
                           out=str(tmp_path / name))

    train.run(cfg("full"), progress=False)
    full, k = list(seen), 3
    assert len(full) == 16  # ceil(60 / 8) = 8 steps of 2 micro-batches of 4 pairs
    epoch = [x for batch in full[:15] for x in batch]  # the 60 pairs, then 4 of epoch 2
    train_pairs = load_comparisons(str(FIXTURE), 5, 0, None, None).train
    assert sorted(epoch) == sorted((c.user, c.post_id, c.summaries, c.choice) for c in train_pairs)
    seen.clear()
    monkeypatch.setenv(STOP_ENV, str(k))
    with pytest.raises(SystemExit):
        train.run(cfg("cut"), progress=False)
    assert seen == full[: 2 * k]
    seen.clear()
    monkeypatch.delenv(STOP_ENV)
    train.run(cfg("cut"), resume=True, progress=False)
    assert seen == full[2 * k :]


def test_resume_of_a_run_from_before_grouping_keeps_random_batches(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    saved = _cfg(group_by_length=False).to_dict()
    del saved["group_by_length"]  # config.json written before the field existed
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="group_by_length"):
        train._check_resume_config(_cfg(), out, resume=True)
    train._check_resume_config(_cfg(group_by_length=False), out, resume=True)


def test_cli_flag_and_config_field(tmp_path):
    p = build_parser()
    assert config_from_args(p.parse_args(["--method", "shared"])).group_by_length is True
    cfg = config_from_args(p.parse_args(["--method", "shared", "--no-group-by-length"]))
    assert cfg.group_by_length is False
    cfg.save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["group_by_length"] is False
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="group_by_length"):
        TrainConfig(method="shared", group_by_length="yes")
