"""Feature maps of one image at a conv or pool layer, and the first layer's filters, as arrays.

The arrays come straight from ONNX Runtime (maps) or from the ONNX initializers (filters), so
neither needs torch once the model is cached. Drawing them is :mod:`fstore.inspection.figures`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.errors import FstoreError, ModelError, UnknownLayerError
from fstore.export.layers import LAYERS, Layer, get_layer
from fstore.images.decode import ImageDecodeError
from fstore.images.preprocess import Preprocessing, to_float
from fstore.images.reader import ImageReader
from fstore.runtime.metadata import ModelInfo
from fstore.runtime.weights_source import WeightsSource

#: Layers whose output is a (C, H, W) map, in forward order.
SPATIAL_LAYERS: tuple[str, ...] = tuple(layer.name for layer in LAYERS if layer.is_spatial)
FIRST_CONV = "conv1_1"
#: torchvision's ImageNet preprocessing at 224 pixels.
IMAGENET_PREPROCESSING = Preprocessing()


class InspectionError(FstoreError):
    """An image or option the inspection commands cannot use (bad image, too many channels)."""


@dataclass(frozen=True)
class ActivationGrid:
    """One image's feature maps at one layer, ready to draw.

    Attributes:
        path: the image file.
        layer: the layer's name (``conv1_1``, ``pool3``...).
        image: the network's view of the image: resized and centre-cropped, (S, S, 3) uint8.
        maps: raw activations of channels ``0..N-1``, (N, H, W) float32.
        tiles: the same maps each scaled to [0, 1] by its own min and max (a constant map,
            e.g. a channel the ReLU silenced, becomes all zeros), (N, H, W) float32.
        weights_origin: where the model's weights came from.
    """

    path: Path
    layer: str
    image: np.ndarray = field(repr=False)
    maps: np.ndarray = field(repr=False)
    tiles: np.ndarray = field(repr=False)
    weights_origin: str = ""

    @property
    def channels(self) -> int:
        return int(self.maps.shape[0])


@dataclass(frozen=True)
class FilterGrid:
    """The first conv layer's 64 filters, ready to draw as RGB tiles.

    Attributes:
        weights: the kernels as stored, (64, 3, 3, 3) float32 (out, in=RGB, height, width).
        tiles: one (3, 3, 3) RGB tile (height, width, RGB) per filter, each scaled to [0, 1] by
            its own min and max over its 27 values, (64, 3, 3, 3) float32.
        model: the ONNX file they were read from.
        weights_origin: where the model's weights came from.
    """

    weights: np.ndarray = field(repr=False)
    tiles: np.ndarray = field(repr=False)
    model: Path
    weights_origin: str = ""


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each entry of the first axis to [0, 1] by its own min and max (constant → 0)."""
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    scaled = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    return scaled.reshape(maps.shape).astype(np.float32)


def spatial_layer(name: str) -> Layer:
    """The conv or pool layer called ``name``; a one-line error for any other name."""
    layer = get_layer(name)
    if not layer.is_spatial:
        raise UnknownLayerError(
            f"layer {name!r} has no feature maps; choose a conv or pool layer: "
            f"{', '.join(SPATIAL_LAYERS)}"
        )
    return layer


