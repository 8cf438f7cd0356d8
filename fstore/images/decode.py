"""Image bytes → the uint8 ``(crop, crop, 3)`` RGB centre crop, in one of two modes.

* ``exact``: Pillow decodes the whole picture, then ``Resize`` + ``CenterCrop`` exactly as
  torchvision does on a PIL image (before ``ToTensor``). The reference.
* ``fast``: JPEGs are decoded by libjpeg-turbo (simplejpeg) already scaled down in the DCT
  domain (by 1/2, 1/4 or 1/8 while both sides stay at least ``resize``), then the crop's region
  alone is resized in one Pillow call. A picture whose short side is at most ``resize`` (no DCT
  scaling possible, only enlarged) is resized by OpenCV instead: bilinear enlargement has no
  antialiasing for the two to differ in, they agree within one level, and OpenCV took 0.09 ms
  where Pillow took 0.74 ms per 200×200 → 256×256 15-Scene picture. Bicubic enlargement stays
  with Pillow: OpenCV's cubic kernel (a = -0.75) is not Pillow's (a = -0.5). Without simplejpeg,
  Pillow's ``draft()`` does the DCT scaling. JPEGs with EXIF, unusual colour spaces or anything
  libjpeg-turbo complains about take the Pillow route, so orientation, warnings and bad-input
  reasons are those of ``exact``.
  Every other format is decoded as in ``exact``.

Both release the GIL while decoding and resizing, so threads scale with the cores.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

from fstore.images.preprocess import (
    FILTERS,
    Preprocessing,
    crop_offsets,
    resized_size,
    to_rgb,
)

try:  # libjpeg-turbo with DCT-domain scaling; Pillow's draft() stands in without it
    import simplejpeg
except ImportError:  # pragma: no cover - exercised where simplejpeg is not installed
    simplejpeg = None
try:  # the fast resize of enlarged pictures; Pillow stands in without it
    import cv2
except ImportError:  # pragma: no cover - exercised where OpenCV is not installed
    cv2 = None

DECODE_MODES = ("exact", "fast")
_JPEG_MAGIC = b"\xff\xd8\xff"
_SIMPLE_COLORSPACES = ("Gray", "YCbCr", "RGB")


class ImageDecodeError(Exception):
    """An image file that cannot be turned into an RGB picture; the message is the reason."""


def check_mode(mode: str) -> str:
    if mode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {mode!r}; choose from {', '.join(DECODE_MODES)}")
    return mode


def _open(data: bytes) -> Image.Image:
    """``Image.open`` with the bad-input reasons; the pixels are not decoded yet."""
    if not data:
        raise ImageDecodeError("empty file")
    try:
        return Image.open(BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image, or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode: {exc}") from None


@dataclass
class _Picture:
    """A decoded, upright RGB picture; ``full`` is its size before any DCT scaling."""

    image: Image.Image
    warning: str | None
    full: tuple[int, int]


def _exif_warning(step: Callable[[], object]) -> str | None:
    """Run an EXIF step; the warning to record if it fails (which only loses the orientation)."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - any EXIF failure only loses the orientation
        return f"corrupt EXIF ({type(exc).__name__}: {exc}); orientation ignored"
    return None


# ``warnings.catch_warnings`` swaps process-wide state, so two reader threads inside it at once
# lose each other's warnings (a corrupt EXIF goes unrecorded, a decompression bomb only warns).
# One thread at a time holds it, around the cheap steps that warn: reading the header and
# parsing the EXIF block. The pixel decode and the turn upright run outside, in parallel.
_WARNINGS = threading.Lock()


@contextmanager
def _capturing():
    with _WARNINGS, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield caught


def _pillow(data: bytes, draft: int | None = None) -> _Picture:
    """Pillow decode with the bad-input reasons; a JPEG is DCT-scaled to ``draft`` if given."""
    with _capturing() as opening:
        image = _open(data)
    full = image.size
    if draft is not None and image.format == "JPEG":
        image.draft("RGB", (draft, draft))
    scaled = image.size
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode: {exc}") from None
    with _capturing() as parsing:  # parses and caches the EXIF block, where Pillow warns
        warning = _exif_warning(image.getexif)
    if warning is None:  # in place: no copy of the picture when nothing turns
        warning = _exif_warning(lambda: ImageOps.exif_transpose(image, in_place=True))
    caught = [str(w.message) for w in opening + parsing]
    exif_warnings = [message for message in caught if "exif" in message.lower()]
    if warning is None and exif_warnings:
        warning = f"corrupt EXIF ({exif_warnings[0].strip()}); orientation may be ignored"
    if image.size != scaled:  # turned by 90 degrees: the full size turns with it
        full = (full[1], full[0])
    try:
        return _Picture(to_rgb(image), warning, full)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"cannot convert mode {image.mode} to RGB: {exc}") from None


def decode(data: bytes) -> tuple[Image.Image, str | None]:
    """Decode image bytes into an upright RGB image (Pillow, full size).

    Returns the image and a warning (``None`` when clean), for example when corrupt EXIF made
    the orientation unreadable. Raises ``ImageDecodeError`` with the reason when the bytes are
    not a usable image (empty, truncated, not an image, unsupported, a decompression bomb).
    """
    picture = _pillow(data)
    return picture.image, picture.warning


def decode_exact(data: bytes, spec: Preprocessing) -> tuple[np.ndarray, str | None]:
    """torchvision's ``Resize`` + ``CenterCrop`` of the decoded picture, as uint8 HWC."""
    source = decode_source(data, spec, "exact")
    return source.crop(spec), source.warning


