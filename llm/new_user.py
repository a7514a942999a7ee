"""New users on a finished P-ShareLoRA run's frozen shared tensors (extension, issue 18).

    python llm/train.py --method new-user --init-from RUN --data DIR [--combine] ...

Not in the paper (which fits and scores the same N users): a labeler who was not in the source
run gets Delta W_new = (alpha / r) B A_new in every adapted layer, with the backbone, the shared
B of every layer and the score head loaded from RUN (a finished ``shared``, ``shared-g`` or
``shared-wu`` run) and frozen; only A_new is fitted on the new labeler's pairs (r x d_in per
layer, started at the trained users' mean A), or with ``--combine`` the reward-basis way,
A_new = sum_i c_i A_i with one weight per trained user shared by all layers (started at
c_i = 1/N). With a per-user head in RUN the new user's head row (started at the mean row) is
fitted too, except under ``--combine`` where it stays at the mean. ``llm.lora.
freeze_for_new_users`` does the layer surgery; this module loads and checks the source run.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from llm.config import NEW_USER_SOURCES, TrainConfig

# Settings that define the source model: the new-user run takes them from RUN/config.json.
INHERITED = ("model", "lora_r", "lora_alpha", "targets", "per_user_head", "lora_dropout",
             "keep_cnndm", "a_init")


def source_config(run: str | Path) -> TrainConfig:
    """RUN's config, refusing a missing or unfinished run or one of another method."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise ValueError(f"--init-from {run}: no finished run there (no config.json)")
    src = TrainConfig.load(run / "config.json")
    if src.method not in NEW_USER_SOURCES:
        raise ValueError(f"--init-from {run}: a {src.method} run has no shared B to freeze; "
                         f"need one of {', '.join(NEW_USER_SOURCES)}")
    progress = run / "progress.json"
    if not (progress.is_file() and json.loads(progress.read_text()).get("done")):
        raise ValueError(f"--init-from {run}: the run is not finished (no done progress.json)")
    return src


def inherit(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the source run's model-defining settings (INHERITED)."""
    src = source_config(cfg.init_from)
    return replace(cfg, **{k: getattr(src, k) for k in INHERITED})


def check_source(cfg: TrainConfig, data) -> TrainConfig:
    """Refuse a new-user run whose model settings differ from RUN's or whose labelers RUN
    trained on (by worker id; RUN/workers.json). Returns RUN's config."""
    src = source_config(cfg.init_from)
    diff = [k for k in INHERITED if getattr(src, k) != getattr(cfg, k)]
    if diff:
        raise ValueError(f"--init-from {cfg.init_from}: settings differ from the source run in "
                         f"{', '.join(diff)}")
    trained = json.loads((Path(cfg.init_from) / "workers.json").read_text())
    both = sorted(set(trained) & set(data.workers))
    if both:
        raise ValueError(f"new users {both[:3]} were trained in the source run "
                         f"{cfg.init_from}; pass held-out labelers (llm.synth --holdout-workers, "
                         "or --unseen-workers M as in the source run)")
    return src


def source_adapter(run: str | Path, src: TrainConfig, n_src: int) -> Path:
    from llm.phases import plan_phases

    return Path(run) / "adapters" / f"phase{plan_phases(src, n_src)[-1].index}.safetensors"


def build_new_user_model(cfg: TrainConfig, n_new: int, dtype, generator=None):
    """The source run's reward model with every tensor frozen but the new users' factors."""
    import torch
    from safetensors.torch import load_file

    from llm.lora import freeze_for_new_users, personal_modules
    from llm.model import build_reward_model, find_head, load_backbone, load_tokenizer

    src = source_config(cfg.init_from)
    n_src = len(json.loads((Path(cfg.init_from) / "workers.json").read_text()))
    tok = load_tokenizer(src.model)
    backbone = load_backbone(src.model, tok.pad_token_id, dtype)
    model = build_reward_model(src, backbone, n_src, "personal", generator)
    model.load_trainable_state(load_file(str(source_adapter(cfg.init_from, src, n_src))))
    freeze_for_new_users(personal_modules(model.backbone).values(), n_new, cfg.combine)
    head = find_head(model.backbone)[1]
    for p in head.parameters():
        p.requires_grad_(False)
    if head.n > 1:  # a per-user head: the new users' rows start at the trained users' mean
        with torch.no_grad():
            head.weight = torch.nn.Parameter(head.weight.mean(0, keepdim=True).repeat(n_new, 1, 1),
                                             requires_grad=not cfg.combine)
            if head.bias is not None:
                head.bias = torch.nn.Parameter(head.bias.mean(0, keepdim=True).repeat(n_new, 1),
                                               requires_grad=not cfg.combine)
    model.n_users = n_new
    return model
