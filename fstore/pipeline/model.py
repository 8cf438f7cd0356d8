"""The model a build runs: a ``--model`` file, the one the store remembers, or an export.

:func:`build` is ``fstore build`` as one call: it resolves the model and hands it to
:func:`fstore.pipeline.fill.fill_store`. The model is

* a ``--model`` file (or the one the store remembers), run as given; at ``--precision int8`` or
  ``fp16`` its variant is derived first (a file without fstore metadata is annotated with the
  preprocessing flags into the cache, :mod:`fstore.export.annotate`), and the store remembers
  the variant;
* or an architecture (``--arch``, VGG16 by default, the store's on a resume) exported for the
  requested layers, weights and precision, int8 calibrated on the build's images.

A model that carries its preprocessing runs with it: flags may repeat it, and a flag that
contradicts it is a one-line error (:func:`fstore.images.preprocess.resolve_preprocessing`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fstore.errors import FstoreError
from fstore.images.discover import discover
from fstore.images.preprocess import Preprocessing, PreprocessingFlags, resolve_preprocessing
from fstore.pipeline.config import BuildConfig
from fstore.pipeline.fill import (
    BuildReport,
    check_config,
    existing_manifest,
    fill_store,
    given_model,
    image_folder,
    model_layers,
    requested_preprocessing,
)
from fstore.pipeline.plan import ResolvedModel
from fstore.runtime.metadata import ModelInfo
from fstore.runtime.weights_source import WeightsSource
from fstore.store.layout import Manifest

__all__ = ["build_store", "resolve_export", "resolve_given"]

logger = logging.getLogger(__name__)

VARIANTS = ("int8", "fp16")


def _flags(preprocessing: Preprocessing | None) -> PreprocessingFlags | None:
    """A build's preprocessing options as flags (the CLI has no flag for interpolation)."""
    if preprocessing is None:
        return None
    p = preprocessing
    return PreprocessingFlags(size=p.crop, resize=p.resize, mean=p.mean, std=p.std)


def store_arch(manifest: Manifest | None) -> str | None:
    """The architecture of the model a store was built with: its provenance's, else (a store
    written before provenance named it) that model's metadata, while the model is cached."""
    from fstore.runtime.metadata import read_model_info

    if manifest is None or manifest.provenance.get("model_given"):
        return None
    if manifest.provenance.get("arch"):
        return manifest.provenance["arch"]
    path = Path(manifest.provenance.get("model_path", ""))
    return read_model_info(path).arch if path.is_file() else None


def _precision(config: BuildConfig, manifest: Manifest | None) -> str:
    """The precision asked for; a store keeps the one it was built with (never re-decided)."""
    from fstore.export.precision import AUTO

    if manifest is not None and config.precision in ("fp32", AUTO):
        return manifest.provenance.get("precision", "fp32")
    return config.precision


def export_layers(config: BuildConfig, manifest: Manifest | None) -> tuple[str, tuple[str, ...]]:
    """The architecture to export and its layers: the ones given, else the store's. VGG16's
    are checked here, cheaply, and put in forward order with their aliases resolved, as the
    store records them; other networks' are known only once traced."""
    from fstore.export.architectures import VGG16
    from fstore.export.layers import parse_layers

    layers = model_layers(config, manifest)
    if not layers:
        raise FstoreError("no layer given: pass --layer (e.g. --layer fc7)")
    arch = config.arch or store_arch(manifest) or VGG16
    if arch == VGG16:
        layers = tuple(layer.name for layer in parse_layers(layers))
    return arch, tuple(layers)


