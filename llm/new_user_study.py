"""CPU study: new labelers personalised from the learned subspace (extension, issue 18).

    python -m llm.study --new-users [--sizes 5,10,20,50,200,800] [--seeds 5] [--draws 10] [--out DIR]

Not a claim of the paper: the paper's Section 5 fits and scores the same labelers. Here
``llm.synth`` writes ``workers`` training labelers (``source_pairs`` pairs each) and
``holdout`` new labelers drawn from the same low-rank family (``llm.synth.make_holdout_rows``,
their own files). Per seed, the study model of ``llm.study`` (frozen MiniLM features, LoRA on
the pooler, tanh, score head; ``llm.study_model``) is trained as ``shared`` (P-ShareLoRA) and
``global`` on the training labelers only. Then, per number n of pairs per new labeler and per
random draw of those n pairs from each new labeler's pool, four ways to score the new labelers:

- ``new-user``: the ``shared`` model with pooler, shared B and head frozen; each new labeler's
  own A_u (r x d_in) fitted on its n pairs, started at the trained labelers' mean A;
- ``new-user-comb``: the same, with A_u = sum_i c_{u,i} A_i: N_trained weights per new labeler
  (the reward-basis way), started at c = 1/N;
- ``local``: a fresh LoRA (A, B) and head per new labeler, on its n pairs only (from scratch);
- ``global``: the source run's global model applied to the new labelers (nothing fitted).

All fits use the study's optimiser and epochs, batches capped at the pool and at least
``min_steps`` steps (chosen before any new-user run: 10 epochs of 5 pairs would be 1 step).
Writes OUT/new_users.csv (one row per method x n x seed x draw x new labeler, plus ``all``;
full config in every row), OUT/new_users_summary.md (mean over seeds of the per-seed mean over
draws, 95% t-interval over seeds, paired differences with ``local``), OUT/timing.csv and the
figure (``figures.llm_plots.plot_new_users``). Resumable: the same command continues.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from figures.stats import ci95, per_seed
from llm.study import ModelSettings, read_done, write_rows

NEW_USER_METHODS = ("new-user", "new-user-comb", "local", "global")
STOP_ENV = "LLM_NEW_USERS_STOP_AFTER_RUNS"  # test hook: exit 3 after this many new runs
COLUMNS = (
    "method", "pairs_per_labeler", "seed", "draw", "labeler", "n_train", "n_eval", "accuracy",
    "accuracy_tie_half", "ties", "bayes_accuracy", "mean_reward_accuracy", "steps",
    "trainable_per_user", "final_loss", "workers", "holdout", "source_pairs", "min_steps",
    "draws", "many_draws_max", "epochs", "lr", "head_lr", "batch_size", "lora_r", "lora_alpha", "warmup_ratio",
    "max_length", "model", "features", "disagreement", "data_seed", "eval_per_labeler",
)


@dataclass(frozen=True)
class NewUserStudyConfig(ModelSettings):
    """Everything that determines the new-user study; saved in OUT and in every row (the model
    and schedule settings are llm.study's ModelSettings)."""

    sizes: tuple[int, ...] = (5, 10, 20, 50, 200, 800)
    seeds: int = 5
    draws: int = 10  # random draws of the shots per seed at every n <= many_draws_max
    many_draws_max: int = 50  # larger n: one draw per seed (the fits cost more, vary less)
    holdout: int = 5
    source_pairs: int = 800
    eval_per_labeler: int = 300
    min_steps: int = 30

    def __post_init__(self):
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"sizes must be positive integers, got {self.sizes}")
        self._check(("seeds", "draws", "many_draws_max", "holdout", "source_pairs",
                     "eval_per_labeler", "min_steps"))
        if self.workers < 2:
            raise ValueError("workers must be >= 2 (a shared subspace needs several labelers)")

    @property
    def pool(self) -> int:
        """Train pairs per new labeler written (the largest n): every draw is a subset."""
        return max(self.sizes)

    def n_draws(self, size: int) -> int:
        return self.draws if size <= self.many_draws_max and size < self.pool else 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        return d


