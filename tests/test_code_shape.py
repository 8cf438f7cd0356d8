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
    assert any(fnmatch.fnmatch("build", p) for p in ("build", *patterns))  # pytest's default
    for folder in folders:
        hidden = [p for part in folder.relative_to(tests).parts for p in patterns
                  if fnmatch.fnmatch(part, p)]  # fmt: skip
        assert not hidden, f"{folder} matches norecursedirs {hidden}: its tests never run"


def _homes(pattern: str, root: Path = PACKAGE) -> list[str]:
    """``path:line`` of every line of the package's code that matches ``pattern``."""
    import re

    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code):
                found.append(f"{path.relative_to(root.parent)}:{number}")
    return found


#: A fact and the pattern that finds a definition of it in code.
ONE_HOME = {
    "the image extensions": r"""["']\.jpeg["']""",
    # the resize keeps its ratio to the crop (256/224 in ImageNet's recipe)
    "the resize rule": r"\*\s*256\s*/\s*224|256\s*/\s*224\s*\*"
    r"|\*\s*[\w.]*resize\s*/\s*[\w.]*crop\b",
    "the default C grid": r"0\.001,\s*0\.01,\s*0\.1",
    # read from the package data, never from torchvision's weights
    "ImageNet's class names": r"""["']categories["']|imagenet_classes\.txt["']""",
}


@pytest.mark.parametrize("fact", ONE_HOME)
def test_each_fact_is_defined_once(fact: str) -> None:
    homes = _homes(ONE_HOME[fact])
    assert len(homes) == 1, f"{fact} is defined in {len(homes)} places: {homes}"


def test_the_one_home_scan_finds_a_second_definition(tmp_path) -> None:
    copy = tmp_path / "fstore"
    copy.mkdir()
    (copy / "a.py").write_text('EXT = (".jpg", ".jpeg")\n')
    (copy / "b.py").write_text('SUFFIXES = (".jpeg",)  # a second list\n')
    (copy / "c.py").write_text('# ".jpeg" in a comment is no definition\n')
    assert len(_homes(ONE_HOME["the image extensions"], copy)) == 2
