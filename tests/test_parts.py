"""Result files are validated when read back (figures/files.py, docs/formats.md): a damaged part
of a sweep -- truncated, a row dropped, empty, binary, its marker missing or garbage -- is
reported in one line and recomputed, never merged; markers record rows, columns, checksum."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sim.experiments.sweep as sweep
from figures import files

TINY = ["--set", "N=4", "--set", "d1=4", "--set", "d2=1", "--set", "k=1", "--set", "S=4",
        "--set", "A=3", "--set", "H=3", "--set", "n_test=20", "--jobs", "1"]


# ---- damaged parts are reported and recomputed, never merged --------------------------------

SWEEP = ["--vary", "Np", "--values", "40,80,160", "--seeds", "2", "--methods", "shared,full",
         "--no-figures", *TINY]


def _untimed(df):
    return df[[c for c in df.columns if not c.endswith("_s")]]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "base"
    assert sweep.main([*SWEEP, "--out", str(out)]) == 0
    return out


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _drop_row(p: Path):
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:-1]))


DAMAGE = {
    "truncated": _truncate,
    "row-dropped": _drop_row,
    "empty": lambda p: p.write_bytes(b""),
    "binary": lambda p: p.write_bytes(bytes(range(256))),
    "marker-missing": lambda p: files.marker_path(p).unlink(),
    "marker-garbage": lambda p: files.marker_path(p).write_text("{"),
}


def test_damaged_parts_are_reported_and_recomputed(finished_sweep, tmp_path, capsys):
    """One damage of each kind, each to its own part, repaired by one re-run."""
    out = tmp_path / "s"
    shutil.copytree(finished_sweep, out)
    victims = sorted((out / "parts").glob("*.csv"))
    assert len(victims) == len(DAMAGE)
    for victim, damage in zip(victims, DAMAGE.values()):
        damage(victim)
    capsys.readouterr()
    assert sweep.main([*SWEEP, "--out", str(out)]) == 0
    cap = capsys.readouterr()
    warnings = [ln for ln in cap.err.splitlines() if "damaged part" in ln]
    assert len(warnings) == len(victims)
    assert all(sum(str(v) in w for w in warnings) == 1 for v in victims), warnings
    assert "resuming" not in cap.out  # every part was damaged: all recomputed
    runs, base = pd.read_csv(out / "runs.csv"), pd.read_csv(finished_sweep / "runs.csv")
    assert len(runs) == 12 and runs["est_err"].notna().all()
    pd.testing.assert_frame_equal(_untimed(runs), _untimed(base))


def test_read_parts_refuses_a_part_damaged_after_the_check(finished_sweep, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(finished_sweep, out)
    _drop_row(sorted((out / "parts").glob("*.csv"))[0])
    with pytest.raises(files.ResultError, match="changed or truncated"):
        sweep.assemble(out, [40, 80, 160], [0, 1], ["shared", "full"])


def test_marker_records_rows_columns_and_checksum(tmp_path):
    df = pd.DataFrame({"a": np.arange(5), "b": np.linspace(0, 1, 5)})
    path = files.write_csv_atomic(df, tmp_path / "x.csv")
    marker = json.loads(files.marker_path(path).read_text())
    assert marker["rows"] == 5 and marker["columns"] == ["a", "b"]
    pd.testing.assert_frame_equal(files.read_csv_checked(path, ["a", "b"], rows=5), df)
    with pytest.raises(files.ResultError, match="expected 6"):
        files.read_csv_checked(path, rows=6)
    with pytest.raises(files.ResultError, match="lacks column"):
        files.read_csv_checked(path, ["c"])
