"""The benchmark's images: a folder, a subset of one, or generated pictures, as one folder on disk.

Both end-to-end systems (``fstore build`` and the eager ``DataLoader`` loop) read the same
folder, so they decode the same files; the model-only view decodes some of them once, with
fstore's preprocessing, into ``uint8`` NHWC batches kept in memory (what the reader gives a
backend).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.errors import DatasetError
from fstore.images.preprocess import Preprocessing


@dataclass(frozen=True)
class ImageSet:
    """A folder of images laid out as ``build`` expects, and where it came from.

    Attributes:
        root: the folder both end-to-end systems read.
        paths: its images, sorted by key (as ``build`` scans them).
        source: ``folder``, ``subset`` or ``synthetic``.
        origin: the user's folder (``None`` for generated pictures).
    """

    root: Path
    paths: tuple[Path, ...]
    source: str
    origin: Path | None

    @property
    def count(self) -> int:
        return len(self.paths)

    def describe(self) -> str:
        if self.source == "synthetic":
            return f"{self.count} generated pictures (JPEG)"
        if self.source == "subset":
            return f"{self.count} images drawn from {self.origin}"
        return f"{self.count} images of {self.origin}"


def write_synthetic_folder(
    root: Path, count: int, size: tuple[int, int], seed: int = 0, classes: int = 2
) -> list[Path]:
    """Write ``count`` generated JPEGs (``size`` = width, height) under ``root/class_K/``."""
    from fstore.export.calibration import synthetic_picture

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"image_{i:05d}.jpg"
        synthetic_picture(rng, size).save(path, quality=90)
        paths.append(path)
    return sorted(paths)


def prepare_images(
    workdir: Path,
    preprocessing: Preprocessing,
    images: Path | None = None,
    synthetic: int | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> ImageSet:
    """The folder to benchmark on.

    ``images``: the user's folder, whole, or ``limit`` of its images drawn with ``seed`` and
    linked (symbolic links, same keys) into ``workdir``. Otherwise ``synthetic`` generated
    pictures, a little larger than the resize so that resizing has work to do.
    """
    from fstore.export.calibration import choose_images
    from fstore.images.discover import scan

    if images is not None:
        items = scan(images)
        if limit is None or limit >= len(items):
            return ImageSet(Path(images), tuple(it.path for it in items), "folder", Path(images))
        root = workdir / "images"
        chosen = choose_images(images, limit, seed=seed)
        for path in chosen:
            link = root / path.relative_to(images)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), link)
        return ImageSet(root, tuple(it.path for it in scan(root)), "subset", Path(images))
    if not synthetic or synthetic < 1:
        raise DatasetError("nothing to benchmark on: pass --images DIR or --synthetic N")
    root = workdir / "images"
    side = preprocessing.resize + preprocessing.resize // 4
    write_synthetic_folder(root, synthetic, (side, preprocessing.resize), seed=seed)
    return ImageSet(root, tuple(it.path for it in scan(root)), "synthetic", None)


def model_inputs(image_set: ImageSet, count: int, preprocessing: Preprocessing) -> np.ndarray:
    """``count`` resized and cropped pictures of the set, ``uint8`` ``(count, crop, crop, 3)`` RGB.

    The images are repeated if the set is smaller; files that do not decode are left out.
    """
    from fstore.images.decode import ImageDecodeError, decode
    from fstore.images.preprocess import resize_and_crop

    arrays = []
    for path in image_set.paths[:count]:
        try:
            image, _ = decode(Path(path).read_bytes())
        except ImageDecodeError:
            continue
        arrays.append(np.asarray(resize_and_crop(image, preprocessing), dtype=np.uint8))
    if not arrays:
        raise DatasetError(f"none of the first {count} images of {image_set.root} can be decoded")
    reps = -(-count // len(arrays))
    return np.ascontiguousarray(np.stack((arrays * reps)[:count]))


def warm_file_cache(image_set: ImageSet) -> int:
    """Read every image once so that no system pays for the first read from disk; bytes read."""
    total = 0
    for path in image_set.paths:
        total += len(Path(path).read_bytes())
    return total
