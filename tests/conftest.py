"""Shared fixtures: an isolated model cache, small generated images, one small exported VGG16.

Tests never touch the network or the user's cache: ``FSTORE_CACHE`` points into a per-session
temporary folder, weights are ``random`` with a seed, and images are generated here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ALL_LAYERS, SMALL, make_image_folder, random_image  # noqa: F401

from fstore.images.preprocess import Preprocessing
from fstore.pipeline.config import BuildConfig
from fstore.runtime.weights_source import WeightsSource


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fstore-cache")
    old = os.environ.get("FSTORE_CACHE")
    os.environ["FSTORE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FSTORE_CACHE", None)
    else:
        os.environ["FSTORE_CACHE"] = old


@pytest.fixture(scope="session")
def small_preprocessing() -> Preprocessing:
    return SMALL


@pytest.fixture(scope="session")
def small_model(isolated_cache: Path):
    """VGG16 (random weights, seed 0) exported with every layer as an output, for 32x32 inputs.

    Returns the ``ExportResult``; ``result.path`` is the ONNX file. Exported once per session.
    """
    pytest.importorskip("torch")
    from fstore.export.onnx_export import export
    from fstore.runtime.weights_source import WeightsSource

    return export(ALL_LAYERS, WeightsSource("random", seed=0), preprocessing=SMALL)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``<class>/<image>.jpg``: 3 classes of 4 small JPEGs."""
    root = tmp_path / "images"
    make_image_folder(root, {"alpha": 4, "beta": 4, "gamma": 4})
    return root


STORE_LAYERS = ("pool5", "fc7")


@pytest.fixture(scope="session")
def store_model(isolated_cache: Path) -> Path:
    """pool5 + fc7 at 32x32, random weights seed 0: the model every build test uses (cached)."""
    pytest.importorskip("torch")
    from fstore.export.onnx_export import ensure_model

    return ensure_model(STORE_LAYERS, WeightsSource("random", seed=0), preprocessing=SMALL)


@pytest.fixture
def config_for(store_model: Path, tmp_path: Path):
    def make(images: Path, store: Path | None = None, **kw) -> BuildConfig:
        options = dict(
            layers=STORE_LAYERS,
            weights=WeightsSource("random", seed=0),
            preprocessing=SMALL,
            provider="cpu",
            batch_size=4,
            shard_size=8,
        )
        options.update(kw)
        return BuildConfig(store=store or tmp_path / "s.h5", images=images, **options)

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests cleanly where ONNX Runtime has no CUDAExecutionProvider."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return
    skip = pytest.mark.skip(reason="needs onnxruntime-gpu and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
