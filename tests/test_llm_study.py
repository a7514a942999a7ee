"""llm.study and its pieces: synth's disagreement knob and exact margins, tie accounting, the
authors' shared-g schedule, memory-based checkpointing, A_i initialisations, CNN/DM rows, and
a tiny study that is reproducible and resumes to the same study.csv."""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest

from llm import synth
from llm.evaluate import pairwise_accuracy

FIXTURE = Path(__file__).parent / "fixtures" / "tldr_tiny"


def test_disagreement_rescales_the_same_personal_weights():
    w1 = synth.labeler_weights(7, np.random.default_rng(3), 1.0)
    w3 = synth.labeler_weights(7, np.random.default_rng(3), 3.0)
    w0 = synth.labeler_weights(7, np.random.default_rng(3), 0.0)
    np.testing.assert_allclose(w3 - synth.W_COMMON, 3.0 * (w1 - synth.W_COMMON), atol=1e-12)
    np.testing.assert_array_equal(w0, np.broadcast_to(synth.W_COMMON, w0.shape))


def test_stored_margins_reproduce_the_meta_bayes_accuracy():
    # meta accumulates max(p0, 1 - p0) while generating; bayes_accuracy recomputes it from
    # the margins stored in every row: two computations of the same expectation.
    rows, meta = synth.make_rows(seed=2, workers=3, train_per_worker=5, valid_per_worker=40)
    for w in meta["workers"]:
        m = [r["extra"]["synth_margin"] for r in rows if r["worker"] == w
             and r["split"] != "train" and "synth_margin" in r["extra"]]
        assert synth.bayes_accuracy(np.array(m)) == pytest.approx(meta["bayes_valid_accuracy"][w])


def test_no_disagreement_makes_the_mean_reward_everyones_reward():
    rows, meta = synth.make_rows(seed=1, workers=3, train_per_worker=4, valid_per_worker=50,
                                 disagreement=0.0)
    for w in meta["workers"][:3]:
        assert meta["bayes_valid_accuracy"][w] == pytest.approx(
            meta["common_weight_valid_accuracy"][w])


def test_ties_count_wrong_half_and_right():
    users = np.array([0, 0, 0, 0, 1, 1])
    r0 = np.array([1.0, 0.5, 0.5, 0.0, 2.0, 2.0], np.float32)
    r1 = np.array([0.0, 0.5, 0.5, 1.0, 2.0, 1.0], np.float32)
    choice = np.array([0, 0, 1, 0, 1, 0])
    rows = pairwise_accuracy(users, r0, r1, choice, 2)
    # user 0: one right, two ties, one wrong; user 1: one tie, one right
    assert [rows[0][k] for k in ("accuracy", "accuracy_tie_half", "accuracy_tie_right")] == \
        [0.25, 0.5, 0.75]
    assert [rows[1][k] for k in ("accuracy", "accuracy_tie_half", "accuracy_tie_right")] == \
        [0.5, 0.75, 1.0]
    assert rows[2]["accuracy_tie_half"] == pytest.approx(0.625) and rows[2]["ties"] == 3


def test_authors_shared_g_schedule_matches_appendix_d_numbers():
    pytest.importorskip("torch")
    from llm.config import TrainConfig
    from llm.phases import linear_schedule, plan_phases
    from llm.train import schedule_span

    data = types.SimpleNamespace(train=[None] * 26_865)  # the paper's 5 x 5,373 pairs
    cfg = TrainConfig(method="shared-g")  # 3 epochs, batch 8 x 16 = 128, lr 5e-5
    g, p = plan_phases(cfg, 5)
    total, offset, warm = schedule_span(cfg, g, [g, p], data, 1)
    steps_g = math.ceil(2 * 26_865 / 128)
    assert (total, offset, warm) == (630, 0, 63)
    lr_at_switch = cfg.lr * linear_schedule(steps_g, warm, total)
    assert steps_g == 420 and lr_at_switch == pytest.approx(1.85e-5, rel=0.01)
    total_p, _, warm_p = schedule_span(cfg, p, [g, p], data, 1)
    assert warm_p == 0 and p.lr == pytest.approx(5e-5 / 3)
    assert linear_schedule(0, warm_p, total_p) == 1.0  # starts at lr/3, no warm-up
    old = TrainConfig(method="shared-g", shared_g_schedule="appendix")
    g2, _ = plan_phases(old, 5)
    assert schedule_span(old, g2, [g2], data, 1)[0] == steps_g  # decays to 0 at the switch


