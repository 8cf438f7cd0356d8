from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL

from fstore.export.weights import WeightsSource
from fstore.featurestore.build import BuildConfig

LAYERS = ("pool5", "fc7")


@pytest.fixture(scope="session")
def store_model(isolated_cache: Path) -> Path:
    """pool5 + fc7 at 32x32, random weights seed 0: the model every build test uses (cached)."""
    pytest.importorskip("torch")
    from fstore.export.onnx_export import ensure_model

    return ensure_model(LAYERS, WeightsSource("random", seed=0), preprocessing=SMALL)


@pytest.fixture
def config_for(store_model: Path, tmp_path: Path):
    def make(images: Path, store: Path | None = None, **kw) -> BuildConfig:
        options = dict(
            layers=LAYERS,
            weights=WeightsSource("random", seed=0),
            preprocessing=SMALL,
            provider="cpu",
            batch_size=4,
            shard_size=8,
            index_every=0.0,
        )
        options.update(kw)
        return BuildConfig(store=store or tmp_path / "s.h5", images=images, **options)

    return make
