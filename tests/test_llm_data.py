"""TL;DR loader: schema validation, CNN/DM drop, top-K balancing, same result from every source."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from llm.data import DataError, format_prompt, load_comparisons

pytestmark = pytest.mark.llm

FIXTURE = Path(__file__).parent / "fixtures" / "tldr_tiny"


def _rows() -> list[dict]:
    rows = []
    for f in sorted((FIXTURE / "comparisons").glob("*.json")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return rows


def _write(dirpath: Path, rows: list[dict], name: str = "batch1.json") -> Path:
    (dirpath / "comparisons").mkdir(parents=True, exist_ok=True)
    path = dirpath / "comparisons" / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fixture_selection_matches_the_paper_procedure():
    data = load_comparisons(FIXTURE, workers=5, seed=0)
    assert data.workers == tuple(f"synth-worker-{i:02d}" for i in range(5))
    assert data.report["train_per_worker"] == 12  # the smallest of the top five
    assert data.report["valid_per_worker"] == 6
    assert data.report["dropped_no_post"] == 15  # 3 CNN/DM rows per kept worker
    assert data.report["skipped_malformed"] == 0
    for u in range(5):
        assert sum(c.user == u for c in data.train) == 12
        assert sum(c.user == u for c in data.valid) == 6
    limited = load_comparisons(FIXTURE, seed=0, limit_per_worker=5, eval_limit_per_worker=2)
    assert len(limited.train) == 25 and len(limited.valid) == 10
    assert limited.train[:5] == data.train[:5]  # the limit takes a prefix of the capped sample


def test_seed_changes_the_capped_sample_but_not_the_workers():
    a, b = load_comparisons(FIXTURE, seed=0), load_comparisons(FIXTURE, seed=1)
    assert a.workers == b.workers
    assert {c.post_id for c in a.train} != {c.post_id for c in b.train}


def test_prompt_format():
    assert format_prompt("tifu", "T", "P") == "SUBREDDIT: r/tifu\nTITLE: T\nPOST: P\nTL;DR: "
    c = load_comparisons(FIXTURE).train[0]
    assert c.text(1) == c.prompt + c.summaries[1]
    assert c.prompt.startswith("SUBREDDIT: r/") and c.prompt.endswith("TL;DR: ")


def test_bad_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, _rows())
    with open(path, "a") as fh:
        fh.write("{not json\n")
    n_lines = len(path.read_text().splitlines())
    with pytest.raises(DataError, match=f"{path}:{n_lines}: invalid JSON"):
        load_comparisons(tmp_path)
    data = load_comparisons(tmp_path, skip_malformed=True)
    assert data.report["skipped_malformed"] == 1
    assert "skipped 1 malformed" in data.summary()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("choice"), "missing field 'choice'"),
        (lambda r: r.update(choice=2), "'choice' must be 0 or 1, got 2"),
        (lambda r: r.update(split="test"), "unknown split 'test'"),
        (lambda r: r["info"].pop("title"), "info.title"),
        (lambda r: r.update(summaries=[{"text": "only one"}]), "two objects"),
    ],
)
def test_malformed_rows_raise_with_location(tmp_path, mutate, message):
    rows = _rows()
    i = next(i for i, r in enumerate(rows) if "cnndm" not in r["batch"]) + 2
    mutate(rows[i])
    path = _write(tmp_path, rows)
    with pytest.raises(DataError, match=f"{path}:{i + 1}: .*{message}"):
        load_comparisons(tmp_path)


def test_cnndm_rows_are_dropped_and_counted(tmp_path):
    rows = [r for r in _rows() if "cnndm" not in r["batch"]]
    extra = json.loads(json.dumps(rows[0]))
    extra["info"]["post"] = None  # a post-less row outside a cnndm batch is dropped too
    _write(tmp_path, rows + [extra])
    data = load_comparisons(tmp_path)
    assert data.report["dropped_no_post"] == 1
    assert all("cnndm" not in c.post_id for c in data.train + data.valid)


def test_fewer_than_k_workers_is_an_error():
    with pytest.raises(DataError, match="only 7 workers have train comparisons, need 8"):
        load_comparisons(FIXTURE, workers=8)


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_comparisons(tmp_path / "nope")
    with pytest.raises(DataError, match="no comparisons"):
        load_comparisons(tmp_path)


def test_flat_dir_and_shuffled_order_give_the_same_selection(tmp_path):
    rows = _rows()
    random.Random(0).shuffle(rows)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        (flat / f"part{i}.json").write_text("".join(json.dumps(r) + "\n" for r in rows[i::3]))
    a, b = load_comparisons(FIXTURE, seed=3), load_comparisons(flat, seed=3)
    assert a.train == b.train and a.valid == b.valid and a.workers == b.workers


def test_save_to_disk_dir_gives_the_same_selection(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = _rows()
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([r for r in rows if r["split"] == "train"]),
        "validation": datasets.Dataset.from_list([r for r in rows if r["split"] != "train"]),
    })
    dd.save_to_disk(str(tmp_path / "disk"))
    a, b = load_comparisons(FIXTURE, seed=2), load_comparisons(tmp_path / "disk", seed=2)
    assert a.train == b.train and a.valid == b.valid
    assert a.report["dropped_no_post"] == b.report["dropped_no_post"]


def test_copy_of_fixture_is_a_valid_json_lines_source(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "copy")
    assert load_comparisons(tmp_path / "copy").train == load_comparisons(FIXTURE).train
