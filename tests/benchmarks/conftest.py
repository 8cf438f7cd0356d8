"""Fixtures of the benchmark tests: a small conv-only model and a small labelled folder.

The model is VGG16 up to pool5 (random weights, seed 0) at 32x32 with the preprocessing
``fstore bench --input-size 32`` uses, so the CLI smoke test finds it in the session's cache;
the eager systems' weights are the same VGG16's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_image_folder

from fstore.images.preprocess import Preprocessing, for_options

BENCH_LAYER = "pool5"
BENCH_SIZE = 32


@pytest.fixture(scope="session")
def bench_prep() -> Preprocessing:
    return for_options(BENCH_SIZE)


@pytest.fixture(scope="session")
def bench_model(isolated_cache: Path, bench_prep: Preprocessing):
    """The fp32 ``ExportResult`` of pool5 at 32x32 (exported once per session)."""
    pytest.importorskip("torch")
    from fstore.export.onnx_export import export
    from fstore.runtime.weights_source import WeightsSource

    return export((BENCH_LAYER,), WeightsSource("random", seed=0), preprocessing=bench_prep)


@pytest.fixture(scope="session")
def bench_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<class>/<image>.jpg``: 3 classes of 6 small JPEGs."""
    root = tmp_path_factory.mktemp("bench-images")
    make_image_folder(root, {"alpha": 6, "beta": 6, "gamma": 6}, size=(48, 40))
    return root


@pytest.fixture(scope="session")
def full_vgg16():
    pytest.importorskip("torch")
    from fstore.export.weights_loader import load_vgg16
    from fstore.runtime.weights_source import WeightsSource

    return load_vgg16(WeightsSource("random", seed=0))[0]


@pytest.fixture(scope="session")
def eager_state(full_vgg16, bench_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The eager systems' weights: VGG16 up to pool5 (random, seed 0) as a state_dict file."""
    from fstore.benchmarks.eager import EagerBackend, save_state_dict

    path = tmp_path_factory.mktemp("eager") / "state.pt"
    return save_state_dict(EagerBackend.from_model(full_vgg16, bench_model.info.layers), path)


@pytest.fixture(scope="session")
def uint8_batch(bench_folder: Path, bench_prep: Preprocessing):
    """Four pictures as the reader gives them: uint8 (N, H, W, 3) RGB."""
    from fstore.benchmarks.inputs import ImageSet, model_inputs

    paths = tuple(sorted(bench_folder.rglob("*.jpg"))[:4])
    return model_inputs(ImageSet(bench_folder, paths, "folder", bench_folder), 4, bench_prep)
