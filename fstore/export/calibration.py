"""The images an int8 model is calibrated on and a variant's fidelity is measured on.

Images are read as ``build`` reads them: the same discovery and the same decoder, producing
the uint8 crops a model with fstore's input prefix takes. Without images, generated pictures
(smooth gradients plus noise) stand in; their ranges are only roughly those of photographs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fstore.errors import DatasetError
from fstore.images.discover import scan
from fstore.images.preprocess import Preprocessing, preprocess, resize_and_crop, to_float

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_CALIBRATION_COUNT = 64
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def choose_images(
    folder: Path, count: int, seed: int = 0, exclude: Sequence[Path] = ()
) -> list[Path]:
    """Up to ``count`` images of ``folder`` drawn with ``seed`` (every class has its chance).

    The folder is read as ``build`` reads it (``<class>/<image>`` or ``train|test/<class>/...``);
    ``exclude`` removes images already used, e.g. for calibration. The order is sorted by path,
    so the same folder, count and seed always give the same list.
    """
    skip = {Path(p).resolve() for p in exclude}
    paths = [item.path for item in scan(folder) if item.path.resolve() not in skip]
    if count <= 0 or not paths:
        return []
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    return [paths[i] for i in sorted(order)]


def calibration_fingerprint(images: Sequence[Path], method: str) -> str:
    """A short hash of what decides an int8 model's ranges: the images (path, size, mtime)."""
    digest = hashlib.sha256(method.encode())
    if not images:
        digest.update(b"synthetic")
    for path in images:
        st = Path(path).stat()
        digest.update(f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def synthetic_picture(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth random RGB picture (gradients plus noise) with the value range of a photo."""
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            (xx * rng.uniform(0.2, 2) + yy * rng.uniform(0.2, 2) + rng.uniform(0, 255)) % 256
            for _ in range(3)
        ],
        -1,
    )
    noise = rng.normal(0, 12, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _synthetic_crops(count: int, preprocessing: Preprocessing, seed: int) -> list:
    rng = np.random.default_rng(seed)
    side = preprocessing.resize + preprocessing.resize // 4
    return [
        resize_and_crop(synthetic_picture(rng, (side, preprocessing.resize)), preprocessing)
        for _ in range(count)
    ]


def synthetic_pixels(count: int, preprocessing: Preprocessing, seed: int = 0) -> np.ndarray:
    """``count`` generated pictures, resized and cropped: uint8 (N, crop, crop, 3)."""
    return np.stack([np.asarray(c) for c in _synthetic_crops(count, preprocessing, seed)])


def synthetic_inputs(count: int, preprocessing: Preprocessing, seed: int = 0) -> np.ndarray:
    """The same pictures through the float path: float32 (N, 3, crop, crop), for eager models."""
    rng = np.random.default_rng(seed)
    side = preprocessing.resize + preprocessing.resize // 4
    return np.stack(
        [
            preprocess(synthetic_picture(rng, (side, preprocessing.resize)), preprocessing)
            for _ in range(count)
        ]
    ).astype(np.float32)


def _crop(path: Path, preprocessing: Preprocessing) -> np.ndarray | None:
    # the decoders (OpenCV, libjpeg-turbo) load here, not when a command's --help does
    from fstore.images.decode import ImageDecodeError
    from fstore.images.reader import ImageReader

    try:
        return ImageReader(preprocessing).decode(Path(path).read_bytes())[0]
    except (OSError, ImageDecodeError):
        return None


def decode_pixels(images: Sequence[Path], preprocessing: Preprocessing) -> np.ndarray:
    """Decode, resize and crop image files as ``build`` does: uint8 (N, crop, crop, 3).

    Unreadable files are skipped; none readable is a ``DatasetError``.
    """
    crops = [c for c in (_crop(p, preprocessing) for p in images) if c is not None]
    if not crops:
        raise DatasetError(f"none of the {len(images)} images could be read and decoded")
    return np.stack(crops)


def decode_inputs(images: Sequence[Path], preprocessing: Preprocessing) -> np.ndarray:
    """The float path for models without the prefix (eager PyTorch): float32 (N, 3, crop, crop)."""
    return to_float(decode_pixels(images, preprocessing), preprocessing)


def pixel_batches(
    images: Sequence[Path] | np.ndarray, preprocessing: Preprocessing, batch_size: int
) -> Iterator[np.ndarray]:
    """uint8 NHWC batches from files (decoded lazily, unreadable ones skipped) or an array."""
    if isinstance(images, np.ndarray):
        for i in range(0, len(images), batch_size):
            yield np.ascontiguousarray(images[i : i + batch_size])
        return
    good = 0
    for i in range(0, len(images), batch_size):
        crops = [_crop(p, preprocessing) for p in images[i : i + batch_size]]
        crops = [c for c in crops if c is not None]
        if crops:
            good += len(crops)
            yield np.stack(crops)
    if not good:
        raise DatasetError(f"none of the {len(images)} images could be read and decoded")
