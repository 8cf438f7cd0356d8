"""Precision variants of an exported model (int8 for CPU, fp16 for CUDA) and their fidelity.

Both variants are derived from the verified fp32 model, never from PyTorch, and keep its uint8
input prefix in float32 (its nodes are excluded from quantization and from the fp16 cast):

* **int8**: ONNX Runtime static quantization by :mod:`fstore.export.int8` (its recipe: every
  option set and recorded), ranges calibrated on the user's images decoded as ``build``
  decodes them. Without calibration images, generated pictures stand in (see
  :mod:`fstore.export.calibration`); the fidelity they report says little: pass real images.
* **fp16**: every float32 weight and operator after the prefix converted to float16 by ONNX
  Runtime's own converter (``onnxruntime.transformers.float16``), outputs kept float32.

Fidelity is measured against the fp32 model on the same pixels: per layer, the cosine
similarity between the two models' features of each image (mean and minimum) and the largest
relative error. :func:`export_variant` records the calibration and the fidelity in the model's
ONNX metadata (``fstore.calibration``, ``fstore.fidelity``), so a cached variant still says how
faithful it is (:func:`read_fidelity`). ``--precision auto`` (:func:`choose_auto`) takes a
variant only where that record holds (:func:`fidelity_holds`) and where it is clearly faster
than fp32 on this machine: one batch of each is timed, and the variant must be
:data:`AUTO_SPEEDUP` times as fast, a margin that load on a shared machine does not flip (on a
CPU without VNNI int8 can be slower than fp32). The timings are written beside the variant
(:func:`speed_path`). The change in SVM accuracy on a labelled folder is measured above this
layer, by :mod:`fstore.classifiers.fidelity`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fstore.errors import DatasetError, ModelError
from fstore.export.calibration import (
    DEFAULT_CALIBRATION_COUNT,
    calibration_fingerprint,
    choose_images,
    pixel_batches,
    synthetic_pixels,
)
from fstore.export.int8 import (
    DEFAULT_RECIPE,
    PROP_PRECISION,
    Int8Recipe,
    int8_format,
    quantize_int8,
)
from fstore.export.model_cache import model_key, model_path
from fstore.export.result import (
    ExportResult,
    deliver,
    relative_error,
    save_model,
    set_props,
)
from fstore.fsutil import atomic_write_bytes, commit_file, tmp_path_for
from fstore.images.preprocess import Preprocessing
from fstore.runtime.metadata import (
    PRECISIONS,
    read_metadata_props,
    read_model_info,
    read_props,
    write_props,
)
from fstore.runtime.prefix import add_prefix, remove_prefix
from fstore.runtime.session import OrtBackend

logger = logging.getLogger(__name__)

#: ``--precision auto``: the provider's faster variant where its fidelity holds, else fp32.
AUTO = "auto"
#: Images on which an exported variant's fidelity is measured (held out from calibration).
FIDELITY_IMAGES = 32
#: Below this mean cosine similarity, export warns that the variant is not faithful.
MIN_MEAN_COSINE = 0.99
#: The mean cosine (every layer) a variant must reach for ``auto`` to take it.
AUTO_MIN_COSINE = 0.999
#: The variant ``auto`` tries on each provider (int8 needs calibration images, see
#: :func:`auto_candidate`).
AUTO_VARIANTS = {"cuda": "fp16", "tensorrt": "fp16", "cpu": "int8"}
#: How many times as fast as fp32 a variant must run one batch for ``auto`` to take it.
AUTO_SPEEDUP = 1.25
#: Images in the batch ``auto`` times, and the runs of it (the fastest counts).
AUTO_BATCH, AUTO_RUNS = 16, 3

_PROP_FIDELITY = "fstore.fidelity"


def auto_candidate(provider: str, calibration: Path | None) -> str:
    """The variant ``auto`` tries on ``provider``: fp16 on CUDA/TensorRT; int8 on the CPU when
    there are images to calibrate on (ranges from generated pictures are no basis to choose
    int8 by); fp32 otherwise."""
    candidate = AUTO_VARIANTS.get(provider, "fp32")
    if candidate == "int8" and calibration is None:
        return "fp32"
    return candidate


def fidelity_holds(result: ExportResult, threshold: float | None = None) -> bool:
    """Whether every layer's recorded mean cosine against fp32 reaches ``threshold``
    (:data:`AUTO_MIN_COSINE` when ``None``)."""
    threshold = AUTO_MIN_COSINE if threshold is None else threshold
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
    set_props(model, {PROP_PRECISION: "fp16"})
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
    foreign_reference: bool = False,
) -> dict[str, dict[str, float]]:
    """How closely ``other_model`` reproduces ``fp32_model``'s features on the same pixels.

    ``images`` are image files (decoded with ``preprocessing``; unreadable ones skipped) or a
    uint8 (N, H, W, 3) array of crops. ``foreign_reference``: ``fp32_model`` takes float NCHW
    input (a model from elsewhere), normalised with ``preprocessing``. Returns per output layer
    ``{"mean_cosine", "min_cosine", "max_relative_error", "images"}``.
    """
    ref_prep = preprocessing if foreign_reference else None
    ref_backend = OrtBackend.open(Path(fp32_model), provider, preprocessing=ref_prep)
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


@dataclass(frozen=True)
class CalibrationRequest:
    """How an int8 model is calibrated: image count, the seed that draws them, the recipe."""

    count: int = DEFAULT_CALIBRATION_COUNT
    seed: int = 0
    recipe: Int8Recipe = DEFAULT_RECIPE


def variant_tag(
    precision: str, calibration: Sequence[Path] = (), request: CalibrationRequest | None = None
) -> str:
    """What goes in the cache key's ``precision`` slot: an int8 model depends on its
    calibration images, their count and seed, the recipe, the CPU's format and onnxruntime."""
    if precision != "int8":
        return precision
    request = request or CalibrationRequest()
    recipe, fmt = request.recipe, int8_format()
    images = calibration_fingerprint(calibration, recipe.method)
    calibrated = f"n{request.count}-s{request.seed}-{images}"
    return f"int8-{fmt}-{recipe.method}-{recipe.fingerprint(fmt)}-{calibrated}"


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
        quantize_int8(
            base.path, work, chosen, request.count, prep, seed=request.seed, recipe=request.recipe
        )
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


