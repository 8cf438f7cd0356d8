"""VGG16 → ONNX, truncated at the requested layers, verified against eager PyTorch, cached.

The graph has one input (``image``: uint8 NHWC RGB pixels, dynamic batch, normalised inside by
the prefix of :mod:`fstore.runtime.prefix`) and one output per requested layer, named as in
:mod:`fstore.export.layers`. Nothing past the deepest requested layer is computed. Torch is
imported lazily: :func:`ensure_model` returns a cached model without it.

:func:`export` reads as its steps: a cached model is reused (:func:`_cached`); otherwise the
weights are loaded, the truncated module exported with its prefix (:func:`_write_onnx`) and
checked against eager PyTorch on the same pixels (:func:`_check`). int8 and fp16 are derived
from the verified fp32 model by :mod:`fstore.export.precision`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fstore import __version__
from fstore.errors import ModelError
from fstore.export import cache
from fstore.export.layers import LAYERS, Layer, parse_layers
from fstore.export.precision import (
    AUTO,
    AUTO_MIN_COSINE,
    auto_candidate,
    export_variant,
    fidelity_holds,
)
from fstore.export.result import (
    ExportResult,
    check_writable,
    deliver,
    relative_error,
    save_model,
)
from fstore.export.weights import WeightsSource, load_vgg16
from fstore.images.preprocess import Preprocessing, to_float
from fstore.runtime.metadata import (
    PRECISIONS,
    ModelInfo,
    read_metadata_props,
    read_model_info,
    write_props,
)
from fstore.runtime.prefix import IMAGE_INPUT, add_prefix

if TYPE_CHECKING:
    import torch

__all__ = [
    "PRECISIONS",
    "ExportResult",
    "ensure_model",
    "export",
    "read_metadata_props",
    "read_model_info",
    "relative_error",
    "truncated_vgg16",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
#: The input name of the exported float graph, before the prefix; the prefix's output.
INPUT_NAME = "input"
#: Tolerance of the export check: max |ORT - eager| / max |eager|, per output.
VERIFY_TOLERANCE = 1e-4


def truncated_vgg16(model: torch.nn.Module, layers: tuple[Layer, ...]) -> torch.nn.Module:
    """A module running ``model`` up to the deepest of ``layers``, returning each one's output."""
    import torch

    wanted = {layer.module: layer.name for layer in layers}
    deepest = max(layer.index for layer in layers)
    last_feature = max(
        (int(layer.module.split(".")[1]) for layer in LAYERS[: deepest + 1] if layer.is_spatial),
        default=-1,
    )
    needs_classifier = LAYERS[deepest].kind in ("fc", "logits", "prob")
    last_classifier = (
        max(int(layer.module.split(".")[1]) for layer in LAYERS[: deepest + 1]
            if layer.kind in ("fc", "logits"))
        if needs_classifier else -1
    )  # fmt: skip

    class Truncated(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = model.features[: last_feature + 1]
            self.avgpool = model.avgpool
            self.classifier = model.classifier[: last_classifier + 1]

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs: dict[str, torch.Tensor] = {}
            for i, module in enumerate(self.features):
                x = module(x)
                if f"features.{i}" in wanted:
                    outputs[wanted[f"features.{i}"]] = x
            if needs_classifier:
                x = torch.flatten(self.avgpool(x), 1)
                for i, module in enumerate(self.classifier):
                    x = module(x)
                    if f"classifier.{i}" in wanted:
                        outputs[wanted[f"classifier.{i}"]] = x
                if "softmax" in wanted:
                    outputs["prob"] = torch.softmax(x, dim=1)
            return tuple(outputs[layer.name] for layer in layers)

    return Truncated().eval()


def verify(
    path: Path,
    module: torch.nn.Module,
    layer_names: tuple[str, ...],
    preprocessing: Preprocessing,
    batch: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Run the ONNX model on random uint8 pixels and ``module`` eagerly on their float path.

    The eager input is :func:`fstore.images.preprocess.to_float` of the same pixels, so the check
    covers the prefix too. Returns per output the relative error (see :func:`relative_error`).
    """
    import onnxruntime as ort
    import torch

    side = preprocessing.crop
    pixels = np.random.default_rng(seed).integers(0, 256, (batch, side, side, 3), np.uint8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(layer_names), {IMAGE_INPUT: pixels})
    x = to_float(pixels, preprocessing)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x))
    return {name: relative_error(g, e.numpy()) for name, g, e in zip(layer_names, got, expected)}


def _class_names() -> tuple[str, ...]:
    from torchvision.models import VGG16_Weights

    return tuple(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def _write_onnx(
    module: torch.nn.Module, layers: tuple[Layer, ...], info: ModelInfo, path: Path
) -> None:
    """Export ``module`` (float NCHW input), add the uint8 prefix and the metadata, save."""
    import torch

    prep = info.preprocessing
    x = torch.zeros(2, 3, prep.crop, prep.crop)
    program = torch.onnx.export(
        module,
        (x,),
        None,
        input_names=[INPUT_NAME],
        output_names=[lay.name for lay in layers],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        opset_version=info.opset,
        dynamo=True,
        verbose=False,
    )
    model = add_prefix(program.model_proto, prep.mean, prep.std)
    for key, value in info.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "fstore", __version__
    save_model(model, path)
    write_props(path, {p.key: p.value for p in model.metadata_props})


def _model_info(
    chosen: tuple[Layer, ...], weights: WeightsSource, sha: str, opset: int, prep: Preprocessing
) -> ModelInfo:
    names = tuple(layer.name for layer in chosen)
    return ModelInfo(
        layers=names,
        shapes={layer.name: layer.output_shape(prep.crop) for layer in chosen},
        preprocessing=prep,
        weights_origin=weights.origin,
        weights_sha256=sha,
        precision="fp32",
        opset=opset,
        classes=_class_names() if {"logits", "prob"} & set(names) else None,
        fstore_version=__version__,
    )


def _cached(
    weights: WeightsSource, names: tuple[str, ...], opset: int, prep: Preprocessing
) -> ExportResult | None:
    """The fp32 model already in the cache for these weights, when their alias is known."""
    sha = cache.lookup_alias(weights.alias())
    if sha is None:
        return None
    path = cache.model_path(cache.model_key(sha, names, opset, "fp32", prep))
    if not path.is_file():
        return None
    logger.info("using cached model %s", path)
    return ExportResult(path, read_model_info(path), {}, 0.0, True)


def _check(path: Path, module, names: tuple[str, ...], prep: Preprocessing) -> dict[str, float]:
    """Verify against eager PyTorch; a model that disagrees is deleted and reported."""
    errors = verify(path, module, names, prep)
    for name, err in errors.items():
        logger.info("verified %s: max relative error vs eager PyTorch %.2e", name, err)
    bad = {n: e for n, e in errors.items() if not e <= VERIFY_TOLERANCE}
    if bad:
        path.unlink(missing_ok=True)
        raise ModelError(
            "exported model disagrees with eager PyTorch: "
            + ", ".join(f"{n} {e:.2e}" for n, e in bad.items())
            + f" (tolerance {VERIFY_TOLERANCE:.0e})"
        )
    return errors


def export_fp32(
    chosen: tuple[Layer, ...],
    weights: WeightsSource,
    opset: int,
    prep: Preprocessing,
    use_cache: bool = True,
) -> ExportResult:
    """The verified fp32 model for these layers: from the cache, or exported now."""
    names = tuple(layer.name for layer in chosen)
    hit = _cached(weights, names, opset, prep) if use_cache else None
    if hit is not None:
        return hit
    start = time.perf_counter()
    logger.info("loading VGG16 weights (%s)", weights.origin)
    model, sha = load_vgg16(weights)
    cache.record_alias(weights.alias(), sha)
    path = cache.model_path(cache.model_key(sha, names, opset, "fp32", prep))
    info = _model_info(chosen, weights, sha, opset, prep)
    module = truncated_vgg16(model, chosen)
    if not (use_cache and path.is_file()):
        logger.info("exporting %s (opset %d, fp32)", ", ".join(names), opset)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_onnx(module, chosen, info, path)
    errors = _check(path, module, names, prep)
    return ExportResult(path, info, errors, time.perf_counter() - start, False)


def export(
    layers: str | Sequence[str],
    weights: WeightsSource,
    *,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    preprocessing: Preprocessing = Preprocessing(),
    output: Path | None = None,
    use_cache: bool = True,
    calibration: Path | None = None,
    calibration_count: int = 64,
    provider: str = "cpu",
) -> ExportResult:
    """Export VGG16 truncated at ``layers`` to ONNX and verify it against eager PyTorch.

    The model lands in the cache (see :mod:`fstore.export.cache`) and, if ``output`` is given,
    is copied there. A model already cached is reused without export or torch (unless the weights
    must be loaded to learn their hash). Raises ``ModelError`` when verification fails.
    ``precision`` is ``fp32``, ``int8``, ``fp16`` or ``auto``: fp16 on ``provider`` cuda or
    tensorrt, int8 on the CPU (calibrated on ``calibration``), wherever the variant's measured
    fidelity holds, else fp32 (see :func:`fstore.export.precision.auto_candidate` and
    :func:`~fstore.export.precision.fidelity_holds`). ``calibration`` is an image folder for
    int8 ranges and variant fidelity. Progress goes to the ``fstore.export`` logger.
    """
    chosen = parse_layers(layers)
    if precision not in (*PRECISIONS, AUTO):
        raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if output is not None:
        check_writable(output)
    base = export_fp32(chosen, weights, opset, preprocessing, use_cache)
    wanted = auto_candidate(provider, calibration) if precision == AUTO else precision
    if wanted == "fp32":
        return deliver(base, output)
    variant = export_variant(
        base,
        wanted,
        calibration=calibration,
        calibration_count=calibration_count,
        use_cache=use_cache,
    )
    if precision == AUTO and not fidelity_holds(variant):
        logger.info("auto: %s fidelity below %s, using fp32", wanted, AUTO_MIN_COSINE)
        return deliver(base, output)
    if precision == AUTO:
        logger.info("auto: %s, its fidelity reaches %s on every layer", wanted, AUTO_MIN_COSINE)
    return deliver(variant, output)


def ensure_model(
    layers: str | Sequence[str],
    weights: WeightsSource,
    preprocessing: Preprocessing = Preprocessing(),
    precision: str = "fp32",
    calibration: Path | None = None,
    provider: str = "cpu",
) -> Path:
    """The cached model for these layers and weights, exporting it first if needed.

    ``calibration``: image folder an int8 model is calibrated on.
    """
    return export(
        layers,
        weights,
        preprocessing=preprocessing,
        precision=precision,
        calibration=calibration,
        provider=provider,
    ).path
