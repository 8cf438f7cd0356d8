"""``fstore export`` and ``fstore inspect``: a network as ONNX, and its layers.

Each command parses its options, calls one library function of :mod:`fstore.export`, then
prints what comes back. Nothing heavy is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from fstore.cli.options import (
    CommaList,
    FstoreCommand,
    echo_json,
    precision_options,
    preprocessing_options,
    seed_option,
    use_stderr_logging,
    weights_option,
    weights_source,
)
from fstore.runtime.metadata import PRECISIONS

if TYPE_CHECKING:
    from fstore.images.preprocess import PreprocessingFlags


arch_option = click.option(
    "--arch",
    default="vgg16",
    show_default=True,
    help="The network: vgg16, a torchvision model name (resnet50, convnext_tiny, vit_b_16, ...) "
    "or timm:NAME (needs timm).",
)
#: ``--input-size`` for networks whose weights bring their own: ``None`` keeps theirs.
arch_input_size_option = click.option(
    "--input-size",
    default=None,
    type=click.IntRange(min=16),
    help="Input side in pixels (the centre crop) [default: the weights' own; VGG16 224]; "
    "resize keeps the weights' ratio.",
)


@click.command(cls=FstoreCommand)
@arch_option
@click.option(
    "--layers",
    type=CommaList(str),
    default=None,
    help="Comma-separated layers to output, as inspect lists them (fc7,pool5; layer3, pooled, "
    "logits, stage2 ...). Not with --onnx.",
)
@weights_option
@seed_option
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@arch_input_size_option
@click.option(
    "--onnx",
    "foreign",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Annotate this ONNX image model instead: a uint8 input and its preprocessing "
    "(--size/--resize/--mean/--std) in its metadata, checked against it; needs -o.",
)
@preprocessing_options
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
    arch: str,
    layers: tuple[str, ...] | None,
    weights: str,
    seed: int,
    opset: int,
    input_size: int | None,
    foreign: Path | None,
    preprocessing: PreprocessingFlags | None,
    output: Path | None,
    no_cache: bool,
    precision: str,
    calibration: Path | None,
    calibration_count: int,
    fidelity_images: Path | None,
) -> None:
    """Export a network (VGG16 by default) truncated at LAYERS to ONNX and verify it against
    eager PyTorch; or annotate an ONNX file (--onnx) so that it carries its preprocessing.

    The model's preprocessing (size, resize, crop, interpolation, mean, std) is written into
    its metadata: build, report, predict and classify read it from there.

    Examples:

    \b
      # fc7, random weights (no download), a copy beside the cached one
      fstore export --layers fc7 --weights random --seed 0 -o vgg16-fc7.onnx
      # fc7 and pool5 with torchvision's ImageNet weights (downloads them)
      fstore export --layers fc7,pool5 --weights imagenet -o vgg16-fc7-pool5.onnx
      # ResNet-50's stages and its pre-logits features, small and random
      fstore export --arch resnet50 --layers stage3,pooled --weights random --input-size 64 \\
          -o resnet50.onnx
      # int8 for the CPU, calibrated on 64 training images; fidelity printed
      fstore export --layers fc7 --weights random --precision int8 \\
          --calibration ../shared/data/scene15/train
      # EfficientNet-Lite1 from ONNX, its preprocessing carried from now on
      fstore export --onnx ../shared/models/efficientnet_lite1.onnx --size 240 --resize 274 \\
          --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -o lite1.onnx
    """
    use_stderr_logging()
    if foreign is not None:
        _annotate(foreign, preprocessing, output, layers)
        return
    if not layers:
        raise click.UsageError("give --layers (fstore inspect --arch NAME lists them), or --onnx")
    if preprocessing is not None:
        raise click.UsageError("--size/--resize/--mean/--std go with --onnx; use --input-size")
    from fstore.export.onnx_export import export as run_export

    result = run_export(
        layers,
        weights_source(weights, seed),
        arch=arch,
        opset=opset,
        output=output,
        input_size=input_size,
        use_cache=not no_cache,
        precision=precision,
        calibration=calibration,
        calibration_count=calibration_count,
    )
    size_mb = result.size_bytes / 2**20
    how = "cached" if result.from_cache else f"exported in {result.seconds:.1f} s"
    click.echo(f"{result.path} ({size_mb:.1f} MiB, {how}; outputs {', '.join(result.info.layers)})")
    if precision != "fp32":
        from fstore.classifiers.fidelity import fidelity_report

        for line in fidelity_report(result, fidelity_images).lines():
            click.echo(line)


def _annotate(foreign: Path, preprocessing, output: Path | None, layers) -> None:
    from fstore.export.annotate import annotate

    if output is None or preprocessing is None or layers:
        raise click.UsageError("--onnx needs -o and its preprocessing (--size ...), not --layers")
    result = annotate(foreign, preprocessing.standalone(), output)
    worst = max(result.errors.values()) if result.errors else 0.0
    click.echo(
        f"{result.path}: {foreign.name} with a uint8 input and its preprocessing; outputs "
        f"{', '.join(result.info.layers)}; 1 - cosine to the original at most {worst:.1e}"
    )


@click.command(cls=FstoreCommand)
@arch_option
@click.option(
    "--weights",
    default=None,
    help="Count parameters from real weights ('imagenet', 'random' or PATH) "
    "instead of the architecture alone.",
)
@seed_option
@arch_input_size_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(arch: str, weights: str | None, seed: int, input_size: int | None, as_json: bool):
    """A network's layers: output shape, parameters and multiply-adds, with totals, and the
    aliases (pooled, logits, stageN) that export and build take.

    Examples:

    \b
      fstore inspect
      fstore inspect --input-size 320
      fstore inspect --weights random --json
      fstore inspect --arch resnet50
    """
    from fstore.export.inspect import inspect_arch

    source = weights_source(weights, seed) if weights else None
    result = inspect_arch(arch, source, input_size)
    if as_json:
        return echo_json(result.to_dict())
    width = max(8, *(len(row.name) for row in result.rows))
    click.echo(f"{'layer':<{width}} {'module':<14} {'output':>16} {'params':>13} {'MACs':>15}")
    for row in result.rows:
        shape = "x".join(map(str, row.output_shape))
        click.echo(
            f"{row.name:<{width}} {row.module:<14} {shape:>16} {row.params:>13,} {row.macs:>15,}"
        )
    for alias, layer in result.aliases.items():
        click.echo(f"alias: {alias} = {layer}")
    click.echo(
        f"total parameters: {result.total_params:,} "
        f"({result.fc_params_share:.1%} in fully connected layers)"
    )
    size = result.input_size
    click.echo(
        f"multiply-adds per {size}x{size} image: {result.total_macs:,} "
        f"({result.total_macs / 1e9:.2f} GMAC)"
    )
