"""The code's shape, kept by CI: functions fit on a screen, calls pass few positional arguments.

``../shared/STYLE.md`` asks for orchestration that reads as a list of named steps; these limits
make that checkable. They read fstore's own source with ``ast``; nothing is imported or run.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fstore"
MAX_FUNCTION_LINES = 80
MAX_POSITIONAL_ARGS = 6


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))]


def _long_functions(tree: ast.Module) -> list[tuple[str, int, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # From the def line (decorators excluded) to the last line of the body.
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append((node.name, node.lineno, lines))
    return found


def _wide_calls(tree: ast.Module) -> list[tuple[int, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            positional = [a for a in node.args if not isinstance(a, ast.Starred)]
            if len(positional) > MAX_POSITIONAL_ARGS:
                found.append((node.lineno, len(positional)))
    return found


def _ids(value: object) -> str:
    return str(value.relative_to(PACKAGE.parent)) if isinstance(value, Path) else ""


def test_checks_can_fail() -> None:
    long_def = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    assert _long_functions(ast.parse(long_def)) == [("f", 1, MAX_FUNCTION_LINES + 1)]
    assert _wide_calls(ast.parse("g(1, 2, 3, 4, 5, 6, 7)")) == [(1, 7)]
    assert _wide_calls(ast.parse("g(1, 2, 3, 4, 5, 6, *rest)")) == []


@pytest.mark.parametrize("path, tree", _trees(), ids=_ids)
def test_no_function_over_80_lines(path: Path, tree: ast.Module) -> None:
    assert _long_functions(tree) == [], f"{path.relative_to(PACKAGE.parent)}: split these"


@pytest.mark.parametrize("path, tree", _trees(), ids=_ids)
def test_no_call_with_over_6_positional_arguments(path: Path, tree: ast.Module) -> None:
    assert _wide_calls(tree) == [], f"{path.relative_to(PACKAGE.parent)}: use keywords or a config"


def test_no_test_folder_is_hidden_from_collection(pytestconfig):
    """A folder matching ``norecursedirs`` is silently never collected (pytest's default hides
    any folder named ``build``): every folder with test files must escape those patterns."""
    tests = Path(__file__).resolve().parent
    patterns = pytestconfig.getini("norecursedirs")
    folders = {p.parent for p in tests.rglob("test_*.py")} - {tests}
    assert any(folder.name == "build" for folder in folders)  # the case that once hid itself
    for folder in folders:
        hidden = [p for part in folder.relative_to(tests).parts for p in patterns
                  if fnmatch.fnmatch(part, p)]  # fmt: skip
        assert not hidden, f"{folder} matches norecursedirs {hidden}: its tests never run"
