"""Best-of-n policies per user from personalized reward models, with exact regret (Algorithm 2's
last stage: the policy each user gets from its reward model; pessimism as in Eq. 3.7).

    python -m llm.policy --run RUN [--run RUN ...] --candidates DIR [--n 1,2,4,8,16] [--out DIR]

For every run (method, seed), user u and post, n candidates are drawn uniformly without
replacement from the post's pool of P (``llm.synth --candidates P``) and the policy returns the
one the user's reward model scores highest (plug-in) or whose lower confidence bound is highest
(pessimistic, :mod:`llm.uncertainty`). The regret is

    regret_u(n) = mean over posts of [max_{c in pool} r*_u(c) - E_S r*_u(pick(S))],

exact: the candidate ranked j-th by the score (0-based) is picked iff it is in S and none of the
j above it is, with probability C(P-1-j, n-1) / C(P, n), so the expectation over S is a finite
sum, no Monte Carlo. ``win_vs_global``: the probability (over posts and S) that u's pick has a
higher true reward for u than the global run's pick from the same S (equal rewards, e.g. the
same pick, count 1/2; exact too). Reference rows: ``true-reward`` (scores = r*_u, regret 0 at
n = P) and ``random`` (the pool's mean regret at every n; no win rate).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from math import comb
from pathlib import Path

import numpy as np

from figures.cli import OneLineParser
from llm.uncertainty import DEFAULT_BETA, DEFAULT_PRIOR_PRECISION

POLICY_COLUMNS = ("method", "user", "n", "regret", "regret_pess", "win_vs_global", "seed",
                  "worker", "regret_se", "regret_pess_se", "n_posts", "pool", "beta",
                  "prior_precision", "run", "candidates")
REFERENCE_METHODS = ("true-reward", "random")


# ------------------------------------------------------------------ exact best-of-n algebra

def _ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of every candidate by descending score; ties go to the lower index."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def pick_probabilities(scores: np.ndarray, n: int) -> np.ndarray:
    """P(candidate c = argmax of scores over a uniform n-subset of the pool), per c."""
    pool = len(scores)
    if not 1 <= n <= pool:
        raise ValueError(f"n must be in 1..{pool}, got {n}")
    ranks = _ranks(scores)
    return np.array([comb(pool - 1 - j, n - 1) for j in ranks], dtype=np.float64) / comb(pool, n)


def expected_pick(scores: np.ndarray, truth: np.ndarray, n: int) -> float:
    """E_S truth[argmax_{c in S} scores[c]] for S a uniform n-subset."""
    return float(pick_probabilities(scores, n) @ np.asarray(truth, dtype=np.float64))


def win_probabilities(s1: np.ndarray, s2: np.ndarray, truth: np.ndarray, ns) -> np.ndarray:
    """P(truth[pick_1(S)] > truth[pick_2(S)]) + P(=)/2 for every n in ``ns``, exactly.

    The pair (a, b) is picked iff a, b in S and S avoids U_ab = {c above a by s1} u {c above b
    by s2} (impossible when b is above a by s1 or a above b by s2); then
    P = C(P - |{a, b}| - |U_ab|, n - |{a, b}|) / C(P, n).
    """
    pool = len(s1)
    r1, r2 = _ranks(s1), _ranks(s2)
    above1 = r1[None, :] < r1[:, None]  # above1[a, c]: c ranked above a by s1
    above2 = r2[None, :] < r2[:, None]
    u = (above1[:, None, :] | above2[None, :, :]).sum(-1)  # |U_ab|
    ok = ~above1 & ~above2.T  # ok[a, b]: b not above a by s1, a not above b by s2
    same = np.eye(pool, dtype=bool)
    t = np.asarray(truth, dtype=np.float64)
    score = (t[:, None] > t[None, :]) + 0.5 * (t[:, None] == t[None, :])
    out = []
    for n in ns:
        k = np.where(same, 1, 2)
        free = pool - k - u
        table = np.array([[comb(int(f), n - int(kk)) if f >= 0 and n >= kk else 0
                           for f, kk in zip(fr, kr)] for fr, kr in zip(free, k)], dtype=np.float64)
        prob = np.where(ok, table, 0.0) / comb(pool, n)
        out.append(float((prob * score).sum()))
    return np.array(out)


def win_probability(s1, s2, truth, n: int) -> float:
    return float(win_probabilities(s1, s2, truth, [n])[0])


# ----------------------------------------------------------------------------- candidates

def load_candidates(path: str | Path) -> dict:
    """Candidates written by ``llm.synth --candidates``: DIR, DIR/candidates or the .jsonl."""
    path = Path(path)
    for p in (path / "candidates" / "candidates.jsonl", path / "candidates.jsonl", path):
        if p.is_file():
            break
    else:
        raise ValueError(f"{path}: no candidates.jsonl (write one with llm.synth --candidates n)")
    posts = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    if not posts:
        raise ValueError(f"{p}: no posts")
    pool = len(posts[0]["candidates"])
    if any(len(q["candidates"]) != pool for q in posts):
        raise ValueError(f"{p}: posts have different numbers of candidates")
    workers = list(posts[0]["candidates"][0]["reward"])
    truth = {w: np.array([[c["reward"][w] for c in q["candidates"]] for q in posts])
             for w in workers}
    meta = p.parent / "meta.json"
    seed = json.loads(meta.read_text()).get("seed", 0) if meta.exists() else 0
    return {"path": str(p), "prompts": [q["prompt"] for q in posts],
            "texts": [[c["text"] for c in q["candidates"]] for q in posts],
            "truth": truth, "pool": pool, "seed": int(seed)}


# ---------------------------------------------------------------------------- scoring runs

def score_run(run: Path, cands: dict, prior_precision: float, cache: Path | None = None,
              device: str | None = None) -> dict:
    """Plug-in scores and LCB widths, (users, posts, pool), of one run; cached for --resume."""
    key = hashlib.sha1(f"{Path(run).resolve()}|{cands['path']}|{prior_precision}".encode())
    file = None if cache is None else cache / f"{Path(run).name}-{key.hexdigest()[:10]}.npz"
    if file is not None and file.exists():
        z = np.load(file, allow_pickle=False)
        return {k: (z[k].tolist() if k == "workers" else z[k]) for k in z.files} | {
            "method": str(z["method"]), "seed": int(z["seed"])}
    from llm.api import RewardModel
    from llm.data import load_comparisons
    from llm.uncertainty import head_posteriors, lcb_width

    rm = RewardModel.load(run, device=device)
    missing = [w for w in rm.workers if w not in cands["truth"]]
    if missing:
        raise ValueError(f"{run}: workers {missing} have no true rewards in {cands['path']}")
    cfg = rm.cfg
    train = load_comparisons(cfg.data, cfg.workers, cfg.seed, cfg.limit_per_worker,
                             cfg.eval_limit_per_worker).train
    sigmas = head_posteriors(rm, train, prior_precision)
    n_posts, pool = len(cands["prompts"]), cands["pool"]
    prompts = [p for p in cands["prompts"] for _ in range(pool)]
    texts = [t for ts in cands["texts"] for t in ts]
    scores = np.zeros((rm.n_users, n_posts, pool))
    widths = np.zeros_like(scores)
    shared_scores = rm.method == "global"  # one reward for every user: score once
    from tqdm.auto import tqdm

    for u in tqdm(range(rm.n_users), desc=f"scoring {Path(run).name}", unit="user"):
        if shared_scores and u > 0:
            scores[u], widths[u] = scores[0], widths[0]
            continue
        r, h = rm.features(prompts, texts, u)
        scores[u] = r.reshape(n_posts, pool)
        h = h.reshape(n_posts, pool, -1)
        widths[u] = np.stack([lcb_width(h[p], sigmas[u]) for p in range(n_posts)])
    out = {"scores": scores, "widths": widths, "workers": list(rm.workers),
           "method": cfg.method, "seed": cfg.seed}
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(file, scores=scores, widths=widths, workers=np.array(rm.workers),
                 method=np.array(cfg.method), seed=np.array(cfg.seed))
    return out


def policy_rows(scored: list[tuple[str, dict]], cands: dict, ns: list[int], beta: float,
                prior_precision: float) -> list[dict]:
    """policy.csv rows for every scored run, user and n, plus the reference rows."""
    workers = scored[0][1]["workers"]
    for run, s in scored:
        if s["workers"] != workers:
            raise ValueError(f"{run}: workers {s['workers']} differ from {workers}")
    globals_ = {s["seed"]: s for _, s in scored if s["method"] == "global"}
    first_global = next(iter(globals_.values()), None)
    truth = np.stack([cands["truth"][w] for w in workers])  # (users, posts, pool)
    entries = [(run, s["method"], s["seed"], s["scores"], s["scores"] - beta * s["widths"])
               for run, s in scored]
    entries += [("", "true-reward", cands["seed"], truth, None),
                ("", "random", cands["seed"], None, None)]
    rows = []
    for run, method, seed, sc, pess in entries:
        g = globals_.get(seed, first_global)
        for u, worker in enumerate(workers):
            best = truth[u].max(axis=1)
            for n in ns:
                if sc is None:  # random: every pick uniform, the pool's mean regret exactly
                    reg = best - truth[u].mean(axis=1)
                else:
                    reg = best - np.array([expected_pick(sc[u, p], truth[u, p], n)
                                           for p in range(truth.shape[1])])
                rp = None if pess is None else best - np.array(
                    [expected_pick(pess[u, p], truth[u, p], n) for p in range(truth.shape[1])])
                win = np.nan if (g is None or sc is None) else np.mean([
                    win_probability(sc[u, p], g["scores"][u, p], truth[u, p], n)
                    for p in range(truth.shape[1])])
                rows.append({
                    "method": method, "user": u, "n": n, "regret": reg.mean(),
                    "regret_pess": np.nan if rp is None else rp.mean(), "win_vs_global": win,
                    "seed": seed, "worker": worker, "regret_se": _se(reg),
                    "regret_pess_se": np.nan if rp is None else _se(rp),
                    "n_posts": truth.shape[1], "pool": truth.shape[2], "beta": beta,
                    "prior_precision": prior_precision, "run": run,
                    "candidates": cands["path"]})
    return rows


def _se(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=POLICY_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def summary_table(rows: list[dict]) -> str:
    """Markdown: mean regret (plug-in, pessimistic) and win rate over users and seeds, per n."""
    import pandas as pd

    df = pd.DataFrame(rows)
    agg = df.groupby(["method", "n"], sort=False)[["regret", "regret_pess", "win_vs_global"]].mean()
    lines = ["| method | n | regret | regret_pess | win_vs_global |", "|---|---|---|---|---|"]
    for (m, n), r in agg.iterrows():
        lines.append(f"| `{m}` | {n} | {r.regret:.3f} | {r.regret_pess:.3f} | "
                     f"{r.win_vs_global:.3f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m llm.policy",
                      description="Best-of-n per user with exact regret (Algorithm 2, last stage).")
    p.add_argument("--run", action="append", required=True, metavar="RUN",
                   help="a finished llm.train run (repeat for several methods / seeds)")
    p.add_argument("--candidates", required=True, help="DIR written by llm.synth --candidates")
    p.add_argument("--n", default="1,2,4,8,16", help="comma-separated best-of-n sizes")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA, help="LCB width multiplier")
    p.add_argument("--prior-precision", type=float, default=DEFAULT_PRIOR_PRECISION,
                   help="Laplace prior precision lambda of the score head")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", default=None, help="output dir (default: results/policy)")
    return p


def parse_sizes(text: str, pool: int) -> list[int]:
    try:
        ns = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"--n must be comma-separated integers, got {text!r}") from err
    bad = [n for n in ns if not 1 <= n <= pool]
    if not ns or bad:
        raise ValueError(f"--n values must be in 1..{pool} (the pool size), got {text!r}")
    return ns


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out or "results/policy")
    try:
        if args.beta < 0 or args.prior_precision <= 0:
            raise ValueError("--beta must be >= 0 and --prior-precision > 0")
        cands = load_candidates(args.candidates)
        ns = parse_sizes(args.n, cands["pool"])
        scored = [(r, score_run(Path(r), cands, args.prior_precision, out / "scores",
                                args.device)) for r in args.run]
        rows = policy_rows(scored, cands, ns, args.beta, args.prior_precision)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    write_rows(out / "policy.csv", rows)
    table = summary_table(rows)
    (out / "summary.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
