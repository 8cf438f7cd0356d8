"""int8 static quantization of an fp32 model: the recipe, the CPU's weight format, the ranges.

An int8 model is ONNX Runtime's QDQ static quantization with every option set here, not left to
ONNX Runtime's defaults (:class:`Int8Recipe`), so the same fp32 model, images and recipe give
the same int8 model, warm cache or not. The recipe, the CPU's format, every option given to
ONNX Runtime, its version and the calibration images are written into the model's metadata
(``fstore.calibration``) and make up its cache key (:meth:`Int8Recipe.fingerprint`).

* **Ranges**: activation ranges from a histogram of every calibration image's activations,
  cut at the 99.999th percentile on each side (ONNX Runtime's ``Percentile`` calibrator,
  asymmetric: its default, symmetric, would spend half of uint8 on the negative values that
  ReLU6 outputs never have).
* **Weights**: per output channel, int8 (U8S8) or uint8 (U8U8) as :func:`int8_format` chooses
  for the CPU.
* **Kept in float32**: the uint8 input prefix; the leading weighted nodes, from the stem on,
  as long as they stay within 5 % of the model's multiply-adds (``leading``: on
  EfficientNet-Lite1 the stem and the first block's depthwise and pointwise convolutions,
  4.0 % of 600 M); and each output's head, from the last weighted node to the output, so the
  features themselves are not rounded to 256 levels; and layer norms and softmaxes
  (``norms``), whose ranges in a Vision Transformer a few outlying values decide (a network
  without them, such as EfficientNet-Lite1, quantizes as before).

Why this recipe and not another (every variant tried on EfficientNet-Lite1 over 15-Scene,
with their cosines, SVM changes and speeds) is recorded in docs/performance.md, "int8 recipe
ablation": it kept the highest cosine to fp32 of the variants that still ran faster than fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fstore.errors import ModelError
from fstore.export.calibration import (
    CALIBRATION_METHODS,
    calibration_fingerprint,
    pixel_batches,
    synthetic_pixels,
)
from fstore.export.result import save_model, set_props
from fstore.images.preprocess import Preprocessing, to_float
from fstore.runtime.cpu import has_vnni, is_x86
from fstore.runtime.prefix import has_prefix, image_input, prefix_node_names

logger = logging.getLogger(__name__)

#: Images per calibration run (ONNX Runtime keeps every activation of a run in memory).
CALIBRATION_BATCH = 8
#: Weight formats: uint8 activations with int8 or with uint8 weights.
INT8_FORMATS = ("u8s8", "u8u8")
#: Nodes with a weight that int8 changes (the stem and head roles look for these).
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Roles of nodes :class:`Int8Recipe` can keep in float32 (see :func:`float_nodes`).
FLOAT_ROLES = ("stem", "leading", "head", "depthwise", "norms")
#: The ``norms`` role: operators whose int8 ranges a few outlying values decide in a
#: transformer (layer norms and the attention's softmax); they hold no weights to shrink.
NORM_OPS = frozenset({"LayerNormalization", "Softmax"})
PROP_CALIBRATION = "fstore.calibration"
PROP_PRECISION = "fstore.precision"


@dataclass(frozen=True)
class Int8Recipe:
    """Every choice that decides an int8 model apart from the fp32 model and the images.

    ``method`` is ``minmax``, ``percentile`` or ``entropy``; ``percentile`` and ``num_bins``
    (percentile, entropy) and ``num_quantized_bins`` (entropy) are its parameters.
    ``keep_float`` names roles of :data:`FLOAT_ROLES` whose nodes stay float32; ``leading_macs``
    is the share of the model's multiply-adds the ``leading`` role may keep float.
    Activations are always uint8; the weights' type comes from :func:`int8_format`.
    """

    method: str = "percentile"
    percentile: float = 99.999
    num_bins: int = 2048
    num_quantized_bins: int = 128
    symmetric_activations: bool = False
    per_channel: bool = True
    reduce_range: bool = False
    min_real_range: float | None = None
    keep_float: tuple[str, ...] = ("leading", "head", "norms")
    leading_macs: float = 0.05

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ModelError(
                f"unknown calibration method {self.method!r}; "
                f"choose from {', '.join(CALIBRATION_METHODS)}"
            )
        unknown = set(self.keep_float) - set(FLOAT_ROLES)
        if unknown:
            raise ModelError(f"unknown float role(s) {sorted(unknown)}; choose from {FLOAT_ROLES}")
        if not 0.0 <= self.leading_macs <= 1.0:
            raise ModelError(f"leading_macs is a share of the model, not {self.leading_macs}")

    def calibrator_options(self) -> dict:
        """What ONNX Runtime's ``create_calibrator`` is given for ``method``, every key set."""
        common = {"symmetric": self.symmetric_activations}
        if self.method == "minmax":
            return {**common, "moving_average": False, "max_intermediate_outputs": None}
        if self.method == "percentile":
            return {**common, "num_bins": self.num_bins, "percentile": self.percentile}
        return {**common, "num_bins": self.num_bins, "num_quantized_bins": self.num_quantized_bins}

    def fingerprint(self, fmt: str) -> str:
        """A short hash of the recipe, the weight format and the onnxruntime version."""
        text = json.dumps({**asdict(self), "format": fmt, "ort": _ort_version()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


#: The recipe measured best on EfficientNet-Lite1 over 15-Scene (docs/performance.md).
DEFAULT_RECIPE = Int8Recipe()


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def int8_format(cpuinfo: str | None = None) -> str:
    """``u8s8`` (uint8 activations, int8 weights) where the CPU multiplies them exactly, else
    ``u8u8``.

    On x86-64 without VNNI, ONNX Runtime's U8S8 kernels add byte products in 16-bit
    saturating arithmetic (``vpmaddubsw``), which loses accuracy that U8U8 keeps (the figures
    are in docs/performance.md). Other architectures (Arm's ``sdot``) and VNNI CPUs keep U8S8.
    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when ``None``); ``FSTORE_CPU=avx2``
    forces the choice of a CPU without VNNI (:mod:`fstore.runtime.cpu`).
    """
    if not is_x86():
        return "u8s8"
    # an x86 CPU whose flags cannot be read gets the format that cannot saturate
    return "u8s8" if has_vnni(cpuinfo) else "u8u8"


# --------------------------------------------------------------------------- float nodes


def _weighted(node, initializers: set[str]) -> bool:
    return node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers


def _weighted_nodes(model, initializers: set[str]) -> list:
    """Weighted nodes after the prefix, in graph order (which ONNX makes topological)."""
    skip = set(prefix_node_names(model))
    return [n for n in model.graph.node if n.name not in skip and _weighted(n, initializers)]


def _stem(model, initializers: set[str]) -> list[str]:
    """The first weighted node."""
    return [node.name for node in _weighted_nodes(model, initializers)[:1]]


def _macs(model, nodes: list) -> list[int] | None:
    """Multiply-adds per image of each weighted node (weight size × output positions), or
    ``None`` where shape inference leaves an output's spatial size unknown."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - e.g. a model over 2 GB: the budget is then unknown
        return None
    values = [*inferred.graph.value_info, *inferred.graph.output]
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    macs = []
    for node in nodes:
        shape = dims.get(node.output[0])
        if not shape:
            return None
        positions = shape[2:] if node.op_type.startswith("Conv") else shape[1:-1]
        if 0 in positions:
            return None
        macs.append(sizes[node.input[1]] * int(np.prod(positions)))
    return macs


def _leading(model, initializers: set[str], budget: float) -> list[str]:
    """The first weighted nodes, from the stem on, while their multiply-adds stay within
    ``budget`` of the weighted nodes' total (the stem alone where shapes are unknown)."""
    nodes = _weighted_nodes(model, initializers)
    macs = _macs(model, nodes)
    if macs is None:
        return [node.name for node in nodes[:1]]
    allowed = budget * sum(macs)
    names: list[str] = []
    for node, spent in zip(nodes, np.cumsum(macs), strict=True):
        if names and spent > allowed:
            break
        names.append(node.name)
    return names


def _heads(model, initializers: set[str]) -> list[str]:
    """Per output: the nodes from the output back along data inputs to a weighted node."""
    producer = {out: node for node in model.graph.node for out in node.output}
    names: list[str] = []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None:
            names.append(node.name)
            if _weighted(node, initializers) or not node.input:
                break
            node = producer.get(node.input[0])
    return list(dict.fromkeys(names))


def _depthwise(model) -> list[str]:
    """Grouped convolutions (one filter per channel in MobileNet-style blocks)."""
    import onnx

    def group(node) -> int:
        values = [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"]
        return int(values[0]) if values else 1

    return [n.name for n in model.graph.node if n.op_type == "Conv" and group(n) > 1]


def float_nodes(model, roles: Sequence[str], leading_macs: float = 0.05) -> list[str]:
    """Names of the nodes kept in float32: the uint8 prefix, and the ``roles``' nodes.

    ``stem``: the first weighted node; ``leading``: the first weighted nodes, the stem
    included, within ``leading_macs`` of the model's multiply-adds; ``head``: each output back
    to its last weighted node; ``depthwise``: every grouped convolution; ``norms``: layer
    norms and softmaxes (:data:`NORM_OPS`).
    """
    initializers = {init.name for init in model.graph.initializer}
    names = prefix_node_names(model)
    if "stem" in roles:
        names += _stem(model, initializers)
    if "leading" in roles:
        names += _leading(model, initializers, leading_macs)
    if "head" in roles:
        names += _heads(model, initializers)
    if "depthwise" in roles:
        names += _depthwise(model)
    if "norms" in roles:
        names += [node.name for node in model.graph.node if node.op_type in NORM_OPS]
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- calibration


def _feeds(
    input_name: str, source, prep: Preprocessing, pixels: bool
) -> Iterator[dict[str, np.ndarray]]:
    """Calibration inputs: pixels for a model with the prefix, their float path otherwise."""
    for batch in pixel_batches(source, prep, CALIBRATION_BATCH):
        yield {input_name: batch if pixels else to_float(batch, prep)}


def _reader(feed: dict[str, np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class OneBatch(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [feed]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.left.pop() if self.left else None

    return OneBatch()


def _ranges(model_path: Path, feeds, recipe: Int8Recipe, work: Path):
    """ONNX Runtime's calibrator for ``recipe``, fed one batch at a time (bounded memory)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    calibrator = create_calibrator(
        model_path,
        None,  # every float tensor: the quantizer picks the ones it needs
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=methods[recipe.method],
        providers=["CPUExecutionProvider"],
        extra_options=recipe.calibrator_options(),
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
        for feed in feeds:
            calibrator.collect_data(_reader(feed))
        return methods[recipe.method], calibrator.compute_data()


def quantizer_options(recipe: Int8Recipe, fmt: str, exclude: list[str]) -> dict:
    """What :func:`onnxruntime.quantization.quantize_static` is given, every option set."""
    return {
        "quant_format": "QDQ",
        "activation_type": "QUInt8",
        "weight_type": "QUInt8" if fmt == "u8u8" else "QInt8",
        "per_channel": recipe.per_channel,
        "reduce_range": recipe.reduce_range,
        "nodes_to_exclude": exclude,
        "extra_options": {
            "ActivationSymmetric": recipe.symmetric_activations,
            "ActivationRestrictedAsymmetric": False,
            "WeightSymmetric": fmt != "u8u8",
            "EnableSubgraph": False,
            "ForceQuantizeNoInputCheck": False,
            "MatMulConstBOnly": False,
            "AddQDQPairToWeight": False,
            "DedicatedQDQPair": False,
            "QuantizeBias": True,
            "QDQKeepRemovableActivations": False,
            "QDQDisableWeightAdjustForInt32Bias": False,
            "MinimumRealRange": recipe.min_real_range,
            "OpTypesToExcludeOutputQuantization": [],
            "QDQOpTypePerChannelSupportToAxis": {},
            "TensorQuantOverrides": {},
            "UseQDQContribOps": False,
            "SmoothQuant": False,
        },
    }


def _quantize(prepared: Path, out: Path, feeds, recipe: Int8Recipe, options: dict) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    method, ranges = _ranges(prepared, feeds, recipe, out.parent)
    ranges_file = out.parent / "ranges.json"
    save_tensors_data(ranges, ranges_file)
    quantize_static(
        str(prepared),
        str(out),
        None,  # the ranges come from ranges_file, computed above with every option set
        quant_format=QuantFormat[options["quant_format"]],
        activation_type=QuantType[options["activation_type"]],
        weight_type=QuantType[options["weight_type"]],
        per_channel=options["per_channel"],
        reduce_range=options["reduce_range"],
        nodes_to_exclude=options["nodes_to_exclude"],
        calibrate_method=method,
        calibration_cache_path=ranges_file,
        extra_options=options["extra_options"],
    )


# --------------------------------------------------------------------------- the model


def _source(
    images: list[Path], count: int, prep: Preprocessing, seed: int
) -> tuple[Sequence[Path] | np.ndarray, dict]:
    """The pixels to calibrate on and the record of what they were."""
    if images:
        logger.info("calibrating int8 ranges on %d images", len(images))
        return images, {"source": "images", "images": len(images)}
    logger.info(
        "no calibration images: calibrating int8 ranges on %d generated pictures "
        "(pass --calibration DIR with real images for a faithful int8 model)",
        count,
    )
    return synthetic_pixels(count, prep, seed), {"source": "synthetic", "images": count}


def _prepare(fp32_model: Path, tmp: Path):
    """The model to quantize, its nodes all named (exclusion is by name): shape inference and
    constant folding first, as ONNX Runtime recommends, where they work."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    prepared = tmp / "prepared.onnx"
    try:
        quant_pre_process(str(fp32_model), str(prepared))
    except Exception as exc:  # noqa: BLE001 - optional step; quantization works without it
        logger.info("quantization pre-processing skipped (%s: %s)", type(exc).__name__, exc)
        prepared = Path(fp32_model)
    model = onnx.load(str(prepared))
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"fstore_{node.op_type}_{i}"
    onnx.save(model, str(tmp / "named.onnx"))
    return tmp / "named.onnx", model


def quantize_int8(
    fp32_model: Path,
    out: Path,
    calibration: Sequence[Path] | None,
    count: int,
    preprocessing: Preprocessing,
    *,
    seed: int = 0,
    recipe: Int8Recipe = DEFAULT_RECIPE,
    fmt: str | None = None,
) -> Path:
    """Statically quantize ``fp32_model`` to int8 by ``recipe`` into ``out``.

    Ranges are calibrated on up to ``count`` of the ``calibration`` images, decoded with
    ``preprocessing`` exactly as ``build`` decodes them; unreadable files are skipped. With no
    calibration images, ``count`` generated pictures (drawn with ``seed``) are used instead.
    ``fmt`` is the weight format, ``u8s8`` or ``u8u8`` (``None``: :func:`int8_format`'s choice
    for this CPU). The fstore metadata of the fp32 model is kept, with ``precision`` set to
    ``int8`` and the calibration record (images, ``seed``, recipe, format, every ONNX Runtime
    option, version).
    """
    import onnx

    if count < 1:
        raise ModelError(f"--calibration-count must be at least 1, not {count}")
    if fmt not in (None, *INT8_FORMATS):
        raise ModelError(f"unknown int8 format {fmt!r}; choose from {', '.join(INT8_FORMATS)}")
    images = list(calibration or [])[:count]
    source, record = _source(images, count, preprocessing, seed)
    fmt = fmt or int8_format()
    fp32 = onnx.load(str(fp32_model), load_external_data=False)
    feeds = _feeds(image_input(fp32).name, source, preprocessing, pixels=has_prefix(fp32))
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".fstore-quant-", dir=out.parent) as tmp:
        prepared, graph = _prepare(fp32_model, Path(tmp))
        exclude = float_nodes(graph, recipe.keep_float, recipe.leading_macs)
        options = quantizer_options(recipe, fmt, exclude)
        quantized = Path(tmp) / "quantized.onnx"
        _quantize(prepared, quantized, feeds, recipe, options)
        model = onnx.load(str(quantized))
    record.update(
        seed=seed,
        fingerprint=calibration_fingerprint(images, recipe.method),
        format=fmt,
        recipe=asdict(recipe),
        calibrator=recipe.calibrator_options(),
        quantizer=options,
        onnxruntime=_ort_version(),
    )
    set_props(model, {PROP_PRECISION: "int8", PROP_CALIBRATION: json.dumps(record)})
    return save_model(model, out)
