"""The slow tier (``pytest.ini`` runs ``-m "not slow"``): every slow test names the default-tier
tests that run its path (``@pytest.mark.slow(covered_by=(...))``), and each name is a test that
exists and is not slow itself. Read from the test files' syntax trees: nothing is collected."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _slow_mark(decorator: ast.expr) -> ast.expr | None:
    """The ``pytest.mark.slow`` of a decorator or a ``pytestmark`` value (bare or called)."""
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(node, ast.Attribute) and node.attr == "slow":
        inner = node.value
        if isinstance(inner, ast.Attribute) and inner.attr == "mark":
            return decorator
    return None


def _marks_of(value: ast.expr) -> list[ast.expr]:
    items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
    return [m for m in map(_slow_mark, items) if m is not None]


def slow_marks(source: str) -> dict[str, list[ast.expr]]:
    """Test function name (``*`` for the module's ``pytestmark``) -> its slow marks."""
    tree = ast.parse(source)
    found: dict[str, list[ast.expr]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            if marks := _marks_of(node.value):
                found["*"] = marks
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            marks = [m for d in node.decorator_list if (m := _slow_mark(d)) is not None]
            if marks:
                found[node.name] = marks
    return found


def covered_by(mark: ast.expr) -> list[str] | None:
    """The test ids a slow mark names, or None where it names none (or not as string literals)."""
    if not isinstance(mark, ast.Call):
        return None
    for keyword in mark.keywords:
        if keyword.arg == "covered_by" and isinstance(keyword.value, (ast.Tuple, ast.List)):
            names = [e.value for e in keyword.value.elts
                     if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if names and len(names) == len(keyword.value.elts):
                return names
    return None


def defined_tests(source: str) -> set[str]:
    return {node.name for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test")}


def problems(files: dict[str, str]) -> list[str]:
    """What is wrong with the slow tier of ``files`` (path relative to the repository -> source)."""
    found = []
    slow = {path: slow_marks(source) for path, source in files.items()}  # each file parsed once
    tests = {path: defined_tests(source) for path, source in files.items()}
    for path in sorted(files):
        for name, marks in slow[path].items():
            where = f"{path}::{name}" if name != "*" else f"{path} (pytestmark)"
            for mark in marks:
                names = covered_by(mark)
                if names is None:
                    found.append(f"{where}: slow without covered_by=(<test ids>)")
                    continue
                for test_id in names:
                    file, _, function = test_id.partition("::")
                    function = function.split("[")[0]
                    if file not in files or function not in tests[file]:
                        found.append(f"{where}: covered_by names {test_id}, which does not exist")
                    elif "*" in slow[file] or function in slow[file]:
                        found.append(f"{where}: covered_by names {test_id}, which is slow too")
    return found


def suite_files() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8")
            for p in sorted(TESTS.glob("test_*.py"))}


def test_every_slow_test_names_default_tier_tests_that_exist():
    files = suite_files()
    assert not problems(files)
    # the tier is in use (the docs' table lists three)
    assert sum(len(slow_marks(source)) for source in files.values()) >= 3


SLOW = "import pytest\n\n\n{mark}\ndef test_long():\n    pass\n"
FAST = "import pytest\n\n\ndef test_short():\n    pass\n"


@pytest.mark.parametrize("mark, expected", [
    ("@pytest.mark.slow", "slow without covered_by"),
    ("@pytest.mark.slow()", "slow without covered_by"),
    ("@pytest.mark.slow(covered_by=())", "slow without covered_by"),
    ("@pytest.mark.slow(covered_by=('tests/test_b.py::test_gone',))", "does not exist"),
    ("@pytest.mark.slow(covered_by=('tests/test_c.py::test_short',))", "does not exist"),
    ("@pytest.mark.slow(covered_by=('tests/test_a.py::test_long',))", "slow too"),
    ("@pytest.mark.slow(covered_by=('tests/test_b.py::test_short',))", None),
    ("@pytest.mark.slow(covered_by=('tests/test_b.py::test_short[1]',))", None),
])
def test_a_slow_test_without_a_covering_test_is_named(mark, expected):
    found = problems({"tests/test_a.py": SLOW.format(mark=mark), "tests/test_b.py": FAST})
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and "tests/test_a.py::test_long" in found[0]
        assert expected in found[0]


def test_a_slow_module_is_no_cover_for_another():
    slow_module = FAST.replace("\n\n\n", "\n\npytestmark = pytest.mark.slow\n\n\n", 1)
    mark = "@pytest.mark.slow(covered_by=('tests/test_b.py::test_short',))"
    found = problems({"tests/test_a.py": SLOW.format(mark=mark), "tests/test_b.py": slow_module})
    assert sorted(found) == ["tests/test_a.py::test_long: covered_by names "
                             "tests/test_b.py::test_short, which is slow too",
                             "tests/test_b.py (pytestmark): slow without covered_by=(<test ids>)"]
