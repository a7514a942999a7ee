"""Phases, learning-rate schedule and batch order of the reward-model trainer (Appendix D.1-D.2).

A method is one or more optimisation phases (Algorithm 2: a global warm-up phase, then the
personal one); each phase visits its pairs in a seeded order that is a pure function of
(seed, phase, epoch), optionally grouped by length so that batches waste little padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llm.config import TrainConfig
from llm.data import TLDRData

# Length grouping: sort this many batches' worth of shuffled pairs at a time (as
# benchmarks/llm_throughput.py's GROUP_POOL), chunk into batches, shuffle the batches.
GROUP_WINDOW_BATCHES = 64

@dataclass(frozen=True)
class Phase:
    """One optimisation run inside a method (e.g. the global and the personal part of shared-g)."""

    index: int
    kind: str  # "peft", "tied" (one A, one B) or "personal"
    users: tuple[int, ...] | None  # None: all users' data
    epochs: float
    lr: float
    init_from: int | None = None  # phase whose final adapter initialises this one
    continue_schedule: bool = False  # shared-wu: one linear schedule across both phases
    schedule_epochs: float | None = None  # schedule as long as this many epochs (shared-g)
    warmup: bool = True  # linear warm-up at the start of this phase's schedule


def plan_phases(cfg: TrainConfig, n_users: int) -> list[Phase]:
    """Section 5 / Algorithm 2: global phases, then personal ones; equal total epochs."""
    e, lr = cfg.epochs, cfg.lr
    if cfg.method == "global":
        return [Phase(0, "peft", None, e, lr)]
    if cfg.method == "local":
        return [Phase(u, "peft", (u,), e, lr) for u in range(n_users)]
    if cfg.method == "shared-g":
        g = e * cfg.global_fraction
        if cfg.shared_g_schedule == "authors":  # step 420 of the 3-epoch run, then lr/3, no warm-up
            return [Phase(0, "tied", None, g, lr, schedule_epochs=e),
                    Phase(1, "personal", None, e - g, lr * cfg.g_lr_factor, init_from=0,
                          warmup=False)]
        return [Phase(0, "tied", None, g, lr),
                Phase(1, "personal", None, e - g, lr * cfg.g_lr_factor, init_from=0)]
    if cfg.method == "shared-wu":
        w = e * cfg.warmup_fraction
        return [Phase(0, "tied", None, w, lr, continue_schedule=True),
                Phase(1, "personal", None, e - w, lr, init_from=0, continue_schedule=True)]
    return [Phase(0, "personal", None, e, lr)]


def phase_steps(cfg: TrainConfig, phase: Phase, data: TLDRData, world: int) -> int:
    steps = max(1, math.ceil(phase.epochs * n_pairs(data, phase) / (cfg.batch_size * cfg.grad_accum * world)))
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def linear_schedule(step: int, warmup: int, total: int) -> float:
    """transformers' get_linear_schedule_with_warmup factor at ``step``."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def batch_stream(cfg: TrainConfig, phase: Phase, data: TLDRData, n_rows: int,
                 lengths: np.ndarray | None = None) -> np.ndarray:
    """Train indices in visiting order: the phase's pairs epoch after epoch (``epoch_order``).

    The loop reads it in consecutive slices of ``cfg.batch_size`` (one process's micro-batch).
    ``lengths[i]``: token count of train pair i (``pair_lengths``), needed for grouping.
    """
    pool = phase_indices(data, phase)
    reps = math.ceil(n_rows / len(pool))
    return np.concatenate([epoch_order(cfg, phase, pool, e, lengths) for e in range(reps)])[:n_rows]


def epoch_order(cfg: TrainConfig, phase: Phase, pool: np.ndarray, epoch: int,
                lengths: np.ndarray | None = None) -> np.ndarray:
    """Visiting order of ``pool`` in ``epoch``: a pure function of seed, phase and epoch.

    Without grouping, the epoch's seeded permutation (the same draws as before grouping
    existed). With ``cfg.group_by_length``, that permutation cut into windows of
    GROUP_WINDOW_BATCHES x batch_size pairs, each window sorted by ``lengths`` (stable), cut
    into batches of batch_size, and the epoch's batches shuffled by a second seeded generator:
    users stay mixed, each batch holds similar lengths. The epoch starts at stream position
    epoch x len(pool), not always a batch boundary: its first (-epoch x len(pool)) mod
    batch_size pairs complete the previous epoch's last batch and its last pairs open the next
    epoch's first one; those two pieces keep the random order. No pair is dropped or repeated.
    """
    n = len(pool)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1000 + phase.index]))
    for _ in range(epoch):
        rng.permutation(n)  # epoch e is the (e+1)-th draw of the phase's generator
    order = pool[rng.permutation(n)]
    if not cfg.group_by_length:
        return order
    if lengths is None:
        raise ValueError("group_by_length needs the pairs' token lengths")
    b = cfg.batch_size
    head = min((-epoch * n) % b, n)
    body = (n - head) // b * b
    mid, window = order[head : head + body], GROUP_WINDOW_BATCHES * b
    batches: list[np.ndarray] = []
    for s in range(0, body, window):
        win = mid[s : s + window]
        batches += list(win[np.argsort(lengths[win], kind="stable")].reshape(-1, b))
    shuffle = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2000 + phase.index, epoch]))
    batches = [batches[i] for i in shuffle.permutation(len(batches))]
    return np.concatenate([order[:head], *batches, order[head + body :]])


def pair_lengths(tok, comps, max_length: int, chunk: int = 1024) -> np.ndarray:
    """Per comparison, the token count of its longer text (chosen or rejected), <= max_length."""
    out = np.zeros(len(comps), dtype=np.int64)
    for s in range(0, len(comps), chunk):
        part = comps[s : s + chunk]
        texts = [c.text(0) for c in part] + [c.text(1) for c in part]
        ids = tok(texts, truncation=True, max_length=max_length)["input_ids"]
        n = np.array([len(x) for x in ids])
        out[s : s + len(part)] = np.maximum(n[: len(part)], n[len(part) :])
    return out


def n_pairs(data, phase) -> int:
    return len(phase_indices(data, phase))


def phase_indices(data, phase) -> np.ndarray:
    if phase.users is None:
        return np.arange(len(data.train))
    return np.array([i for i, c in enumerate(data.train) if c.user in phase.users])
