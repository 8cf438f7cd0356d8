"""``fstore neighbors``, ``index``, ``duplicates``, ``audit`` and ``map``: each parses options,
calls one function of :mod:`fstore.quality` and prints what comes back (``--json``: its data,
keyed by the store's keys). Defaults are the option classes' own; nothing heavy (faiss,
cleanlab, scikit-learn, OpenCV) is imported at module level.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fstore.cli.options import FstoreCommand, store_option
from fstore.quality.audit import AuditOptions
from fstore.quality.duplicates import DuplicateOptions
from fstore.quality.index import FLAT_BELOW, KINDS, IndexOptions

_layer = click.option("--layer", default=None, help="Layer to use (default: the only one, or fc7).")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _store(store: Path | None) -> Path:
    from fstore.store import default_store_path

    return store or default_store_path()


@click.command(cls=FstoreCommand)
@click.argument("query", nargs=-1, required=True)
@store_option
@_layer
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="Neighbours.")
@click.option("--index", "use_index", is_flag=True, help="Search the index of fstore index.")
@_json
def neighbors(query, store, layer, k, use_index, as_json) -> None:
    """The k stored images nearest to each QUERY (cosine similarity).

    QUERY is a key of the store (an image path relative to its folder, as fstore info lists
    them) or an image file or folder; a key wins over a path of the same name. New images go
    through the store's own model and preprocessing. The search is exact and streams the
    store shard by shard; --index uses the approximate index instead.

    Examples:

    \b
      fstore neighbors test/bedroom/image_0003.jpg --store lite1.h5 --layer pooled
      fstore neighbors photo.jpg -k 5 --json
      fstore neighbors test/bedroom/image_0003.jpg --index
    """
    from fstore.quality.neighbors import neighbors as search

    result = search(_store(store), list(query), layer=layer, k=k, use_index=use_index)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for q in result.results:
        click.echo(f"{q.query} ({'key' if q.is_key else 'image'}, {result.layer}, {result.method})")
        for n in q.neighbors:
            click.echo(
                f"  {n.rank:>3}  {n.similarity:.4f}  {n.split or '-':<5}  {n.label:<14} {n.key}"
            )


@click.command(cls=FstoreCommand)
@store_option
@_layer
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=IndexOptions.kind,
    show_default=True,
    help=f"faiss index (auto: flat below {FLAT_BELOW:,} rows, else ivf-sq8).",
)
@click.option(
    "--nprobe",
    default=IndexOptions.nprobe,
    show_default=True,
    type=click.IntRange(min=1),
    help="IVF cells searched per query.",
)
@click.option(
    "--rerank",
    default=IndexOptions.rerank,
    show_default=True,
    type=click.IntRange(min=0),
    help="Candidates re-scored with the store's exact features (0: none).",
)
@_json
def index(store, layer, kind, nprobe, rerank, as_json) -> None:
    """Build the approximate nearest-neighbour index beside the store, or extend it.

    The index records the key and sha256 of each row it covers. Run again after a build:
    new images are added; if images changed or left the store, it is built again. A search
    through a stale index is refused.

    Examples:

    \b
      fstore index --store lite1.h5 --layer pooled
      fstore index --kind ivf-sq8 --nprobe 64 --rerank 100
    """  # fmt: skip
    from dataclasses import asdict

    from fstore.quality.index import build_index

    options = IndexOptions(kind=kind, nprobe=nprobe, rerank=rerank)
    report = build_index(_store(store), layer, options)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    click.echo(
        f"{report.action}: {report.kind} index of {report.layer}, {report.rows} rows "
        f"({report.added} added) in {report.seconds:.1f} s: {report.path}"
    )


@click.command(cls=FstoreCommand)
@store_option
@_layer
@click.option(
    "-k",
    default=DuplicateOptions.k,
    show_default=True,
    type=click.IntRange(min=1),
    help="Neighbours of each image taken as candidates.",
)
@click.option(
    "--min-similarity",
    default=DuplicateOptions.min_similarity,
    show_default=True,
    type=float,
    help="Candidates' least cosine similarity.",
)
@click.option("--no-verify", is_flag=True, help="Count every candidate, unchecked on the images.")
@click.option("--index", "use_index", is_flag=True, help="Candidates from fstore index's index.")
@click.option(
    "--nprobe",
    default=DuplicateOptions.nprobe,
    type=click.IntRange(min=0),
    help="With --index: IVF cells searched per image (default: the index's own). Fewer is "
    "faster and can miss a copy that fell into another cell.",
)
@_json
def duplicates(store, layer, k, min_similarity, no_verify, use_index, nprobe, as_json) -> None:
    """Exact copies (same sha256) and near-duplicates, in labelled clusters.

    Candidates are each image's nearest neighbours; each candidate pair is then verified on
    its images (ORB keypoints, a RANSAC similarity, pixel agreement). Labels: within-train,
    within-test, leak (train and test), conflict (different classes).

    Examples:

    \b
      fstore duplicates --store lite1.h5 --layer pooled
      fstore duplicates --json
      # a large store, after fstore index: 4 cells of its index a row
      fstore duplicates --index --nprobe 4
    """  # fmt: skip
    from fstore.quality.duplicates import duplicates as find

    options = DuplicateOptions(k, min_similarity, not no_verify, use_index, nprobe=nprobe)
    result = find(_store(store), layer, options)
    if as_json:
        click.echo(
            json.dumps(
                {**result.to_dict(), "leaked_test_keys": result.leaked_test_keys()}, indent=2
            )
        )
        return
    for cluster in result.clusters:
        kind = "exact" if cluster.exact else "near"
        click.echo(f"{', '.join(cluster.labels)} ({kind}): {'  '.join(cluster.keys)}")
    leaks = sum("leak" in c.labels for c in result.clusters)
    click.echo(
        f"{len(result.exact)} exact clusters, {len(result.clusters)} in all ({leaks} leaks, "
        f"{len(result.leaked_test_keys())} test images with a copy in train); "
        f"{result.candidates} candidate pairs, {result.verified} verified"
    )


@click.command(cls=FstoreCommand)
@store_option
@_layer
@click.option(
    "--folds",
    default=AuditOptions.folds,
    show_default=True,
    type=click.IntRange(min=2),
    help="k of k-fold.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test", "all"]),
    default=AuditOptions.split,
    show_default=True,
    help="Rows audited.",
)
@click.option(
    "--top",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rows printed (all with --json).",
)
@_json
def audit(store, layer, folds, split, top, as_json) -> None:
    """Suspected label errors: out-of-fold logistic regression, then cleanlab.

    Prints rank, key, given class, suggested class and score (low: suspicious).

    Examples:

    \b
      fstore audit --store lite1.h5 --layer pooled
      fstore audit --folds 10 --top 50 --json
    """  # fmt: skip
    from fstore.quality.audit import audit as run_audit

    result = run_audit(_store(store), layer, AuditOptions(folds=folds, split=split))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for i in result.issues[:top]:
        click.echo(f"{i.rank:>4}  {i.score:.4f}  {i.given:<14} -> {i.suggested:<14} {i.key}")
    click.echo(f"{len(result.issues)} suspected label errors among {len(result.keys)} images")


@click.command("map", cls=FstoreCommand)
@store_option
@_layer
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("map.png"),
    show_default=True,
    help="PNG to draw.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="t-SNE's seed.")
@click.option(
    "--no-marks",
    is_flag=True,
    help="Do not mark duplicates and suspected label errors (they cost a duplicates and an "
    "audit run the first time; the results are cached beside the store).",
)
@_json
def map_(store, layer, output, seed, no_marks, as_json) -> None:
    """A 2-D t-SNE map of a layer, coloured by class, drawn as a PNG, with the duplicates
    (circles) and suspected label errors (crosses) marked.

    Examples:

    \b
      fstore map --store lite1.h5 --layer pooled -o map.png
      fstore map --no-marks
    """  # fmt: skip
    from fstore.quality.map import layer_map, marks

    marked = {} if no_marks else marks(_store(store), layer, warn=lambda t: click.echo(t, err=True))
    result = layer_map(_store(store), layer, out=output, marked=marked, seed=seed)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"{len(result.keys)} images mapped in {result.seconds:.1f} s: {result.png}")
