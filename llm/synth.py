"""Synthetic TL;DR comparisons in the official schema with heterogeneous, low-rank labelers.

Every summary has five text traits t(s) = (length, overlap with the post, casual marker,
question, emotion word). Labeler i scores a summary with r_i(s) = <w_i, t(s)> where
w_i = w_common + a_i d_1 + b_i d_2: a common preference (overlap) plus personal weights on two
shared directions (concise-and-formal, expressive) -- a rank-2 personal deviation, the
structure P-ShareLoRA assumes. Labels are Bradley-Terry: P(choice = 0) = sigmoid(r_i(s0) -
r_i(s1)). Worker counts are unequal (the top five are capped by the loader, two minor workers
are ranked out) and a few CNN/DM rows without a post are included, as in the real data.

``python -m llm.synth [--out DIR]`` writes DIR/comparisons/batch*.json and DIR/synth_meta.json
(the true weights and the Bayes accuracy per worker); DIR defaults to results/synth (ignored
by git: the default size is about 25 MB). ``--candidates n`` also writes
DIR/candidates/candidates.jsonl: CANDIDATE_POSTS held-out posts (not in the comparisons), n
candidate summaries each with every labeler's true reward r_i(s) = <w_i, t(s)> (the input of
``python -m llm.policy``: best-of-n regret is exact from these recorded rewards).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from figures.cli import (
    CliError,
    OneLineParser,
    check_memory,
    check_out_dir,
    nonneg_float,
    nonneg_int,
    positive_int,
)
from figures.files import atomic_write

TRAITS = ("length", "overlap", "casual", "question", "emotion")
W_COMMON = np.array([0.0, 1.5, 0.0, 0.0, 0.0])
D_CONCISE = np.array([-1.0, 0.0, -1.0, 0.0, 0.0]) / np.sqrt(2.0)
D_EXPRESSIVE = np.array([0.0, 0.0, 0.5, 1.0, 1.0]) / 1.5
PERSONAL_SCALE = 2.5  # std of a_i, b_i; sets how far labelers disagree
N_MINOR_WORKERS = 2
CNNDM_ROWS_PER_WORKER = 3
ROW_BYTES = 3000  # a row held in memory as Python objects (measured: about 2.5 kB)

SUBREDDITS = {
    "relationships": ["girlfriend", "boyfriend", "partner", "best friend", "roommate"],
    "personal_finance": ["credit card", "car loan", "savings", "rent", "student debt"],
    "cooking": ["sourdough", "cast iron pan", "curry", "meal prep", "dinner party"],
    "running": ["marathon", "knee", "training plan", "new shoes", "5k race"],
    "jobs": ["manager", "interview", "promotion", "coworker", "job offer"],
    "dating_advice": ["first date", "match", "text message", "crush", "ex"],
}
VERBS = ["argued with", "worried about", "paid for", "talked to", "forgot about", "planned",
         "lost", "found", "ignored", "fixed", "cancelled", "asked about"]
TIMES = ["last week", "yesterday", "two months ago", "after work", "this morning",
         "over the weekend", "for a year"]
FILLERS = ["things got complicated", "not sure what to do", "need some advice",
           "everything changed", "it keeps happening", "long story short"]
CASUAL = ["lol", "tbh", "idk", "ugh", "smh"]
EMOTION = ["and I am so upset", "and I feel really happy", "and I am furious",
           "and I am scared"]
QUESTIONS = ["what should I do?", "am I wrong?", "how do I fix this?"]


def labeler_weights(
    n_workers: int, rng: np.random.Generator, disagreement: float = PERSONAL_SCALE
) -> np.ndarray:
    """(n_workers, 5): w_i = W_COMMON + a_i D_CONCISE + b_i D_EXPRESSIVE, a_i, b_i ~ N(0, s^2).

    s = ``disagreement``; the draws are s times standard normals, so changing s rescales the
    same personal deviations (s = 0: every labeler has the common reward).
    """
    ab = disagreement * rng.normal(0.0, 1.0, size=(n_workers, 2))
    return W_COMMON + ab[:, :1] * D_CONCISE + ab[:, 1:] * D_EXPRESSIVE


def _post(rng: np.random.Generator, subreddit: str) -> tuple[str, str, list[str]]:
    nouns = SUBREDDITS[subreddit]
    facts = [f"{rng.choice(VERBS)} my {rng.choice(nouns)}" for _ in range(rng.integers(3, 7))]
    sentences = [f"I {fact} {rng.choice(TIMES)}." for fact in facts]
    title = f"Me [{rng.integers(19, 45)}] and my {rng.choice(nouns)}: {rng.choice(FILLERS)}"
    return title, " ".join(sentences), facts


def _summary(rng: np.random.Generator, facts: list[str]) -> tuple[str, np.ndarray]:
    """A summary and its traits (length z-score, overlap, casual, question, emotion)."""
    n_frag = int(rng.integers(1, 5))
    p_overlap = rng.uniform()
    from_post = rng.uniform(size=n_frag) < p_overlap
    frags = [f"I {rng.choice(facts)}" if f else str(rng.choice(FILLERS)) for f in from_post]
    casual, question, emotion = (rng.uniform(size=3) < (0.4, 0.3, 0.4)).astype(float)
    text = ", ".join(frags)
    if emotion:
        text += " " + str(rng.choice(EMOTION))
    if casual:
        text += " " + str(rng.choice(CASUAL))
    text += "."
    if question:
        text += " " + str(rng.choice(QUESTIONS))
    words = len(text.split())
    traits = np.array([(words - 12.0) / 6.0, from_post.mean(), casual, question, emotion])
    return text, traits


def make_rows(
    seed: int = 0, workers: int = 5, train_per_worker: int = 5373, valid_per_worker: int = 1238,
    disagreement: float = PERSONAL_SCALE,
) -> tuple[list[dict], dict]:
    """All rows (official schema) and a meta dict with the true weights and Bayes accuracies.

    Every row's ``extra`` holds ``synth_margin`` = r_i(s0) - r_i(s1) under its labeler's true
    reward and ``synth_margin_mean`` under the mean reward of the kept workers, so that the
    Bayes accuracy of any subset of rows can be computed exactly (``bayes_accuracy``).
    """
    if not disagreement >= 0:
        raise ValueError(f"disagreement must be >= 0, got {disagreement}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    n_total = workers + N_MINOR_WORKERS
    weights = labeler_weights(n_total, rng, disagreement)
    names = [f"synth-worker-{i:02d}" for i in range(n_total)]
    rows: list[dict] = []
    bayes, common = {}, {}
    w_mean = weights[:workers].mean(axis=0)  # the best single reward for all kept workers
    for i, name in enumerate(names):
        if i < workers:
            # Unequal counts, smallest exactly the requested size, so capping is exercised.
            n_train = train_per_worker + 7 * (workers - 1 - i)
            n_valid = valid_per_worker + 3 * (workers - 1 - i)
        else:
            n_train = max(1, train_per_worker // 3)
            n_valid = max(1, valid_per_worker // 3)
        got, bayes[name], common[name] = _worker_rows(
            rng, f"t3_{seed}_{i}", name, weights[i], w_mean, n_train, n_valid)
        rows += got
        for j in range(CNNDM_ROWS_PER_WORKER if i < workers else 0):
            row = _row(f"cnndm_{seed}_{i}_{j}", None, "news", None, ("a", "b"), j % 2, name,
                       "valid2", rng)
            row["batch"] = "batch0_cnndm"
            row["info"]["article"] = "An article from CNN/DailyMail."
            rows.append(row)
    meta = {
        "seed": seed,
        "disagreement": disagreement,
        "workers": names,
        "traits": list(TRAITS),
        "weights": weights.tolist(),
        "bayes_valid_accuracy": bayes,
        "common_weight_valid_accuracy": common,
        "global_rank": int(np.linalg.matrix_rank(weights[:workers] - W_COMMON)),
    }
    return rows, meta


def _worker_rows(rng, prefix, name, w, w_mean, n_train, n_valid):
    """One labeler's train and validation rows (Bradley-Terry labels under reward ``w``),
    with its expected validation accuracy under its own reward (Bayes) and under ``w_mean``."""
    rows, correct, correct_common = [], 0.0, 0.0
    for split_name, n in (("train", n_train), ("valid", n_valid)):
        for j in range(n):
            subreddit = str(rng.choice(list(SUBREDDITS)))
            title, post, facts = _post(rng, subreddit)
            (s0, t0), (s1, t1) = _summary(rng, facts), _summary(rng, facts)
            margin = float(w @ (t0 - t1))
            p0 = 1.0 / (1.0 + np.exp(-margin))
            choice = 0 if rng.uniform() < p0 else 1
            if split_name == "valid":
                correct += max(p0, 1.0 - p0)
                correct_common += p0 if float(w_mean @ (t0 - t1)) > 0 else 1.0 - p0
            split = "train" if split_name == "train" else ("valid1" if j % 2 else "valid2")
            row = _row(f"{prefix}_{split_name}_{j}", subreddit, title, post, (s0, s1), choice,
                       name, split, rng)
            row["extra"]["synth_margin"] = margin
            row["extra"]["synth_margin_mean"] = float(w_mean @ (t0 - t1))
            rows.append(row)
    return rows, correct / n_valid, correct_common / n_valid


HOLDOUT_DIR = "holdout"  # DIR/holdout/: the held-out labelers' own dataset (--holdout-workers)


def make_holdout_rows(meta: dict, m: int, train_per_worker: int,
                      valid_per_worker: int) -> tuple[list[dict], dict]:
    """``m`` held-out labelers (extension, issue 18): weights drawn from the same low-rank
    family as ``meta``'s labelers (same disagreement), from a stream of their own, so the
    training labelers' rows are the same with or without them. Each has exactly
    ``train_per_worker`` train rows (the new user's pool of shots) and ``valid_per_worker``
    validation rows, on posts of its own (ids ``t3_<seed>_h<j>_...``); ``synth_margin_mean``
    is under the mean reward of the *training* labelers (what their global model aims at).
    Returns the rows and a meta dict with the true weights and Bayes accuracies."""
    seed, disagreement = int(meta["seed"]), float(meta["disagreement"])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 18]))
    weights = labeler_weights(m, rng, disagreement)
    kept = len(meta["workers"]) - N_MINOR_WORKERS
    w_mean = np.asarray(meta["weights"], dtype=float)[:kept].mean(axis=0)
    names = [f"synth-holdout-{j:02d}" for j in range(m)]
    rows, bayes, common = [], {}, {}
    for j, name in enumerate(names):
        got, bayes[name], common[name] = _worker_rows(
            rng, f"t3_{seed}_h{j}", name, weights[j], w_mean, train_per_worker,
            valid_per_worker)
        rows += got
    hmeta = {"seed": seed, "disagreement": disagreement, "workers": names,
             "trained_workers": list(meta["workers"][:kept]), "traits": list(TRAITS),
             "weights": weights.tolist(), "bayes_valid_accuracy": bayes,
             "common_weight_valid_accuracy": common}
    return rows, hmeta


CANDIDATE_POSTS = 200  # held-out posts written by --candidates


def make_candidates(meta: dict, n_candidates: int, n_posts: int = CANDIDATE_POSTS,
                    seed: int = 0) -> list[dict]:
    """Held-out posts with ``n_candidates`` summaries each and every labeler's true reward.

    The summaries come from the generator of the comparisons (all five traits vary), drawn
    from their own seeded stream, so the comparisons are the same with or without them.
    Rewards use ``meta["weights"]`` (the labelers of the written comparisons).
    """
    from llm.data import format_prompt

    rng = np.random.default_rng(np.random.SeedSequence([seed, 19]))
    weights, names = np.asarray(meta["weights"], dtype=float), list(meta["workers"])
    posts = []
    for j in range(n_posts):
        subreddit = str(rng.choice(list(SUBREDDITS)))
        title, post, facts = _post(rng, subreddit)
        cands = []
        for _ in range(n_candidates):
            text, traits = _summary(rng, facts)
            reward = weights @ traits
            cands.append({"text": text, "traits": traits.tolist(),
                          "reward": {w: float(r) for w, r in zip(names, reward)}})
        posts.append({"id": f"cand_{seed}_{j}", "subreddit": subreddit, "title": title,
                      "post": post, "prompt": format_prompt(subreddit, title, post),
                      "candidates": cands})
    return posts


def write_candidates(out: Path, posts: list[dict], meta: dict) -> Path:
    """out/candidates/candidates.jsonl (one post per line) and out/candidates/meta.json."""
    folder = Path(out) / "candidates"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "candidates.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in posts))
    info = {"seed": meta["seed"], "workers": meta["workers"], "traits": list(TRAITS),
            "n_posts": len(posts), "n_candidates": len(posts[0]["candidates"]) if posts else 0}
    (folder / "meta.json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def bayes_accuracy(margins: np.ndarray) -> float:
    """Expected accuracy of the true reward on pairs with these margins r(s0) - r(s1):
    mean of max(p0, 1 - p0), p0 = sigmoid(margin) (the Bradley-Terry labels' ceiling)."""
    p0 = 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=float)))
    return float(np.mean(np.maximum(p0, 1.0 - p0)))


