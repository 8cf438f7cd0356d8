"""Exact and fast decoding: exact is torchvision's path, fast stays close to it, bad inputs
keep their reasons in both modes, and ``to_float`` is torchvision's ``ToTensor`` + ``Normalize``."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import random_image
from PIL import Image

from fstore.images import decode as dec
from fstore.images.decode import ImageDecodeError, decode_crop
from fstore.images.preprocess import Preprocessing, to_float

SPEC = Preprocessing(resize=64, crop=56)


def _jpeg(size: tuple[int, int], seed: int = 0, mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    random_image(np.random.default_rng(seed), size, mode).save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("size", [(640, 480), (300, 520), (1000, 260)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_fast_stays_close_to_exact_on_large_jpegs(size, mode):
    """DCT scaling (here by 1/2 to 1/8) plus one resize approximates the full decode + resize.

    Tolerance: cosine of the uint8 crops >= 0.995 and mean absolute difference <= 4 grey levels
    (out of 255). Both are the scale of JPEG's own quantisation noise, far below what a wrong
    geometry (a shifted or mis-scaled crop) gives: the last assertion checks that a crop shifted
    by 2 pixels already breaks the tolerance on these images.
    """
    data = _jpeg(size, mode=mode)
    exact, _ = decode_crop(data, SPEC, "exact")
    fast, warning = decode_crop(data, SPEC, "fast")
    assert fast.shape == exact.shape == (56, 56, 3) and fast.dtype == np.uint8
    assert warning is None
    assert _cosine(fast, exact) >= 0.995
    assert np.abs(fast.astype(int) - exact.astype(int)).mean() <= 4
    shifted = np.roll(exact, 2, axis=1)
    assert np.abs(shifted.astype(int) - exact.astype(int)).mean() > 4


@pytest.mark.parametrize("size", [(640, 480), (300, 520), (60, 50)])
def test_bicubic_fast_holds_the_fast_decode_rule(size):
    """Bicubic: large JPEGs within the tolerance of the bilinear test above; an enlarged
    picture takes Pillow's bicubic resize, so it equals exact."""
    spec = Preprocessing(resize=64, crop=56, interpolation="bicubic")
    data = _jpeg(size)
    exact, fast = decode_crop(data, spec, "exact")[0], decode_crop(data, spec, "fast")[0]
    if min(size) <= spec.resize:
        np.testing.assert_array_equal(fast, exact)
    assert _cosine(fast, exact) >= 0.995
    assert np.abs(fast.astype(int) - exact.astype(int)).mean() <= 4
    bilinear = decode_crop(data, SPEC, "exact")[0]
    assert np.abs(bilinear.astype(int) - exact.astype(int)).max() > 0


@pytest.mark.parametrize("size", [(60, 50), (50, 61), (37, 90), (SPEC.resize, 80)])
def test_fast_enlarging_matches_exact_within_one_level(size):
    """A picture only enlarged (short side <= ``resize``) is resized by OpenCV: torchvision's
    geometry, bilinear weights rounded differently, so within one level of exact's pixels."""
    data = _jpeg(size)
    fast, exact = decode_crop(data, SPEC, "fast")[0], decode_crop(data, SPEC)[0]
    assert fast.shape == exact.shape == (SPEC.crop, SPEC.crop, 3)
    diff = np.abs(fast.astype(int) - exact.astype(int))
    assert diff.max() <= 1 and diff.mean() <= 0.5


def test_fast_without_opencv_equals_exact_when_nothing_is_scaled(monkeypatch):
    """Without OpenCV an enlarged picture takes Pillow's resize: exact's very bytes."""
    monkeypatch.setattr(dec, "cv2", None)
    data = _jpeg((60, 50))
    np.testing.assert_array_equal(decode_crop(data, SPEC, "fast")[0], decode_crop(data, SPEC)[0])


def test_fast_without_simplejpeg_uses_pillow_draft(monkeypatch):
    data = _jpeg((640, 480))
    with_turbo = decode_crop(data, SPEC, "fast")[0]
    monkeypatch.setattr(dec, "simplejpeg", None)
    with_draft = decode_crop(data, SPEC, "fast")[0]
    assert _cosine(with_draft, decode_crop(data, SPEC)[0]) >= 0.995
    assert np.abs(with_draft.astype(int) - with_turbo.astype(int)).mean() <= 4


def test_fast_keeps_exif_orientation():
    """An EXIF-rotated JPEG takes the Pillow route: fast turns it upright as exact does."""
    from PIL import Image

    image = random_image(np.random.default_rng(1), (640, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    exact, _ = decode_crop(buf.getvalue(), SPEC, "exact")
    fast, _ = decode_crop(buf.getvalue(), SPEC, "fast")
    assert _cosine(fast, exact) >= 0.995
    assert np.abs(fast.astype(int) - exact.astype(int)).mean() <= 4


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_bad_inputs_keep_their_reasons_in_both_modes(mode):
    good = _jpeg((640, 480))
    cases = {
        b"": "empty file",
        b"not an image at all": "not an image",
        good[: len(good) // 2]: "cannot decode",
    }
    for data, reason in cases.items():
        with pytest.raises(ImageDecodeError, match=reason):
            decode_crop(data, SPEC, mode)


def test_to_float_equals_torchvision():
    torchvision = pytest.importorskip("torchvision")
    from torchvision import transforms

    spec = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    batch = np.random.default_rng(0).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    ours = to_float(batch, spec)
    reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    )
    theirs = np.stack([reference(image).numpy() for image in batch])
    assert ours.shape == (3, 3, 20, 24) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    assert torchvision is not None


def test_corrupt_exif_warning_is_kept_when_threads_decode_at_once():
    """Reader threads decode side by side: each corrupt-EXIF picture still reports its warning,
    and a clean one reports none, however the threads interleave."""
    corrupt = io.BytesIO()
    Image.new("RGB", (64, 48)).save(
        corrupt, "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff"
    )
    clean = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(clean, "PNG")
    inputs = [corrupt.getvalue(), clean.getvalue()] * 200
    spec = Preprocessing(resize=32, crop=32)
    with ThreadPoolExecutor(8) as pool:
        warnings_seen = list(pool.map(lambda data: decode_crop(data, spec)[1], inputs))
    assert all(w and "corrupt EXIF" in w for w in warnings_seen[0::2])
    assert all(w is None for w in warnings_seen[1::2])
