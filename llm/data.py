"""TL;DR comparisons: loading, validation and the paper's worker selection (Section 5).

Sources (all give the same :class:`TLDRData`):

- a directory of the official JSON-lines files (``comparisons/batch*.json`` or ``*.json``
  directly in it), or one such file;
- a ``datasets`` ``save_to_disk`` directory (a DatasetDict or a Dataset);
- a hub id, loaded with ``datasets.load_dataset(id, "comparisons", revision=HUB_REVISION)``
  (only when the hub is reachable).

Selection (Section 5, after Park et al. 2024): rank workers by their number of train
comparisons, keep the top K, cap every kept worker to the smallest count among them with a
seeded shuffle; the same for validation (valid1 and valid2). On the real data this gives
5,373 train and 1,238 validation comparisons per worker.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from figures.cli import OneLineParser

HUB_CONFIG = "comparisons"
# The hub repo's original form is a loading script; the auto-converted parquet branch is what
# datasets>=3 can read. Replace with a commit sha of that branch to pin bit-exactly.
HUB_REVISION = "refs/convert/parquet"
TRAIN_SPLITS = ("train",)
VALID_SPLITS = ("valid1", "valid2", "validation")
PROMPT_TEMPLATE = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR: "
ARTICLE_TEMPLATE = "ARTICLE: {article}\nTL;DR: "  # CNN/DM rows under keep_cnndm


class DataError(ValueError):
    """Malformed or insufficient comparison data; the message names the file and line."""


@dataclass(frozen=True)
class Comparison:
    """One labelled pair: user index (rank among kept workers), prompt, two summaries, choice."""

    user: int
    worker: str
    post_id: str
    prompt: str
    summaries: tuple[str, str]
    choice: int

    def text(self, which: int) -> str:
        """Prompt followed by summary ``which`` -- the reward model's input."""
        return self.prompt + self.summaries[which]


@dataclass
class TLDRData:
    """Balanced per-worker train and validation comparisons plus a report of what was dropped."""

    workers: tuple[str, ...]
    train: list[Comparison]
    valid: list[Comparison]
    report: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.workers)

    def summary(self) -> str:
        r = self.report
        return (
            f"{r['source']}: read {r['rows']} rows, dropped {r['dropped_no_post']} without a post "
            f"(CNN/DM), skipped {r['skipped_malformed']} malformed; kept top {self.n_users} "
            f"workers: {r['train_per_worker']} train and {r['valid_per_worker']} validation "
            f"comparisons per worker (before limits), {len(self.train)} train and "
            f"{len(self.valid)} validation in use"
        )


@dataclass(frozen=True)
class _Row:
    worker: str
    split: str  # "train" or "valid"
    post_id: str
    prompt: str
    summaries: tuple[str, str]
    choice: int

    def sort_key(self) -> tuple:
        return (self.post_id, self.summaries, self.choice, self.prompt)


def format_prompt(subreddit: str, title: str, post: str) -> str:
    """The reward model's prompt; the summary is appended after ``TL;DR: ``."""
    return PROMPT_TEMPLATE.format(subreddit=subreddit, title=title, post=post)


def load_comparisons(
    source: str | Path,
    workers: int = 5,
    seed: int = 0,
    limit_per_worker: int | None = None,
    eval_limit_per_worker: int | None = None,
    skip_malformed: bool = False,
    keep_cnndm: bool = False,
    unseen_workers: int = 0,
    split_seed: int = 0,
    use_unseen: bool = False,
) -> TLDRData:
    """Read comparisons from ``source`` and apply the paper's top-K balanced selection.

    ``skip_malformed``: count and skip malformed rows instead of raising :class:`DataError`.
    ``keep_cnndm``: keep CNN/DM rows (prompt ``ARTICLE_TEMPLATE``) through ranking and capping,
    as the authors' loader does; by default they are dropped (and counted) before ranking.
    ``unseen_workers`` M > 0 (extension, issue 18): the top ``workers`` + M workers are split
    at random (``split_seed``) into ``workers`` seen and M unseen ones; the seen ones are
    kept, or with ``use_unseen`` the unseen ones (new users for ``--method new-user``).
    """
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    counts = Counter()
    rows: list[_Row] = []
    for raw, origin in _iter_source(source):
        counts["rows"] += 1
        try:
            row = _parse_row(raw, origin, keep_cnndm)
        except DataError:
            if not skip_malformed:
                raise
            counts["skipped_malformed"] += 1
            continue
        if row is None:
            counts["dropped_no_post"] += 1
            continue
        rows.append(row)
    return select_workers(
        rows,
        workers=workers,
        seed=seed,
        limit_per_worker=limit_per_worker,
        eval_limit_per_worker=eval_limit_per_worker,
        unseen_workers=unseen_workers,
        split_seed=split_seed,
        use_unseen=use_unseen,
        report={
            "source": str(source),
            "rows": counts["rows"],
            "dropped_no_post": counts["dropped_no_post"],
            "skipped_malformed": counts["skipped_malformed"],
        },
    )


