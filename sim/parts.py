"""Interruption-safe results for the long-running commands (sim.sweep, sim.coverage, the
sim.algorithm1 study): each finished task writes its rows to DIR/parts/<name>.csv atomically
(temp file + rename), a re-run skips the finished names, and the result file is assembled
from the parts. A DIR/<kind>.json records what the directory holds, so a re-run with other
settings is refused instead of mixing results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd


def write_csv_atomic(df: pd.DataFrame, path: Path) -> Path:
    """df.to_csv(path) such that an interruption never leaves a truncated file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False, float_format="%.10g")
    os.replace(tmp, path)
    return path


def claim(out: Path, kind: str, spec: dict) -> str | None:
    """Create out/parts and record spec in out/<kind>.json; an error message (None if fine)
    when out already holds a <kind> with a different spec."""
    out = Path(out)
    record = out / f"{kind}.json"
    if record.exists() and json.loads(record.read_text()) != json.loads(json.dumps(spec)):
        return f"{out} holds a different {kind} (see {record}); choose another --out"
    (out / "parts").mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(spec, indent=2))
    return None


def part_name(*keys) -> str:
    return "_".join(repr(k) if isinstance(k, float) else str(k) for k in keys).replace("/", "_")


def finished(out: Path) -> set[str]:
    return {p.stem for p in (Path(out) / "parts").glob("*.csv")}


def write_part(out: Path, name: str, rows) -> Path:
    return write_csv_atomic(pd.DataFrame(rows), Path(out) / "parts" / f"{name}.csv")


def read_parts(out: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted((Path(out) / "parts").glob("*.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
