"""The documentation a user reads: the generated CLI page, the examples every ``--help`` ends
with, the README's limits, the links between the pages, and the package data wheels carry."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import click
import pytest

from fstore.cli import cli

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
README = REPO / "README.md"
DOCS = REPO / "docs"


def _cli_docs():
    spec = importlib.util.spec_from_file_location("cli_docs", REPO / "scripts" / "cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI_DOCS = _cli_docs()
CONTEXTS = {ctx.command_path: ctx for ctx in CLI_DOCS.contexts()}


# --------------------------------------------------------------------------- docs/cli.md


def test_cli_md_is_the_commands_help():
    page = CLI_DOCS.render()
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == page, (
        "docs/cli.md differs from --help: python scripts/cli_docs.py > docs/cli.md"
    )


def test_cli_md_has_every_command():
    assert set(CONTEXTS) >= {"fstore", "fstore build", "fstore train svm", "fstore study layers"}
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    for path in CONTEXTS:
        assert f"\n## {path}\n" in page


def test_check_mode_reports_drift(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text(CLI_DOCS.render().replace("Examples:", "Example:", 1), encoding="utf-8")
    monkeypatch.setattr(CLI_DOCS, "CLI_MD", stale)
    assert CLI_DOCS.main(["--check"]) == 1
    assert "-  Example:" in capsys.readouterr().err
    stale.write_text(CLI_DOCS.render(), encoding="utf-8")
    assert CLI_DOCS.main(["--check"]) == 0


# --------------------------------------------------------------------------- examples


def examples(help_text: str) -> list[str]:
    """The commands of the help's ``Examples:`` block, continuation lines joined, comment
    lines left out. The block is indented by 4; the paragraph or section after it by less."""
    lines = help_text.splitlines()
    start = [i for i, line in enumerate(lines) if line.strip() == "Examples:"]
    assert len(start) == 1, "one Examples: block"
    commands, current = [], ""
    for line in lines[start[0] + 1 :]:
        if line.strip() and not line.startswith("    "):
            break
        text = line.strip()
        if not text or text.startswith("#"):
            assert not current, f"a continued line ends in a blank or comment: {current!r}"
            continue
        current += text
        if current.endswith("\\"):
            current = current[:-1]
            continue
        commands.append(current)
        current = ""
    assert not current, f"the last example ends with a continuation: {current!r}"
    return commands


def _help(path: str) -> str:
    ctx = CONTEXTS[path]
    return ctx.command.get_help(ctx)


@pytest.mark.parametrize("path", list(CONTEXTS))
def test_every_help_has_examples_of_itself(path):
    found = examples(_help(path))
    assert found, f"{path} --help has no example"
    for example in found:
        assert example.split()[0] == "fstore", f"not an fstore command: {example!r}"
    assert any((example + " ").startswith(path + " ") for example in found), (
        f"no example of {path} itself"
    )


EXAMPLES = sorted({example for path in CONTEXTS for example in examples(_help(path))})


def parse(example: str) -> click.Context:
    """Parse an example as the shell and click would, down to its command, without running
    it: a missing option value, an unknown option or a bad choice raises ``UsageError``."""
    args = shlex.split(example)[1:]
    ctx = click.Context(cli, info_name="fstore")
    command = cli
    while isinstance(command, click.Group):
        assert args, f"{example!r} names no command of {ctx.command_path}"
        name, command, args = command.resolve_command(ctx, args)
        if isinstance(command, click.Group):
            ctx = click.Context(command, parent=ctx, info_name=name)
    return command.make_context(name, args, parent=ctx, resilient_parsing=False)


def _models_exported(examples: list[str]) -> set[str]:
    """The models the ``fstore export`` examples write (``-o FILE``): later examples use them."""
    made = set()
    for example in examples:
        args = shlex.split(example)
        if args[:2] == ["fstore", "export"] and "-o" in args:
            made.add(args[args.index("-o") + 1])
    return made


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_parses(example, monkeypatch, tmp_path):
    shared = [arg for arg in shlex.split(example) if arg.startswith("../shared/")]
    if shared and not SHARED.is_dir():
        pytest.skip(f"needs {SHARED}, the shared folder beside the clone")
    for arg in shared:
        assert (REPO / arg).exists(), f"{example!r}: {arg} does not exist"
    # Run where a user would: beside ../shared, after the export examples wrote their models.
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    for name in _models_exported(EXAMPLES):
        (work / name).write_bytes(b"")
    monkeypatch.chdir(work)
    ctx = parse(example)
    assert ctx.command_path.split() == shlex.split(example)[: len(ctx.command_path.split())]


def test_parse_refuses_what_click_refuses():
    parse("fstore train svm --C 0.1,1")
    for bad in ("fstore train svm --no-such-option", "fstore build --provider gpu", "fstore nope"):
        with pytest.raises(click.UsageError):
            parse(bad)


# --------------------------------------------------------------------------- README and docs/


def test_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date: measurements go in docs/"
    assert not re.search(r"\bload(?: average)? \d", text), "a load average: docs/performance.md"
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "a commit hash"
    outside = [line for line in text.splitlines() if "../" in line]
    assert len(outside) == 1 and outside[0].startswith("python3 -m venv .venv"), (
        "paths outside the repository only in the set-up command"
    )


def _links(page: Path) -> list[Path]:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
    return [(page.parent / t).resolve() for t in targets if "://" not in t]


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_links_between_pages_resolve(page):
    links = _links(page)
    assert links or page.name == "cli.md"
    for target in links:
        assert target.exists(), f"{page.name} links to {target}"


def test_readme_links_every_page_of_docs():
    linked = set(_links(README))
    for page in DOCS.glob("*.md"):
        assert page.resolve() in linked, f"README.md does not link {page.name}"


# --------------------------------------------------------------------------- package data


def test_every_data_file_of_the_package_is_declared():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11's")
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    package_root = REPO / "fstore"
    data = [
        p
        for p in package_root.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data, "the package has data files (the ImageNet class names at least)"
    for path in data:
        package = ".".join(path.parent.relative_to(REPO).parts)
        patterns = declared.get(package, [])
        assert any(path.match(pattern) for pattern in patterns), (
            f"{path.relative_to(REPO)} is not in pyproject.toml's package-data for {package}"
        )


def test_imagenet_names_are_read_from_package_data():
    from fstore.export.imagenet_classes import IMAGENET_CLASSES

    names = (REPO / "fstore" / "export" / "imagenet_classes.txt").read_text().splitlines()
    assert IMAGENET_CLASSES == tuple(names)
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[281], names[999]) == ("tench", "tabby", "toilet tissue")
