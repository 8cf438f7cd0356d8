"""VGG16 → ONNX, truncated at the requested layers, verified against eager PyTorch, cached.

The graph has one input (``input``: float32 NCHW, dynamic batch) and one output per requested
layer, named as in :mod:`fstore.export.layers`. Nothing past the deepest requested layer is
computed. Torch is imported lazily: :func:`ensure_model` returns a cached model without it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fstore import __version__
from fstore.errors import ModelError, OutputPathError
from fstore.export import cache
from fstore.export.layers import LAYERS, Layer, parse_layers
from fstore.export.metadata import ModelInfo
from fstore.export.weights import WeightsSource, load_vgg16
from fstore.fsutil import atomic_write_bytes, commit_file, tmp_path_for
from fstore.images.preprocess import Preprocessing

if TYPE_CHECKING:
    import torch

DEFAULT_OPSET = 18
PRECISIONS = ("fp32", "int8", "fp16")
INPUT_NAME = "input"
#: Tolerance of the export check: max |ORT - eager| / max |eager|, per output.
VERIFY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` produced.

    Attributes:
        path: the ONNX file (in the cache, or the ``output`` asked for).
        info: the metadata written into it.
        errors: per output, max |ORT - eager| / max |eager| on a random batch (empty if cached).
        seconds: wall time of export and verification (0 when served from the cache).
        from_cache: whether an earlier export was reused.
    """

    path: Path
    info: ModelInfo
    errors: dict[str, float]
    seconds: float
    from_cache: bool

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


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


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (0 when both are all zeros)."""
    scale = float(np.abs(reference).max())
    diff = float(np.abs(actual.astype(np.float64) - reference).max())
    return diff / scale if scale > 0 else diff


def verify(
    path: Path,
    module: torch.nn.Module,
    layer_names: tuple[str, ...],
    input_size: int,
    batch: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Run the ONNX model in ONNX Runtime and ``module`` eagerly on one random batch.

    Returns per output the relative error (see :func:`relative_error`).
    """
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(seed).standard_normal((batch, 3, input_size, input_size))
    x = x.astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(layer_names), {INPUT_NAME: x})
    with torch.inference_mode():
        expected = module(torch.from_numpy(x))
    return {name: relative_error(g, e.numpy()) for name, g, e in zip(layer_names, got, expected)}


def _check_writable(output: Path) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise OutputPathError(f"cannot write model to {output}: it is a folder")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OutputPathError(f"cannot write model to {output}: folder {parent} is not writable")


def _copy_out(source: Path, output: Path) -> Path:
    tmp = tmp_path_for(output)
    shutil.copyfile(source, tmp)
    commit_file(tmp, output)
    return output


