"""The CPU study's reward model and training loop (``llm.study``; Section 5, Algorithm 2).

    r_u(x) = h_u . tanh((W_p + (alpha / r) B_u A_u) x + b_p) + c_u

on fixed features x, with each method's sharing pattern (``_phases``) built from
:class:`llm.lora.PersonalLoRALinear` and :class:`llm.lora.UserHead`, trained with AdamW on the
Bradley-Terry loss under the linear schedule of ``llm.phases.linear_schedule``.
"""

from __future__ import annotations

import math

import numpy as np

STUDY_METHODS = ("global", "local", "shared", "shared-wu", "share-rep", "shared-a")


def _seed(*key) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


class FeatureRewardModel:
    """Builder of the study's reward model: LoRA on the pooler, tanh, score head."""

    @staticmethod
    def build(dense, n_a: int, n_b: int, n_head: int, cfg, gen):
        import copy

        import torch
        from torch import nn

        from llm.lora import PersonalLoRALinear, UserContext, UserHead

        ctx = UserContext()
        base = copy.deepcopy(dense)
        head = nn.Linear(base.weight.shape[0], 1)
        with torch.no_grad():  # BERT's classifier init, drawn from the run's own generator
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.02)
            head.bias.zero_()

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lora = PersonalLoRALinear(base, n_a, n_b, cfg.lora_r, cfg.lora_alpha, ctx, gen)
                self.head = UserHead(head, n_head, ctx)

            def forward(self, x, users):
                self.lora.ctx.user_ids = users  # not ``ctx``: a deep copy has its own
                return self.head(torch.tanh(self.lora(x)))[:, 0]

        return Net()


def _phases(method: str, n_users: int, cfg):
    """[(users or None, (n_a, n_b, n_head), epochs)] per phase; shared-wu has two."""
    n = n_users
    if method == "global":
        return [(None, (1, 1, 1), cfg.epochs)]
    if method == "local":
        return [((u,), (1, 1, 1), cfg.epochs) for u in range(n)]
    if method == "share-rep":
        return [(None, (1, 1, n), cfg.epochs)]
    if method == "shared-a":
        return [(None, (1, n, 1), cfg.epochs)]
    if method == "shared-wu":
        w = cfg.epochs * cfg.warmup_fraction
        return [(None, (1, 1, 1), w), (None, (n, 1, 1), cfg.epochs - w)]
    return [(None, (n, 1, 1), cfg.epochs)]  # shared


def train_method(method, cfg, dense, x, choice, users, train_idx, n_users, seed, size,
                 min_steps: int = 1, cap_batch: bool = False):
    """Train ``method`` on pairs ``train_idx``; returns (score function, optimizer steps).

    ``min_steps``: at least this many optimizer steps per phase; ``cap_batch``: batches of at
    most the phase's pool (the few-shot fits of ``llm.new_user_study``; the defaults give the
    study's original schedule exactly).
    """
    import torch

    models, steps_total = {}, 0
    phases = _phases(method, n_users, cfg)
    users_np = users.numpy()
    mid = STUDY_METHODS.index(method)
    cont = method == "shared-wu"  # one schedule across the warm-up and the personal phase
    pair_counts = [len(train_idx) if p[0] is None else int(np.isin(users_np[train_idx], p[0]).sum())
                   for p in phases]
    batches = [min(cfg.batch_size, c) if cap_batch else cfg.batch_size for c in pair_counts]
    n_steps = [max(min_steps, math.ceil(e * c / b))
               for (_, _, e), c, b in zip(phases, pair_counts, batches)]
    model = None
    for k, (phase_users, (n_a, n_b, n_head), _epochs) in enumerate(phases):
        torch.manual_seed(_seed(seed, size, mid, k))
        gen = torch.Generator().manual_seed(_seed(seed, size, mid, k, 1))
        if cont and k == 1:
            model.lora.expand_users(n_a, a=True, b=False)
        else:
            model = FeatureRewardModel.build(dense, n_a, n_b, n_head, cfg, gen)
        pool = (train_idx if phase_users is None
                else train_idx[np.isin(users_np[train_idx], phase_users)])
        rng = np.random.default_rng(np.random.SeedSequence([seed, size, 3000 + k]))
        optimise(model, cfg, x, choice, users, pool, n_steps[k], rng, batches[k],
                 total=sum(n_steps) if cont else n_steps[k],
                 offset=sum(n_steps[:k]) if cont else 0)
        steps_total += n_steps[k]
        if phase_users is not None:
            models[phase_users[0]] = model
    if not models:
        models = {None: model}
    return models, steps_total