def prepare(cfg: NewUserStudyConfig, out: Path):
    """(source data, new-labeler data, margins of the new labelers' validation pairs)."""
    from llm.data import load_comparisons
    from llm.synth import HOLDOUT_DIR, make_holdout_rows, make_rows, write_dataset

    rows, meta = make_rows(cfg.data_seed, cfg.workers, cfg.source_pairs, 1, cfg.disagreement)
    hrows, hmeta = make_holdout_rows(meta, cfg.holdout, cfg.pool, cfg.eval_per_labeler)
    if not (out / "data" / "synth_meta.json").exists():
        write_dataset(out / "data", rows, meta)
    if not (out / "data" / HOLDOUT_DIR / "holdout_meta.json").exists():
        write_dataset(out / "data" / HOLDOUT_DIR, hrows, hmeta, "holdout_meta.json")
    src = load_comparisons(out / "data", cfg.workers, cfg.data_seed)
    new = load_comparisons(out / "data" / HOLDOUT_DIR, cfg.holdout, cfg.data_seed)
    check_disjoint(src, new)
    margins = {r["info"]["id"]: (r["extra"]["synth_margin"], r["extra"]["synth_margin_mean"])
               for r in hrows}
    return src, new, margins


def check_disjoint(source, new) -> None:
    """Refuse when a new labeler or one of its posts is in the source's data (ValueError)."""
    both = set(source.workers) & set(new.workers)
    posts = {c.post_id for c in source.train + source.valid} & {
        c.post_id for c in new.train + new.valid}
    if both or posts:
        raise ValueError(f"new labelers overlap the source data: workers {sorted(both)[:3]}, "
                         f"posts {sorted(posts)[:3]}")