def crop_box(
    size: tuple[int, int],
    decoded: tuple[int, int],
    spec: Preprocessing,
    offsets: tuple[int, int] | None = None,
) -> tuple[float, float, float, float]:
    """The region of a ``decoded``-sized copy that ``Resize`` + ``CenterCrop`` keep of ``size``.

    ``size`` is the picture's full (upright) size; torchvision's geometry is computed there
    and mapped onto the (DCT-scaled) decoded pixels. ``offsets``: the crop's (left, top) in
    the resized picture, if not the centre.
    """
    new_w, new_h = resized_size(size, spec)
    left, top = offsets or crop_offsets((new_w, new_h), spec)
    sx, sy = decoded[0] / new_w, decoded[1] / new_h
    return (left * sx, top * sy, (left + spec.crop) * sx, (top + spec.crop) * sy)


@dataclass
class Source:
    """One picture decoded once, from which crops at any short side are cut.

    ``picture`` is the upright RGB picture (Pillow, or a uint8 array from libjpeg-turbo), maybe
    DCT-scaled; ``full`` its size before any scaling. ``whole`` says how a crop is made:
    ``pillow`` resizes the whole picture then crops (torchvision's path), ``cv2`` does the same
    by OpenCV for short sides the picture is only enlarged to, ``None`` (and ``cv2`` otherwise)
    resizes only the crop's region of the scaled picture.
    """

    picture: Image.Image | np.ndarray
    full: tuple[int, int]
    warning: str | None = None
    whole: str | None = None
    _resized: dict = field(default_factory=dict, repr=False)
    _pil: Image.Image | None = field(default=None, repr=False)

    def crop(self, spec: Preprocessing, offsets: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 HWC ``spec.crop`` square of the picture resized to short side ``spec.resize``,
        at ``offsets`` (left, top) in the resized picture, else in its centre."""
        new_size = resized_size(self.full, spec)
        left, top = offsets or crop_offsets(new_size, spec)
        enlarged = min(self.full) <= spec.resize
        if self.whole == "pillow" or (self.whole == "cv2" and enlarged and not _cv2_ok(spec)):
            resized = self._resized.get((new_size, spec.interpolation))
            if resized is None:
                resized = self._resize_pillow(new_size, spec.interpolation)
            return np.asarray(resized.crop((left, top, left + spec.crop, top + spec.crop)))
        if self.whole == "cv2" and enlarged:
            resized = self._resized.get((new_size, spec.interpolation))
            if resized is None:
                resized = _resize_cv2(self.picture, new_size)
                self._resized[(new_size, spec.interpolation)] = resized
            return resized[top : top + spec.crop, left : left + spec.crop]
        image = self._image()
        box = crop_box(self.full, image.size, spec, (left, top))
        return np.asarray(
            image.resize((spec.crop, spec.crop), FILTERS[spec.interpolation], box=box)
        )

    def _resize_pillow(self, size: tuple[int, int], interpolation: str) -> Image.Image:
        image = self._image()
        if size != image.size:
            image = image.resize(size, FILTERS[interpolation])
        self._resized[(size, interpolation)] = image
        return image

    def _image(self) -> Image.Image:
        if not isinstance(self.picture, np.ndarray):
            return self.picture
        if self._pil is None:  # the array stays for the OpenCV route of other short sides
            self._pil = Image.fromarray(self.picture)
        return self._pil


def _cv2_ok(spec: Preprocessing) -> bool:
    """OpenCV's bilinear enlargement is Pillow's within one level; its cubic one is not."""
    return spec.interpolation == "bilinear"


def _resize_cv2(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = pixels.shape[:2]
    if size == (w, h):
        return pixels
    return cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR)


def _fast_simplejpeg(data: bytes, largest: int) -> Source | None:
    """The picture via libjpeg-turbo, DCT-scaled while both sides stay at least ``largest``,
    or ``None`` where the Pillow route must decide."""
    if data.find(b"Exif\x00\x00", 0, 1 << 16) >= 0:
        return None  # orientation and EXIF warnings are Pillow's business
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in _SIMPLE_COLORSPACES or w * h > (Image.MAX_IMAGE_PIXELS or 1 << 62):
            return None
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=largest, min_width=largest
        )
    except ValueError:  # corrupt, truncated or merely odd: Pillow gives the reason or copes
        return None
    return Source(pixels, (w, h), whole="cv2" if cv2 is not None else None)


def _fast_pillow(data: bytes, largest: int) -> Source:
    """Pillow with ``draft()``: DCT scaling for JPEG, the full decode for the rest."""
    picture = _pillow(data, draft=largest)
    whole = picture.image.format != "JPEG" and picture.image.size == picture.full
    return Source(picture.image, picture.full, picture.warning, "pillow" if whole else None)


def decode_source(
    data: bytes, spec: Preprocessing, mode: str = "exact", largest: int | None = None
) -> Source:
    """Decode image bytes once, for crops up to short side ``largest`` (``spec.resize``).

    ``exact`` decodes the whole picture; ``fast`` lets libjpeg-turbo scale a JPEG down in the
    DCT domain while both sides stay at least ``largest``. Raises ``ImageDecodeError``.
    """
    if mode == "exact":
        picture = _pillow(data)
        return Source(picture.image, picture.full, picture.warning, "pillow")
    largest = largest or spec.resize
    if simplejpeg is not None and data[:3] == _JPEG_MAGIC:
        source = _fast_simplejpeg(data, largest)
        if source is not None:
            return source
    return _fast_pillow(data, largest)


def decode_crop(
    data: bytes, spec: Preprocessing, mode: str = "exact"
) -> tuple[np.ndarray, str | None]:
    """The uint8 ``(crop, crop, 3)`` input of one image in ``mode``, and a decode warning."""
    source = decode_source(data, spec, check_mode(mode))
    return source.crop(spec), source.warning
