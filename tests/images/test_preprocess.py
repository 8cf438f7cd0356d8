"""fstore's Pillow/NumPy preprocessing against torchvision's transforms, and mode handling."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers import random_image
from PIL import Image

from fstore.errors import FstoreError
from fstore.images.decode import ImageDecodeError, decode
from fstore.images.preprocess import (
    Preprocessing,
    PreprocessingFlags,
    preprocess,
    resolve_preprocessing,
    to_rgb,
)
from fstore.images.reader import ImageReader

torchvision = pytest.importorskip("torchvision")
from torchvision import transforms  # noqa: E402

SIZES = [
    (224, 224),
    (256, 256),
    (300, 200),
    (200, 300),
    (640, 480),
    (257, 999),
    (31, 45),
    (500, 256),
]


def reference(spec: Preprocessing):
    return transforms.Compose(
        [
            transforms.Resize(
                spec.resize,
                interpolation=transforms.InterpolationMode(spec.interpolation),
                antialias=True,
            ),
            transforms.CenterCrop(spec.crop),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "RGBA", "LA", "I;16"])
def test_matches_torchvision(size, mode):
    spec = Preprocessing()
    image = random_image(np.random.default_rng(hash(size) % 1000), size)
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey)
    elif mode != "RGB":
        image = image.convert(mode)
    rgb = to_rgb(image)
    ours = preprocess(image, spec)
    theirs = reference(spec)(rgb).numpy()
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-5


@pytest.mark.parametrize("size", SIZES)
def test_bicubic_matches_torchvision(size):
    spec = Preprocessing(interpolation="bicubic")
    image = random_image(np.random.default_rng(hash(size) % 1000), size)
    ours = preprocess(image, spec)
    assert np.abs(ours - reference(spec)(image).numpy()).max() <= 1e-5
    bilinear = preprocess(image, Preprocessing())
    if min(size) != spec.resize:  # the filters differ wherever the picture is resized
        assert np.abs(ours - bilinear).max() > 1e-3


def test_small_spec_matches_torchvision():
    spec = Preprocessing(resize=36, crop=32)
    image = random_image(np.random.default_rng(3), (50, 41))
    assert np.abs(preprocess(image, spec) - reference(spec)(image).numpy()).max() <= 1e-5


def test_greyscale_is_replicated_on_three_channels():
    grey = random_image(np.random.default_rng(0), (64, 48)).convert("L")
    rgb = np.asarray(to_rgb(grey))
    assert rgb.shape == (48, 64, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert (rgb[..., 0] == np.asarray(grey)).all()


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert list(rgb[0, :, 0]) == [0, 128, 255]


def test_alpha_is_composed_over_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied():
    image = random_image(np.random.default_rng(1), (60, 30))  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    decoded, warning = decode(buf.getvalue())
    assert warning is None
    assert decoded.size == (30, 60)  # now tall


def test_corrupt_exif_is_a_warning_not_a_failure():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(
        buf, "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff"
    )
    array, warning = ImageReader(Preprocessing(resize=36, crop=32)).decode(buf.getvalue())
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert warning is not None and "EXIF" in warning


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is text, not a JPEG", "not an image"),
    ],
)
def test_bad_bytes_raise_with_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode(data)


def test_truncated_and_bomb_raise():
    buf = io.BytesIO()
    random_image(np.random.default_rng(2), (80, 80)).save(buf, "JPEG")
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        decode(buf.getvalue()[: len(buf.getvalue()) // 2])
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode(bomb.getvalue())


def test_a_record_with_an_unknown_field_is_one_line():
    old = json.dumps({**json.loads(Preprocessing().to_json()), "antialias": True})
    with pytest.raises(FstoreError, match="antialias.*earlier fstore") as info:
        Preprocessing.from_json(old)
    assert "\n" not in str(info.value)
    assert Preprocessing.from_json(Preprocessing(interpolation="bicubic").to_json()) == (
        Preprocessing(interpolation="bicubic")
    )


LITE1 = Preprocessing(resize=274, crop=240)


def test_flags_that_repeat_the_model_are_accepted():
    flags = PreprocessingFlags(size=240, resize=274, mean=(0.485, 0.456, 0.406))
    assert resolve_preprocessing(LITE1, flags) == LITE1
    assert resolve_preprocessing(LITE1, None) == LITE1


@pytest.mark.parametrize(
    "flags, named",
    [
        (PreprocessingFlags(size=224), "--size 224 (the model's: 240)"),
        (PreprocessingFlags(std=(0.5, 0.5, 0.5)), "--std 0.5,0.5,0.5"),
        (PreprocessingFlags(interpolation="bicubic"), "--interpolation bicubic"),
    ],
)
def test_flags_that_contradict_the_model_are_one_line(flags, named):
    with pytest.raises(FstoreError) as info:
        resolve_preprocessing(LITE1, flags, "lite1.onnx")
    message = str(info.value)
    assert named in message and "lite1.onnx carries" in message and "\n" not in message


def test_flags_alone_follow_the_imagenet_recipe():
    assert resolve_preprocessing(None, PreprocessingFlags(size=240)) == LITE1
    assert resolve_preprocessing(None, PreprocessingFlags()) is None
