"""``fstore predict`` and ``fstore activations``: each parses options, calls one library function
of :mod:`fstore.inspection`, then prints or draws what comes back.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fstore.cli.options import (
    FstoreCommand,
    echo_err,
    input_size_option,
    preprocessing_for,
    preprocessing_options,
    provider_option,
    seed_option,
    use_stderr_logging,
    weights_option,
    weights_source,
)

if TYPE_CHECKING:
    from fstore.images.preprocess import PreprocessingFlags

model_option = click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An ONNX model to use instead of --weights: an fstore export, or any model with "
    "--size/--resize/--mean/--std.",
)


@click.command(cls=FstoreCommand)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--top",
    default=5,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many classes to list per image.",
)
@weights_option
@seed_option
@model_option
@preprocessing_options
@click.option(
    "--classes",
    "classes_spec",
    default=None,
    help="Class names of the output: 'imagenet' (built in) or a file, one name a line "
    "[default: the model's, or imagenet for a 1000-way output].",
)
@input_size_option
@provider_option
@click.option(
    "--batch-size",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per ONNX Runtime run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (bad files included).")
def predict(
    images: tuple[Path, ...],
    top: int,
    weights: str,
    seed: int,
    model: Path | None,
    preprocessing: PreprocessingFlags | None,
    classes_spec: str | None,
    input_size: int,
    provider: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """ImageNet top-k classes of each IMAGE (folders are walked for image files).

    Runs the full VGG16 (logits, softmax) through ONNX Runtime, or a --model: an fstore export
    (class names from its metadata) or any ONNX model with a 1000-way output (logits, prob or
    its only output; give its preprocessing and --classes). Bad files are reported one by one
    and the rest predicted; the exit status is 0 when at least one image was predicted.

    Examples:

    \b
      # EfficientNet-Lite1 annotated by fstore export --onnx (ImageNet's class names are
      # built in)
      fstore predict ../shared/data/scene15/test/kitchen/image_0002.jpg --model lite1.onnx
      # a bare ONNX model: give its preprocessing
      fstore predict ../shared/data/scene15/test/kitchen/image_0002.jpg \\
          --model ../shared/models/efficientnet_lite1.onnx --size 240 \\
          --resize 274 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
      # VGG16 with torchvision's ImageNet weights (downloads them), a folder
      fstore predict ../shared/data/scene15/test/coast --top 3
    """
    from fstore.inspection.prediction import Predictor, class_names
    from fstore.inspection.prediction import predict as run_predict

    if model is not None:
        predictor = Predictor.load(
            model,
            provider,
            classes=class_names(classes_spec),
            preprocessing=preprocessing.standalone() if preprocessing else None,
        )
    else:
        use_stderr_logging()  # the export's progress, on first use
        predictor = Predictor.for_weights(
            weights_source(weights, seed), preprocessing_for(input_size), provider
        )
    report = run_predict(images, predictor, top=top, batch_size=batch_size)
    for failure in report.failures:
        echo_err(f"skipped {failure.path}: {failure.reason}")
    for prediction in report.predictions:
        if prediction.warning:
            echo_err(f"warning: {prediction.path}: {prediction.warning}")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for prediction in report.predictions:
            click.echo(str(prediction.path))
            for score in prediction.top:
                click.echo(
                    f"  {score.rank:>2}. {score.probability:8.3%}  "
                    f"{score.name} (class {score.index})"
                )
    echo_err(
        f"predicted {len(report.predictions)} image(s), skipped {len(report.failures)}; "
        f"model {report.model} ({report.info.weights_origin}, {report.provider})"
    )
    if not report.predictions:
        raise click.ClickException("no image could be predicted")


@click.command(cls=FstoreCommand)
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.option(
    "--layer",
    default="conv1_1",
    show_default=True,
    help="A conv or pool layer: conv1_1 … conv5_3, pool1 … pool5.",
)
@click.option(
    "--channels",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Draw the first N channels.",
)
@weights_option
@seed_option
@model_option
@input_size_option
@provider_option
@click.option(
    "--filters",
    "draw_filters",
    is_flag=True,
    help="Draw conv1_1's 64 filters as RGB tiles instead (no IMAGE needed).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Picture to write (format from the extension) "
    "[default: IMAGE-LAYER.png, or conv1_1-filters.png].",
)
def activations(
    image: Path | None,
    layer: str,
    channels: int,
    weights: str,
    seed: int,
    model: Path | None,
    input_size: int,
    provider: str,
    draw_filters: bool,
    output: Path | None,
) -> None:
    """Draw IMAGE's feature maps at a conv or pool LAYER: the input, then one tile per channel.

    Each tile is scaled to its own min and max and shown with a colour map, titled with its
    channel index.

    Examples:

    \b
      fstore activations ../shared/data/scene15/test/kitchen/image_0002.jpg \\
          --weights random -o maps.png
      fstore activations ../shared/data/scene15/test/kitchen/image_0002.jpg \\
          --layer pool2 --channels 16 --weights random
      # conv1_1's 64 filters as RGB tiles
      fstore activations --filters --weights random
    """
    from fstore.inspection.featuremaps import activations as feature_maps
    from fstore.inspection.featuremaps import filters
    from fstore.inspection.figures import activation_figure, filter_figure, save_figure

    source = None if model is not None else weights_source(weights, seed)
    use_stderr_logging()  # the export's progress, on first use
    if draw_filters:
        if image is not None:
            echo_err(f"--filters draws conv1_1's filters; {image} is not used")
        grid = filters(weights=source, model=model, preprocessing=preprocessing_for(input_size))
        output = output or Path("conv1_1-filters.png")
        save_figure(filter_figure(grid), output)
        click.echo(
            f"{output}: {len(grid.tiles)} conv1_1 filters of {grid.weights.shape[2]}x"
            f"{grid.weights.shape[3]} ({grid.weights_origin})"
        )
        return
    if image is None:
        raise click.UsageError("give an IMAGE, or --filters to draw conv1_1's filters")
    result = feature_maps(
        image,
        layer,
        weights=source,
        model=model,
        preprocessing=preprocessing_for(input_size),
        channels=channels,
        provider=provider,
    )
    output = output or Path(f"{image.stem}-{layer}.png")
    save_figure(activation_figure(result), output)
    _, height, width = result.maps.shape
    click.echo(
        f"{output}: {layer} of {image}, {result.channels} channel(s) of {height}x{width} "
        f"({result.weights_origin})"
    )