def _row(post_id, subreddit, title, post, summaries, choice, worker, split, rng) -> dict:
    return {
        "info": {"id": post_id, "post": post, "title": title, "subreddit": subreddit,
                 "site": None, "article": None},
        "summaries": [{"text": s, "policy": f"synth-{k}", "note": None}
                      for k, s in enumerate(summaries)],
        "choice": int(choice),
        "worker": worker,
        "batch": f"batch{int(rng.integers(3, 9))}",
        "split": split,
        "extra": {"confidence": int(rng.integers(1, 10))},
    }


def write_dataset(out: Path, rows: list[dict], meta: dict,
                  meta_name: str = "synth_meta.json") -> list[Path]:
    """Write rows into out/comparisons/<batch>.json (JSON lines) and out/<meta_name>."""
    out = Path(out)
    (out / "comparisons").mkdir(parents=True, exist_ok=True)
    by_batch: dict[str, list[dict]] = {}
    for row in rows:
        by_batch.setdefault(row["batch"], []).append(row)
    paths = []
    for batch, batch_rows in sorted(by_batch.items()):
        path = out / "comparisons" / f"{batch}.json"
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in batch_rows))
        paths.append(path)
    atomic_write(out / meta_name, json.dumps(meta, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m llm.synth",
        description="Write synthetic TL;DR comparisons (official JSON-lines schema).",
    )
    parser.add_argument("--out", type=Path, default=Path("results/synth"), help="output directory")
    parser.add_argument("--seed", type=nonneg_int, default=0, help="random seed")
    parser.add_argument("--workers", type=positive_int, default=5, help="labelers kept by the loader")
    parser.add_argument("--train-per-worker", type=positive_int, default=5373,
                        help="train comparisons of the smallest kept worker (the paper's 5,373)")
    parser.add_argument("--valid-per-worker", type=positive_int, default=1238,
                        help="validation comparisons of the smallest kept worker (1,238)")
    parser.add_argument("--disagreement", type=nonneg_float, default=PERSONAL_SCALE,
                        help="std of the labelers' personal weights a_i, b_i (0: all agree; "
                             f"default {PERSONAL_SCALE})")
    parser.add_argument("--candidates", type=nonneg_int, default=0, metavar="n",
                        help=f"also write {CANDIDATE_POSTS} held-out posts with n candidate "
                             "summaries each and every labeler's true reward (0: none)")
    parser.add_argument("--holdout-workers", type=nonneg_int, default=0, metavar="M",
                        help=f"also write M held-out labelers from the same low-rank family to "
                             f"DIR/{HOLDOUT_DIR}/ (their own comparisons and holdout_meta.json; "
                             "never read by --data DIR) (0: none)")
    parser.add_argument("--holdout-train-per-worker", type=positive_int, default=200,
                        help="train comparisons (the pool of shots) per held-out labeler")
    args = parser.parse_args(argv)
    n_rows = (args.workers + N_MINOR_WORKERS) * (args.train_per_worker + args.valid_per_worker
                                                 + 7 * args.workers)
    n_rows += args.holdout_workers * (args.holdout_train_per_worker + args.valid_per_worker)
    try:
        check_memory(ROW_BYTES * n_rows, f"{n_rows} synthetic rows")
        check_out_dir(args.out)
    except CliError as err:
        return parser.fail(err)
    rows, meta = make_rows(args.seed, args.workers, args.train_per_worker, args.valid_per_worker,
                           args.disagreement)
    paths = write_dataset(args.out, rows, meta)
    bayes = np.mean([meta["bayes_valid_accuracy"][w] for w in meta["workers"][: args.workers]])
    common = np.mean(
        [meta["common_weight_valid_accuracy"][w] for w in meta["workers"][: args.workers]]
    )
    print(f"wrote {len(rows)} rows in {len(paths)} files to {args.out / 'comparisons'} and "
          f"{args.out / 'synth_meta.json'}; "
          f"top {args.workers} workers' expected validation accuracy: {bayes:.3f} with their "
          f"own reward (Bayes), {common:.3f} with the mean reward (best global)")
    if args.holdout_workers:
        hrows, hmeta = make_holdout_rows(meta, args.holdout_workers,
                                         args.holdout_train_per_worker, args.valid_per_worker)
        hpaths = write_dataset(args.out / HOLDOUT_DIR, hrows, hmeta, "holdout_meta.json")
        print(f"wrote {args.holdout_workers} held-out labelers ({len(hrows)} rows in "
              f"{len(hpaths)} files) to {args.out / HOLDOUT_DIR}; their Bayes accuracy: "
              f"{np.mean(list(hmeta['bayes_valid_accuracy'].values())):.3f}")
    if args.candidates:
        path = write_candidates(args.out, make_candidates(meta, args.candidates,
                                                          seed=args.seed), meta)
        print(f"wrote {CANDIDATE_POSTS} held-out posts x {args.candidates} candidates to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
