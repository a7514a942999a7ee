"""Personalized TL;DR reward models with a shared LoRA component (Section 5, Appendix D).

Modules (torch is imported lazily, never by this package's ``__init__``):

- :mod:`llm.config` -- method names and the frozen training configuration.
- :mod:`llm.data` -- the TL;DR ``comparisons`` loader and the paper's worker selection.
- :mod:`llm.synth` -- synthetic comparisons in the official schema (``python -m llm.synth``).
- :mod:`llm.lora` -- the personalized LoRA layer (shared B, per-user A) and per-user head.
- :mod:`llm.model` -- backbone loading and the reward model of every method.
- :mod:`llm.evaluate` -- pairwise accuracy, metrics.csv, table.md, diversity.csv.
- :mod:`llm.phases` -- phases of each method (Algorithm 2), LR schedule, seeded batch order.
- :mod:`llm.memory` -- computed micro-batch memory and the per-batch checkpointing decision.
- :mod:`llm.train` -- the command line (``python llm/train.py`` or ``python -m llm.train``).
- :mod:`llm.api` -- ``RewardModel.load(RUN).score(prompts, responses, user=U)`` (exported lazily).
- :mod:`llm.uncertainty` -- per-user last-layer Laplace posterior (the pessimistic policy's LCB).
- :mod:`llm.policy` -- best-of-n per user with exact regret (``python -m llm.policy``).
- :mod:`llm.rl` -- policy optimisation against one user's reward with TRL (``python -m llm.rl``).
- :mod:`llm.study`, :mod:`llm.study_model` -- the CPU study of accuracy vs pairs per labeler
  (``python -m llm.study``).
"""

from llm.config import METHODS, TrainConfig

__all__ = ["METHODS", "RewardModel", "TrainConfig"]


def __getattr__(name: str):
    if name == "RewardModel":  # lazy: importing llm must not import torch
        from llm.api import RewardModel

        return RewardModel
    raise AttributeError(f"module 'llm' has no attribute {name!r}")
