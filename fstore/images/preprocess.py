"""Image preprocessing identical to torchvision's ImageNet transforms, in Pillow and NumPy.

``Resize(256)`` (bilinear or bicubic, antialiased: Pillow's own filters, which torchvision, and
timm through it, call for PIL images), ``CenterCrop(224)``, ``ToTensor()`` and
``Normalize(mean, std)``, without torch. The tests compare this module with torchvision and
timm on images of many sizes and modes.

Decoders hand over ``uint8`` crops; :func:`to_float` is the NumPy reference of the last two
steps (``ToTensor`` + ``Normalize``) on a whole ``(N, H, W, 3)`` batch, the math that the
model's uint8 input prefix reproduces.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from PIL import Image

from fstore.errors import FstoreError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Resampling filters of ``Resize``, as Pillow applies them (antialiased) on PIL images.
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input; recorded in ONNX metadata and in the store.

    Attributes:
        resize: length of the short side after resizing (aspect ratio kept).
        crop: side of the centre crop, which is the network's input size.
        mean, std: per-channel normalisation applied after scaling pixels to [0, 1].
        interpolation: resampling filter of the resize, ``bilinear`` or ``bicubic`` (both
            antialiased, as Pillow does them and torchvision calls them on PIL images).
        channels: channel order of the input tensor.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    channels: str = "RGB"

    def __post_init__(self) -> None:
        if self.interpolation not in FILTERS:
            raise ValueError(
                f"unsupported interpolation {self.interpolation!r}; "
                f"choose from {', '.join(FILTERS)}"
            )
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")

    def at_crop(self, crop: int) -> Preprocessing:
        """The same recipe for another input size: the resize keeps its ratio to the crop
        (the defaults' 256/224 for ImageNet's recipe)."""
        if crop == self.crop:
            return self
        resize = max(crop, round(crop * self.resize / self.crop))
        return replace(self, resize=resize, crop=crop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def fingerprint_fields(self) -> dict:
        """The fields as store fingerprints and model cache keys hash them."""
        return asdict(self)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        """Parse :meth:`to_json`'s text; fields this version does not know are a one-line error
        (a record written by an earlier fstore)."""
        data = json.loads(text)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise FstoreError(
                "a preprocessing record has fields this fstore does not know "
                f"({', '.join(unknown)}): it was written by an earlier fstore; build a new "
                "store (--store) or export the model again"
            )
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB.

    Greyscale is replicated on three channels, palette and CMYK are converted, alpha is composed
    over white (what a viewer shows), and 16/32-bit greyscale is scaled to 8 bits rather than
    clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resized_size(size: tuple[int, int], spec: Preprocessing) -> tuple[int, int]:
    """torchvision's ``Resize(spec.resize)`` output size for a picture of ``size`` (w, h)."""
    w, h = size
    short, long = (w, h) if w <= h else (h, w)
    if short == spec.resize:
        return size
    new_short, new_long = spec.resize, int(spec.resize * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def crop_offsets(size: tuple[int, int], spec: Preprocessing) -> tuple[int, int]:
    """(left, top) of torchvision's ``CenterCrop(spec.crop)`` in a picture of ``size`` (w, h)."""
    w, h = size
    return int(round((w - spec.crop) / 2.0)), int(round((h - spec.crop) / 2.0))


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """``Resize(spec.resize)`` then ``CenterCrop(spec.crop)``, as torchvision does on PIL."""
    new_size = resized_size(image.size, spec)
    if new_size != image.size:
        image = image.resize(new_size, FILTERS[spec.interpolation])
    left, top = crop_offsets(image.size, spec)
    return image.crop((left, top, left + spec.crop, top + spec.crop))


def to_array(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """``ToTensor`` + ``Normalize``: a float32 (3, crop, crop) array."""
    pixels = np.asarray(image, dtype=np.float32)  # (H, W, 3), 0..255
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    chw = pixels.transpose(2, 0, 1) / np.float32(255.0)
    chw = (chw - mean[:, None, None]) / std[:, None, None]
    return np.ascontiguousarray(chw, dtype=np.float32)


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Full preprocessing of an RGB image into the network's (3, crop, crop) float32 input."""
    return to_array(resize_and_crop(to_rgb(image), spec), spec)


def to_float(batch: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """``ToTensor`` + ``Normalize`` of a uint8 ``(N, H, W, 3)`` batch: float32 ``(N, 3, H, W)``.

    Computed as torchvision does it, ``(x / 255 - mean) / std`` in float32, so features match
    the float path of earlier fstore versions bit for bit.
    """
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    out = np.empty((batch.shape[0], 3) + batch.shape[1:3], np.float32)
    for c in range(3):
        np.divide(batch[..., c], np.float32(255.0), out=out[:, c], dtype=np.float32)
        out[:, c] -= mean[c]
        out[:, c] /= std[c]
    return out


@dataclass(frozen=True)
class PreprocessingFlags:
    """What ``--size/--resize/--mean/--std/--interpolation`` said; ``None`` where not given."""

    size: int | None = None
    resize: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None

    @property
    def given(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def standalone(self) -> Preprocessing | None:
        """The preprocessing the flags ask for alone; ``None`` if none was given.

        ``resize`` defaults to 256/224 of the crop, as in the ImageNet recipe; the rest to
        torchvision's ImageNet values.
        """
        if not self.given:
            return None
        crop = self.size or Preprocessing.crop
        return Preprocessing(
            resize=self.resize or Preprocessing().at_crop(crop).resize,
            crop=crop,
            mean=self.mean or IMAGENET_MEAN,
            std=self.std or IMAGENET_STD,
            interpolation=self.interpolation or "bilinear",
        )

    def contradictions(self, carried: Preprocessing) -> list[str]:
        """``--flag value`` (the model's value) for each given flag that differs from
        ``carried``."""
        pairs = {
            "size": (self.size, carried.crop),
            "resize": (self.resize, carried.resize),
            "mean": (self.mean, carried.mean),
            "std": (self.std, carried.std),
            "interpolation": (self.interpolation, carried.interpolation),
        }
        return [
            f"--{flag} {_flag_text(given)} (the model's: {_flag_text(own)})"
            for flag, (given, own) in pairs.items()
            if given is not None and not _same(given, own)
        ]


def _flag_text(value) -> str:
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)


def _same(given, own) -> bool:
    if isinstance(own, tuple):
        return np.allclose(np.asarray(given, float), np.asarray(own, float), rtol=0, atol=1e-6)
    return given == own


def resolve_preprocessing(
    carried: Preprocessing | None, flags: PreprocessingFlags | None = None, model: str = "model"
) -> Preprocessing | None:
    """The preprocessing a model runs with: its own (``carried``, from its metadata), which
    flags may repeat but never change, else the flags' alone (``None`` without either).

    A flag that contradicts the model's own preprocessing is a one-line ``FstoreError``: it is
    never a silent override, nor silently ignored.
    """
    flags = flags or PreprocessingFlags()
    if carried is None:
        return flags.standalone()
    wrong = flags.contradictions(carried)
    if wrong:
        raise FstoreError(
            f"{model} carries its own preprocessing ({describe(carried)}); "
            f"{'; '.join(wrong)} contradicts it: leave the flag out"
        )
    return carried


def describe(spec: Preprocessing) -> str:
    """``resize 274, crop 240, bilinear, mean 0.485,0.456,0.406, std 0.229,0.224,0.225``."""
    return (
        f"resize {spec.resize}, crop {spec.crop}, {spec.interpolation}, "
        f"mean {_flag_text(spec.mean)}, std {_flag_text(spec.std)}"
    )


def for_options(
    size: int | None,
    resize: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Preprocessing | None:
    """The preprocessing asked for by ``--size/--resize/--mean/--std``; ``None`` if none given.

    ``resize`` defaults to 256/224 of the crop, as in the ImageNet recipe.
    """
    return PreprocessingFlags(size, resize, mean, std).standalone()
