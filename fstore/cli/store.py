"""``fstore verify`` and ``fstore compact``: each parses options, calls one library function of
:mod:`fstore.store` (``verify``, ``compact``), then prints what comes back.

Registered on the main group in :mod:`fstore.cli`, whose ``FstoreGroup`` turns ``FstoreError``
into one line on stderr. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from fstore.cli.options import FstoreCommand, store_option


def _store(store: Path | None) -> Path:
    from fstore.store import default_store_path

    return store or default_store_path()


@click.command(cls=FstoreCommand)
@store_option
@click.option(
    "--repair",
    is_flag=True,
    help="Move damaged shard files aside, so the next build recomputes them.",
)
@click.option("--no-values", is_flag=True, help="Skip the NaN/Inf scan of the features.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(store: Path | None, repair: bool, no_values: bool, as_json: bool) -> None:
    """Check every shard: present, size and sha256 as recorded, row counts, no NaN or Inf.

    Exits with status 1 when something is wrong.

    Examples:

    \b
      fstore verify
      # move damaged files aside; the next build recomputes their images
      fstore verify --repair
      fstore verify --store lite1.h5 --no-values --json
    """  # fmt: skip
    from fstore.store.verify import verify as run_verify

    report = run_verify(_store(store), values=not no_values, repair=repair)
    if as_json:
        click.echo(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"damaged: {problem.file}: {problem.what}")
        for name in report.unlisted:
            click.echo(
                f"not in the catalog: {name} (left by an interrupted build; the next build "
                "deletes it)"
            )
        click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@click.command(cls=FstoreCommand)
@store_option
@click.option(
    "--segment-rows",
    default=65_536,
    show_default=True,
    type=click.IntRange(min=1),
    help="Merge small shard files into segments of at least this many rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compact(store: Path | None, segment_rows: int, as_json: bool) -> None:
    """Merge small shard files into segments (crash-safe; rows and their order unchanged), then
    refresh the view fstore.h5.

    Examples:

    \b
      fstore compact
      fstore compact --store lite1.h5 --segment-rows 4096
    """
    from fstore.store.compact import compact as run_compact

    report = run_compact(_store(store), segment_rows=segment_rows, max_small=1)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    click.echo(
        f"{report.files_before} files -> {report.files_after} ({report.segments_written} "
        f"segments written, {report.rows_copied} rows copied) in {report.seconds:.1f} s"
    )
