"""Precision variants of an exported model (int8 for CPU, fp16 for CUDA) and their fidelity.

Both variants are derived from the verified fp32 model, never from PyTorch, and keep its uint8
input prefix in float32 (its nodes are excluded from quantization and from the fp16 cast):

* **int8**: ONNX Runtime static quantization in QDQ format, weights int8 per output channel,
  activations uint8 (U8S8, what ONNX Runtime's x86 kernels run natively), ranges calibrated
  (min/max by default) on the user's images decoded as ``build`` decodes them. Without
  calibration images, generated pictures stand in (see :mod:`fstore.export.calibration`); the
  fidelity they report says little: pass real images.
* **fp16**: every float32 weight and operator after the prefix converted to float16 by ONNX
  Runtime's own converter (``onnxruntime.transformers.float16``), outputs kept float32.

Fidelity is measured against the fp32 model on the same pixels: per layer, the cosine
similarity between the two models' features of each image (mean and minimum) and the largest
relative error. :func:`export_variant` records the calibration and the fidelity in the model's
ONNX metadata (``fstore.calibration``, ``fstore.fidelity``), so a cached variant still says how
faithful it is (:func:`read_fidelity`). The change in SVM accuracy on a labelled folder is
measured above this layer, by :mod:`fstore.benchmarks.fidelity`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fstore.errors import DatasetError, ModelError
from fstore.export import cache
from fstore.export.calibration import (  # noqa: F401 - re-exported for older callers
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_COUNT,
    calibration_fingerprint,
    choose_images,
    decode_inputs,
    decode_pixels,
    pixel_batches,
    synthetic_inputs,
    synthetic_picture,
    synthetic_pixels,
)
from fstore.export.result import (
    ExportResult,
    deliver,
    relative_error,
    save_model,
    set_props,
)
from fstore.fsutil import commit_file, tmp_path_for
from fstore.images.preprocess import Preprocessing, to_float
from fstore.runtime.metadata import (
    PRECISIONS,
    read_metadata_props,
    read_model_info,
    read_props,
    write_props,
)
from fstore.runtime.prefix import (
    add_prefix,
    has_prefix,
    image_input,
    prefix_node_names,
    remove_prefix,
)
from fstore.runtime.session import OrtBackend

logger = logging.getLogger(__name__)

#: ``--precision auto``: fp16 on CUDA/TensorRT when its fidelity holds, fp32 elsewhere.
AUTO = "auto"
#: Images on which an exported variant's fidelity is measured (held out from calibration).
FIDELITY_IMAGES = 32
#: Below this mean cosine similarity, export warns that the variant is not faithful.
MIN_MEAN_COSINE = 0.99
#: The mean cosine (every layer) fp16 must reach to be chosen by ``auto`` on CUDA.
FP16_MIN_COSINE = 0.999
#: Images per calibration run.
CALIBRATION_BATCH = 8

_PROP_CALIBRATION = "fstore.calibration"
_PROP_FIDELITY = "fstore.fidelity"
_PROP_PRECISION = "fstore.precision"


def resolve_precision(precision: str, provider: str) -> str:
    """``auto`` → ``fp16`` on ``cuda``/``tensorrt``, ``fp32`` on the CPU; others unchanged."""
    if precision != AUTO:
        return precision
    return "fp16" if provider in ("cuda", "tensorrt") else "fp32"


def fidelity_holds(result: ExportResult, threshold: float = FP16_MIN_COSINE) -> bool:
    """Whether every layer's recorded mean cosine against fp32 reaches ``threshold``."""
    record = read_fidelity(result.path) or {}
    rows = record.get("layers", {}).values()
    return bool(rows) and all(row["mean_cosine"] >= threshold for row in rows)


# --------------------------------------------------------------------------- metadata


def read_fidelity(model: Path) -> dict | None:
    """The fidelity :func:`export_variant` recorded in a model (``None`` for fp32 or foreign)."""
    text = read_props(Path(model)).get(_PROP_FIDELITY)
    return json.loads(text) if text else None