def shots(new, n_new: int, size: int, seed: int, draw: int) -> np.ndarray:
    """Train indices: per new labeler the first ``size`` of a permutation seeded by (seed,
    draw, labeler) (nested in size within a draw)."""
    users = np.array([c.user for c in new.train])
    idx = []
    for u in range(n_new):
        pool = np.flatnonzero(users == u)
        if size > len(pool):
            raise ValueError(f"size {size} > {len(pool)} train pairs of new labeler {u}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 18, draw, u]))
        idx.append(pool[rng.permutation(len(pool))[:size]])
    return np.sort(np.concatenate(idx))


def _features(cfg, out, src, new, progress):
    import torch

    from llm.study import encode_features

    f_src, f_tr, f_va = (encode_features(cfg, comps, out, name, progress) for comps, name in (
        (src.train, "source_train"), (new.train, "new_train"), (new.valid, "new_valid")))
    mu, sd = f_src[:, :, -1].mean(), f_src[:, :, -1].std()  # token count z-score (source stats)
    return [torch.from_numpy(np.concatenate([f[:, :, :-1], (f[:, :, -1:] - mu) / sd], 2))
            for f in (f_src, f_tr, f_va)]


def _trainable_per_user(models, n_users: int) -> int:
    seen, total = set(), 0
    for m in models.values():
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total // n_users


def run_new_user_study(cfg: NewUserStudyConfig, out: Path, progress: bool = True) -> Path:
    import torch
    from tqdm.auto import tqdm

    from llm.evaluate import pairwise_accuracy
    from llm.study import _check_config, pooler_layer
    from llm.study_model import fit_new_users, score, train_method
    from llm.synth import bayes_accuracy

    out.mkdir(parents=True, exist_ok=True)
    _check_config(cfg, out)
    src, new, margins = prepare(cfg, out)
    f_src, f_tr, f_va = _features(cfg, out, src, new, progress)
    dense = pooler_layer(cfg)
    m = cfg.holdout
    ch_src, u_src = (torch.tensor([getattr(c, k) for c in src.train]) for k in ("choice", "user"))
    ch_tr, u_tr = (torch.tensor([getattr(c, k) for c in new.train]) for k in ("choice", "user"))
    u_va = np.array([c.user for c in new.valid])
    ch_va = np.array([c.choice for c in new.valid])
    m_va = np.array([margins[c.post_id] for c in new.valid])
    bayes = [bayes_accuracy(m_va[u_va == u, 0]) for u in range(m)]
    p0 = 1.0 / (1.0 + np.exp(-m_va[:, 0]))
    common = [float(np.mean(np.where(m_va[u_va == u, 1] > 0, p0[u_va == u], 1 - p0[u_va == u])))
              for u in range(m)]
    done, rows = read_done(out / "new_users.csv", ("method", "pairs_per_labeler", "seed", "draw"))
    todo = [(s, size, d, meth) for s in range(cfg.seeds) for size in cfg.sizes
            for d in range(cfg.n_draws(size)) for meth in NEW_USER_METHODS
            if not (meth == "global" and d > 0) and (meth, str(size), str(s), str(d)) not in done]
    stop_after, n_run, sources = int(os.environ.get(STOP_ENV, "0")), 0, {}
    bar = tqdm(total=len(done) + len(todo), initial=len(done), desc="new users", unit="run",
               disable=not progress, dynamic_ncols=True)
    all_src = np.arange(len(src.train))
    for seed, size, draw, method in todo:
        t0 = time.time()
        if seed not in sources:  # the source run of this seed (training labelers only)
            sources = {seed: {k: train_method(k, cfg, dense, f_src, ch_src, u_src, all_src,
                                              cfg.workers, seed, cfg.source_pairs)[0][None]
                              for k in ("shared", "global")}}
        idx = shots(new, m, size, seed, draw)
        loss = float("nan")
        if method == "global":
            models, steps = {None: sources[seed]["global"]}, 0
        elif method == "local":
            models, steps = train_method("local", cfg, dense, f_tr, ch_tr, u_tr, idx, m,
                                         seed * 1000 + draw, size, cfg.min_steps, cap_batch=True)
        else:
            model, steps, losses = fit_new_users(
                sources[seed]["shared"], method == "new-user-comb", cfg, f_tr, ch_tr, u_tr,
                idx, m, seed * 1000 + draw, size, cfg.min_steps)
            models, loss = {None: model}, losses[-1]
        r0, r1 = score(models, f_va, torch.from_numpy(u_va))
        fixed = {**{k: v for k, v in cfg.to_dict().items() if k in COLUMNS}, "method": method,
                 "pairs_per_labeler": size, "seed": seed, "draw": draw, "steps": steps,
                 "trainable_per_user": _trainable_per_user(models, m) if method != "global"
                 else 0, "final_loss": loss}
        for row in pairwise_accuracy(u_va, r0, r1, ch_va, m):
            lab = row.pop("labeler")
            row.pop("accuracy_tie_right")
            one = lab != "all"
            rows.append({**fixed, **row, "labeler": lab, "n_train": size * (1 if one else m),
                         "bayes_accuracy": bayes[int(lab)] if one else float(np.mean(bayes)),
                         "mean_reward_accuracy": common[int(lab)] if one
                         else float(np.mean(common))})
        write_rows(out / "new_users.csv", rows, COLUMNS)
        with open(out / "timing.csv", "a") as fh:
            fh.write(f"{method},{size},{seed},{draw},{time.time() - t0:.3f}\n")
        bar.update(1)
        n_run += 1
        if stop_after and n_run >= stop_after and len(todo) > n_run:
            bar.close()
            sys.exit(3)
    bar.close()
    (out / "new_users_summary.md").write_text(summary_table(rows))
    from figures.llm_plots import plot_new_users

    plot_new_users(out / "new_users.csv", out)
    return out


def summary_table(rows: list[dict]) -> str:
    """Markdown: per method and n, mean ± 95% t-CI over seeds of the per-seed mean over draws;
    paired differences (same seed, same draws) against ``local``; trainable numbers."""
    allrows = [r for r in rows if r["labeler"] == "all"]
    sizes = sorted({int(r["pairs_per_labeler"]) for r in allrows})
    methods = [m for m in NEW_USER_METHODS if any(r["method"] == m for r in allrows)]
    first = allrows[0] if allrows else {}
    n_seeds = len({r["seed"] for r in allrows})
    draws = {s: len({(r["seed"], r["draw"]) for r in allrows if int(r["pairs_per_labeler"]) == s
                     and r["method"] == "local"}) for s in sizes}
    lines = [f"New labelers: held-out accuracy (mean over new labelers) vs pairs per new labeler; "
             f"mean ± 95% t-CI over {n_seeds} seeds of each seed's mean over its draws of the "
             f"shots (draws in total per n: "
             + ", ".join(f"{s}: {draws[s]}" for s in sizes) + "). "
             f"Bayes ceiling {float(first.get('bayes_accuracy', 'nan')):.3f}; the training "
             f"labelers' mean reward {float(first.get('mean_reward_accuracy', 'nan')):.3f}.", "",
             "| method | trainable per new labeler | " + " | ".join(f"n = {s}" for s in sizes)
             + " |", "|---|---|" + "---|" * len(sizes)]
    for m in methods:
        n_par = next(r["trainable_per_user"] for r in allrows if r["method"] == m)
        cells = ["{:.3f} ± {:.3f}".format(*ci95(list(per_seed(allrows, m, s).values())))
                 for s in sizes]
        lines.append(f"| {m} | {n_par} | " + " | ".join(cells) + " |")
    for m in ("new-user", "new-user-comb", "global"):
        if m in methods and "local" in methods:
            cells = []
            for s in sizes:
                a, b = per_seed(allrows, m, s), per_seed(allrows, "local", s)
                d = [a[k] - b[k] for k in sorted(set(a) & set(b))]
                cells.append("{:+.3f} ± {:.3f}".format(*ci95(d)) if d else "–")
            lines.append(f"| {m} − local (paired) | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(p) -> None:
    """The --new-users flags of ``python -m llm.study``."""
    d = NewUserStudyConfig()
    g = p.add_argument_group("new labelers (--new-users; extension, issue 18)")
    g.add_argument("--new-users", action="store_true",
                   help="study new labelers fitted on the frozen shared subspace (this module)")
    g.add_argument("--draws", type=int, default=d.draws,
                   help="random draws of the shots per seed at every n <= --many-draws-max")
    g.add_argument("--many-draws-max", type=int, default=d.many_draws_max,
                   help="larger n get one draw per seed")
    g.add_argument("--holdout", type=int, default=d.holdout, help="new labelers")
    g.add_argument("--source-pairs", type=int, default=d.source_pairs,
                   help="train pairs per training labeler of the source run")
    g.add_argument("--min-steps", type=int, default=d.min_steps,
                   help="at least this many optimizer steps per few-shot fit")


def config_from_args(args) -> NewUserStudyConfig:
    d = NewUserStudyConfig()
    sizes = tuple(int(v) for v in args.sizes.split(",") if v.strip()) if args.sizes else d.sizes
    return NewUserStudyConfig(
        sizes=sizes, seeds=args.seeds if args.seeds is not None else d.seeds, draws=args.draws,
        many_draws_max=args.many_draws_max,
        holdout=args.holdout, source_pairs=args.source_pairs,
        eval_per_labeler=args.eval_per_labeler or d.eval_per_labeler,
        min_steps=args.min_steps, disagreement=args.disagreement, epochs=args.epochs,
        lr=args.lr, head_lr=args.head_lr, batch_size=args.batch_size,
        max_length=args.max_length, model=args.model)

