"""Helpers shared by the inspection tests (a unique module name: tests dirs have no __init__)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The ``small_model`` fixture's preprocessing (32x32 inputs).
from helpers import SMALL  # noqa: E402
from PIL import Image

from fstore.images.preprocess import Preprocessing, to_float
from fstore.images.reader import ImageReader


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A smooth random RGB picture (gradients plus noise), saved in the format of ``path``."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [(xx * rng.uniform(0.5, 3) + yy * rng.uniform(0.5, 3)) % 256 for _ in range(3)], -1
    )
    noise = rng.integers(0, 60, size=(h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((base + noise) % 256).astype(np.uint8), "RGB").save(path)
    return path


def eager_input(path: Path, spec: Preprocessing = SMALL) -> np.ndarray:
    """The (1, 3, S, S) input of ``path`` made by fstore's preprocessing (itself tested)."""
    crop, _ = ImageReader(spec).decode(path.read_bytes())
    return to_float(crop[None], spec)


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.float64) - reference).max() / np.abs(reference).max())
