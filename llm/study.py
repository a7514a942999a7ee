"""CPU study: held-out accuracy vs pairs per labeler for the llm methods (Section 5, Fig. 1).

    python -m llm.study [--sizes 50,100,...] [--methods global,...] [--seeds 3] [--out DIR]
    python -m llm.study --new-users ...   (new labelers from the learned subspace: llm.new_user_study)

Data: ``llm.synth`` (heterogeneous, rank-2 labelers; ``--disagreement`` their spread). Model:
MiniLM-L6, frozen up to its mean-pooled last hidden state f(x) (computed once and cached in
OUT/features.npz); the trainable part acts on the pretrained pooler layer W_p (384 x 384):

    r_u(x) = h_u . tanh((W_p + (alpha / r) B_u A_u) f(x) + b_p) + c_u

with the methods' sharing patterns of Section 5 / Algorithm 2 (llm.lora.PersonalLoRALinear and
llm.lora.UserHead, the layers llm.train uses):

- ``global``: one (A, B), one head; ``local``: one (A, B) and head per user, each trained on its
  user's pairs only; ``shared``: one B, A_u per user, one head (P-ShareLoRA, SI);
  ``shared-wu``: ``global`` for warmup_fraction of the epochs, A copied to every user, then
  ``shared``, one linear schedule; ``share-rep``: Park et al.'s shared representation with
  personal heads: one (A, B) learned from all users, a head h_u per user; ``shared-a``: one A,
  B_u per user (ablation, not in the default list).

Why this model and these settings: docs/llm.md ("CPU study"). Writes OUT/study.csv (one row per
method x size x seed x labeler, plus ``all``; full config per row), OUT/study_summary.md,
OUT/timing.csv and the figure (figures.llm_plots.plot_study). Finished runs are kept: the same
command continues an interrupted study.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from figures.cli import OneLineParser
from figures.stats import ci95
from llm.study_model import STUDY_METHODS, score, train_method  # noqa: F401

DEFAULT_METHODS = ("global", "local", "shared", "shared-wu", "share-rep")
STOP_ENV = "LLM_STUDY_STOP_AFTER_RUNS"  # test hook: exit 3 after this many new runs
COLUMNS = (
    "method", "pairs_per_labeler", "seed", "labeler", "n_train", "n_eval", "accuracy",
    "accuracy_tie_half", "ties", "bayes_accuracy", "mean_reward_accuracy", "steps", "epochs",
    "lr", "head_lr", "batch_size", "lora_r", "lora_alpha", "warmup_ratio", "warmup_fraction",
    "max_length", "model", "features", "disagreement", "data_seed", "eval_per_labeler",
)


@dataclass(frozen=True)
class ModelSettings:
    """The study model, its synthetic labelers and its training schedule: the settings the
    accuracy study and the new-user study (llm.new_user_study) share."""

    disagreement: float = 2.5
    data_seed: int = 0
    workers: int = 5
    epochs: float = 10.0
    lr: float = 1e-2
    head_lr: float = 1e-2
    batch_size: int = 64
    lora_r: int = 32
    lora_alpha: float = 16.0
    warmup_ratio: float = 0.1
    warmup_fraction: float = 0.1
    max_length: int = 48
    model: str = "minilm"
    features: str = "summary-token mean + length z -> LoRA(pooler.dense) -> tanh -> head"

    def _check(self, positive_ints=()):
        """ValueError naming the first bad shared setting or field of ``positive_ints``."""
        for name in ("workers", "batch_size", "lora_r", *positive_ints):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("epochs", "lr", "head_lr", "lora_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.disagreement >= 0:
            raise ValueError(f"disagreement must be >= 0, got {self.disagreement}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")


@dataclass(frozen=True)
class StudyConfig(ModelSettings):
    """Everything that determines the study; saved in OUT/study_config.json and every row."""

    sizes: tuple[int, ...] = (50, 100, 200, 400, 800, 1600)
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    eval_per_labeler: int = 600

    def __post_init__(self):
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"sizes must be positive integers, got {self.sizes}")
        bad = [m for m in self.methods if m not in STUDY_METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be among {', '.join(STUDY_METHODS)}, got {bad}")
        self._check(("seeds", "eval_per_labeler"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"], d["methods"] = list(self.sizes), list(self.methods)
        return d


# ----------------------------------------------------------------------------- data, features


def prepare_data(cfg: StudyConfig, out: Path):
    """Synthetic comparisons (largest size per labeler) and the exact Bayes margins per row."""
    from llm.data import load_comparisons
    from llm.synth import make_rows, write_dataset

    rows, meta = make_rows(cfg.data_seed, cfg.workers, max(cfg.sizes), cfg.eval_per_labeler,
                           cfg.disagreement)
    if not (out / "data" / "synth_meta.json").exists():
        write_dataset(out / "data", rows, meta)
    data = load_comparisons(out / "data", cfg.workers, cfg.data_seed)
    margins = {r["info"]["id"]: (r["extra"]["synth_margin"], r["extra"]["synth_margin_mean"])
               for r in rows if "synth_margin" in r["extra"]}
    return data, margins


def encode_features(cfg: StudyConfig, comps, out: Path, name: str, progress: bool) -> np.ndarray:
    """(n, 2, hidden + 1) per text: the MiniLM last hidden states averaged over the summary's
    tokens (the prompt is read in context but not pooled), and the summary's token count
    (mean pooling loses length, which the labelers weigh). Cached in OUT."""
    path = out / f"features_{name}.npy"
    if path.exists():
        feats = np.load(path)
        if feats.shape[0] == len(comps):
            return feats
    import torch
    from tqdm.auto import tqdm

    from llm.model import load_backbone, load_tokenizer

    tok = load_tokenizer(cfg.model)
    net = load_backbone(cfg.model, tok.pad_token_id).eval()
    encoder = getattr(net, net.base_model_prefix)
    chunks, step = [], 64
    with torch.no_grad():
        for s in tqdm(range(0, len(comps), step), desc=f"features {name}", unit="batch",
                      disable=not progress, dynamic_ncols=True):
            part = comps[s : s + step]
            texts = [c.text(0) for c in part] + [c.text(1) for c in part]
            enc = tok(texts, truncation=True, max_length=cfg.max_length, padding=True,
                      return_tensors="pt", return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")
            start = torch.tensor([len(c.prompt) for c in part] * 2)[:, None]
            summary = (offsets[:, :, 0] >= start) & (offsets[:, :, 1] > offsets[:, :, 0])
            h = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0]
            mask = summary.unsqueeze(-1).float()
            count = mask.sum(1)
            f = torch.cat([(h * mask).sum(1) / count.clamp(min=1), count], 1)
            chunks.append(torch.stack([f[: len(part)], f[len(part):]], 1).numpy())
    feats = np.concatenate(chunks).astype(np.float32)
    np.save(path, feats)
    return feats


def pooler_layer(cfg: StudyConfig):
    """The frozen base of the LoRA update: the backbone's pretrained pooler dense layer with one
    extra input column of zeros for the summary-length feature (the map is unchanged; only the
    adapters can read the length)."""
    import torch
    from torch import nn

    from llm.model import load_backbone, load_tokenizer

    tok = load_tokenizer(cfg.model)
    net = load_backbone(cfg.model, tok.pad_token_id)
    encoder = getattr(net, net.base_model_prefix)
    dense = getattr(getattr(encoder, "pooler", None), "dense", None)
    if dense is None:
        raise ValueError(f"{cfg.model}: no pooler.dense layer to adapt")
    d_out, d_in = dense.weight.shape
    base = nn.Linear(d_in + 1, d_out)
    with torch.no_grad():
        base.weight.copy_(torch.cat([dense.weight, torch.zeros(d_out, 1)], 1))
        base.bias.copy_(dense.bias)
    return base


def subset(data, n_users: int, size: int, seed: int) -> np.ndarray:
    """Train indices: per labeler the first ``size`` of a seeded permutation (nested in size)."""
    users = np.array([c.user for c in data.train])
    idx = []
    for u in range(n_users):
        pool = np.flatnonzero(users == u)
        if size > len(pool):
            raise ValueError(f"size {size} > {len(pool)} train pairs of labeler {u}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 17, u]))
        idx.append(pool[rng.permutation(len(pool))[:size]])
    return np.sort(np.concatenate(idx))


# ----------------------------------------------------------------------------------- the study


def run_study(cfg: StudyConfig, out: Path, progress: bool = True) -> Path:
    import torch
    from tqdm.auto import tqdm

    from llm.evaluate import pairwise_accuracy
    from llm.synth import bayes_accuracy

    out.mkdir(parents=True, exist_ok=True)
    _check_config(cfg, out)
    data, margins = prepare_data(cfg, out)
    n = data.n_users
    ftr, fva = (encode_features(cfg, comps, out, name, progress)
                for comps, name in ((data.train, "train"), (data.valid, "valid")))
    mu, sd = ftr[:, :, -1].mean(), ftr[:, :, -1].std()  # token count -> z-score (train stats)
    ftr, fva = (torch.from_numpy(np.concatenate([f[:, :, :-1], (f[:, :, -1:] - mu) / sd], 2))
                for f in (ftr, fva))
    dense = pooler_layer(cfg)
    ch_tr = torch.tensor([c.choice for c in data.train])
    u_tr = torch.tensor([c.user for c in data.train])
    u_va = torch.tensor([c.user for c in data.valid])
    ch_va = np.array([c.choice for c in data.valid])
    m_va = np.array([margins[c.post_id] for c in data.valid])
    ceiling = [(bayes_accuracy(m_va[u_va.numpy() == u, 0]),
                _sign_accuracy(m_va[u_va.numpy() == u])) for u in range(n)]
    done, rows = read_done(out / "study.csv")
    todo = [(s, size, m) for s in range(cfg.seeds) for size in cfg.sizes for m in cfg.methods
            if (m, str(size), str(s)) not in done]
    stop_after, new = int(os.environ.get(STOP_ENV, "0")), 0
    bar = tqdm(total=len(done) + len(todo), initial=len(done), desc="study", unit="run",
               disable=not progress, dynamic_ncols=True)
    for seed, size, method in todo:
        t0 = time.time()
        idx = subset(data, n, size, seed)
        models, steps = train_method(method, cfg, dense, ftr, ch_tr, u_tr, idx, n, seed, size)
        r0, r1 = score(models, fva, u_va)
        per = pairwise_accuracy(u_va.numpy(), r0, r1, ch_va, n)
        fixed = {**{k: v for k, v in cfg.to_dict().items() if k in COLUMNS}, "method": method,
                 "pairs_per_labeler": size, "seed": seed, "n_train": size, "steps": steps}
        for row in per:
            lab = row["labeler"]
            bayes = (np.mean([c[0] for c in ceiling]) if lab == "all" else ceiling[int(lab)][0])
            common = (np.mean([c[1] for c in ceiling]) if lab == "all" else ceiling[int(lab)][1])
            rows.append({**fixed, **row, "n_train": size * (n if lab == "all" else 1),
                         "bayes_accuracy": float(bayes), "mean_reward_accuracy": float(common)})
        write_rows(out / "study.csv", rows)
        with open(out / "timing.csv", "a") as fh:
            fh.write(f"{method},{size},{seed},{time.time() - t0:.3f}\n")
        bar.update(1)
        new += 1
        if stop_after and new >= stop_after and len(todo) > new:
            bar.close()
            sys.exit(3)
    bar.close()
    (out / "study_summary.md").write_text(summary_table(rows))
    from figures.llm_plots import plot_study

    plot_study(out / "study.csv", out)
    return out


def _sign_accuracy(m: np.ndarray) -> float:
    """Expected accuracy of the mean reward (the best one reward for all) on pairs m[:, 0/1]."""
    p0 = 1.0 / (1.0 + np.exp(-m[:, 0]))
    return float(np.mean(np.where(m[:, 1] > 0, p0, 1.0 - p0)))


def _check_config(cfg: StudyConfig, out: Path) -> None:
    path = out / "study_config.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k, v in cfg.to_dict().items() if old.get(k) != v)
        if diff:
            raise ValueError(f"{out} holds a study with other settings ({', '.join(diff)}); "
                             "use another --out")
    else:
        path.write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True) + "\n")


def read_done(path: Path, key=("method", "pairs_per_labeler", "seed")):
    """(finished runs, their rows) of a study CSV: a run (its values of ``key``) is finished
    when its labeler-``all`` row was written; rows of unfinished runs are dropped."""
    if not path.exists():
        return set(), []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    done = {tuple(r[k] for k in key) for r in rows if r["labeler"] == "all"}
    return done, [r for r in rows if tuple(r[k] for k in key) in done]


def write_rows(path: Path, rows: list[dict], columns=COLUMNS) -> None:
    """Every row so far, written through a temporary file and a rename (never half a file)."""
    from llm.evaluate import write_csv

    tmp = path.with_suffix(".tmp")
    write_csv(tmp, rows, columns)
    tmp.replace(path)


def summary_table(rows: list[dict]) -> str:
    """Markdown: mean accuracy (labeler `all`) per method and size with 95% CIs over seeds,
    and the paired (same seed: same pairs) differences shared - global and shared - local."""
    allrows = [r for r in rows if r["labeler"] == "all"]
    sizes = sorted({int(r["pairs_per_labeler"]) for r in allrows})
    methods = [m for m in STUDY_METHODS if any(r["method"] == m for r in allrows)]

    def acc(m, size):
        return {int(r["seed"]): float(r["accuracy"]) for r in allrows
                if r["method"] == m and int(r["pairs_per_labeler"]) == size}

    bayes = float(allrows[0]["bayes_accuracy"]) if allrows else float("nan")
    mean_r = float(allrows[0]["mean_reward_accuracy"]) if allrows else float("nan")
    lines = [f"Held-out accuracy (mean over labelers; mean ± 95% t-CI over seeds). Bayes "
             f"ceiling {bayes:.3f}; best single reward {mean_r:.3f}.", "",
             "| method | " + " | ".join(f"n = {s}" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for m in methods:
        cells = []
        for s in sizes:
            mu, h = ci95(list(acc(m, s).values()))
            cells.append(f"{mu:.3f} ± {h:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for other in ("global", "local"):
        if "shared" in methods and other in methods:
            cells = []
            for s in sizes:
                a, b = acc("shared", s), acc(other, s)
                d = [a[k] - b[k] for k in sorted(set(a) & set(b))]
                mu, h = ci95(d) if d else (float("nan"), 0.0)
                cells.append(f"{mu:+.3f} ± {h:.3f}")
            lines.append(f"| shared − {other} (paired) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from llm import new_user_study as nus

    d = StudyConfig()
    p = OneLineParser(prog="python -m llm.study",
                      description="CPU study: accuracy vs pairs per labeler (llm.synth data); "
                                  "with --new-users: new labelers from the learned subspace.")
    p.add_argument("--sizes", default=None, help="pairs per labeler (default "
                   f"{','.join(map(str, d.sizes))}; --new-users: "
                   f"{','.join(map(str, nus.NewUserStudyConfig().sizes))})")
    p.add_argument("--methods", default=",".join(d.methods),
                   help=f"comma-separated, among {', '.join(STUDY_METHODS)}")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..S-1 (default 3; "
                   f"--new-users: {nus.NewUserStudyConfig().seeds})")
    p.add_argument("--eval-per-labeler", type=int, default=None, help="held-out pairs per "
                   f"labeler (default {d.eval_per_labeler}; --new-users: "
                   f"{nus.NewUserStudyConfig().eval_per_labeler})")
    p.add_argument("--disagreement", type=float, default=d.disagreement,
                   help="llm.synth: std of the labelers' personal weights")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--head-lr", type=float, default=d.head_lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--model", default=d.model, help="backbone with a pooler (default minilm)")
    p.add_argument("--out", type=Path, default=None,
                   help="default results/llm-study (--new-users: results/llm-new-users)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--no-progress", action="store_true")
    nus.add_arguments(p)
    args = p.parse_args(argv)
    try:
        if args.new_users:
            cfg = nus.config_from_args(args)
        else:
            sizes = (d.sizes if args.sizes is None
                     else tuple(int(v) for v in args.sizes.split(",") if v.strip()))
            cfg = StudyConfig(
                sizes=sizes, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                seeds=d.seeds if args.seeds is None else args.seeds,
                eval_per_labeler=args.eval_per_labeler or d.eval_per_labeler,
                disagreement=args.disagreement, epochs=args.epochs, lr=args.lr,
                head_lr=args.head_lr, batch_size=args.batch_size, max_length=args.max_length,
                model=args.model)
    except ValueError as err:
        p.error(str(err))
    import torch

    torch.set_num_threads(max(1, args.threads))
    run, default_out, summary = ((nus.run_new_user_study, "results/llm-new-users",
                                  "new_users_summary.md") if args.new_users
                                 else (run_study, "results/llm-study", "study_summary.md"))
    try:
        out = run(cfg, args.out or Path(default_out), progress=not args.no_progress)
    except ValueError as err:
        p.error(str(err))
    print((out / summary).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