def read_image(path: Path, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The cropped RGB picture (S, S, 3) uint8 and its float input (3, S, S) for eager models."""
    cropped = _crop(path, _read(path), preprocessing)
    return cropped, to_float(cropped[None], preprocessing)[0]


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InspectionError(f"cannot read image {path}: {exc.strerror or exc}") from None


def _crop(path: Path, data: bytes, preprocessing: Preprocessing) -> np.ndarray:
    """The uint8 (S, S, 3) crop the network sees, read as ``build`` reads it."""
    try:
        return ImageReader(preprocessing).decode(data)[0]
    except ImageDecodeError as exc:
        raise InspectionError(f"cannot use image {path}: {exc}") from None


def _model_info(path: Path, metadata: dict[str, str]) -> ModelInfo:
    info = ModelInfo.from_props(metadata)
    if info is None:
        raise ModelError(f"{path} was not exported by fstore (no fstore metadata)")
    return info


def activations(
    image: Path,
    layer: str = FIRST_CONV,
    *,
    weights: WeightsSource | None = None,
    model: Path | None = None,
    preprocessing: Preprocessing = IMAGENET_PREPROCESSING,
    channels: int | None = 64,
    provider: str = "cpu",
) -> ActivationGrid:
    """Feature maps of ``image`` at ``layer`` (a conv or pool layer) through ONNX Runtime.

    The model is ``model`` (an fstore export with ``layer`` among its outputs; its metadata gives
    the preprocessing) or else the cached export of ``layer`` for ``weights`` and
    ``preprocessing``, exported on first use. ``channels`` keeps the first N channels
    (``None``: all of them).
    """
    from fstore.runtime.session import OrtBackend

    chosen = spatial_layer(layer)
    if channels is not None and not 1 <= channels <= chosen.out_channels:
        raise InspectionError(
            f"{layer} has {chosen.out_channels} channels; --channels must lie in "
            f"1..{chosen.out_channels}, got {channels}"
        )
    data = _read(image)
    cropped = _crop(image, data, preprocessing)  # a bad image fails before any export
    if model is None:
        if weights is None:
            raise ValueError("give either weights or model")
        from fstore.export.onnx_export import ensure_model

        model = ensure_model((layer,), weights, preprocessing)
    backend = OrtBackend.open(Path(model), provider, outputs=(layer,))
    info = _model_info(Path(model), backend.metadata)
    if info.preprocessing != preprocessing:  # a given model's own
        cropped = _crop(image, data, info.preprocessing)
    maps = backend.run(cropped[None])[layer][0]
    if channels is not None:
        maps = maps[:channels]
    return ActivationGrid(
        Path(image), layer, cropped, maps, normalise_maps(maps), info.weights_origin
    )


def _load_onnx(model: Path):  # -> onnx.ModelProto
    import onnx

    try:
        return onnx.load(str(model))
    except Exception as exc:  # noqa: BLE001 - protobuf and OS errors alike
        raise ModelError(f"cannot read ONNX model {model}: {exc}") from None


def first_conv_weights(model: Path) -> np.ndarray:
    """conv1_1's kernels (64, 3, 3, 3), read from the ONNX initializers without torch.

    The Conv node is the one whose output feeds the graph's first Relu; a model laid out
    otherwise falls back to its only initializer of shape (64, 3, 3, 3).
    """
    return _first_conv_kernel(_load_onnx(model), model)


def _first_conv_kernel(proto, model: Path) -> np.ndarray:
    from onnx import numpy_helper

    graph = proto.graph
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors.setdefault(node.output[0], node.attribute[0].t)
    producers = {out: node for node in graph.node for out in node.output}
    expected = (64, 3, 3, 3)
    first_relu = next((node for node in graph.node if node.op_type == "Relu"), None)
    if first_relu is not None:
        conv = producers.get(first_relu.input[0])
        if conv is not None and conv.op_type == "Conv" and conv.input[1] in tensors:
            kernel = numpy_helper.to_array(tensors[conv.input[1]])
            if kernel.shape == expected:
                return kernel.astype(np.float32)
    candidates = [t for t in graph.initializer if tuple(t.dims) == expected]
    if len(candidates) != 1:
        raise ModelError(f"{model} holds no VGG16 conv1_1 kernel of shape {expected}")
    return numpy_helper.to_array(candidates[0]).astype(np.float32)


def filters(
    *,
    weights: WeightsSource | None = None,
    model: Path | None = None,
    preprocessing: Preprocessing = IMAGENET_PREPROCESSING,
) -> FilterGrid:
    """conv1_1's 64 filters as RGB tiles, from ``model`` or the cached conv1_1 export."""
    if model is None:
        if weights is None:
            raise ValueError("give either weights or model")
        from fstore.export.onnx_export import ensure_model

        model = ensure_model((FIRST_CONV,), weights, preprocessing)
    model = Path(model)
    proto = _load_onnx(model)
    info = _model_info(model, {p.key: p.value for p in proto.metadata_props})
    kernels = _first_conv_kernel(proto, model)
    tiles = normalise_maps(kernels).transpose(0, 2, 3, 1)  # (out, in, h, w) → (out, h, w, RGB)
    return FilterGrid(kernels, np.ascontiguousarray(tiles), model, info.weights_origin)


def first_conv_model(model: Path, out: Path) -> tuple[Path, str]:
    """A copy of ``model`` at ``out`` with its first Conv node's output added as a graph output.

    "First" is the first Conv in the graph's node order (ONNX stores nodes topologically sorted),
    the convolution nearest the input. Its output is taken as the node writes it: before any
    activation that a separate node applies (VGG16's conv1_1 layer, by contrast, is after the
    ReLU). Returns the new file and the output's name; the original model is not touched.
    """
    import onnx

    proto = _load_onnx(model)
    conv = next((node for node in proto.graph.node if node.op_type == "Conv"), None)
    if conv is None:
        raise ModelError(f"{model} has no Conv node; there is no first convolution to draw")
    name = conv.output[0]
    if name not in {o.name for o in proto.graph.output}:
        proto.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return out, name


def first_conv_activations(
    image: Path,
    model: Path,
    preprocessing: Preprocessing,
    *,
    workdir: Path,
    channels: int | None = 64,
    provider: str = "cpu",
) -> ActivationGrid:
    """Feature maps of ``image`` at the first Conv node of any ONNX image ``model``.

    The model gets that node's output as an extra graph output (:func:`first_conv_model`,
    written into ``workdir``) and runs on ``image`` prepared with ``preprocessing``.
    """
    from fstore.runtime.session import OrtBackend

    cropped = _crop(image, _read(image), preprocessing)
    path, name = first_conv_model(Path(model), Path(workdir) / f"{Path(model).stem}-conv1.onnx")
    # With ``preprocessing``, a float model is wrapped at load to take the uint8 crop.
    backend = OrtBackend.open(path, provider, outputs=(name,), preprocessing=preprocessing)
    maps = backend.run(cropped[None])[name][0]
    if channels is not None:
        maps = maps[:channels]
    return ActivationGrid(
        Path(image),
        f"first Conv ({name})",
        cropped,
        maps,
        normalise_maps(maps),
        f"external model {Path(model).name}",
    )