def optimise(model, cfg, x, choice, users, pool, n_steps, rng, batch, total=None, offset=0):
    """AdamW (LoRA lr ``cfg.lr``, head lr ``cfg.head_lr``, no weight decay) on the
    Bradley-Terry loss over the pairs ``pool`` (indices into x, choice, users) for ``n_steps``
    steps of ``batch`` pairs, in ``rng``'s seeded order (pool epoch after epoch), under the
    linear schedule with warm-up (``total`` steps long, starting at ``offset``). Only
    parameters with ``requires_grad`` are optimised. Returns the mean loss of each step."""
    import torch

    from llm.phases import linear_schedule

    total = n_steps if total is None else total
    head_ids = {id(p) for p in model.head.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in head_ids], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in head_ids], "lr": cfg.head_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    warm = math.ceil(cfg.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s, o=offset, w=warm, t=total: linear_schedule(s + o, w, t))
    need = n_steps * batch
    order = np.concatenate([pool[rng.permutation(len(pool))]
                            for _ in range(math.ceil(need / len(pool)))])[:need]
    losses = []
    for s in range(n_steps):
        b = torch.from_numpy(order[s * batch : (s + 1) * batch])
        c = choice[b]
        xb = torch.cat([x[b, c], x[b, 1 - c]])
        ub = torch.cat([users[b], users[b]])
        r = model(xb, ub)
        loss = -torch.nn.functional.logsigmoid(r[: len(b)] - r[len(b):]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def fit_new_users(source, combine, cfg, x, choice, users, pool, n_new, seed, size,
                  min_steps: int = 1):
    """New users on a trained ``shared`` study model (extension, issue 18): a copy of
    ``source`` with its pooler, shared B and head frozen (``llm.lora.freeze_for_new_users``),
    fitting only each new user's A_u (``combine`` False) or its n_trained combination weights
    (``combine``) on the pairs ``pool`` (``users`` index the new users 0..n_new-1). The
    schedule is the study's (``cfg.epochs`` over the pool, batches capped at the pool, at least
    ``min_steps`` steps). Returns (model, steps, per-step losses)."""
    import copy

    import torch

    from llm.lora import freeze_for_new_users

    model = copy.deepcopy(source)
    for p in model.parameters():
        p.requires_grad_(False)
    freeze_for_new_users([model.lora], n_new, combine)
    batch = min(cfg.batch_size, len(pool))
    n_steps = max(min_steps, math.ceil(cfg.epochs * len(pool) / batch))
    torch.manual_seed(_seed(seed, size, 50 + int(combine)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, size, 4000 + int(combine)]))
    losses = optimise(model, cfg, x, choice, users, pool, n_steps, rng, batch)
    return model, n_steps, losses


def score(models, x, users) -> tuple[np.ndarray, np.ndarray]:
    """fp32 rewards of summary 0 and 1 of every pair, each under its own labeler's model."""
    import torch

    r0 = np.zeros(len(users), np.float32)
    r1 = np.zeros(len(users), np.float32)
    with torch.no_grad():
        for key, m in models.items():
            sel = np.arange(len(users)) if key is None else np.flatnonzero(users.numpy() == key)
            u = users[sel]
            r0[sel] = m(x[sel, 0], u).numpy()
            r1[sel] = m(x[sel, 1], u).numpy()
    return r0, r1
