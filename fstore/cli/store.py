"""``fstore info``, ``fstore verify`` and ``fstore compact``: each parses options, calls one
library function of :mod:`fstore.store` (``store_info``, ``verify``, ``compact``), then prints
what comes back. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from fstore.cli.options import FstoreCommand, echo_json, store_option


def _store(store: Path | None) -> Path:
    from fstore.store import default_store_path

    return store or default_store_path()


def _folder_keys(store: Path):
    """The keys of the store's image folder, for a catalog rebuilt from its shards; None where
    the store has no folder (written from arrays) or the folder is gone."""
    from fstore.images.discover import discover
    from fstore.store import read_manifest

    image_root = read_manifest(store, required=True).image_root
    if not image_root or not Path(image_root).is_dir():  # Path("") would be the working folder
        return None
    return set(discover(Path(image_root)).keys)


@click.command(cls=FstoreCommand)
@store_option
@click.option("--errors", "show_errors", is_flag=True, help="List every bad image and why.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(store: Path | None, show_errors: bool, as_json: bool) -> None:
    """Images, classes, splits, layers, provenance, errors and size of a store.

    Examples:

    \b
      fstore info
      fstore info --errors
      fstore info --store lite1.h5 --json
    """

    from fstore.fsutil import printable
    from fstore.store import default_store_path, store_info

    result = store_info(store or default_store_path())
    if as_json:
        return echo_json(result)
    click.echo(
        f"store:      {result.path} ({result.size_bytes / 2**20:.1f} MiB, "
        f"{result.shards} shard files, {result.dtype})"
    )
    if result.incomplete:
        click.echo(result.incomplete)
    if result.stale_view:
        click.echo(f"warning: {result.stale_view}", err=True)
    click.echo(f"images:     {result.images} from {result.image_root}")
    click.echo(
        f"classes:    {len(result.classes)}: "
        + printable(", ".join(f"{c} ({n})" for c, n in result.class_counts.items()))
    )
    click.echo("splits:     " + ", ".join(f"{k} {v}" for k, v in result.splits.items()))
    for layer, meta in result.layers.items():
        shape = "x".join(map(str, meta["shape"]))
        click.echo(f"layer:      {layer} {shape} ({meta['dim']} values per image)")
    for key in (
        "weights_origin",
        "model_sha256",
        "precision",
        "provider",
        "onnxruntime_version",
        "fstore_version",
    ):
        if key in result.provenance:
            click.echo(f"{key + ':':<11} {result.provenance[key]}")
    for failed in result.failed_shards:
        click.echo(
            f"failed:     shard {failed['shard']} ({failed['images']} images): "
            f"{failed['reason']}; the next build retries it"
        )
    bad = [e for e in result.errors if not e["stored"]]
    click.echo(
        f"errors:     {len(bad)} skipped, {len(result.errors) - len(bad)} stored with a warning"
    )
    if show_errors:
        for e in result.errors:
            line = f"  {e['key']}: {e['reason']}" + (" (stored)" if e["stored"] else "")
            click.echo(printable(line))


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
        return echo_json(report)
    click.echo(
        f"{report.files_before} files -> {report.files_after} ({report.segments_written} "
        f"segments written, {report.rows_copied} rows copied) in {report.seconds:.1f} s"
    )
