"""Scoring API of a finished reward-model run: ``RewardModel.load(RUN).score(prompts, responses, user=U)``.

The personalized reward r_{Theta_u}(x, y) of Section 5 (Delta W_u = B A_u for P-ShareLoRA,
one adapter per user for ``local``, one for everyone for ``global``), as the trainer computes it
(``llm.model.predict_rewards``), without importing the trainer, accelerate or an optimizer:

    from llm import RewardModel
    rm = RewardModel.load("runs/shared")            # device: cuda when available, else cpu
    rm.score(["SUBREDDIT: r/x\\nTITLE: ...\\nPOST: ...\\nTL;DR: "], ["a summary"], user=0)

``user`` is a labeler index (rank among the run's kept workers, ``rm.workers``), a worker id,
or one of either per row. Texts are ``prompt + response`` (the trainer's input), truncated from
the left to the run's ``max_length``; rows are scored in batches of similar length.

:meth:`RewardModel.features` also returns the input of the score head (the last layer), which
:mod:`llm.uncertainty` uses for the per-user Laplace posterior of the pessimistic policy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llm.config import TrainConfig


class RewardModel:
    """The final personalized reward model of a ``llm.train`` run directory."""

    def __init__(self, run: Path, cfg: TrainConfig, workers: list[str], model, tok, states,
                 device, bf16: bool, batch_size: int):
        self.run, self.cfg, self.workers = run, cfg, workers
        self._model, self._tok, self._states = model, tok, states  # states: local's per-user
        self.device, self._bf16, self.batch_size = device, bf16, batch_size
        self._loaded: int | None = None

    @property
    def method(self) -> str:
        return self.cfg.method

    @property
    def n_users(self) -> int:
        return len(self.workers)

    @classmethod
    def load(cls, run: str | Path, device: str | None = None, batch_size: int | None = None,
             precision: str | None = None) -> RewardModel:
        """Rebuild the run's backbone + adapters from ``RUN/config.json`` and ``RUN/adapters``.

        ``device``: ``cuda``, ``cpu``, ... (default: cuda when available). ``precision``:
        ``fp32``, ``bf16`` or ``auto`` (default: the run's; auto = bf16 on CUDA, as trained).
        """
        import torch
        from safetensors.torch import load_file

        from llm.model import build_reward_model, load_backbone, load_tokenizer
        from llm.phases import plan_phases

        run = Path(run)
        if not (run / "config.json").exists() or not (run / "workers.json").exists():
            raise ValueError(f"{run}: not a finished llm.train run (no config.json/workers.json)")
        cfg = TrainConfig.load(run / "config.json")
        workers = json.loads((run / "workers.json").read_text())
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        prec = precision or cfg.precision
        bf16 = prec == "bf16" or (prec == "auto" and dev.type == "cuda")
        phases = plan_phases(cfg, len(workers))
        final = phases if cfg.method == "local" else [phases[-1]]
        files = [run / "adapters" / f"phase{p.index}.safetensors" for p in final]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise ValueError(f"{run}: missing adapter file(s) {', '.join(missing)}")
        tok = load_tokenizer(cfg.model)
        backbone = load_backbone(cfg.model, tok.pad_token_id,
                                 torch.bfloat16 if bf16 else torch.float32)
        last = final[-1]
        kind = "tied" if last.init_from is not None else last.kind
        model = build_reward_model(cfg, backbone, len(workers), kind)
        if last.init_from is not None:
            model.expand_users(per_user_head=cfg.per_user_head)
        states = [load_file(str(f)) for f in files]
        model.load_trainable_state(states[0])
        model.to(dev).eval()
        rm = cls(run, cfg, workers, model, tok, states if cfg.method == "local" else None,
                 dev, bf16, batch_size or cfg.eval_batch_size)
        rm._loaded = 0
        return rm

    def user_index(self, user: int | str) -> int:
        if isinstance(user, str | np.str_):
            if user not in self.workers:
                raise ValueError(f"unknown worker {user!r}; this run's workers: {self.workers}")
            return self.workers.index(str(user))
        u = int(user)
        if not 0 <= u < self.n_users:
            raise ValueError(f"user index {u} out of range 0..{self.n_users - 1}")
        return u

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              user: int | str | Sequence[int | str]) -> np.ndarray:
        """fp32 rewards r_u(prompt + response), shape (len(prompts),)."""
        return self.features(prompts, responses, user, with_features=False)[0]

    def features(self, prompts: Sequence[str], responses: Sequence[str],
                 user: int | str | Sequence[int | str], with_features: bool = True):
        """(rewards (n,), score-head inputs (n, hidden) or None) for every row."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        n = len(prompts)
        users = self._users(user, n)
        texts = [p + r for p, r in zip(prompts, responses)]
        rewards = np.zeros(n, dtype=np.float32)
        feats = None
        groups = np.unique(users) if self._states is not None else [None]
        for g in groups:  # local: one adapter per user, swapped in; else all users at once
            rows = np.arange(n) if g is None else np.flatnonzero(users == g)
            if g is not None:
                self._use_user(int(g))
            order = rows[np.argsort([len(texts[i]) for i in rows], kind="stable")]
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                r, h = self._forward([texts[i] for i in idx], users[idx], with_features)
                rewards[idx] = r
                if h is not None:
                    if feats is None:
                        feats = np.zeros((n, h.shape[1]), dtype=np.float32)
                    feats[idx] = h
        return rewards, feats

    def _users(self, user, n: int) -> np.ndarray:
        if isinstance(user, str | int | np.integer | np.str_):
            return np.full(n, self.user_index(user), dtype=np.int64)
        users = np.array([self.user_index(u) for u in user], dtype=np.int64)
        if len(users) != n:
            raise ValueError(f"{len(users)} users for {n} rows")
        return users

    def _use_user(self, u: int) -> None:
        if self._loaded != u:
            self._model.load_trainable_state(self._states[u])
            self._loaded = u

    def _forward(self, texts: list[str], users: np.ndarray, with_features: bool):
        import torch

        from llm.model import find_head

        limit = getattr(self._model.backbone.config, "max_position_embeddings", None)
        length = min(self.cfg.max_length, limit) if limit else self.cfg.max_length
        enc = self._tok(texts, truncation=True, max_length=length, padding=True,
                        return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        uid = torch.as_tensor(users if self._states is None else np.zeros_like(users),
                              device=self.device)
        captured: list = []
        hook = None
        if with_features:
            head = find_head(self._model.backbone)[1]
            hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                 enabled=self._bf16):
                r = self._model(ids, mask, uid).float().cpu().numpy()
        finally:
            if hook is not None:
                hook.remove()
        h = None
        if with_features:
            x = captured[0].float()
            if x.dim() == 3:  # decoder: the score is read at the last non-pad token
                pad = self._model.backbone.config.pad_token_id
                pos = torch.arange(ids.shape[1], device=ids.device)
                last = (pos * (ids != pad).int()).argmax(-1)
                x = x[torch.arange(x.shape[0], device=x.device), last]
            h = x.cpu().numpy()
        return r, h
