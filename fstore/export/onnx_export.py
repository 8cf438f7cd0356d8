"""A network → ONNX, truncated at the requested layers, verified against eager PyTorch, cached.

The network is VGG16 (the default, its layers named as in :mod:`fstore.export.layers`) or any
architecture of :mod:`fstore.export.architectures` (torchvision, ``timm:NAME``), cut at its own
node names or aliases (:mod:`fstore.export.graph_layers`). The graph has one input (``image``:
uint8 NHWC RGB pixels, dynamic batch, normalised inside by the prefix of
:mod:`fstore.runtime.prefix`) and one output per requested layer, named as requested. Nothing
past the deepest requested layer is computed. The preprocessing the weights take (size, resize,
interpolation, mean, std) is written into the model's metadata, so commands that run it need
no preprocessing flags. Torch is imported lazily: :func:`ensure_model` returns a cached model
without it.

:func:`export` reads as its steps: a cached model is reused (:func:`_cached`); otherwise the
weights are loaded, the truncated module exported with its prefix (:func:`_write_onnx`) and
checked against eager PyTorch on the same pixels (:func:`_check`). int8 and fp16 are derived
from the verified fp32 model by :mod:`fstore.export.precision`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fstore import __version__
from fstore.errors import ModelError
from fstore.export.architectures import (
    VGG16,
    Architecture,
    class_names,
    default_preprocessing,
    resolve_arch,
)
from fstore.export.calibration import DEFAULT_CALIBRATION_COUNT
from fstore.export.imagenet_classes import IMAGENET_CLASSES
from fstore.export.layers import LAYERS, Layer, parse_layers
from fstore.export.model_cache import alias_key, lookup_alias, model_key, model_path, record_alias
from fstore.export.precision import AUTO, choose_auto, export_variant
from fstore.export.result import (
    ExportResult,
    check_writable,
    deliver,
    relative_error,
    save_model,
)
from fstore.export.weights_loader import imagenet_origin, load_model
from fstore.images.preprocess import Preprocessing, to_float
from fstore.runtime.metadata import (
    PRECISIONS,
    ModelInfo,
    read_model_info,
    write_props,
)
from fstore.runtime.prefix import IMAGE_INPUT, add_prefix
from fstore.runtime.weights_source import WeightsSource

if TYPE_CHECKING:
    import torch

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


@dataclass(frozen=True)
class Cut:
    """A network cut at the requested layers: the module to export and what it outputs."""

    module: torch.nn.Module
    names: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    classes: tuple[str, ...] | None


def _cut_vgg16(model, layers: Sequence[str], prep: Preprocessing) -> Cut:
    chosen = parse_layers(layers)
    names = tuple(layer.name for layer in chosen)
    classes = IMAGENET_CLASSES if {"logits", "prob"} & set(names) else None
    shapes = {layer.name: layer.output_shape(prep.crop) for layer in chosen}
    return Cut(truncated_vgg16(model, chosen), names, shapes, classes)


def cut(arch: Architecture, model, layers: Sequence[str], prep: Preprocessing) -> Cut:
    """``model`` (an ``arch``) truncated at ``layers``; unknown names are a one-line error."""
    if arch.family == "vgg16":
        return _cut_vgg16(model, layers, prep)
    from fstore.export.graph_layers import layer_table, truncate

    table = layer_table(arch, model, prep.crop)
    chosen = table.select(tuple(layers))
    logits = table.aliases.get("logits")
    head = [c for c in chosen if c.node == logits and c.reduce is None]
    classes = class_names(head[0].shape[0]) if head and len(head[0].shape) == 1 else None
    shapes = {c.name: c.shape for c in chosen}
    return Cut(truncate(model, table, chosen), tuple(shapes), shapes, classes)


def _write_onnx(module: torch.nn.Module, info: ModelInfo, path: Path) -> None:
    """Export ``module`` (float NCHW input), add the uint8 prefix and the metadata, save."""
    import torch

    prep = info.preprocessing
    x = torch.zeros(2, 3, prep.crop, prep.crop)
    program = torch.onnx.export(
        module,
        (x,),
        None,
        input_names=[INPUT_NAME],
        output_names=list(info.layers),
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


def _layer_key(arch: Architecture, layers: Sequence[str]) -> tuple[str, ...]:
    """The layers as the cache names them: VGG16's in forward order, others' sorted (their
    order is known only once the network is traced)."""
    if arch.family == "vgg16":
        return tuple(layer.name for layer in parse_layers(layers))
    return tuple(sorted(set(layers)))


@dataclass(frozen=True)
class Fp32Request:
    """What decides a verified fp32 export."""

    arch: Architecture
    layers: tuple[str, ...]
    weights: WeightsSource
    opset: int
    preprocessing: Preprocessing


def _cached_path(request: Fp32Request, sha: str) -> Path:
    arch, prep = request.arch, request.preprocessing
    key = model_key(arch.name, sha, _layer_key(arch, request.layers), request.opset, "fp32", prep)
    return model_path(key, arch.name)


def _cached(request: Fp32Request) -> ExportResult | None:
    """The fp32 model already in the cache for these weights, when their alias is known."""
    sha = lookup_alias(alias_key(request.arch.name, request.weights.alias()))
    if sha is None:
        return None
    path = _cached_path(request, sha)
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


def _origin(arch: Architecture, weights: WeightsSource) -> str:
    return imagenet_origin(arch) if weights.kind == "imagenet" else weights.origin


def export_fp32(request: Fp32Request, use_cache: bool = True) -> ExportResult:
    """The verified fp32 model for ``request``: from the cache, or exported now."""
    hit = _cached(request) if use_cache else None
    if hit is not None:
        return hit
    start = time.perf_counter()
    arch, prep = request.arch, request.preprocessing
    logger.info("loading %s weights (%s)", arch.name, request.weights.origin)
    model, sha = load_model(arch, request.weights)
    record_alias(alias_key(arch.name, request.weights.alias()), sha)
    network = cut(arch, model, request.layers, prep)
    path = _cached_path(request, sha)
    info = ModelInfo(
        layers=network.names,
        shapes=network.shapes,
        preprocessing=prep,
        weights_origin=_origin(arch, request.weights),
        weights_sha256=sha,
        precision="fp32",
        opset=request.opset,
        classes=network.classes,
        fstore_version=__version__,
        arch=arch.name,
    )
    if not (use_cache and path.is_file()):
        logger.info("exporting %s of %s (opset %d, fp32)", ", ".join(info.layers), arch.name,
                    request.opset)  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_onnx(network.module, info, path)
    errors = _check(path, network.module, network.names, prep)
    return ExportResult(path, info, errors, time.perf_counter() - start, False)


@dataclass(frozen=True)
class VariantOptions:
    """How a precision variant is made and chosen: the int8 calibration folder and count,
    and the provider ``auto`` decides for."""

    calibration: Path | None = None
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    provider: str = "cpu"


def export(
    layers: str | Sequence[str],
    weights: WeightsSource,
    *,
    arch: str | Architecture = VGG16,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    preprocessing: Preprocessing | None = None,
    input_size: int | None = None,
    output: Path | None = None,
    use_cache: bool = True,
    calibration: Path | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
    provider: str = "cpu",
) -> ExportResult:
    """Export ``arch`` truncated at ``layers`` to ONNX and verify it against eager PyTorch.

    ``preprocessing`` is what the model is exported for; by default the architecture's own
    weights' (:func:`~fstore.export.architectures.default_preprocessing`), at ``input_size``
    pixels when given. The model lands in the cache (see :mod:`fstore.export.model_cache`) and,
    if ``output`` is given, is copied there. A model already cached is reused without export
    (unless the weights must be loaded to learn their hash). Raises ``ModelError`` when
    verification fails. ``precision`` is ``fp32``, ``int8``, ``fp16`` or ``auto`` (see
    :func:`fstore.export.precision.choose_auto`, for ``provider``); int8 is calibrated on
    ``calibration_count`` images of the folder ``calibration``.
    Progress goes to the ``fstore.export`` logger.
    """
    if precision not in (*PRECISIONS, AUTO):
        raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    arch = resolve_arch(arch)
    if arch.family == "vgg16":
        parse_layers(layers)  # a bad name is reported before anything loads
    if output is not None:
        check_writable(output)
    prep = preprocessing or default_preprocessing(arch, input_size)
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    base = export_fp32(Fp32Request(arch, names, weights, opset, prep), use_cache)
    variant = VariantOptions(calibration, calibration_count, provider)
    return deliver(derive(base, precision, variant, use_cache), output)


def derive(
    base: ExportResult, precision: str, options: VariantOptions, use_cache: bool = True
) -> ExportResult:
    """``base`` (a verified fp32 model) at ``precision``; ``auto`` chooses by fidelity and
    speed on ``options.provider``."""
    if precision == AUTO:
        return choose_auto(base, options.provider, options.calibration, options.calibration_count)
    return export_variant(
        base,
        precision,
        calibration=options.calibration,
        calibration_count=options.calibration_count,
        use_cache=use_cache,
    )


def ensure_model(
    layers: str | Sequence[str],
    weights: WeightsSource,
    preprocessing: Preprocessing | None = None,
    precision: str = "fp32",
    calibration: Path | None = None,
    provider: str = "cpu",
    arch: str | Architecture = VGG16,
) -> Path:
    """The cached model for these layers and weights, exporting it first if needed.

    ``calibration``: image folder an int8 model is calibrated on.
    """
    return export(
        layers,
        weights,
        arch=arch,
        preprocessing=preprocessing,
        precision=precision,
        calibration=calibration,
        provider=provider,
    ).path
