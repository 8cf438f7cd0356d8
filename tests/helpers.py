"""Helpers shared by the tests: small generated images and the small preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fstore.export.layers import LAYER_NAMES
from fstore.images.preprocess import Preprocessing

#: 32x32 inputs keep every layer (fc6 included, through the adaptive pool) fast on 2 cores.
#: The same as ``--size 32`` / ``--input-size 32`` on the command line (resize 256/224 of 32).
SMALL = Preprocessing(resize=37, crop=32)
#: Every layer of the VGG16 table, from its one home (tests/export/test_layers.py checks the
#: table against torchvision's modules).
ALL_LAYERS = tuple(LAYER_NAMES)


def random_image(rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A smooth random picture (gradients plus noise) so that resizing has real work to do."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [(xx * rng.uniform(0.5, 3) + yy * rng.uniform(0.5, 3)) % 256 for _ in range(3)], -1
    )
    noise = rng.integers(0, 60, size=(h, w, 3))
    rgb = Image.fromarray(((base + noise) % 256).astype(np.uint8), "RGB")
    return rgb if mode == "RGB" else rgb.convert(mode)


def make_image_folder(
    root: Path,
    classes: dict[str, int],
    seed: int = 0,
    size: tuple[int, int] = (48, 40),
    prefix: str = "",
) -> list[Path]:
    """Write ``classes[name]`` JPEGs under ``root/prefix/name/``; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for name, count in classes.items():
        folder = root / prefix / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = folder / f"img_{i:03d}.jpg"
            random_image(rng, size).save(path, quality=90)
            paths.append(path)
    return paths


def write_noop_model(path: Path, size: int = 32) -> Path:
    """A tiny ONNX model, ``input`` (N, 3, size, size) float32 → ``pooled`` (N, 3, 1, 1) by
    GlobalAveragePool: a model that costs nothing, for testing the input side of a build."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"])],
        "noop",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 3, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
