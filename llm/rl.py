"""Policy optimisation for one user against that user's reward model with TRL (Algorithm 2, last
stage: pi_u = argmax_pi E_{x, y ~ pi} r_u(x, y) - beta KL(pi || pi_ref)).

    python -m llm.rl --run RUN --user U --policy MODEL [--trainer rloo|grpo] [--steps S] ...

The on-policy trainers that current TRL keeps (``RLOOTrainer``, ``GRPOTrainer``; PPO is gone
from TRL 1.x). The prompt dataset has a ``prompt`` column (TL;DR prompts, from ``--prompts``
candidates or the run's validation posts) and a ``user`` column; TRL passes extra dataset
columns to reward functions, so :func:`user_reward` routes every sample to its own user's
adapter through :meth:`llm.api.RewardModel.score` -- several users can share one run
(``--user 0,3``). KL to the reference policy: RLOO subtracts ``beta`` x the sequence's
summed log-ratio from the reward (as in RLHF); GRPO adds a per-token KL term to the loss.

``--policy tiny`` builds a tiny random Llama causal LM with a word-level tokenizer over the
synthetic vocabulary (no download; tests and smoke runs). Writes OUT/policy (the trained
model + tokenizer), OUT/log.csv (TRL's per-step metrics) and OUT/rl_config.json.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from figures.cli import OneLineParser

TRAINERS = ("rloo", "grpo")


def user_reward(rm, record: list | None = None):
    """TRL reward function: r_{user}(prompt + completion) for every sample, by its ``user``."""

    def reward(prompts, completions, user, **_):
        scores = rm.score(list(prompts), list(completions), user=[int(u) for u in user])
        if record is not None:
            record.extend(zip(prompts, completions, [int(u) for u in user], scores.tolist()))
        return scores.tolist()

    reward.__name__ = f"reward_{rm.method}"
    return reward


def make_tiny_policy(out: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny random LlamaForCausalLM and a word-level fast tokenizer (synthetic vocabulary)."""
    import torch
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llm.tiny import tiny_vocab

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(tiny_vocab())}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                  bos_token="[CLS]", eos_token="[SEP]")
    tok.save_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, intermediate_size=2 * hidden,
                      max_position_embeddings=512, pad_token_id=vocab["[PAD]"],
                      bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"])
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    return out


def prompt_rows(rm, users: list[int], prompts_from: str | None, limit: int | None) -> dict:
    """Columns ``prompt`` and ``user``: every prompt once per user (candidates' or validation)."""
    if prompts_from:
        from llm.policy import load_candidates

        prompts = load_candidates(prompts_from)["prompts"]
    else:
        from llm.data import load_comparisons

        cfg = rm.cfg
        valid = load_comparisons(cfg.data, cfg.workers, cfg.seed, cfg.limit_per_worker,
                                 cfg.eval_limit_per_worker).valid
        prompts = list(dict.fromkeys(c.prompt for c in valid))
    prompts = prompts[:limit] if limit else prompts
    return {"prompt": [p for p in prompts for _ in users],
            "user": [u for _ in prompts for u in users]}


def train_policy(reward_funcs, rows: dict, policy: str, out: Path, trainer: str = "rloo",
                 steps: int = 50, lr: float = 1e-5, kl: float = 0.05, num_generations: int = 4,
                 batch_size: int = 8, max_completion_length: int = 48, seed: int = 0,
                 temperature: float = 1.0):
    """Run TRL's RLOO or GRPO trainer; returns the trainer (its ``state.log_history``)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
    if batch_size % num_generations:
        raise ValueError(f"batch size {batch_size} must be a multiple of num_generations "
                         f"{num_generations}")
    if trainer == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    tok = AutoTokenizer.from_pretrained(policy)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation continues the prompt's last token
    model = AutoModelForCausalLM.from_pretrained(policy)
    args = Config(
        output_dir=str(out / "trl"), per_device_train_batch_size=batch_size,
        num_generations=num_generations, max_completion_length=max_completion_length,
        learning_rate=lr, max_steps=steps, beta=kl, seed=seed, logging_steps=1,
        save_strategy="no", report_to="none", temperature=temperature,
        use_cpu=not _cuda(), bf16=_cuda(), disable_tqdm=not sys.stderr.isatty(),
    )
    t = Trainer(model=model, reward_funcs=reward_funcs, args=args,
                train_dataset=Dataset.from_dict(rows), processing_class=tok)
    t.train()
    t.save_model(str(out / "policy"))
    tok.save_pretrained(str(out / "policy"))
    _write_log(out / "log.csv", t.state.log_history)
    return t


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _write_log(path: Path, history: list[dict]) -> None:
    rows = [h for h in history if "reward" in h]
    keys = sorted({k for h in rows for k in h})
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m llm.rl",
                      description="Optimise a causal-LM policy for one user's reward with TRL.")
    p.add_argument("--run", required=True, help="finished llm.train run (the reward models)")
    p.add_argument("--user", required=True, help="labeler index or worker id (comma-separated)")
    p.add_argument("--policy", required=True,
                   help="causal LM path or hub id; `tiny` builds a tiny random Llama (no download)")
    p.add_argument("--prompts", default=None,
                   help="candidates DIR (llm.synth --candidates) for prompts (default: the "
                        "run's validation posts)")
    p.add_argument("--trainer", default="rloo", choices=TRAINERS)
    p.add_argument("--steps", type=int, default=50, help="optimizer steps")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--kl", type=float, default=0.05, help="KL coefficient beta to the reference")
    p.add_argument("--num-generations", type=int, default=4, help="samples per prompt")
    p.add_argument("--batch-size", type=int, default=8, help="completions per step")
    p.add_argument("--max-completion-length", type=int, default=48)
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output dir (default results/rl/<run>-u<U>)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("steps", "num_generations", "batch_size", "max_completion_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0 or args.kl < 0:
        parser.error(f"--lr must be > 0 and --kl >= 0, got {args.lr}, {args.kl}")
    try:
        from llm.api import RewardModel

        rm = RewardModel.load(args.run)
        users = [rm.user_index(u if not u.isdigit() else int(u))
                 for u in args.user.split(",") if u]
        out = Path(args.out or f"results/rl/{Path(args.run).name}-u{'-'.join(map(str, users))}")
        out.mkdir(parents=True, exist_ok=True)
        policy = str(make_tiny_policy(out / "tiny-init")) if args.policy == "tiny" else args.policy
        rows = prompt_rows(rm, users, args.prompts, args.max_prompts)
        (out / "rl_config.json").write_text(json.dumps(vars(args) | {"users": users}, indent=1))
        train_policy([user_reward(rm)], rows, policy, out, args.trainer, args.steps, args.lr,
                     args.kl, args.num_generations, args.batch_size, args.max_completion_length,
                     args.seed)
    except (ValueError, OSError) as err:
        if os.environ.get("LLM_DEBUG"):
            raise
        parser.error(f"{err} (LLM_DEBUG=1 shows the traceback)")
    print(f"policy written to {out / 'policy'}; per-step metrics in {out / 'log.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