def resolve_export(config: BuildConfig, manifest: Manifest | None) -> ResolvedModel:
    """The architecture exported (or taken from the cache) for the layers, weights and
    precision asked for, falling back to the store's; int8 is calibrated on the build's
    images."""
    from fstore.export.onnx_export import ensure_model
    from fstore.runtime.metadata import read_model_info
    from fstore.runtime.providers import resolve_provider

    arch, layers = export_layers(config, manifest)
    weights = config.weights
    if weights is None and manifest is not None:
        weights = WeightsSource.from_origin(manifest.provenance.get("weights_origin", "imagenet"))
    given = config.preprocessing is not None or manifest is not None
    path = ensure_model(  # auto: the provider's variant where fidelity and speed say so
        layers,
        weights or WeightsSource("imagenet"),
        preprocessing=requested_preprocessing(config, manifest) if given else None,
        precision=_precision(config, manifest),
        calibration=image_folder(config, manifest),
        provider=resolve_provider(config.provider),
        arch=arch,
    )
    return ResolvedModel(path, read_model_info(path), tuple(layers))


def _annotated(
    path: Path, config: BuildConfig, manifest: Manifest | None
) -> tuple[Path, ModelInfo]:
    """A file without fstore metadata, annotated into the cache with the flags' preprocessing."""
    from fstore.export.annotate import ARCH, annotate
    from fstore.export.model_cache import model_key, model_path
    from fstore.images.reader import file_sha256

    if config.preprocessing is None:
        raise FstoreError(
            f"{path.name} carries no preprocessing: pass --size, --resize, --mean and --std "
            "(or annotate it once: fstore export --onnx FILE ... -o annotated.onnx)"
        )
    key = model_key(ARCH, file_sha256(path), (), 0, "fp32", config.preprocessing)
    out = model_path(key, ARCH)
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        annotate(path, config.preprocessing, out, image_folder(config, manifest))
    from fstore.runtime.metadata import read_model_info

    return out, read_model_info(out)


def resolve_given(path: Path, config: BuildConfig, manifest: Manifest | None) -> ResolvedModel:
    """A ``--model`` file, its preprocessing checked against the flags; at int8 or fp16 its
    variant (derived and cached, calibrated on the build's images)."""
    from fstore.errors import ModelError
    from fstore.runtime.metadata import read_model_info

    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        info: ModelInfo | None = read_model_info(path)
    except ModelError:
        info = None
    if info is not None:
        resolve_preprocessing(
            info.preprocessing, config.flags or _flags(config.preprocessing), path.name
        )
    layers = model_layers(config, manifest) or ()
    precision = config.precision
    if precision not in VARIANTS or (info is not None and info.precision == precision):
        return ResolvedModel(path, info, layers, given=True)
    if info is not None and info.precision != "fp32":
        raise FstoreError(f"{path.name} is {info.precision}; --precision {precision} needs fp32")
    if info is None:
        path, info = _annotated(path, config, manifest)
    images = image_folder(config, manifest)  # the store's own when IMAGES is left out
    return _variant(path, info, precision, config, layers, images)


def _variant(path, info, precision, config, layers, images: Path) -> ResolvedModel:
    from fstore.export.onnx_export import VariantOptions, derive
    from fstore.export.result import ExportResult
    from fstore.runtime.providers import resolve_provider

    options = VariantOptions(images, provider=resolve_provider(config.provider))
    variant = derive(ExportResult(path, info, {}, 0.0, True), precision, options)
    return ResolvedModel(variant.path, variant.info, layers, given=True)


def build_store(config: BuildConfig, progress: bool | None = None) -> BuildReport:
    """Fill (or extend, or resume) the store ``config.store``; returns what was done.

    ``progress``: show a progress bar (``None``: only on a terminal).
    """
    check_config(config)
    manifest = existing_manifest(config.store)
    path = given_model(config, manifest)
    if path is not None and config.arch is not None:
        raise FstoreError("pass --model FILE or --arch NAME, not both")
    if path is None:
        export_layers(config, manifest)  # a wrong VGG16 layer is said before the folder's walk
    found = discover(image_folder(config, manifest))  # a bad folder is reported before any export
    if path is None:
        model = resolve_export(config, manifest)
    else:
        model = resolve_given(path, config, manifest)
    return fill_store(config, model, progress, found)
