"""docs/cli.md from the click command tree: every command's ``--help``, 80 columns wide.

    python scripts/cli_docs.py > docs/cli.md    # write it
    python scripts/cli_docs.py --check          # exit status 1 when docs/cli.md differs

``tests/test_docs.py`` runs the same comparison, so a change to an option or a docstring that
is not followed by a regenerated page fails the suite.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from fstore.cli import cli

#: The width of the terminal the page shows; fixed, so the page does not depend on who runs it.
WIDTH = 80
CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

HEADER = """\
# Command line reference

Every `fstore` command's `--help`, as an 80-column terminal shows it. This page is generated:
`python scripts/cli_docs.py > docs/cli.md` writes it, and `tests/test_docs.py` fails when it
differs from what the commands print. Edit the commands' docstrings and options, not this page.

User errors print one line (`Error: ...`) and exit with status 1. Environment:
`FSTORE_STORE` (the default store, else `./fstore.h5`), `FSTORE_CACHE` (exported models,
default `~/.cache/fstore`).
"""


def contexts(group: click.Group = cli, name: str = "fstore") -> Iterator[click.Context]:
    """A context for every command of the tree, the group before its commands, in the order
    ``--help`` lists them."""
    root = click.Context(group, info_name=name, terminal_width=WIDTH, max_content_width=WIDTH)
    yield from _walk(root)


def _walk(ctx: click.Context) -> Iterator[click.Context]:
    yield ctx
    command = ctx.command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            child = command.get_command(ctx, name)
            yield from _walk(click.Context(child, parent=ctx, info_name=name))


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


def render() -> str:
    """The whole page: header, one line per command, then each command's help."""
    every = list(contexts())
    index = [
        f"- [`{ctx.command_path}`](#{_anchor(ctx.command_path)}): "
        f"{ctx.command.get_short_help_str(limit=200)}"
        for ctx in every
    ]
    sections = [
        f"## {ctx.command_path}\n\n```text\n{ctx.command.get_help(ctx)}\n```\n" for ctx in every
    ]
    return "\n".join([HEADER, *index, "", *sections])


def main(argv: list[str]) -> int:
    page = render()
    if argv == ["--check"]:
        current = CLI_MD.read_text(encoding="utf-8") if CLI_MD.exists() else ""
        if current == page:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            page.splitlines(keepends=True),
            "docs/cli.md",
            "--help",
        )
        sys.stderr.writelines(diff)
        print(f"docs/cli.md is out of date: python scripts/cli_docs.py > {CLI_MD}", file=sys.stderr)
        return 1
    if argv:
        print(f"usage: {sys.argv[0]} [--check]", file=sys.stderr)
        return 2
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
