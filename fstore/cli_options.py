"""Options and small helpers shared by every ``fstore`` command module (no heavy imports)."""

from __future__ import annotations

from pathlib import Path

import click

PROVIDER_CHOICES = ("cpu", "cuda", "auto")

weights_option = click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="'imagenet' (torchvision download), 'random' (with --seed), "
    "or PATH to a VGG16 state_dict.",
)
seed_option = click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed for --weights random."
)
provider_option = click.option(
    "--provider",
    type=click.Choice(PROVIDER_CHOICES),
    default="auto",
    show_default=True,
    help="ONNX Runtime execution provider; auto uses CUDA when available.",
)
input_size_option = click.option(
    "--input-size",
    default=224,
    show_default=True,
    type=int,
    help="Input side in pixels (the centre crop); resize is 256/224 of it.",
)
store_option = click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="Store file. Default: $FSTORE_STORE or ./fstore.h5.",
)


def precision_options(calibration_default: str):
    """``--calibration``, ``--calibration-count`` and ``--fidelity-images`` (export and bench)."""
    folder = click.Path(path_type=Path, exists=True, file_okay=False)

    def decorate(command):
        for option in reversed((
            click.option("--calibration", type=folder, default=None,
                         help=f"Images to calibrate int8 on (default: {calibration_default})."),
            click.option("--calibration-count", default=64, show_default=True,
                         type=click.IntRange(min=1), help="Calibration images drawn."),
            click.option("--fidelity-images", type=folder, default=None,
                         help="Labelled folder: report the SVM test accuracy change vs fp32."),
        )):  # fmt: skip
            command = option(command)
        return command

    return decorate


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def weights_source(weights: str, seed: int):
    """Parse ``--weights``/``--seed`` into a ``WeightsSource``."""
    from fstore.export.weights import WeightsSource

    return WeightsSource.parse(weights, seed)


def preprocessing_for(input_size: int):
    """The standard preprocessing scaled to ``input_size`` (224 → resize 256, crop 224)."""
    from fstore.images.preprocess import Preprocessing

    return Preprocessing(resize=round(input_size * 256 / 224), crop=input_size)