def test_activation_estimate_is_near_the_measured_8b_anchor():
    # docs/performance.md: stock peft LoRA on Llama-3-8B, 16 sequences x 512 tokens, no
    # checkpointing, peaked at 57 GiB on an H200 (weights 16.06 GB in bf16).
    from llm.train import activation_bytes_per_token, estimate_peak_bytes

    conf = types.SimpleNamespace(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32)
    peak = estimate_peak_bytes(8.03e9 * 2, activation_bytes_per_token(conf), 16 * 512, False)
    assert 0.75 * 57 < peak / 2**30 < 1.1 * 57
    with_ckpt = estimate_peak_bytes(8.03e9 * 2, activation_bytes_per_token(conf), 16 * 512, True,
                                    layers=32, hidden=4096)
    assert with_ckpt < 0.5 * peak


def test_auto_checkpointing_is_per_batch_and_needs_memory_pressure():
    torch = pytest.importorskip("torch")
    from llm.config import TrainConfig
    from llm.train import CheckpointPolicy

    lin = torch.nn.Linear(8, 8)
    lin.config = types.SimpleNamespace(hidden_size=64, intermediate_size=256, num_hidden_layers=4)
    cfg = TrainConfig(method="shared")
    per_token = 4 * (11 + 19 + 4) * 64 * 2  # 4 layers x 34 h bytes (16-bit) x 2 for fp32
    weights = sum(p.numel() * 4 for p in lin.parameters())
    budget_tokens = 1000
    device = (weights + per_token * budget_tokens) / 0.85
    pol = CheckpointPolicy(cfg, lin, device)
    assert not pol.needed(900) and pol.needed(1100)  # one long batch, not the whole run
    assert not CheckpointPolicy(cfg, lin, None).needed(10**9)  # no CUDA: never
    on = CheckpointPolicy(TrainConfig(method="shared", gradient_checkpointing="on"), lin, None)
    assert on.needed(1)


def test_a_init_options():
    torch = pytest.importorskip("torch")
    from llm.lora import PersonalLoRALinear, UserContext

    base = torch.nn.Linear(64, 16)
    mk = {k: PersonalLoRALinear(base, 3, 1, 4, 8.0, UserContext(),
                                torch.Generator().manual_seed(0), a_init=k)
          for k in ("peft", "identical", "authors")}
    a = {k: m.lora_A.detach() for k, m in mk.items()}
    assert not torch.equal(a["peft"][0], a["peft"][1])
    assert torch.equal(a["identical"][0], a["identical"][2])
    assert torch.equal(a["authors"][0], a["authors"][1])
    # bounds: 1/sqrt(d_in) = 0.125 for peft, 1/sqrt(r) = 0.5 for the authors' layout
    assert a["peft"].abs().max() <= 0.125 < a["authors"].abs().max() <= 0.5
    assert torch.allclose(a["authors"] * 0.25, a["identical"])  # same uniform draw, rescaled


def test_keep_cnndm_keeps_them_through_the_cap():
    from llm.data import load_comparisons

    dropped = load_comparisons(FIXTURE)
    kept = load_comparisons(FIXTURE, keep_cnndm=True)
    assert kept.report["dropped_no_post"] == 0 < dropped.report["dropped_no_post"]
    n = synth.CNNDM_ROWS_PER_WORKER
    assert kept.report["valid_per_worker"] == dropped.report["valid_per_worker"] + n
    assert any(c.prompt.startswith("ARTICLE:") for c in kept.valid)


@pytest.mark.llm
def test_tiny_study_is_reproducible_and_resumes(tiny, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from llm import study

    torch.set_num_threads(1)
    cfg = study.StudyConfig(sizes=(4, 8), methods=("global", "local", "shared", "shared-wu",
                                                   "share-rep"), seeds=2, eval_per_labeler=6,
                            epochs=2.0, batch_size=4, lora_r=4, max_length=48, model=str(tiny))
    a = study.run_study(cfg, tmp_path / "a", progress=False)
    monkeypatch.setenv(study.STOP_ENV, "7")
    with pytest.raises(SystemExit):
        study.run_study(cfg, tmp_path / "b", progress=False)
    monkeypatch.delenv(study.STOP_ENV)
    b = study.run_study(cfg, tmp_path / "b", progress=False)
    assert (a / "study.csv").read_bytes() == (b / "study.csv").read_bytes()
    text = (a / "study.csv").read_text().splitlines()
    assert len(text) == 1 + 2 * 2 * 5 * 6  # seeds x sizes x methods x (5 labelers + all)
    assert (a / "llm_study_accuracy.png").exists() and "shared − global" in \
        (a / "study_summary.md").read_text()
    with pytest.raises(ValueError, match="other settings"):
        study.run_study(study.StudyConfig(**{**cfg.__dict__, "lr": 0.5}), a, progress=False)