def select_workers(
    rows: list[_Row],
    workers: int,
    seed: int,
    limit_per_worker: int | None = None,
    eval_limit_per_worker: int | None = None,
    report: dict | None = None,
    unseen_workers: int = 0,
    split_seed: int = 0,
    use_unseen: bool = False,
) -> TLDRData:
    """Section 5's selection: top-K workers by train count, each capped to the smallest count.

    With ``unseen_workers`` M: the top K + M split into seen and unseen (``split_workers``)."""
    report = dict(report or {})
    train_count = Counter(r.worker for r in rows if r.split == "train")
    if len(train_count) < workers + unseen_workers:
        raise DataError(
            f"{report.get('source', 'data')}: only {len(train_count)} workers have train "
            f"comparisons, need {workers + unseen_workers} (lower --workers)"
        )
    ranked = sorted(train_count, key=lambda w: (-train_count[w], w))[:workers + unseen_workers]
    if unseen_workers:
        seen, unseen = split_workers(ranked, unseen_workers, split_seed)
        report["seen_workers"], report["unseen_workers"] = seen, unseen
        ranked = unseen if use_unseen else seen
    by_worker = {w: {"train": [], "valid": []} for w in ranked}
    for r in rows:
        if r.worker in by_worker:
            by_worker[r.worker][r.split].append(r)
    for w in ranked:
        if not by_worker[w]["valid"]:
            raise DataError(
                f"{report.get('source', 'data')}: kept worker {w!r} has no validation comparisons"
            )
    n_train = min(len(by_worker[w]["train"]) for w in ranked)
    n_valid = min(len(by_worker[w]["valid"]) for w in ranked)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    train: list[Comparison] = []
    valid: list[Comparison] = []
    for user, w in enumerate(ranked):
        for split, cap, limit, dest in (
            ("train", n_train, limit_per_worker, train),
            ("valid", n_valid, eval_limit_per_worker, valid),
        ):
            # Sorting first makes the selection independent of the order of the source.
            pool = sorted(by_worker[w][split], key=_Row.sort_key)
            keep = [pool[j] for j in rng.permutation(len(pool))[:cap]]
            if limit is not None:
                keep = keep[:limit]
            dest.extend(
                Comparison(user, w, r.post_id, r.prompt, r.summaries, r.choice) for r in keep
            )
    report.update(
        {
            "workers": list(ranked),
            "train_counts": {w: train_count[w] for w in ranked},
            "train_per_worker": n_train,
            "valid_per_worker": n_valid,
        }
    )
    return TLDRData(tuple(ranked), train, valid, report)


def split_workers(ranked: list[str], m: int, split_seed: int) -> tuple[list[str], list[str]]:
    """(seen, unseen): ``m`` of the ``ranked`` workers drawn at random (``split_seed``) as
    unseen, the rest seen, both in rank order (the seen/unseen protocol of low-rank reward-basis
    work: the reward basis is learned on the seen workers only)."""
    if not 0 < m < len(ranked):
        raise DataError(f"unseen workers must be in 1..{len(ranked) - 1}, got {m}")
    pick = set(np.random.default_rng(np.random.SeedSequence([split_seed, 18])).permutation(
        len(ranked))[:m].tolist())
    return ([w for j, w in enumerate(ranked) if j not in pick],
            [w for j, w in enumerate(ranked) if j in pick])


