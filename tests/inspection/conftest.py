"""Fixtures for the inspection tests: the eager reference model, small models, images, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from inspection_helpers import SMALL, write_image


@pytest.fixture(scope="session")
def eager_vgg16():
    """torchvision's VGG16 with the same random weights (seed 0) the ``small_model`` holds."""
    pytest.importorskip("torch")
    from fstore.export.weights_loader import load_vgg16
    from fstore.runtime.weights_source import WeightsSource

    model, _ = load_vgg16(WeightsSource("random", seed=0))
    return model


@pytest.fixture(scope="session")
def conv1_model(isolated_cache: Path) -> Path:
    """The cached conv1_1-only export for random weights (seed 0) at 32x32: tiny and fast."""
    pytest.importorskip("torch")
    from fstore.export.onnx_export import ensure_model
    from fstore.runtime.weights_source import WeightsSource

    return ensure_model(("conv1_1",), WeightsSource("random", seed=0), SMALL)


@pytest.fixture
def cli():
    """The inspection commands on fstore's group, which turns ``FstoreError`` into one line."""
    from fstore.cli.inspection import activations, predict
    from fstore.cli.options import FstoreGroup

    return FstoreGroup("fstore", commands=[predict, activations])


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Three small images of different sizes and formats."""
    return [
        write_image(tmp_path / "imgs" / "a.jpg", 1),
        write_image(tmp_path / "imgs" / "b.png", 2, (64, 50)),
        write_image(tmp_path / "imgs" / "c.bmp", 3, (40, 70)),
    ]
