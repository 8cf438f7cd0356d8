"""Fixtures for the report tests: a small split image folder and a model without fstore metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL, make_image_folder

#: 15-Scene names, so that the built-in zero-shot mapping covers two of the three classes.
CLASSES = ("coast", "forest", "kitchen")


@pytest.fixture(scope="session")
def split_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train|test/<class>/<image>``: 3 classes, 8 training and 4 test images each."""
    root = tmp_path_factory.mktemp("report-images")
    for prefix, count, seed in (("train", 8, 0), ("test", 4, 1)):
        make_image_folder(root, dict.fromkeys(CLASSES, count), seed=seed, prefix=prefix)
    return root


@pytest.fixture(scope="session")
def external_model(isolated_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VGG16 (random weights, seed 0, 32x32) cut at fc7 and logits, its fstore metadata removed:
    what any ONNX model from elsewhere looks like to fstore."""
    pytest.importorskip("torch")
    import onnx

    from fstore.export.onnx_export import ensure_model
    from fstore.runtime.weights_source import WeightsSource

    source = ensure_model(("fc7", "logits"), WeightsSource("random", seed=0), preprocessing=SMALL)
    from fstore.runtime.prefix import remove_prefix

    proto = onnx.load(str(source))
    remove_prefix(proto)  # a foreign model takes float NCHW input
    del proto.metadata_props[:]
    path = tmp_path_factory.mktemp("external") / "external.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="session")
def eager_conv1():
    """torchvision VGG16's first convolution (random weights, seed 0), before its ReLU."""
    pytest.importorskip("torch")
    import torch

    from fstore.export.weights_loader import load_vgg16
    from fstore.runtime.weights_source import WeightsSource

    model, _ = load_vgg16(WeightsSource("random", seed=0))

    def run(array):
        with torch.no_grad():
            return model.features[0](torch.from_numpy(array[None])).numpy()[0]

    return run
