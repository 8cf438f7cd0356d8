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
from fstore.errors import FstoreError
from fstore.export.layers import LAYER_NAMES


class FstoreGroup(click.Group):
    """Turns ``FstoreError`` into a one-line ``click.ClickException``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FstoreError as exc:
            raise click.ClickException(str(exc)) from None


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def weights_source(weights: str, seed: int):
    from fstore.export.weights import WeightsSource

    return WeightsSource.parse(weights, seed)


weights_option = click.option(
    "--weights", default="imagenet", show_default=True,
    help="'imagenet' (torchvision download), 'random' (with --seed), or PATH to a VGG16 state_dict.",
)
seed_option = click.option("--seed", default=0, show_default=True, type=int,
                           help="Seed for --weights random.")


@click.group(cls=FstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fstore")
def cli() -> None:
    """fstore: VGG16 features through ONNX Runtime into an HDF5 store, and classifiers on them.

    Layers: """


cli.help = (cli.help or "") + ", ".join(LAYER_NAMES) + "."


@cli.command()
@click.option("--layers", required=True,
              help="Comma-separated layers to output, e.g. fc7 or fc7,pool5.")
@weights_option
@seed_option
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@click.option("--input-size", default=224, show_default=True, type=int,
              help="Input side in pixels (the centre crop); resize is 256/224 of it.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write the model (it is also kept in the cache).")
@click.option("--no-cache", is_flag=True, help="Export again even if the cache holds the model.")
def export(layers: str, weights: str, seed: int, opset: int, input_size: int,
           output: Path | None, no_cache: bool) -> None:
    """Export VGG16 truncated at LAYERS to ONNX and verify it against eager PyTorch."""
    from fstore.export.onnx_export import export as run_export
    from fstore.featurestore.preprocess import Preprocessing

    preprocessing = Preprocessing(resize=round(input_size * 256 / 224), crop=input_size)
    result = run_export(layers, weights_source(weights, seed), opset=opset, output=output,
                        preprocessing=preprocessing, use_cache=not no_cache, log=echo_err)
    size_mb = result.size_bytes / 2**20
    how = "cached" if result.from_cache else f"exported in {result.seconds:.1f} s"
    click.echo(f"{result.path} ({size_mb:.1f} MiB, {how}; outputs {', '.join(result.info.layers)})")


@cli.command()
@click.option("--weights", default=None,
              help="Count parameters from real weights ('imagenet', 'random' or PATH) "
                   "instead of the architecture alone.")
@seed_option
@click.option("--input-size", default=224, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(weights: str | None, seed: int, input_size: int, as_json: bool) -> None:
    """VGG16's layers: output shape, parameters and multiply-adds, with totals."""
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
    click.echo(f"total parameters: {result.total_params:,} "
               f"({result.fc_params_share:.1%} in fc6, fc7 and fc8)")
    click.echo(f"multiply-adds per {input_size}x{input_size} image: {result.total_macs:,} "
               f"({result.total_macs / 1e9:.2f} GMAC)")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fstore")


if __name__ == "__main__":
    sys.exit(main())
