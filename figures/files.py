"""Interruption-safe, validated result files for the long-running commands (sim.experiments.sweep,
sim.experiments.coverage, the sim.experiments.algorithm1 study).

Every CSV the project reads back is written atomically (temp file + rename) and then gets a
completeness marker ``<file>.ok`` -- JSON with its row count, columns and SHA-256 -- written
last. A file without a marker, or whose bytes, rows or columns disagree with it, is damaged.
Each finished task writes its rows to DIR/parts/<name>.csv; a re-run skips the intact parts,
reports each damaged one in one line and recomputes it (never merges it). A DIR/<kind>.json
records what the directory holds, so a re-run with other settings is refused instead of
mixing results. Formats: docs/formats.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import pandas as pd

MARKER = ".ok"


class ResultError(ValueError):
    """A result file that is missing, unreadable, damaged or of the wrong shape (one line)."""


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to path through path.tmp and a rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_csv_atomic(df: pd.DataFrame, path: Path) -> Path:
    """df.to_csv(path) such that an interruption never leaves a truncated file; then the
    completeness marker path.ok (rows, columns, sha256), written last."""
    data = df.to_csv(index=False, float_format="%.10g").encode()
    return write_checked(path, data, len(df), df.columns)


def write_checked(path: Path, data: bytes, rows: int, columns) -> Path:
    """Write ``data`` (a CSV of ``rows`` rows) atomically, then its marker path.ok."""
    path = Path(path)
    atomic_write(path, data)
    marker = dict(rows=int(rows), columns=[str(c) for c in columns],
                  sha256=hashlib.sha256(data).hexdigest())
    atomic_write(marker_path(path), (json.dumps(marker) + "\n").encode())
    return path


def marker_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + MARKER)


def read_csv_checked(path: Path, columns=(), rows: int | None = None,
                     require_marker: bool = True) -> pd.DataFrame:
    """Read a result CSV, raising ResultError unless it is intact: its marker present and
    matching (when ``require_marker`` or when a marker exists), parsable, holding
    ``columns`` and, if given, exactly ``rows`` rows."""
    path = Path(path)
    if not path.is_file():
        raise ResultError(f"{path} is missing")
    data = path.read_bytes()
    mpath = marker_path(path)
    marker = None
    if mpath.exists() or require_marker:
        try:
            marker = json.loads(mpath.read_text())
            if not isinstance(marker, dict) or not {"rows", "sha256"} <= set(marker):
                raise ValueError("not a marker")
        except FileNotFoundError:
            raise ResultError(f"{path} has no completeness marker {mpath.name} "
                              "(the write did not finish)") from None
        except (ValueError, UnicodeDecodeError):
            raise ResultError(f"{path}: its marker {mpath.name} is damaged") from None
        if hashlib.sha256(data).hexdigest() != marker["sha256"]:
            raise ResultError(f"{path} was changed or truncated after it was written "
                              f"(checksum differs from {mpath.name})")
    try:
        df = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ResultError(f"{path} is not a readable CSV ({msg})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultError(f"{path} lacks column(s) {', '.join(missing)}")
    for want in (marker["rows"] if marker is not None else None, rows):
        if want is not None and len(df) != want:
            raise ResultError(f"{path} holds {len(df)} rows, expected {want}")
    return df


def read_json_checked(path: Path, keys=()) -> dict:
    """A JSON object with ``keys``, or ResultError naming what is wrong."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path} is missing") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ResultError(f"{path} is damaged (not valid JSON: {err})") from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise ResultError(f"{path} is damaged (expected an object with {', '.join(keys)})")
    return obj


def claim(out: Path, kind: str, spec: dict, keys=None, write: bool = True) -> str | None:
    """Create out/parts and record spec in out/<kind>.json; an error message (None if fine)
    when out already holds a <kind> whose spec differs (on ``keys``, default all) or whose
    record is damaged. ``write=False`` only checks (nothing is created)."""
    out = Path(out)
    record = out / f"{kind}.json"
    spec = json.loads(json.dumps(spec))
    if record.exists():
        try:
            old = read_json_checked(record)
        except ResultError as err:
            return f"{err}; delete it (and {out}/parts) or choose another --out"
        keys = list(spec) if keys is None else keys
        if {k: old.get(k) for k in keys} != {k: spec[k] for k in keys}:
            return f"{out} holds a different {kind} (see {record}); choose another --out"
    if not write:
        return None
    (out / "parts").mkdir(parents=True, exist_ok=True)
    atomic_write(record, (json.dumps(spec, indent=2) + "\n").encode())
    return None


def part_name(*keys) -> str:
    return "_".join(repr(k) if isinstance(k, float) else str(k) for k in keys).replace("/", "_")


def finished(out: Path, rows: int | None = None, prog: str = "sim") -> set[str]:
    """Names of the intact parts in out/parts. A damaged part (no marker, checksum, rows or
    CSV wrong) is reported in one line on stderr and removed, so that it is recomputed."""
    done = set()
    for p in sorted((Path(out) / "parts").glob("*.csv")):
        try:
            read_csv_checked(p, rows=rows)
        except ResultError as err:
            print(f"{prog}: warning: damaged part: {err}; recomputing it", file=sys.stderr)
            p.unlink()
            marker_path(p).unlink(missing_ok=True)
            continue
        done.add(p.stem)
    return done


def write_part(out: Path, name: str, rows) -> Path:
    return write_csv_atomic(pd.DataFrame(rows), Path(out) / "parts" / f"{name}.csv")


def read_parts(out: Path, names=None) -> pd.DataFrame:
    """The intact parts (all, or ``names``) concatenated; ResultError on a damaged one."""
    paths = sorted((Path(out) / "parts").glob("*.csv"))
    if names is not None:
        paths = [p for p in paths if p.stem in set(names)]
    frames = [read_csv_checked(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
