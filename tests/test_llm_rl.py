"""llm.rl: TRL's on-policy trainers against a user's reward model (tiny causal LM, no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from llm.rl import make_tiny_policy, prompt_rows, train_policy, user_reward  # noqa: E402
from llm.tiny import tiny_vocab  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.usefixtures("torch_one_thread")]
FIXTURE = Path(__file__).parent / "fixtures" / "tldr_tiny"
PROMPT = "SUBREDDIT: r/cooking\nTITLE: my curry\nPOST: I lost my curry.\nTL;DR: "


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return make_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny")


def test_mean_reward_rises_with_a_known_reward(policy, tmp_path):
    """Reward = share of completion words from a fixed half of the vocabulary (chance ~0.4).

    RLOO's leave-one-out advantage must push the policy towards those words; a wrong sign or a
    missing update leaves the reward at chance or lowers it.
    """
    good = {w for w in tiny_vocab() if w[:1].isalpha() and w[0] < "m"}

    def known(prompts, completions, **_):
        return [sum(w in good for w in c.split()) / max(1, len(c.split())) for c in completions]

    rows = {"prompt": [PROMPT] * 8, "user": [0] * 8}
    t = train_policy([known], rows, str(policy), tmp_path, "rloo", steps=40, lr=3e-2, kl=0.0,
                     num_generations=4, batch_size=8, max_completion_length=8)
    r = np.array([h["reward"] for h in t.state.log_history if "reward" in h])
    assert len(r) == 40
    assert r[:8].mean() < 0.55 and r[-8:].mean() > r[:8].mean() + 0.25, np.round(r, 2)
    assert (tmp_path / "policy").is_dir() and (tmp_path / "log.csv").exists()


def test_reward_seen_by_trl_is_the_users_reward_model_score(tiny, policy, tmp_path):
    """Mixed users in one run: each sample's reward == RewardModel.score(..., user=its user),
    and TRL's own logged per-step mean of the reward function equals the mean of those."""
    from llm import RewardModel
    from llm.config import TrainConfig
    from llm.train import run

    rm_run = run(TrainConfig(method="shared", model=str(tiny), data=str(FIXTURE), epochs=1.0,
                             batch_size=4, grad_accum=2, max_length=96, lora_r=4, lora_alpha=8.0,
                             lr=3e-2, per_user_head=True, max_steps=3, out=str(tmp_path / "rm")),
                 progress=False)
    rm = RewardModel.load(rm_run, device="cpu")
    rows = prompt_rows(rm, [1, 3], None, 4)
    assert rows["user"][:4] == [1, 3, 1, 3] and rows["prompt"][0] == rows["prompt"][1]
    record: list = []
    t = train_policy([user_reward(rm, record)], rows, str(policy), tmp_path / "rl", "grpo",
                     steps=3, lr=1e-3, kl=0.05, num_generations=4, batch_size=8,
                     max_completion_length=6)
    assert len(record) == 3 * 8 and {u for _, _, u, _ in record} == {1, 3}
    fresh = RewardModel.load(rm_run, device="cpu", batch_size=3)
    for prompt, completion, u, r in record:
        assert fresh.score([prompt], [completion], user=u)[0] == pytest.approx(r, abs=1e-5)
    other = [fresh.score([p], [c], user=4 - u)[0] for p, c, u, _ in record]
    assert np.max(np.abs(np.array(other) - [r for *_, r in record])) > 1e-4  # routing matters
    logged = [h["rewards/reward_shared/mean"] for h in t.state.log_history if "reward" in h]
    per_step = np.array([r for *_, r in record]).reshape(3, 8).mean(1)
    np.testing.assert_allclose(logged, per_step, rtol=1e-4, atol=1e-5)
    assert all("kl" in h for h in t.state.log_history if "reward" in h)


def test_command_rejects_bad_values(tmp_path):
    from llm.rl import main

    with pytest.raises(SystemExit) as exc:
        main(["--run", str(tmp_path), "--user", "0", "--policy", "tiny", "--steps", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(tmp_path), "--user", "0", "--policy", "tiny"])  # not a run
    assert exc.value.code == 2
