"""``fstore build``: parse the options into one :class:`~fstore.pipeline.config.BuildConfig`,
fill the store, print what was done.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import click

from fstore.cli.options import (
    CommaList,
    FstoreCommand,
    echo_json,
    preprocessing_options,
    provider_choice,
    seed_option,
    store_option,
    use_stderr_logging,
)
from fstore.export.precision import AUTO
from fstore.images.reader import MAX_IMAGE_BYTES
from fstore.pipeline.read import POOLS
from fstore.runtime.metadata import PRECISIONS


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


@click.command(cls=FstoreCommand)
@click.argument("images", required=False, type=click.Path(path_type=Path))
@click.option(
    "--layer",
    "layers",
    type=CommaList(str),
    multiple=True,
    help="Layer to store (repeatable, or comma-separated). Default: the store's.",
)
@provider_choice("auto", help="ONNX Runtime execution provider (tensorrt: opt-in, fp16).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="Decode workers (default: the usable cores).",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default=POOLS[0],
    show_default=True,
    help="Decode workers as threads, or as processes writing into shared memory.",
)
@click.option(
    "--decode",
    type=click.Choice(["exact", "fast"]),
    default=None,
    help="JPEG decoding: exact (torchvision's path) or fast (DCT-domain scaling). "
    "Default: the store's, else fast.",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(min=1),
    help="ONNX Runtime intra-op threads (default: all cores).",
)
@click.option(
    "--shard-size",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per shard file.",
)
@store_option
@click.option(
    "--arch",
    default=None,
    help="The network to export and run: vgg16, a torchvision name or timm:NAME "
    "(fstore inspect --arch NAME lists its layers). Default: the store's, else vgg16.",
)
@click.option(
    "--weights",
    default=None,
    help="'imagenet', 'random' (with --seed) or PATH. Default: the store's, "
    "or imagenet for a new store.",
)
@seed_option
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Any ONNX image model; its output names are the layers.",
)
@preprocessing_options
@click.option("--float16", "float16", is_flag=True, help="Store features as float16.")
@click.option(
    "--precision",
    type=click.Choice((*PRECISIONS, AUTO)),
    default=AUTO,
    show_default=True,
    help="Model precision: int8 is calibrated on IMAGES (CPU); auto is int8 on the CPU and fp16 "
    "on CUDA where the measured fidelity holds (mean cosine >= 0.999 per layer), else fp32 (a "
    "store keeps the precision it was built with).",
)
@click.option(
    "--train-per-class",
    type=click.IntRange(min=1),
    default=None,
    help="Draw a random split: N training images per class, the rest test.",
)
@click.option(
    "--split-seed", type=int, default=0, show_default=True, help="Seed of the random split."
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Compute shards here, or on Ray actors.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join: auto or ray://HOST:PORT (default: start a local one).",
)
@click.option(
    "--num-workers",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Ray actors (one ONNX Runtime session each).",
)
@click.option(
    "--cpus-per-worker",
    default=1.0,
    show_default=True,
    type=float,
    help="Ray CPUs per actor (fractions allowed).",
)
@click.option(
    "--gpus-per-worker",
    default=0.0,
    show_default=True,
    type=float,
    help="Ray GPUs per actor; > 0 runs the actors on CUDA.",
)
@click.option(
    "--workers-write",
    is_flag=True,
    help="With --engine ray: each actor writes its shard files into the store itself and this "
    "process commits only the index. Use it when the store is on storage every Ray node shares "
    "(NFS, a cluster file system) and one writer would limit the build (many GPU workers).",
)
@click.option(
    "--views",
    default=None,
    metavar="SET,...",
    help="Also store each layer L as L@SET, its mean over the views of SET: flip (the crop and "
    "its mirror), crops5 (torchvision's FiveCrop: 4 corners and centre), scales:A+B (centre "
    "crops after resizing the short side to A, B); SET-max stores the maximum instead. The model "
    "runs --batch-size times the views at once. Default: the store's.",
)
@click.option(
    "--max-image-bytes",
    default=MAX_IMAGE_BYTES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Image files larger than this are recorded as bad without being read.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def build(images: Path | None, quiet: bool, as_json: bool, **options) -> None:
    """Compute features of the images in IMAGES into the store (resumable, incremental).

    IMAGES holds <class>/<image> or train|test/<class>/<image>; once a store exists, it
    may be left out to update the store from the folder it was built from.

    Examples:

    \b
      # fc7 of 15-Scene into ./fstore.h5 (random weights: no download)
      fstore build ../shared/data/scene15 --layer fc7 --weights random --seed 0
      # again later: resume, or add the images that are new since
      fstore build
      # any ONNX image model: its output names are the layers
      fstore build ../shared/data/scene15 --store lite1.h5 \\
          --model ../shared/models/efficientnet_lite1.onnx --layer pooled,logits \\
          --size 240 --resize 274 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
      # an annotated ONNX model (fstore export --onnx) carries its preprocessing
      fstore build ../shared/data/scene15 --store lite1.h5 --model lite1.onnx --layer pooled
      # a torchvision network cut at its pre-logits features
      fstore build ../shared/data/scene15 --store resnet50.h5 --arch resnet50 \\
          --layer pooled --weights random
      # test-time views too: pooled@flip, pooled@crops5, pooled@scales:240+320
      fstore build ../shared/data/scene15 --store lite1-views.h5 \\
          --model ../shared/models/efficientnet_lite1.onnx --layer pooled \\
          --size 240 --resize 274 --views flip,crops5,scales:240+320
      # int8 on the CPU, calibrated on the build's own images
      fstore build ../shared/data/scene15 --layer fc7 --weights random \\
          --precision int8 --store fc7-int8.h5
      # the same store, its shards computed by two Ray actors
      fstore build --engine ray --num-workers 2
    """
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    config = BuildConfig.from_options(images=images, **options)
    use_stderr_logging(quiet)
    try:
        with stop_on_signals():
            report = build_store(config, progress=False if quiet else None)
    except KeyboardInterrupt as exc:
        raise click.ClickException(
            f"interrupted{f' by {exc}' if str(exc) else ''}: every finished shard of "
            f"{config.store} is committed; run the same fstore build to resume"
        ) from None
    if as_json:
        return echo_json(report.to_dict())
    _print_build_report(report)


def _print_build_report(report) -> None:
    click.echo(
        f"{report.store}: {report.images_computed} images computed, "
        f"{report.images_done_before} already stored, {report.errors} bad "
        f"({report.images_total} in the folder) on {report.provider.upper()}, {report.precision}"
    )
    if report.removed:
        images = "image" if report.removed == 1 else "images"
        click.echo(f"{report.removed} {images} no longer in the folder, dropped from the store")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} entries that are not regular files")
    if report.errors_by_reason:
        click.echo(
            "bad images: "
            + ", ".join(f"{k} {v}" for k, v in sorted(report.errors_by_reason.items()))
        )
    busy = report.decode_seconds + report.inference_seconds + report.write_seconds or 1.0
    click.echo(
        f"{report.seconds:.1f} s, {report.images_per_second:.1f} images/s; "
        f"decode {report.decode_seconds:.1f} s ({report.decode_seconds / busy:.0%}, "
        f"{report.workers} threads, {report.decode}), inference {report.inference_seconds:.1f} s "
        f"({report.inference_seconds / busy:.0%}), write {report.write_seconds:.1f} s "
        f"({report.write_seconds / busy:.0%}); peak memory {report.peak_rss_mib:.0f} MiB; "
        f"store {report.store_bytes / 2**20:.1f} MiB"
    )
    if report.view_costs:
        click.echo(
            "model cost per view set (each timed alone on the first batch): "
            + "; ".join(
                f"{name} {cost['views']} view{'s' if cost['views'] > 1 else ''} "
                f"{cost['images_per_second']:.1f} images/s"
                for name, cost in report.view_costs.items()
            )
        )
