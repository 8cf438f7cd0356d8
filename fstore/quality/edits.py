"""The edits that make a near-duplicate, as the issue that asked for ``duplicates`` lists them:
the planted faults of its tests and of ``scripts/benchmarks/planted.py``."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image, ImageEnhance


def jpeg35(img: Image.Image) -> Image.Image:
    import io

    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=35)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def resize80(img: Image.Image) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, round(w * 0.8)), max(1, round(h * 0.8))), Image.BILINEAR)
    return small.resize((w, h), Image.BILINEAR)


def crop90(img: Image.Image) -> Image.Image:
    w, h = img.size
    dw, dh = round(w * 0.05), round(h * 0.05)
    return img.crop((dw, dh, w - dw, h - dh)).resize((w, h), Image.BILINEAR)


def brighter(img: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(1.15)


def rotate3(img: Image.Image) -> Image.Image:
    return img.rotate(3, resample=Image.BILINEAR)


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg35": jpeg35,
    "resize80": resize80,
    "crop90": crop90,
    "brightness115": brighter,
    "rotate3": rotate3,
}

#: Two edits together, as planted.
PAIRS = (("crop90", "jpeg35"), ("rotate3", "brightness115"), ("resize80", "crop90"))


def apply(img: Image.Image, names: tuple[str, ...]) -> Image.Image:
    for name in names:
        img = EDITS[name](img)
    return img


def all_edits() -> list[tuple[str, ...]]:
    """Each edit alone, then each planted pair."""
    return [(name,) for name in EDITS] + list(PAIRS)