def _calibration_images(calibration: Path | None, precision: str, request) -> list[Path]:
    if calibration is None or precision != "int8":
        return []
    chosen = choose_images(calibration, request.count, seed=request.seed)
    if not chosen:
        raise DatasetError(f"no images to calibrate on in {calibration}")
    return chosen


def export_variant(
    base: ExportResult,
    precision: str,
    *,
    calibration: Path | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
    calibration_seed: int = 0,
    recipe: Int8Recipe = DEFAULT_RECIPE,
    output: Path | None = None,
    use_cache: bool = True,
) -> ExportResult:
    """Derive the ``precision`` variant of the fp32 model ``base``, cached like any export.

    ``calibration`` is an image folder: for int8, ``calibration_count`` of its images (drawn
    with ``calibration_seed``) calibrate the ranges by ``recipe``; for both variants, up to
    :data:`FIDELITY_IMAGES` other images of it measure the fidelity against fp32 (generated
    pictures without a folder).
    The calibration and the fidelity are written into the model's metadata. ``errors`` in the
    result are the max relative errors against the fp32 model on those images.
    """
    if precision == "fp32":
        return base
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if output is not None and Path(output).is_dir():
        raise ModelError(f"cannot write model to {output}: it is a folder")
    request = CalibrationRequest(calibration_count, calibration_seed, recipe)
    result = _cached_or_derived(base, precision, calibration, request, use_cache)
    return deliver(result, output)


def _cached_or_derived(base, precision, calibration, request, use_cache) -> ExportResult:
    info = base.info
    chosen = _calibration_images(calibration, precision, request)
    tag = variant_tag(precision, chosen, request)
    key = model_key(
        info.arch, info.weights_sha256, info.layers, info.opset, tag, info.preprocessing
    )
    path = model_path(key, info.arch)
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


# --------------------------------------------------------------------------- auto


def time_models(
    models: dict[str, Path], provider: str, pixels: np.ndarray, runs: int = AUTO_RUNS
) -> dict[str, float]:
    """Seconds of the fastest of ``runs`` runs of each model on ``pixels``, after a warm-up.

    The models' runs alternate, so a burst of load falls on both rather than on one.
    """
    backends = {name: OrtBackend.open(Path(path), provider) for name, path in models.items()}
    best = {name: float("inf") for name in models}
    for backend in backends.values():
        backend.run(pixels)
    for _ in range(runs):
        for name, backend in backends.items():
            start = time.perf_counter()
            backend.run(pixels)
            best[name] = min(best[name], time.perf_counter() - start)
    for backend in backends.values():
        backend.close()
    return best


def speed_path(model: Path) -> Path:
    """Where ``auto`` records the timings that decided for or against a variant."""
    return Path(model).with_suffix(".auto.json")


def _decide(
    base: ExportResult, variant: ExportResult, precision: str, provider: str
) -> tuple[bool, str]:
    """Whether ``variant`` is clearly faster than ``base`` (fp32) on ``provider``, and why."""
    pixels = synthetic_pixels(AUTO_BATCH, base.info.preprocessing, seed=2)
    seconds = time_models({"fp32": base.path, precision: variant.path}, provider, pixels)
    speedup = seconds["fp32"] / seconds[precision]
    faster = speedup >= AUTO_SPEEDUP
    record = {
        "provider": provider,
        "batch": AUTO_BATCH,
        "seconds": seconds,
        "speedup": speedup,
        "required": AUTO_SPEEDUP,
        "int8_format": int8_format(),
        "chosen": precision if faster else "fp32",
    }
    atomic_write_bytes(speed_path(variant.path), json.dumps(record, indent=1).encode())
    timing = (
        f"{speedup:.2f}x fp32's speed on {provider} ({seconds[precision] * 1e3:.0f} vs "
        f"{seconds['fp32'] * 1e3:.0f} ms per batch of {AUTO_BATCH}; {AUTO_SPEEDUP}x required)"
    )
    return faster, timing


def choose_auto(
    base: ExportResult,
    provider: str,
    calibration: Path | None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
) -> ExportResult:
    """``--precision auto``: the provider's variant (:func:`auto_candidate`) where its fidelity
    holds and it runs one batch at least :data:`AUTO_SPEEDUP` times as fast as ``base``, else
    ``base``. One log line says what was chosen and why."""
    candidate = auto_candidate(provider, calibration)
    if candidate == "fp32":
        logger.info("auto: fp32 (no images to calibrate int8 on, or no faster variant here)")
        return base
    variant = export_variant(
        base, candidate, calibration=calibration, calibration_count=calibration_count
    )
    if not fidelity_holds(variant):
        logger.info("auto: fp32, %s's fidelity is below mean cosine %s", candidate, AUTO_MIN_COSINE)
        return base
    faster, timing = _decide(base, variant, candidate, provider)
    if not faster:
        logger.info("auto: fp32, %s is not clearly faster: %s", candidate, timing)
        return base
    logger.info(
        "auto: %s, fidelity >= %s on every layer and %s", candidate, AUTO_MIN_COSINE, timing
    )
    return variant
