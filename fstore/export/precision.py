"""Precision variants of an exported model (int8 for CPU, fp16 for CUDA) and their fidelity.

Both variants are derived from the verified fp32 model, never from PyTorch:

* **int8**: ONNX Runtime static quantization in QDQ format, weights int8 per output channel,
  activations uint8 (U8S8, what ONNX Runtime's x86 kernels run natively), ranges calibrated
  (min/max by default) on the user's images decoded with fstore's own preprocessing. Without
  calibration images, a documented fallback calibrates on generated pictures (smooth gradients
  plus noise, preprocessed like photos); its ranges are only roughly those of real photographs,
  so the fidelity it reports says little: pass real images.
* **fp16**: every float32 weight and operator converted to float16 by ONNX Runtime's own
  converter (``onnxruntime.transformers.float16``, no extra package), inputs and outputs kept
  float32 so that ``build`` and ``bench`` feed it the same arrays.

Fidelity is measured against the fp32 model on the same inputs: per layer, the cosine
similarity between the two models' features of each image (mean and minimum) and the largest
relative error. :func:`export_variant` records the calibration and the fidelity in the model's
ONNX metadata (``fstore.calibration``, ``fstore.fidelity``), so a cached variant still says how
faithful it is (:func:`read_fidelity`). :func:`accuracy_change` trains the same linear SVM on
both models' features of a labelled folder and reports the change in test accuracy.

Heavy libraries (onnx, onnxruntime, scikit-learn) are imported inside the functions; torch is
never needed.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fstore.errors import DatasetError, ModelError
from fstore.images.decode import ImageDecodeError
from fstore.images.preprocess import Preprocessing, preprocess
from fstore.images.reader import load_image

if TYPE_CHECKING:
    from PIL import Image

    from fstore.export.onnx_export import ExportResult

PRECISIONS = ("fp32", "int8", "fp16")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_CALIBRATION_COUNT = 64
#: Images on which an exported variant's fidelity is measured (held out from calibration).
FIDELITY_IMAGES = 32
#: Below this mean cosine similarity, export warns that the variant is not faithful.
MIN_MEAN_COSINE = 0.99
#: Images per calibration run.
CALIBRATION_BATCH = 8

_PROP_CALIBRATION = "fstore.calibration"
_PROP_FIDELITY = "fstore.fidelity"
_PROP_PRECISION = "fstore.precision"


# --------------------------------------------------------------------------- inputs


def choose_images(
    folder: Path, count: int, seed: int = 0, exclude: Sequence[Path] = ()
) -> list[Path]:
    """Up to ``count`` images of ``folder`` drawn with ``seed`` (every class has its chance).

    The folder is read as ``build`` reads it (``<class>/<image>`` or ``train|test/<class>/...``);
    ``exclude`` removes images already used, e.g. for calibration. The order is sorted by path,
    so the same folder, count and seed always give the same list.
    """
    from fstore.images.discover import scan

    skip = {Path(p).resolve() for p in exclude}
    paths = [item.path for item in scan(folder) if item.path.resolve() not in skip]
    if count <= 0 or not paths:
        return []
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    return [paths[i] for i in sorted(order)]


def calibration_fingerprint(images: Sequence[Path], method: str) -> str:
    """A short hash of what decides an int8 model's ranges: the images (path, size, mtime)."""
    digest = hashlib.sha256(method.encode())
    if not images:
        digest.update(b"synthetic")
    for path in images:
        st = Path(path).stat()
        digest.update(f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def synthetic_picture(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth random RGB picture (gradients plus noise) with the value range of a photo."""
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            (xx * rng.uniform(0.2, 2) + yy * rng.uniform(0.2, 2) + rng.uniform(0, 255)) % 256
            for _ in range(3)
        ],
        -1,
    )
    noise = rng.normal(0, 12, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def synthetic_inputs(count: int, preprocessing: Preprocessing, seed: int = 0) -> np.ndarray:
    """``count`` generated pictures through fstore's preprocessing: float32 (N, 3, crop, crop)."""
    rng = np.random.default_rng(seed)
    side = preprocessing.resize + preprocessing.resize // 4
    return np.stack(
        [
            preprocess(synthetic_picture(rng, (side, preprocessing.resize)), preprocessing)
            for _ in range(count)
        ]
    ).astype(np.float32)


def decode_inputs(images: Sequence[Path], preprocessing: Preprocessing) -> np.ndarray:
    """Decode and preprocess image files as ``build`` does; unreadable files are skipped."""
    arrays = []
    for path in images:
        try:
            arrays.append(load_image(Path(path).read_bytes(), preprocessing)[0])
        except (OSError, ImageDecodeError):
            continue
    if not arrays:
        raise DatasetError(f"none of the {len(images)} images could be read and decoded")
    return np.stack(arrays)


def _input_batches(
    images: Sequence[Path] | np.ndarray, preprocessing: Preprocessing, batch_size: int
) -> Iterator[np.ndarray]:
    """Batches of network inputs from files (decoded lazily) or from an array."""
    if isinstance(images, np.ndarray):
        for i in range(0, len(images), batch_size):
            yield np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32)
        return
    good = 0
    for i in range(0, len(images), batch_size):
        chunk = list(images[i : i + batch_size])
        arrays = []
        for path in chunk:
            try:
                arrays.append(load_image(Path(path).read_bytes(), preprocessing)[0])
            except (OSError, ImageDecodeError):
                continue
        if arrays:
            good += len(arrays)
            yield np.stack(arrays)
    if not good:
        raise DatasetError(f"none of the {len(images)} images could be read and decoded")


# --------------------------------------------------------------------------- metadata


def _model_input_name(model) -> str:  # model: onnx.ModelProto
    initializers = {init.name for init in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if len(names) != 1:
        raise ModelError(f"expected one image input, found {len(names)}: {', '.join(names)}")
    return names[0]


def _set_props(model, updates: dict[str, str]) -> None:  # model: onnx.ModelProto
    props = {p.key: p.value for p in model.metadata_props}
    props.update(updates)
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]


def _save(model, out: Path) -> Path:  # model: onnx.ModelProto
    import onnx

    from fstore.fsutil import commit_file, tmp_path_for

    out = Path(out)
    tmp = tmp_path_for(out)
    onnx.save(model, str(tmp))
    commit_file(tmp, out)
    return out


def _update_props(path: Path, updates: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    _set_props(model, updates)
    _save(model, path)


def read_fidelity(model: Path) -> dict | None:
    """The fidelity :func:`export_variant` recorded in a model (``None`` for fp32 or foreign)."""
    from fstore.export.onnx_export import read_metadata_props

    sidecar = Path(model).with_suffix(".meta.json")
    props = None
    if sidecar.is_file() and sidecar.stat().st_mtime_ns >= Path(model).stat().st_mtime_ns:
        props = json.loads(sidecar.read_text())
    if props is None or _PROP_FIDELITY not in props:
        props = read_metadata_props(Path(model))
    text = props.get(_PROP_FIDELITY)
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


# --------------------------------------------------------------------------- variants


def quantize_int8(
    fp32_model: Path,
    out: Path,
    calibration: Sequence[Path] | None,
    count: int,
    preprocessing: Preprocessing,
    *,
    method: str = "minmax",
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Statically quantize ``fp32_model`` to int8 (QDQ, per-channel weights) into ``out``.

    Ranges are calibrated on up to ``count`` of the ``calibration`` images, decoded with
    ``preprocessing`` exactly as ``build`` decodes them; unreadable files are skipped. With no
    calibration images, ``count`` generated pictures are used instead (see the module notes).
    ``method`` is ``minmax`` (per-batch minima and maxima: little memory), ``percentile``
    (99.999th) or ``entropy``; the last two keep every activation of every calibration image in
    memory (about 100 MB per 224x224 image up to fc7), so keep ``count`` small with them.
    (``CalibMaxIntermediateOutputs`` is not used: in ONNX Runtime 1.32 it drops min/max data.)
    The fstore metadata of
    the fp32 model is kept, with ``precision`` set to ``int8`` and the calibration recorded.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if method not in CALIBRATION_METHODS:
        raise ModelError(
            f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}"
        )
    if count < 1:
        raise ModelError(f"--calibration-count must be at least 1, not {count}")
    images = list(calibration or [])[:count]
    if images:
        source: Sequence[Path] | np.ndarray = images
        record = {"source": "images", "images": len(images), "method": method}
        log(f"calibrating int8 ranges ({method}) on {len(images)} images")
    else:
        source = synthetic_inputs(count, preprocessing, seed)
        record = {"source": "synthetic", "images": count, "method": method, "seed": seed}
        log(
            f"no calibration images: calibrating int8 ranges on {count} generated pictures "
            "(pass --calibration DIR with real images for a faithful int8 model)"
        )
    record["fingerprint"] = calibration_fingerprint(images, method)
    input_name = _model_input_name(onnx.load(str(fp32_model), load_external_data=False))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _input_batches(source, preprocessing, CALIBRATION_BATCH)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".fstore-quant-", dir=out.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference and constant folding, as ONNX Runtime recommends before quantizing
            quant_pre_process(str(fp32_model), str(prepared))
        except Exception as exc:  # noqa: BLE001 - optional step; quantization works without it
            log(f"quantization pre-processing skipped ({type(exc).__name__}: {exc})")
            prepared = Path(fp32_model)
        quantized = Path(tmp) / "quantized.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
        )
        model = onnx.load(str(quantized))
    _set_props(model, {_PROP_PRECISION: "int8", _PROP_CALIBRATION: json.dumps(record)})
    return _save(model, out)


def convert_fp16(fp32_model: Path, out: Path) -> Path:
    """Convert ``fp32_model`` to float16 weights and arithmetic, inputs and outputs float32.

    The fstore metadata is kept, with ``precision`` set to ``fp16``.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_model))
    model = convert_float_to_float16(model, keep_io_types=True)
    _set_props(model, {_PROP_PRECISION: "fp16"})
    return _save(model, Path(out))


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
    from fstore.export.onnx_export import relative_error

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
    """How closely ``other_model`` reproduces ``fp32_model``'s features on the same inputs.

    ``images`` are image files (decoded with ``preprocessing``; unreadable ones skipped) or a
    float32 (N, 3, H, W) array of network inputs. Returns per output layer
    ``{"mean_cosine", "min_cosine", "max_relative_error", "images"}``.
    """
    from fstore.featurestore.runtime import OrtBackend

    ref_backend = OrtBackend.load(Path(fp32_model), provider)
    other_backend = OrtBackend.load(Path(other_model), provider, outputs=ref_backend.outputs)
    ref: dict[str, list[np.ndarray]] = {name: [] for name in ref_backend.outputs}
    got: dict[str, list[np.ndarray]] = {name: [] for name in ref_backend.outputs}
    for batch in _input_batches(images, preprocessing, batch_size):
        for name, value in ref_backend.run(batch).items():
            ref[name].append(value.reshape(len(batch), -1))
        for name, value in other_backend.run(batch).items():
            got[name].append(value.reshape(len(batch), -1))
    return compare_features(
        {k: np.concatenate(v) for k, v in ref.items()},
        {k: np.concatenate(v) for k, v in got.items()},
    )


def accuracy_change(
    fp32_model: Path,
    other_model: Path,
    folder: Path,
    preprocessing: Preprocessing,
    *,
    layer: str | None = None,
    per_class: int | None = None,
    provider: str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Train the same linear SVM on both models' features of ``folder``; compare test accuracy.

    ``folder`` is a labelled image folder (``<class>/<image>``, or ``train|test/<class>/...``
    whose split is then used; otherwise half of each class trains, drawn with ``seed``).
    ``per_class`` keeps at most that many images per class and split, to bound the time.
    The SVM is fstore's (:func:`fstore.classifiers.svm.train_svm`: grid search over C with
    stratified CV), run with the same seed on both. Returns accuracies (fractions) and
    ``change_points``, the other model's accuracy minus fp32's, in percentage points.
    """
    from fstore.classifiers.protocol import SplitProtocol
    from fstore.classifiers.svm import SvmOptions, train_svm
    from fstore.export.onnx_export import read_model_info
    from fstore.featurestore.features import FeatureSet
    from fstore.featurestore.run import extract_features
    from fstore.images.discover import class_of, folder_split, is_split_layout, scan

    root = Path(folder)
    items = scan(root)
    split_layout = is_split_layout(root)
    groups: dict[tuple[str, str], list] = {}
    for item in items:
        groups.setdefault(
            (folder_split(item.key, split_layout), class_of(item.key, split_layout)), []
        ).append(item)
    rng = np.random.default_rng(seed)
    chosen = []
    for key in sorted(groups):
        members = groups[key]
        if per_class is not None and len(members) > per_class:
            members = [members[i] for i in sorted(rng.permutation(len(members))[:per_class])]
        chosen.extend(members)
    paths = [item.path for item in chosen]
    by_path = {item.path: item for item in chosen}
    classes = sorted({class_of(item.key, split_layout) for item in chosen})
    if len(classes) < 2:
        raise DatasetError(f"{root} needs at least two class folders to train an SVM")

    accuracies, counts = {}, {}
    for name, model in (("fp32", Path(fp32_model)), ("other", Path(other_model))):
        log(f"SVM fidelity: features of {len(paths)} images with the {name} model")
        layers = (layer,) if layer else read_model_info(model).layers[-1:]
        feats, good, _ = extract_features(
            paths, model, layers, provider=provider, preprocessing=preprocessing
        )
        keys = [by_path[p].key for p in good]
        y = np.array([classes.index(class_of(k, split_layout)) for k in keys], dtype=np.int64)
        split = np.array([folder_split(k, split_layout) for k in keys], dtype=object)
        fs = FeatureSet(
            layers[0], feats[layers[0]], y, np.asarray(keys, dtype=object), split, tuple(classes)
        )
        protocol = None
        smallest = int(np.bincount(y).min())
        if not split_layout:
            protocol = SplitProtocol(splits=1, per_class=max(1, smallest // 2), seed=seed)
            train_counts = max(1, smallest // 2)
        else:
            train_counts = int(np.bincount(y[split == "train"], minlength=len(classes)).min())
        options = SvmOptions(cv=max(2, min(5, train_counts)), seed=seed)
        run = train_svm(fs, options, protocol)
        accuracies[name] = run.accuracy_mean
        counts = {"n_train": run.fits[0].n_train, "n_test": run.fits[0].evaluation.n_test}
    return {
        "layer": fs.layer,
        "fp32_accuracy": accuracies["fp32"],
        "other_accuracy": accuracies["other"],
        "change_points": 100.0 * (accuracies["other"] - accuracies["fp32"]),
        "split": "folders" if split_layout else f"random (seed {seed})",
        **counts,
    }


# --------------------------------------------------------------------------- export


def variant_tag(precision: str, calibration: Sequence[Path] = (), method: str = "minmax") -> str:
    """What goes in the cache key's ``precision`` slot: int8 models depend on their calibration."""
    if precision == "int8":
        return f"int8-{method}-{calibration_fingerprint(calibration, method)}"
    return precision


def export_variant(
    base: ExportResult,
    precision: str,
    *,
    calibration: Path | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
    method: str = "minmax",
    output: Path | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> ExportResult:
    """Derive the ``precision`` variant of the fp32 model ``base``, cached like any export.

    ``calibration`` is an image folder: for int8, ``calibration_count`` of its images (drawn
    with a fixed seed) calibrate the ranges; for both variants, up to :data:`FIDELITY_IMAGES`
    other images of it measure the fidelity against fp32 (generated pictures without a folder).
    The calibration and the fidelity are written into the model's metadata. ``errors`` in the
    result are the max relative errors against the fp32 model on those images.
    """
    import time

    from fstore.export import cache
    from fstore.export.onnx_export import ExportResult, read_model_info
    from fstore.fsutil import atomic_write_bytes, commit_file, tmp_path_for

    if precision == "fp32":
        return base
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if output is not None and Path(output).is_dir():
        raise ModelError(f"cannot write model to {output}: it is a folder")
    info = base.info
    prep = info.preprocessing
    chosen = (
        choose_images(calibration, calibration_count)
        if calibration is not None and precision == "int8"
        else []
    )
    if calibration is not None and precision == "int8" and not chosen:
        raise DatasetError(f"no images to calibrate on in {calibration}")
    tag = variant_tag(precision, chosen, method)
    key = cache.model_key(info.weights_sha256, info.layers, info.opset, tag, prep)
    path = cache.model_path(key)

    def finish(result: ExportResult) -> ExportResult:
        if output is None:
            return result
        import shutil

        tmp = tmp_path_for(Path(output))
        shutil.copyfile(result.path, tmp)
        commit_file(tmp, Path(output))
        return replace(result, path=Path(output))

    if use_cache and path.is_file():
        log(f"using cached {precision} model {path}")
        return finish(ExportResult(path, read_model_info(path), {}, 0.0, True))

    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    work = tmp_path_for(path).with_suffix(".variant.onnx")
    try:
        if precision == "int8":
            quantize_int8(base.path, work, chosen, calibration_count, prep, method=method, log=log)
        else:
            log("converting to fp16 (inputs and outputs kept float32)")
            convert_fp16(base.path, work)
        held_out = (
            choose_images(calibration, FIDELITY_IMAGES, seed=1, exclude=chosen)
            if calibration is not None
            else []
        )
        if calibration is not None and not held_out:
            held_out = chosen  # every image calibrated: measure on them, and say so
        images: Sequence[Path] | np.ndarray = held_out or synthetic_inputs(
            FIDELITY_IMAGES, prep, seed=1
        )
        source = (
            "calibration"
            if held_out and held_out is chosen
            else "held-out"
            if held_out
            else "synthetic"
        )
        rows = fidelity(base.path, work, images, prep)
        record = {"reference": "fp32", "source": source, "layers": rows}
        _update_props(work, {_PROP_FIDELITY: json.dumps(record)})
        commit_file(work, path)
    finally:
        work.unlink(missing_ok=True)
    variant_info = replace(info, precision=precision)
    props = {p: v for p, v in _read_all_props(path).items() if p.startswith("fstore.")}
    atomic_write_bytes(path.with_suffix(".meta.json"), json.dumps(props).encode())
    for layer, row in rows.items():
        log(
            f"{precision} fidelity {layer}: cosine vs fp32 mean {row['mean_cosine']:.4f}, "
            f"min {row['min_cosine']:.4f} on {row['images']} {source} images"
        )
        if row["mean_cosine"] < MIN_MEAN_COSINE:
            log(
                f"warning: {precision} {layer} mean cosine {row['mean_cosine']:.4f} is below "
                f"{MIN_MEAN_COSINE}; features will differ from fp32"
            )
    errors = {layer: row["max_relative_error"] for layer, row in rows.items()}
    return finish(ExportResult(path, variant_info, errors, time.perf_counter() - start, False))


def _read_all_props(path: Path) -> dict[str, str]:
    from fstore.export.onnx_export import read_metadata_props

    return read_metadata_props(path)
