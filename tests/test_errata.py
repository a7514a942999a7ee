"""Every interpretation listed in theory/README.md's errata is exercised by at least one test
marked ``@pytest.mark.erratum(n)``, and no marker names an erratum that does not exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _errata_numbers() -> set[int]:
    text = (ROOT / "theory" / "README.md").read_text()
    section = text.split("## Notation errata", 1)[1]
    return {int(m) for m in re.findall(r"^(\d+)\. \*\*", section, flags=re.M)}


def _marked() -> dict[int, list[str]]:
    """{erratum: [test names]} from the decorators of every test function under tests/."""
    found: dict[int, list[str]] = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                        and dec.func.attr == "erratum"):
                    for arg in dec.args:
                        found.setdefault(int(ast.literal_eval(arg)), []).append(f"{path.name}::{node.name}")
    return found


def test_every_erratum_is_exercised_by_a_test():
    errata, marked = _errata_numbers(), _marked()
    assert len(errata) >= 10, "could not parse the errata list of theory/README.md"
    missing = sorted(errata - set(marked))
    assert not missing, f"errata without a test marked @pytest.mark.erratum(n): {missing}"
    unknown = sorted(set(marked) - errata)
    assert not unknown, f"tests marked with errata that theory/README.md does not list: {unknown}"
