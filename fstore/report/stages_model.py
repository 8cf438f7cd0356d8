"""Report stages about the network itself: its layers, sample predictions, activation maps,
and the fidelity of its int8 and fp16 variants."""

from __future__ import annotations

import logging
from pathlib import Path

from fstore.errors import FstoreError
from fstore.images.discover import SplitSpec
from fstore.report.context import Context

logger = logging.getLogger(__name__)
THUMBNAIL = 160


def network(ctx: Context, folder: Path) -> dict:
    """VGG16: per-layer parameters, total and fc share; a model: outputs and sizes."""
    from fstore.inspection.network import onnx_summary

    config = ctx.config
    if config.model is None:
        from fstore.export.inspect import inspect_vgg16

        table = inspect_vgg16(None, config.input_size).to_dict()  # counts from the layer table
        return {"kind": "vgg16", **table}
    shapes = {k: tuple(v) for k, v in ctx.manifest.shapes.items()}
    return {"kind": "onnx", **onnx_summary(config.model, shapes)}


def _predictor(ctx: Context):
    from fstore.inspection.prediction import Predictor

    config = ctx.config
    if config.model is None:
        return Predictor.for_weights(
            config.vgg16_weights, config.vgg16_preprocessing(), config.provider
        )
    return Predictor.load(config.model, config.provider, preprocessing=ctx.preprocessing)


def _thumbnail(path: Path, ctx: Context, out: Path) -> str:
    """The network's view of the image (resized, centre-cropped), saved small as PNG."""
    from PIL import Image

    from fstore.inspection.featuremaps import read_image

    cropped, _ = read_image(path, ctx.preprocessing)
    picture = Image.fromarray(cropped)
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    picture.save(out)
    return out.name


def predictions(ctx: Context, folder: Path) -> dict:
    """Top-5 classes of the sample images (one test image per class), with thumbnails."""
    from fstore.inspection.prediction import predict

    try:
        predictor = _predictor(ctx)
    except FstoreError as exc:  # a model without a class output: say so in the page
        return {"available": False, "reason": str(exc), "images": []}
    paths = ctx.sample_images()
    report = predict(paths, predictor, top=5)
    rows = []
    for i, item in enumerate(report.predictions):
        rows.append(
            {
                "key": str(item.path.relative_to(ctx.image_root)),
                "thumbnail": _thumbnail(item.path, ctx, folder / f"sample{i}.png"),
                "top": [vars(score) for score in item.top],
            }
        )
    return {
        "available": True,
        "model": str(report.model),
        "images": rows,
        "figures": {f"sample{i}": r["thumbnail"] for i, r in enumerate(rows)},
    }


def activations(ctx: Context, folder: Path) -> dict:
    """Feature maps of the first convolution for the first sample image."""
    from fstore.inspection import featuremaps
    from fstore.inspection.figures import activation_figure, save_figure

    config = ctx.config
    paths = ctx.sample_images()
    if not paths:
        return {"available": False, "reason": "no image to draw", "figures": {}}
    if config.model is None:
        grid = featuremaps.activations(
            paths[0],
            "conv1_1",
            weights=config.vgg16_weights,
            preprocessing=config.vgg16_preprocessing(),
            provider=config.provider,
        )
        how = "VGG16's conv1_1 after its ReLU"
    else:
        grid = featuremaps.first_conv_activations(
            paths[0], config.model, ctx.preprocessing, workdir=folder, provider=config.provider
        )
        (folder / f"{Path(config.model).stem}-conv1.onnx").unlink(missing_ok=True)
        how = (
            "the model's first Conv node, added as a graph output; its output before any "
            "activation applied by a later node"
        )
    save_figure(activation_figure(grid), folder / "activations.png")
    return {
        "available": True,
        "image": str(paths[0].relative_to(ctx.image_root)),
        "layer": grid.layer,
        "how": how,
        "channels": grid.channels,
        "map_shape": list(grid.maps.shape[1:]),
        "figures": {"maps": "activations.png"},
    }


def _variant_store(ctx: Context, precision: str, folder: Path) -> Path:
    """A store of the main layer computed by the ``precision`` variant of the model."""
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    config = ctx.config
    store = folder / f"{precision}.h5"
    options = dict(
        store=store,
        images=ctx.image_root,
        layers=(ctx.main_layer,),
        provider=config.provider,
        batch_size=config.batch_size,
        threads=config.threads,
        split=SplitSpec(**ctx.manifest.split),
    )
    if config.model is None:
        build_store(
            BuildConfig(
                weights=config.vgg16_weights,
                preprocessing=config.vgg16_preprocessing(),
                precision=precision,
                **options,
            )
        )
        return store
    from fstore.export.calibration import choose_images
    from fstore.export.int8 import quantize_int8
    from fstore.export.precision import convert_fp16

    variant = folder / f"{precision}.onnx"
    if precision == "int8":
        chosen = choose_images(ctx.image_root, config.calibration_count, seed=config.seed)
        quantize_int8(
            config.model,
            variant,
            chosen,
            config.calibration_count,
            ctx.preprocessing,
            seed=config.seed,
        )
    else:
        convert_fp16(config.model, variant)
    build_store(BuildConfig(model=variant, preprocessing=ctx.preprocessing, **options))
    return store


def precision(ctx: Context, folder: Path) -> dict:
    """Per variant: SVM test accuracy beside fp32's (same options) and feature cosine."""
    from fstore.classifiers.fidelity import compare_variant
    from fstore.report.stages_classifiers import svm_options
    from fstore.store import load_features

    base = ctx.features
    rows = {}
    for name in ctx.config.precisions:
        logger.info(f"  {name}: features of {len(base.keys)} images with the {name} model")
        variant = load_features(_variant_store(ctx, name, folder), ctx.main_layer)
        fp32 = ctx.results["svm"]["svm"]["accuracy_mean"]  # the svm stage's, same options
        rows[name] = compare_variant(base, variant, svm_options(ctx), fp32_accuracy=fp32)
        for leftover in folder.glob(f"{name}.h5*"):
            _remove(leftover)
    return {"layer": ctx.main_layer, "variants": rows}


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
