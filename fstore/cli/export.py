"""``fstore export`` and ``fstore inspect``: the network as ONNX, and its layers.

Each command parses its options, calls one library function of :mod:`fstore.export`, then
prints what comes back. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fstore.cli.options import (
    CommaList,
    FstoreCommand,
    input_size_option,
    precision_options,
    preprocessing_for,
    seed_option,
    use_stderr_logging,
    weights_option,
    weights_source,
)
from fstore.runtime.metadata import PRECISIONS


@click.command(cls=FstoreCommand)
@click.option(
    "--layers",
    required=True,
    type=CommaList(str),
    help="Comma-separated layers to output, e.g. fc7 or fc7,pool5.",
)
@weights_option
@seed_option
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@input_size_option
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
        from fstore.classifiers.fidelity import fidelity_report

        for line in fidelity_report(result, fidelity_images).lines():
            click.echo(line)


@click.command(cls=FstoreCommand)
@click.option(
    "--weights",
    default=None,
    help="Count parameters from real weights ('imagenet', 'random' or PATH) "
    "instead of the architecture alone.",
)
@seed_option
@input_size_option
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
