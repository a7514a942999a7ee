"""The package layout of issue 21: dependency arrows point one way, the project imports only
the stage subpackages' own paths, and the old flat paths still resolve for users."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import sim

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "sim", "llm", "figures", "benchmarks", "tests")
#: Which top-level packages each may import (the arrows of README, "Layout").
ALLOWED = {
    "figures": set(),
    "theory": set(),
    "sim": {"theory", "figures"},
    "llm": {"theory", "figures"},
}
#: Package __init__ names kept for scripts of the flat layout (re-exports the project never uses).
REEXPORTING = {"sim.confidence", "sim.policy"}


def _imports(path: Path):
    """(module imported, line) for every import statement of a file, lazy ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
            yield from ((f"{node.module}.{a.name}", node.lineno) for a in node.names)


def _files(pkg: str):
    return sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_dependency_arrows_point_one_way(pkg):
    bad = set()
    for f in _files(pkg):
        for mod, line in _imports(f):
            top = mod.split(".")[0]
            if top in ALLOWED and top != pkg and top not in ALLOWED[pkg]:
                bad.add(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, sorted(bad)


def test_the_project_imports_no_moved_path_and_no_reexport():
    bad = set()
    for pkg in PACKAGES:
        for f in _files(pkg):
            if f.name == "test_layout.py":
                continue
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [f"{node.module}.{a.name}" for a in node.names]
                    if node.module in sim.MOVED or any(n in sim.MOVED for n in names):
                        bad.add(f"{f.relative_to(ROOT)}:{node.lineno} from {node.module}")
                    if node.module in REEXPORTING and not all(
                            (ROOT / n.replace(".", "/")).with_suffix(".py").exists() for n in names):
                        bad.add(f"{f.relative_to(ROOT)}:{node.lineno} re-export of {node.module}")
                elif isinstance(node, ast.Import):
                    bad |= {f"{f.relative_to(ROOT)}:{node.lineno} import {a.name}"
                            for a in node.names if a.name in sim.MOVED}
    assert not bad, sorted(bad)


@pytest.mark.parametrize("old", sorted(sim.MOVED))
def test_old_module_paths_resolve_to_the_same_module(old):
    assert importlib.import_module(old) is importlib.import_module(sim.MOVED[old])


def test_old_command_lines_still_run():
    for cmd in ("sim.sweep", "sim.demo", "sim.coverage", "sim.algorithm1", "sim.pessimism_map",
                "sim.tail_study"):
        r = subprocess.run([sys.executable, "-m", cmd, "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and f"python -m {cmd}" in r.stdout, (cmd, r.stderr[-300:])


def test_every_moved_target_exists_and_no_flat_module_is_left():
    assert all(importlib.util.find_spec(new) for new in sim.MOVED.values())
    flat = {p.stem for p in (ROOT / "sim").glob("*.py")} - {"__init__"}
    assert not flat, f"modules left flat in sim/: {sorted(flat)}"