def _class_names() -> tuple[str, ...]:
    from torchvision.models import VGG16_Weights

    return tuple(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def _write_onnx(
    module: torch.nn.Module, layers: tuple[Layer, ...], info: ModelInfo, path: Path
) -> None:
    import torch

    x = torch.zeros(2, 3, info.preprocessing.crop, info.preprocessing.crop)
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
    program.model.metadata_props.update(info.to_props())
    program.model.producer_name = "fstore"
    program.model.producer_version = __version__
    tmp = tmp_path_for(path)
    program.save(str(tmp), external_data=False)
    commit_file(tmp, path)
    atomic_write_bytes(_props_path(path), json.dumps(info.to_props()).encode())


def _props_path(model: Path) -> Path:
    """A copy of a cached model's metadata, so reading it does not parse 500 MB of weights."""
    return model.with_suffix(".meta.json")


def export(
    layers: str | list[str] | tuple[str, ...],
    weights: WeightsSource,
    *,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    preprocessing: Preprocessing = Preprocessing(),
    output: Path | None = None,
    use_cache: bool = True,
    calibration: Path | None = None,
    calibration_count: int = 64,
    log: Callable[[str], None] = lambda _: None,
) -> ExportResult:
    """Export VGG16 truncated at ``layers`` to ONNX and verify it against eager PyTorch.

    The model lands in the cache (see :mod:`fstore.export.cache`) and, if ``output`` is given,
    is copied there. A model already cached is reused without export or torch (unless the weights
    must be loaded to learn their hash). Raises ``ModelError`` when verification fails.
    """
    chosen = parse_layers(layers)
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if output is not None:
        _check_writable(output)
    if precision != "fp32":  # derived from the verified fp32 model, cached under its own key
        from fstore.export.precision import export_variant

        base = export(
            layers, weights, opset=opset, preprocessing=preprocessing, use_cache=use_cache, log=log
        )
        return export_variant(
            base,
            precision,
            calibration=calibration,
            calibration_count=calibration_count,
            output=output,
            use_cache=use_cache,
            log=log,
        )
    names = tuple(layer.name for layer in chosen)

    if use_cache:
        sha = cache.lookup_alias(weights.alias())
        if sha is not None:
            path = cache.model_path(cache.model_key(sha, names, opset, precision, preprocessing))
            if path.is_file():
                log(f"using cached model {path}")
                info = read_model_info(path)
                final = _copy_out(path, output) if output is not None else path
                return ExportResult(final, info, {}, 0.0, True)

    start = time.perf_counter()
    log(f"loading VGG16 weights ({weights.origin})")
    model, sha = load_vgg16(weights)
    cache.record_alias(weights.alias(), sha)
    key = cache.model_key(sha, names, opset, precision, preprocessing)
    path = cache.model_path(key)
    info = ModelInfo(
        layers=names,
        shapes={layer.name: layer.output_shape(preprocessing.crop) for layer in chosen},
        preprocessing=preprocessing,
        weights_origin=weights.origin,
        weights_sha256=sha,
        precision=precision,
        opset=opset,
        classes=_class_names() if {"logits", "prob"} & set(names) else None,
        fstore_version=__version__,
    )
    module = truncated_vgg16(model, chosen)
    if not (use_cache and path.is_file()):
        log(f"exporting {', '.join(names)} (opset {opset}, {precision})")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_onnx(module, chosen, info, path)
    errors = verify(path, module, names, preprocessing.crop)
    for name, err in errors.items():
        log(f"verified {name}: max relative error vs eager PyTorch {err:.2e}")
    bad = {n: e for n, e in errors.items() if not e <= VERIFY_TOLERANCE}
    if bad:
        path.unlink(missing_ok=True)
        raise ModelError(
            "exported model disagrees with eager PyTorch: "
            + ", ".join(f"{n} {e:.2e}" for n, e in bad.items())
            + f" (tolerance {VERIFY_TOLERANCE:.0e})"
        )
    final = _copy_out(path, output) if output is not None else path
    return ExportResult(final, info, errors, time.perf_counter() - start, False)


def ensure_model(
    layers: str | list[str] | tuple[str, ...],
    weights: WeightsSource,
    preprocessing: Preprocessing = Preprocessing(),
    precision: str = "fp32",
    log: Callable[[str], None] = lambda _: None,
    calibration: Path | None = None,
) -> Path:
    """The cached model for these layers and weights, exporting it first if needed.

    ``calibration``: image folder an int8 model is calibrated on.
    """
    return export(
        layers,
        weights,
        preprocessing=preprocessing,
        precision=precision,
        log=log,
        calibration=calibration,
    ).path


def read_model_info(path: Path) -> ModelInfo:
    """Read fstore's metadata from an ONNX file without loading its weights into a session."""
    props_file = _props_path(path)
    if props_file.is_file() and props_file.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        info = ModelInfo.from_props(json.loads(props_file.read_text()))
    else:
        info = ModelInfo.from_props(read_metadata_props(path))
    if info is None:
        raise ModelError(f"{path} was not exported by fstore (no fstore metadata)")
    return info


def read_metadata_props(path: Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props``, read without its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf and OS errors alike
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from None
    return {p.key: p.value for p in model.metadata_props}
