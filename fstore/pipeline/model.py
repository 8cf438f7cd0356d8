"""The model a build runs: a ``--model`` file, the one the store remembers, or a VGG16 export.

:func:`build` is ``fstore build`` as one call: it resolves the model (a ``--model`` file, the
one the store remembers, or VGG16 exported for the requested layers, weights and precision,
int8 calibrated on the build's images) and hands it to :func:`fstore.pipeline.pipeline.build`.
"""

from __future__ import annotations

import logging

from fstore.errors import FstoreError
from fstore.images.discover import discover
from fstore.pipeline.config import BuildConfig
from fstore.pipeline.pipeline import (
    BuildReport,
    check_config,
    existing_manifest,
    given_model,
    image_folder,
    model_layers,
    requested_preprocessing,
)
from fstore.pipeline.pipeline import build as build_store
from fstore.pipeline.plan import ResolvedModel
from fstore.runtime.weights_source import WeightsSource
from fstore.store import layout as st

__all__ = ["build", "resolve_vgg16"]

logger = logging.getLogger(__name__)


def resolve_vgg16(config: BuildConfig, manifest: st.Manifest | None) -> ResolvedModel:
    """VGG16 exported (or taken from the cache) for the layers, weights and precision asked
    for, falling back to the store's; int8 is calibrated on the build's images."""
    from fstore.export.onnx_export import ensure_model, read_model_info
    from fstore.export.precision import AUTO
    from fstore.runtime.providers import resolve_provider

    layers = model_layers(config, manifest)
    if not layers:
        raise FstoreError("no layer given: pass --layer (e.g. --layer fc7)")
    weights = config.weights
    if weights is None and manifest is not None:
        weights = WeightsSource.from_origin(manifest.provenance.get("weights_origin", "imagenet"))
    precision = config.precision
    if manifest is not None and precision in ("fp32", AUTO):
        precision = manifest.provenance.get("precision", "fp32")
    path = ensure_model(  # auto: the provider's variant where its recorded fidelity holds
        layers,
        weights or WeightsSource("imagenet"),
        preprocessing=requested_preprocessing(config, manifest),
        precision=precision,
        calibration=image_folder(config, manifest),
        provider=resolve_provider(config.provider),
    )
    return ResolvedModel(path, read_model_info(path), tuple(layers))


def build(config: BuildConfig, progress: bool | None = None) -> BuildReport:
    """Fill (or extend, or resume) the store ``config.store``; returns what was done.

    ``progress``: show a progress bar (``None``: only on a terminal).
    """
    check_config(config)
    manifest = existing_manifest(config.store)
    model = None
    if given_model(config, manifest) is None:
        discover(image_folder(config, manifest))  # a bad folder is reported before any export
        model = resolve_vgg16(config, manifest)
    return build_store(config, model, progress)
