"""The one image reader: a file's bytes read once, hashed and decoded from those same bytes.

:class:`ImageReader` is what ``fstore build``, int8 calibration, ``predict``, ``activations``,
``classify`` and ``bench`` read images with. It never raises for a bad file: the result says
why (empty, truncated, not an image, unsupported, decompression bomb, unreadable) or carries
a warning (corrupt EXIF). Because the hash, size and pixels all come from one read, an image
rewritten while it is read is stored consistently: its next build sees another mtime, hashes
again and recomputes it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.images.decode import ImageDecodeError, check_mode, decode_crop, decode_source
from fstore.images.discover import ImageItem
from fstore.images.preprocess import Preprocessing
from fstore.images.views import ViewPlan, view_crops

#: Files larger than this are recorded as bad without being read (``--max-image-bytes``): a
#: 50-megapixel JPEG is about 25 MB, and every decode worker holds one file's bytes.
MAX_IMAGE_BYTES = 64 * 2**20


class TooLarge(OSError):
    """A file larger than the reader's limit."""


@dataclass
class Decoded:
    """One image as read: the uint8 HWC crop (``None`` if bad) and what identifies the file."""

    item: ImageItem
    array: np.ndarray | None
    sha256: str
    size: int
    mtime_ns: int
    error: str | None = None
    warning: str | None = None
    seconds: float = 0.0


def read_bytes(path: Path, limit: int = MAX_IMAGE_BYTES) -> tuple[bytes, int]:
    """The file's bytes and its mtime (ns); a FIFO or other non-file raises ``OSError``, a
    file over ``limit`` bytes :class:`TooLarge` (having read at most ``limit + 1`` bytes).

    Opened non-blocking, so a FIFO that appears after discovery cannot hang the reader.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise TooLarge(info.st_size)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)  # a file that grew since the stat stops here
        if len(data) > limit:
            raise TooLarge(len(data))
        return data, info.st_mtime_ns
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class ImageReader:
    """Reads images for a model: ``preprocessing``, the decode ``mode`` (exact or fast), the
    ``views`` to cut from each decoded picture (``None``: the plain crop alone), and the
    largest file it reads (``max_bytes``)."""

    def __init__(
        self,
        preprocessing: Preprocessing,
        mode: str = "exact",
        views: ViewPlan | None = None,
        max_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        self.preprocessing = preprocessing
        self.mode = check_mode(mode)
        self.views = views
        self.max_bytes = max_bytes

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one decoded image: ``(crop, crop, 3)``, or ``(views, crop, crop, 3)``."""
        crop = (self.preprocessing.crop, self.preprocessing.crop, 3)
        return crop if self.views is None else (len(self.views.views), *crop)

    def decode(self, data: bytes) -> tuple[np.ndarray, str | None]:
        """uint8 HWC crop (or stack of view crops) of image bytes and a warning; raises
        ``ImageDecodeError``."""
        if self.views is None:
            return decode_crop(data, self.preprocessing, self.mode)
        spec = self.preprocessing
        source = decode_source(data, spec, self.mode, self.views.largest)
        return view_crops(source, self.views.views, spec), source.warning

    def read(self, item: ImageItem, out: np.ndarray | None = None) -> Decoded:
        """Read, hash and decode one image (into ``out`` if given); never raises for a bad file."""
        start = time.perf_counter()
        try:
            data, mtime = read_bytes(item.path, self.max_bytes)
        except OSError as exc:
            size, mtime = file_stat(item.path)
            reason = f"unreadable: {exc.strerror or exc}"
            if isinstance(exc, TooLarge):
                reason = f"too large: {size} bytes, more than --max-image-bytes {self.max_bytes}"
            return Decoded(item, None, "", size, mtime, reason, seconds=time.perf_counter() - start)
        decoded = Decoded(item, None, hashlib.sha256(data).hexdigest(), len(data), mtime)
        try:
            array, decoded.warning = self.decode(data)
        except ImageDecodeError as exc:
            decoded.error = str(exc)
        else:
            if out is not None:
                out[...] = array
                array = out
            decoded.array = array
        decoded.seconds = time.perf_counter() - start
        return decoded


def file_stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a file; (-1, -1) when it cannot be stat-ed."""
    try:
        s = path.stat()
        return s.st_size, s.st_mtime_ns
    except OSError:
        return -1, -1