def describe_fidelity(record: dict) -> str:
    """One line per layer, e.g. ``fc7: cosine vs fp32 mean 0.9991, min 0.9962 (32 images)``."""
    lines = []
    for layer, row in record.get("layers", {}).items():
        source = f"{record['source']} " if record.get("source") else ""
        lines.append(
            f"{layer}: cosine vs fp32 mean {row['mean_cosine']:.4f}, "
            f"min {row['min_cosine']:.4f} ({row['images']} {source}images)"
        )
    return "\n".join(lines)


def _update_props(path: Path, updates: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    set_props(model, updates)
    save_model(model, path)


# --------------------------------------------------------------------------- variants


def _calibration_source(
    images: list[Path], count: int, prep: Preprocessing, method: str, seed: int
) -> tuple[Sequence[Path] | np.ndarray, dict]:
    """The pixels to calibrate on and the record of what they were."""
    if images:
        logger.info("calibrating int8 ranges (%s) on %d images", method, len(images))
        record = {"source": "images", "images": len(images), "method": method}
        source: Sequence[Path] | np.ndarray = images
    else:
        logger.info(
            "no calibration images: calibrating int8 ranges on %d generated pictures "
            "(pass --calibration DIR with real images for a faithful int8 model)",
            count,
        )
        record = {"source": "synthetic", "images": count, "method": method, "seed": seed}
        source = synthetic_pixels(count, prep, seed)
    record["fingerprint"] = calibration_fingerprint(images, method)
    return source, record


#: Instruction-set flags (``/proc/cpuinfo``) with int8 dot products of unsigned by signed bytes.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def int8_format(cpuinfo: str | None = None) -> str:
    """``u8s8`` (uint8 activations, int8 weights) where the CPU multiplies them exactly, else
    ``u8u8``.

    On x86-64 without VNNI, ONNX Runtime's U8S8 kernels add byte products in 16-bit
    saturating arithmetic (``vpmaddubsw``): on EfficientNet-Lite1 that gave a mean cosine to
    fp32 of 0.900, against 0.977 for U8U8. Other architectures (Arm's ``sdot``) and VNNI CPUs
    keep U8S8. ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when ``None``).
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "u8s8"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "u8u8"  # unknown x86 CPU: the format that cannot saturate
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split()}
    return "u8s8" if flags & VNNI_FLAGS else "u8u8"


def _quantize(prepared: Path, out: Path, reader, method: str, exclude: list[str], fmt: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    quantize_static(
        str(prepared),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QUInt8 if fmt == "u8u8" else QuantType.QInt8,
        calibrate_method=methods[method],
        nodes_to_exclude=exclude,  # the uint8 prefix stays float32
    )


def _reader(input_name: str, source, prep: Preprocessing, pixels: bool):
    """Calibration batches: pixels for a model with the prefix, their float path otherwise."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = pixel_batches(source, prep, CALIBRATION_BATCH)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            return {input_name: batch if pixels else to_float(batch, prep)}

    return Reader()


def quantize_int8(
    fp32_model: Path,
    out: Path,
    calibration: Sequence[Path] | None,
    count: int,
    preprocessing: Preprocessing,
    *,
    method: str = "minmax",
    seed: int = 0,
) -> Path:
    """Statically quantize ``fp32_model`` to int8 (QDQ, per-channel weights) into ``out``.

    Ranges are calibrated on up to ``count`` of the ``calibration`` images, decoded with
    ``preprocessing`` exactly as ``build`` decodes them; unreadable files are skipped. With no
    calibration images, ``count`` generated pictures are used instead.
    ``method`` is ``minmax`` (per-batch minima and maxima: little memory), ``percentile``
    (99.999th) or ``entropy``; the last two keep every activation of every calibration image in
    memory (about 100 MB per 224x224 image up to fc7), so keep ``count`` small with them.
    Weights are int8 or uint8 as :func:`int8_format` chooses for this CPU. The fstore metadata
    of the fp32 model is kept, with ``precision`` set to ``int8`` and the calibration (with the
    format) recorded.
    """
    import onnx
    from onnxruntime.quantization import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ModelError(
            f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}"
        )
    if count < 1:
        raise ModelError(f"--calibration-count must be at least 1, not {count}")
    images = list(calibration or [])[:count]
    source, record = _calibration_source(images, count, preprocessing, method, seed)
    record["format"] = fmt = int8_format()
    fp32 = onnx.load(str(fp32_model), load_external_data=False)
    input_name, exclude = image_input(fp32).name, prefix_node_names(fp32)
    reader = _reader(input_name, source, preprocessing, pixels=has_prefix(fp32))
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".fstore-quant-", dir=out.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference and constant folding, as ONNX Runtime recommends before quantizing
            quant_pre_process(str(fp32_model), str(prepared))
        except Exception as exc:  # noqa: BLE001 - optional step; quantization works without it
            logger.info("quantization pre-processing skipped (%s: %s)", type(exc).__name__, exc)
            prepared = Path(fp32_model)
        quantized = Path(tmp) / "quantized.onnx"
        _quantize(prepared, quantized, reader, method, exclude, fmt)
        model = onnx.load(str(quantized))
    set_props(model, {_PROP_PRECISION: "int8", _PROP_CALIBRATION: json.dumps(record)})
    return save_model(model, out)