def _parse_row(raw, origin: str, keep_cnndm: bool = False) -> _Row | None:
    """Validate one official-schema object; None for rows without a post (CNN/DM) unless
    ``keep_cnndm`` and the row has an article."""
    if isinstance(raw, _BadJSON):
        raise DataError(f"{origin}: invalid JSON ({raw.message})")
    if not isinstance(raw, dict):
        raise DataError(f"{origin}: expected a JSON object, got {type(raw).__name__}")
    for key in ("info", "summaries", "choice", "worker", "split"):
        if key not in raw:
            raise DataError(f"{origin}: missing field {key!r}")
    info = raw["info"]
    if not isinstance(info, dict):
        raise DataError(f"{origin}: field 'info' must be an object")
    batch = str(raw.get("batch") or "")
    article = None
    if "cnndm" in batch or info.get("post") is None:
        if not keep_cnndm or not isinstance(info.get("article"), str):
            return None
        article = info["article"]
    else:
        for key in ("title", "subreddit"):
            if not isinstance(info.get(key), str):
                raise DataError(f"{origin}: missing or non-text field 'info.{key}'")
        if not isinstance(info["post"], str):
            raise DataError(f"{origin}: field 'info.post' must be text")
    summaries = raw["summaries"]
    if (
        not isinstance(summaries, list)
        or len(summaries) != 2
        or not all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in summaries)
    ):
        raise DataError(f"{origin}: field 'summaries' must hold two objects with a 'text'")
    choice = raw["choice"]
    if isinstance(choice, bool) or choice not in (0, 1):
        raise DataError(f"{origin}: field 'choice' must be 0 or 1, got {choice!r}")
    split = raw["split"]
    if split in TRAIN_SPLITS:
        split = "train"
    elif split in VALID_SPLITS:
        split = "valid"
    else:
        raise DataError(f"{origin}: unknown split {split!r} (train, valid1, valid2)")
    worker = raw["worker"]
    if not isinstance(worker, str) or not worker:
        raise DataError(f"{origin}: field 'worker' must be a non-empty string")
    return _Row(
        worker=worker,
        split=split,
        post_id=str(info.get("id", "")),
        prompt=(ARTICLE_TEMPLATE.format(article=article) if article is not None
                else format_prompt(info["subreddit"], info["title"], info["post"])),
        summaries=(summaries[0]["text"], summaries[1]["text"]),
        choice=int(choice),
    )


def _iter_source(source: str | Path) -> Iterator[tuple[object, str]]:
    path = Path(source)
    if path.is_file():
        yield from _iter_json_lines([path])
    elif path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            yield from _iter_disk(path)
        else:
            files = sorted((path / "comparisons").glob("*.json")) or sorted(path.glob("*.json"))
            if not files:
                raise DataError(
                    f"{path}: no comparisons/*.json, *.json or save_to_disk files found"
                )
            yield from _iter_json_lines(files)
    elif str(source).count("/") == 1 and not str(source).startswith((".", "/")):
        yield from _iter_hub(str(source))
    else:
        raise DataError(f"{source}: no such file or directory")


def _iter_json_lines(files: list[Path]) -> Iterator[tuple[object, str]]:
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                origin = f"{f}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    yield _BadJSON(str(err)), origin
                    continue
                yield obj, origin


class _BadJSON:
    """Marker for an unparsable line; _parse_row turns it into a DataError (or a counted skip)."""

    def __init__(self, message: str):
        self.message = message


def _iter_disk(path: Path) -> Iterator[tuple[object, str]]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DataError(f"{path}: reading a save_to_disk directory needs `datasets`") from err
    loaded = datasets.load_from_disk(str(path))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("data", loaded)]
    for name, ds in splits:
        for i, row in enumerate(ds):
            yield row, f"{path}[{name}] row {i}"


def _iter_hub(repo_id: str) -> Iterator[tuple[object, str]]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DataError(f"{repo_id}: loading from the hub needs `datasets`") from err
    try:
        loaded = datasets.load_dataset(repo_id, HUB_CONFIG, revision=HUB_REVISION)
    except Exception as err:  # network, offline mode, missing repo: one clear message
        raise DataError(
            f"{repo_id}: cannot load from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); pass a local directory instead"
        ) from err
    for name, ds in loaded.items():
        for i, row in enumerate(ds):
            yield row, f"{repo_id}[{name}] row {i}"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m llm.data", description="Summarise the worker selection of a source."
    )
    parser.add_argument("--data", required=True, help="JSON-lines dir, save_to_disk dir or hub id")
    parser.add_argument("--workers", type=int, default=5, help="top-K labelers kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balancing shuffle")
    parser.add_argument("--skip-malformed", action="store_true",
                        help="count and skip malformed rows instead of stopping at the first")
    args = parser.parse_args(argv)
    try:
        data = load_comparisons(
            args.data, args.workers, args.seed, skip_malformed=args.skip_malformed
        )
    except DataError as err:
        print(f"llm.data: error: {err}", file=sys.stderr)
        return 2
    print(data.summary())
    for w in data.workers:
        print(f"  {w}: {data.report['train_counts'][w]} train comparisons before capping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
