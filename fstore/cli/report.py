"""``fstore report``: parse the options into one :class:`~fstore.report.config.ReportConfig`, call
:func:`~fstore.report.run.run_report`, print where the page is.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

from pathlib import Path

import click

from fstore.cli.options import (
    CommaList,
    FstoreCommand,
    c_grid_option,
    cv_option,
    hidden_option,
    input_size_option,
    option_group,
    preprocessing_options,
    provider_choice,
    seed_option,
    use_stderr_logging,
    weights_option,
)
from fstore.report.config import PRECISIONS as REPORT_PRECISIONS

_folder = click.Path(path_type=Path)

#: Every option of ``fstore report`` but the model's, in --help order.
_REPORT_OPTIONS = (
    click.option("--out", type=_folder, default=Path("report"), show_default=True,
                 help="Folder for report.html, report.md, report.json and figures/."),
    click.option("--store", type=_folder, default=None,
                 help="Feature store to use or build [default: OUT/fstore.h5]."),
    click.option("--layer", "layers", type=CommaList(str), default=None,
                 help="Comma-separated layers to store [default: fc6,fc7,logits for VGG16, "
                      "every output of a --model]; the first that is not logits/prob feeds "
                      "the classifiers."),
    c_grid_option,
    cv_option,
    click.option("--pca", default=0.95, show_default=True, type=float,
                 help="Variance kept for the SVM on PCA features."),
    hidden_option("512", help="Hidden layer sizes of the MLP head (the linear head always runs)."),
    click.option("--splits", default=10, show_default=True, type=int,
                 help="K random splits (0 to skip)."),
    click.option("--per-class", default=100, show_default=True, type=int,
                 help="Training images per class in each random split."),
    click.option("--precisions", type=CommaList(click.Choice(REPORT_PRECISIONS), empty_ok=True),
                 default="int8,fp16", show_default=True,
                 help="Variants measured against fp32 (comma-separated; '' for none)."),
    click.option("--views", type=CommaList(str, empty_ok=True), default=None,
                 help="Augmented views the build stores as LAYER@VIEWS (their mean), each "
                      "tried in the Improvements section: flip, crops5, scales:240+320. "
                      "Each view is one more model pass per image: flip one, crops5 four "
                      "more. [default: flip for a new store, else the store's]"),
    click.option("--cost-images", default=240, show_default=True, type=click.IntRange(min=1),
                 help="Images of the sample each view set's build cost is measured on."),
    click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="Zero-shot mapping file [default: built-in 15-Scene]."),
    click.option("--samples", default=15, show_default=True, type=int,
                 help="Images shown with their top-5 predictions."),
    provider_choice("cpu", help="ONNX Runtime execution provider."),
    click.option("--threads", default=None, type=click.IntRange(min=1),
                 help="ONNX Runtime intra-op threads (default: all cores)."),
    click.option("--exclude-leaks", is_flag=True,
                 help="Leave the test images with a copy in the training split out of the "
                      "sections' test rows (the Data quality section gives the SVM's accuracy "
                      "with and without them either way)."),
    click.option("--no-cache", is_flag=True, help="Recompute every stage."),
    click.option("--quiet", "-q", is_flag=True, help="No progress lines."),
)  # fmt: skip
_report_options = option_group(*_REPORT_OPTIONS)

#: The network: VGG16 (its weights and input side) or any ONNX ``--model`` with its
#: preprocessing.
_model_options = option_group(
    click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="Any ONNX image model instead of VGG16."),
    preprocessing_options,
    weights_option,
    seed_option,
    input_size_option,
)  # fmt: skip


@click.command(cls=FstoreCommand)
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_model_options
@_report_options
def report(images: Path, quiet: bool, **options) -> None:
    """The whole study of IMAGES in one page: network, predictions, activation maps, SVM and
    heads, PCA, layer study, zero-shot, random splits, improvements (layer combinations, power
    scaling, augmented views), int8/fp16 fidelity, data quality (duplicates, train/test
    leakage, suspected label errors, a map), provenance.

    Builds the store if needed, caches every stage in the store's folder (a second run reuses
    them), writes OUT/report.html (self-contained), OUT/report.md and OUT/report.json.

    Examples:

    \b
      # EfficientNet-Lite1 on 15-Scene: the store, every stage, one page (lite1.onnx carries
      # its preprocessing: fstore export --onnx ../shared/models/efficientnet_lite1.onnx ...)
      fstore report ../shared/data/scene15 --out lite1-report --model lite1.onnx \\
          --layer pooled,logits
      # the same with five crops and a second scale tried as Improvements rows
      # (8 model passes per image instead of 1)
      fstore report ../shared/data/scene15 --out lite1-views --model lite1.onnx \\
          --layer pooled,logits --views flip,crops5,scales:240+320
      # VGG16 with random weights, without the random splits and precisions
      fstore report ../shared/data/scene15 --weights random --splits 0 \\
          --precisions '' --out vgg16-report
      # every accuracy without the test images copied in the training split
      fstore report ../shared/data/scene15 --out lite1-report --exclude-leaks \\
          --model lite1.onnx --layer pooled,logits
    """
    from fstore.report.config import ReportConfig
    from fstore.report.run import run_report

    use_stderr_logging(quiet)
    result = run_report(ReportConfig.from_options(images=images, **options))
    click.echo(
        f"{result.files['html']} ({result.seconds:.0f} s); also "
        f"{result.files['markdown']}, {result.files['json']}"
    )
