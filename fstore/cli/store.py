"""``fstore verify`` and ``fstore compact``: each parses options, calls one library function of
:mod:`fstore.store` (``verify``, ``compact``), then prints what comes back.

Registered on the main group in :mod:`fstore.cli`, whose ``FstoreGroup`` turns ``FstoreError``
into one line on stderr. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import click

from fstore.cli.options import FstoreCommand, store_option


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM (how a batch scheduler preempts a job) and SIGHUP (a closed terminal) raise
    ``KeyboardInterrupt`` in the main thread, as Ctrl-C does: a build then stops with its
    finished shards committed and says how to resume, instead of dying silently."""

    def interrupt(signum: int, frame) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in old.items():
            signal.signal(number, handler)


def _store(store: Path | None) -> Path:
    from fstore.store import default_store_path

    return store or default_store_path()


def _folder_keys(store: Path):
    """The keys of the store's image folder, for a catalog rebuilt from its shards; None where
    the store has no folder (written from arrays) or the folder is gone."""
    from fstore.images.discover import discover
    from fstore.store import read_manifest

    root = Path(read_manifest(store, required=True).image_root or "")
    if not str(root) or not root.is_dir():
        return None
    return {item.key for item in discover(root).items}


@click.command(cls=FstoreCommand)
@store_option
@click.option(
    "--repair",
    is_flag=True,
    help="Fix what can be fixed in place: rebuild a damaged catalog from the shard files, set "
    "damaged shard files aside (the next build recomputes them), delete temporary files, "
    "rewrite the view.",
)
@click.option("--no-values", is_flag=True, help="Skip the NaN/Inf scan of the features.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(store: Path | None, repair: bool, no_values: bool, as_json: bool) -> None:
    """Check the catalog against every shard file (keys, rows, classes, splits), each file's
    size, sha256 and values, the view fstore.h5, and leftover temporary files.

    Exits with status 1, the first problem and its repair on stderr, when something is wrong.

    Examples:

    \b
      fstore verify
      # rebuild a damaged catalog, rewrite a stale view (then fstore build recomputes
      # what was set aside)
      fstore verify --repair
      fstore verify --store lite1.h5 --no-values --json
    """  # fmt: skip
    from fstore.fsutil import printable
    from fstore.store.verify import verify as run_verify

    path = _store(store)
    report = run_verify(
        path, values=not no_values, repair=repair, folder_keys=lambda: _folder_keys(path)
    )
    if as_json:
        click.echo(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        for action in report.repaired:
            click.echo(f"repaired: {action}")
        for problem in report.problems:
            click.echo(f"problem: {printable(problem.file)}: {printable(problem.what)}")
        for name in report.unlisted:
            click.echo(
                f"not in the catalog: {name} (left by an interrupted build; the next build "
                "deletes it)"
            )
        if report.ok:
            click.echo(report.summary())
    if not report.ok:
        raise click.ClickException(printable(report.summary()))


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