def convert_fp16(fp32_model: Path, out: Path) -> Path:
    """Convert ``fp32_model`` to float16 weights and arithmetic after its prefix; outputs float32.

    The fstore metadata is kept, with ``precision`` set to ``fp16``.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_model))
    spec = remove_prefix(model)  # so the normalisation stays float32, not rounded to fp16
    model = convert_float_to_float16(model, keep_io_types=True)
    if spec is not None:
        add_prefix(model, spec.mean, spec.std)
    set_props(model, {_PROP_PRECISION: "fp16"})
    return save_model(model, Path(out))


# --------------------------------------------------------------------------- fidelity


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (features flattened).

    Two all-zero rows count as identical (1.0); one all-zero row against another as 0.0.
    """
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    cos = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


def compare_features(
    reference: dict[str, np.ndarray], other: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per layer: mean and min cosine similarity per image, max relative error, image count."""
    rows = {}
    for layer, ref in reference.items():
        got = np.asarray(other[layer], dtype=np.float32)
        cos = cosine_rows(ref, got)
        rows[layer] = {
            "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min()),
            "max_relative_error": relative_error(got, np.asarray(ref)),
            "images": len(ref),
        }
    return rows


def fidelity(
    fp32_model: Path,
    other_model: Path,
    images: Sequence[Path] | np.ndarray,
    preprocessing: Preprocessing,
    *,
    provider: str = "cpu",
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """How closely ``other_model`` reproduces ``fp32_model``'s features on the same pixels.

    ``images`` are image files (decoded with ``preprocessing``; unreadable ones skipped) or a
    uint8 (N, H, W, 3) array of crops. Returns per output layer
    ``{"mean_cosine", "min_cosine", "max_relative_error", "images"}``.
    """
    ref_backend = OrtBackend.open(Path(fp32_model), provider)
    other_backend = OrtBackend.open(Path(other_model), provider, outputs=ref_backend.outputs)
    ref: dict[str, list[np.ndarray]] = {name: [] for name in ref_backend.outputs}
    got: dict[str, list[np.ndarray]] = {name: [] for name in ref_backend.outputs}
    for batch in pixel_batches(images, preprocessing, batch_size):
        for name, value in ref_backend.run(batch).items():
            ref[name].append(value.reshape(len(batch), -1))
        for name, value in other_backend.run(batch).items():
            got[name].append(value.reshape(len(batch), -1))
    return compare_features(
        {k: np.concatenate(v) for k, v in ref.items()},
        {k: np.concatenate(v) for k, v in got.items()},
    )


# --------------------------------------------------------------------------- export


def variant_tag(precision: str, calibration: Sequence[Path] = (), method: str = "minmax") -> str:
    """What goes in the cache key's ``precision`` slot: int8 models depend on their calibration."""
    if precision == "int8":
        fingerprint = calibration_fingerprint(calibration, method)
        return f"int8-{int8_format()}-{method}-{fingerprint}"
    return precision


def _fidelity_images(
    calibration: Path | None, chosen: list[Path], prep: Preprocessing
) -> tuple[Sequence[Path] | np.ndarray, str]:
    """Held-out images of the folder, else the calibration images (said so), else generated."""
    if calibration is None:
        return synthetic_pixels(FIDELITY_IMAGES, prep, seed=1), "synthetic"
    held_out = choose_images(calibration, FIDELITY_IMAGES, seed=1, exclude=chosen)
    if held_out:
        return held_out, "held-out"
    return chosen, "calibration"  # every image calibrated: measure on them, and say so


def _derive(base: ExportResult, precision: str, work: Path, chosen: list[Path], request) -> None:
    """Write the variant of ``base`` into ``work``."""
    prep = base.info.preprocessing
    if precision == "int8":
        quantize_int8(base.path, work, chosen, request.count, prep, method=request.method)
    else:
        logger.info("converting to fp16 (pixels normalised in float32, outputs float32)")
        convert_fp16(base.path, work)


def _log_fidelity(precision: str, rows: dict, source: str) -> None:
    for layer, row in rows.items():
        mean, low = row["mean_cosine"], row["min_cosine"]
        logger.info(
            f"{precision} fidelity {layer}: cosine vs fp32 mean {mean:.4f}, min {low:.4f} "
            f"on {row['images']} {source} images"
        )
        if mean < MIN_MEAN_COSINE:
            logger.warning(
                f"{precision} {layer} mean cosine {mean:.4f} is below {MIN_MEAN_COSINE}; "
                "features will differ from fp32"
            )


def _calibration_images(calibration: Path | None, precision: str, count: int) -> list[Path]:
    if calibration is None or precision != "int8":
        return []
    chosen = choose_images(calibration, count)
    if not chosen:
        raise DatasetError(f"no images to calibrate on in {calibration}")
    return chosen


def export_variant(
    base: ExportResult,
    precision: str,
    *,
    calibration: Path | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
    method: str = "minmax",
    output: Path | None = None,
    use_cache: bool = True,
) -> ExportResult:
    """Derive the ``precision`` variant of the fp32 model ``base``, cached like any export.

    ``calibration`` is an image folder: for int8, ``calibration_count`` of its images (drawn
    with a fixed seed) calibrate the ranges; for both variants, up to :data:`FIDELITY_IMAGES`
    other images of it measure the fidelity against fp32 (generated pictures without a folder).
    The calibration and the fidelity are written into the model's metadata. ``errors`` in the
    result are the max relative errors against the fp32 model on those images.
    """
    if precision == "fp32":
        return base
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if output is not None and Path(output).is_dir():
        raise ModelError(f"cannot write model to {output}: it is a folder")
    result = _cached_or_derived(
        base, precision, calibration, _Request(calibration_count, method), use_cache
    )
    return deliver(result, output)


@dataclass(frozen=True)
class _Request:
    count: int
    method: str


def _cached_or_derived(base, precision, calibration, request, use_cache) -> ExportResult:
    info = base.info
    chosen = _calibration_images(calibration, precision, request.count)
    tag = variant_tag(precision, chosen, request.method)
    key = cache.model_key(info.weights_sha256, info.layers, info.opset, tag, info.preprocessing)
    path = cache.model_path(key)
    if use_cache and path.is_file():
        logger.info("using cached %s model %s", precision, path)
        return ExportResult(path, read_model_info(path), {}, 0.0, True)
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    work = tmp_path_for(path).with_suffix(".variant.onnx")
    try:
        _derive(base, precision, work, chosen, request)
        images, source = _fidelity_images(calibration, chosen, info.preprocessing)
        rows = fidelity(base.path, work, images, info.preprocessing)
        record = {"reference": "fp32", "source": source, "layers": rows}
        _update_props(work, {_PROP_FIDELITY: json.dumps(record)})
        commit_file(work, path)
    finally:
        work.unlink(missing_ok=True)
    write_props(path, read_metadata_props(path))
    _log_fidelity(precision, rows, source)
    errors = {layer: row["max_relative_error"] for layer, row in rows.items()}
    seconds = time.perf_counter() - start
    return ExportResult(path, replace(info, precision=precision), errors, seconds, False)
