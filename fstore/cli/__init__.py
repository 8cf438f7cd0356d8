"""The ``fstore`` command line: each command parses options, calls one library function, prints.

Heavy libraries (torch, onnxruntime, h5py, scikit-learn) are imported inside the commands, so
``fstore --help`` is instant. Errors a user can fix (``FstoreError``) become one line on stderr
and exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fstore import __version__
from fstore.cli.options import (
    CommaList,
    FstoreGroup,
    precision_options,
    preprocessing_for,
    provider_choice,
    seed_option,
    store_option,
    use_stderr_logging,
    weights_option,
    weights_source,
)
from fstore.export.layers import LAYER_NAMES
from fstore.export.precision import AUTO
from fstore.images.reader import MAX_IMAGE_BYTES
from fstore.pipeline.read import POOLS
from fstore.runtime.metadata import PRECISIONS


@click.group(cls=FstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fstore")
def cli() -> None:
    """fstore: VGG16 features through ONNX Runtime into an HDF5 store, and classifiers on them.

    Layers: {layers}.

    Examples:

    \b
      fstore build ../shared/data/scene15 --layer fc7 --weights random --seed 0
      fstore info
      fstore train svm --C 0.1,1,10
      fstore bench --synthetic 8 --batch-sizes 4 --weights random
    """


# the layer table's names, from its one home, before the examples that end every --help
cli.help = (cli.help or "").format(layers=", ".join(LAYER_NAMES))


@cli.command()
@click.option(
    "--layers",
    required=True,
    type=CommaList(str),
    help="Comma-separated layers to output, e.g. fc7 or fc7,pool5.",
)
@weights_option
@seed_option
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@click.option(
    "--input-size",
    default=224,
    show_default=True,
    type=int,
    help="Input side in pixels (the centre crop); resize is 256/224 of it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the model (it is also kept in the cache).",
)
@click.option("--no-cache", is_flag=True, help="Export again even if the cache holds the model.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="int8: static quantization for CPU (calibrated on --calibration); "
    "fp16: for CUDA (uint8 pixels in, float32 features out).",
)
@precision_options("generated pictures")
def export(
    layers: tuple[str, ...],
    weights: str,
    seed: int,
    opset: int,
    input_size: int,
    output: Path | None,
    no_cache: bool,
    precision: str,
    calibration: Path | None,
    calibration_count: int,
    fidelity_images: Path | None,
) -> None:
    """Export VGG16 truncated at LAYERS to ONNX and verify it against eager PyTorch.

    Examples:

    \b
      # fc7, random weights (no download), a copy beside the cached one
      fstore export --layers fc7 --weights random --seed 0 -o vgg16-fc7.onnx
      # fc7 and pool5 with torchvision's ImageNet weights (downloads them)
      fstore export --layers fc7,pool5 --weights imagenet -o vgg16-fc7-pool5.onnx
      # int8 for the CPU, calibrated on 64 training images; fidelity printed
      fstore export --layers fc7 --weights random --precision int8 \\
          --calibration ../shared/data/scene15/train
    """
    from fstore.export.onnx_export import export as run_export

    use_stderr_logging()
    preprocessing = preprocessing_for(input_size)
    result = run_export(
        layers,
        weights_source(weights, seed),
        opset=opset,
        output=output,
        preprocessing=preprocessing,
        use_cache=not no_cache,
        precision=precision,
        calibration=calibration,
        calibration_count=calibration_count,
    )
    size_mb = result.size_bytes / 2**20
    how = "cached" if result.from_cache else f"exported in {result.seconds:.1f} s"
    click.echo(f"{result.path} ({size_mb:.1f} MiB, {how}; outputs {', '.join(result.info.layers)})")
    if precision != "fp32":
        from fstore.benchmarks.fidelity import fidelity_report

        for line in fidelity_report(result, fidelity_images).lines():
            click.echo(line)


@cli.command()
@click.option(
    "--weights",
    default=None,
    help="Count parameters from real weights ('imagenet', 'random' or PATH) "
    "instead of the architecture alone.",
)
@seed_option
@click.option("--input-size", default=224, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(weights: str | None, seed: int, input_size: int, as_json: bool) -> None:
    """VGG16's layers: output shape, parameters and multiply-adds, with totals.

    Examples:

    \b
      fstore inspect
      fstore inspect --input-size 320
      fstore inspect --weights random --json
    """
    from fstore.export.inspect import inspect_vgg16

    source = weights_source(weights, seed) if weights else None
    result = inspect_vgg16(source, input_size)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"{'layer':<8} {'module':<14} {'output':>16} {'params':>13} {'MACs':>15}")
    for row in result.rows:
        shape = "x".join(map(str, row.output_shape))
        click.echo(f"{row.name:<8} {row.module:<14} {shape:>16} {row.params:>13,} {row.macs:>15,}")
    click.echo(
        f"total parameters: {result.total_params:,} "
        f"({result.fc_params_share:.1%} in fc6, fc7 and fc8)"
    )
    click.echo(
        f"multiply-adds per {input_size}x{input_size} image: {result.total_macs:,} "
        f"({result.total_macs / 1e9:.2f} GMAC)"
    )


@cli.command()
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
@click.option(
    "--size",
    type=int,
    default=None,
    help="Input size (crop) for a --model without fstore metadata.",
)
@click.option(
    "--resize",
    type=int,
    default=None,
    help="Short side before the crop (default 256/224 of --size).",
)
@click.option(
    "--mean",
    type=CommaList(float, length=3),
    default=None,
    help="Normalisation mean, e.g. 0.485,0.456,0.406.",
)
@click.option(
    "--std",
    type=CommaList(float, length=3),
    default=None,
    help="Normalisation std, e.g. 0.229,0.224,0.225.",
)
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
    from fstore.cli.store import stop_on_signals
    from fstore.pipeline.model import build as run_build

    config = _build_config(images, options)
    use_stderr_logging(quiet)
    try:
        with stop_on_signals():  # SIGTERM and SIGHUP stop a build as Ctrl-C does
            report = run_build(config, progress=False if quiet else None)
    except KeyboardInterrupt as exc:
        raise click.ClickException(
            f"interrupted{f' by {exc}' if str(exc) else ''}: every finished shard of "
            f"{config.store} is committed; run the same fstore build to resume"
        ) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_build_report(report)


def _build_config(images: Path | None, o: dict):
    """The library's ``BuildConfig`` from the ``build`` command's options."""
    from fstore.export.layers import parse_layers
    from fstore.images.discover import SplitSpec
    from fstore.images.preprocess import for_options
    from fstore.images.views import parse_views
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.ray_engine import RayOptions
    from fstore.store import default_store_path

    names = tuple(name for item in o["layers"] for name in item)
    if names and o["model"] is None:
        names = tuple(layer.name for layer in parse_layers(names))
    per_class = o["train_per_class"]
    return BuildConfig(
        store=o["store"] or default_store_path(),
        images=images,
        layers=names or None,
        weights=weights_source(o["weights"], o["seed"]) if o["weights"] else None,
        model=o["model"],
        preprocessing=for_options(o["size"], o["resize"], o["mean"], o["std"]),
        provider=o["provider"],
        batch_size=o["batch_size"],
        workers=o["workers"],
        pool=o["pool"],
        shard_size=o["shard_size"],
        dtype="float16" if o["float16"] else "float32",
        split=SplitSpec("random", per_class, o["split_seed"]) if per_class else None,
        threads=o["threads"],
        engine=o["engine"],
        precision=o["precision"],
        ray=RayOptions(
            address=o["address"],
            num_workers=o["num_workers"],
            cpus_per_worker=o["cpus_per_worker"],
            gpus_per_worker=o["gpus_per_worker"],
            workers_write=o["workers_write"],
        ),
        decode=o["decode"],
        views=parse_views(o["views"] or ""),
        max_image_bytes=o["max_image_bytes"],
    )


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


@cli.command()
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
    from dataclasses import asdict

    from fstore.fsutil import printable
    from fstore.store import default_store_path, store_info

    result = store_info(store or default_store_path())
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
        return
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


from fstore.cli.bench import bench  # noqa: E402
from fstore.cli.classifiers import classify, study, train, zeroshot  # noqa: E402
from fstore.cli.inspection import activations, predict  # noqa: E402

for _command in (train, study, zeroshot, classify, predict, activations, bench):
    cli.add_command(_command)
from fstore.cli.report import report  # noqa: E402, I001
from fstore.cli.store import compact, verify  # noqa: E402

for _command in (report, verify, compact):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fstore")


if __name__ == "__main__":
    sys.exit(main())
