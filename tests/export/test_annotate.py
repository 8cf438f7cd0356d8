"""A foreign ONNX model annotated with fstore's uint8 input and its preprocessing."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_folder

from fstore.errors import FstoreError, ModelError
from fstore.export.annotate import annotate
from fstore.images.preprocess import Preprocessing
from fstore.runtime.metadata import read_model_info
from fstore.runtime.prefix import has_prefix

torch = pytest.importorskip("torch")

PREP = Preprocessing(resize=40, crop=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return pooled, self.fc(pooled)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("foreign") / "tiny.onnx"
    with warnings.catch_warnings():  # the legacy exporter on purpose: files from elsewhere are
        warnings.simplefilter("ignore", DeprecationWarning)  # often made with it
        torch.onnx.export(
            Tiny().eval(), (torch.zeros(2, 3, 32, 32),), str(path), input_names=["input"],
            output_names=["pooled", "logits"], dynamic_axes={"input": {0: "n"}}, dynamo=False,
        )  # fmt: skip
    return path


def test_annotated_copy_equals_the_original_with_its_flags(foreign, tmp_path):
    import onnx

    images = tmp_path / "images"
    make_image_folder(images, {"a": 3, "b": 3}, size=(50, 44))
    out = annotate(foreign, PREP, tmp_path / "annotated.onnx", images).path
    info = read_model_info(out)
    assert info.preprocessing == PREP and info.arch == "onnx"
    assert info.layers == ("pooled", "logits")
    assert info.shapes == {"pooled": (8,), "logits": (5,)}
    assert has_prefix(onnx.load(str(out)))
    # independently of annotate's own check: the float model fed the NumPy normalisation
    import onnxruntime as ort

    from fstore.images.preprocess import to_float

    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    got = ort.InferenceSession(str(out)).run(None, {"image": pixels})
    want = ort.InferenceSession(str(foreign)).run(None, {"input": to_float(pixels, PREP)})
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-5 * max(1.0, np.abs(w).max())


def test_an_annotated_model_has_int8_and_fp16_variants(foreign, tmp_path):
    from fstore.export.precision import export_variant, read_fidelity

    images = tmp_path / "images"
    make_image_folder(images, {"a": 8, "b": 8}, size=(50, 44))
    base = annotate(foreign, PREP, tmp_path / "annotated.onnx")
    for precision in ("int8", "fp16"):
        variant = export_variant(base, precision, calibration=images, calibration_count=6)
        rows = read_fidelity(variant.path)["layers"]
        assert variant.info.precision == precision and variant.info.arch == "onnx"
        assert set(rows) == {"pooled", "logits"}
        assert min(row["mean_cosine"] for row in rows.values()) >= 0.99


def test_annotating_twice_or_at_the_wrong_size_is_one_line(foreign, tmp_path):
    out = annotate(foreign, PREP, tmp_path / "a.onnx").path
    with pytest.raises(ModelError, match="already takes uint8"):
        annotate(out, PREP, tmp_path / "b.onnx")
    with pytest.raises(FstoreError, match="does not exist"):
        annotate(tmp_path / "none.onnx", PREP, tmp_path / "c.onnx")


def test_a_store_of_the_original_refuses_the_annotated_copy(foreign, tmp_path):
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    images = tmp_path / "images"
    make_image_folder(images, {"a": 2, "b": 2}, size=(50, 44))
    store = tmp_path / "s.h5"
    base = dict(store=store, images=images, provider="cpu", batch_size=2)
    build_store(BuildConfig(model=foreign, preprocessing=PREP, **base))
    annotated = annotate(foreign, PREP, tmp_path / "annotated.onnx").path
    with pytest.raises(FstoreError, match="another model") as info:
        build_store(BuildConfig(model=annotated, **base))
    assert "\n" not in str(info.value)


SHARED = Path(
    os.environ.get("FSTORE_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
)
LITE1_ONNX = SHARED / "models" / "efficientnet_lite1.onnx"
SCENE15 = SHARED / "data" / "scene15"
#: The shared model's preprocessing, as its README gives it.
LITE1 = Preprocessing(resize=274, crop=240)


@pytest.mark.real
@pytest.mark.skipif(not (LITE1_ONNX.is_file() and SCENE15.is_dir()), reason="needs ../shared")
def test_shared_lite1_annotated_gives_the_features_of_its_flags(tmp_path):
    """Cosine >= 0.9999 per image and output on 16 real 15-Scene images, exact decoding."""
    from fstore.export.calibration import decode_pixels
    from fstore.export.precision import cosine_rows
    from fstore.runtime.session import OrtBackend

    result = annotate(LITE1_ONNX, LITE1, tmp_path / "lite1.onnx", SCENE15 / "test")
    assert all(err <= 1e-4 for err in result.errors.values())
    images = sorted((SCENE15 / "test").glob("*/*.jpg"))[::150][:16]
    pixels = decode_pixels(images, LITE1)
    flags = OrtBackend.open(LITE1_ONNX, "cpu", preprocessing=LITE1).run(pixels)
    annotated = OrtBackend.open(result.path, "cpu").run(pixels)
    for name in ("pooled", "logits"):
        assert cosine_rows(flags[name], annotated[name]).min() >= 0.9999
    assert read_model_info(result.path).shapes == {"pooled": (1280,), "logits": (1000,)}


def test_a_copy_that_differs_from_the_original_is_refused_and_deleted(
    foreign, tmp_path, monkeypatch
):
    from fstore.export import annotate as module

    real = module.add_prefix
    monkeypatch.setattr(module, "add_prefix", lambda model, mean, std: real(model, mean, PREP.mean))
    out = tmp_path / "annotated.onnx"
    with pytest.raises(ModelError, match="differs from it"):
        annotate(foreign, PREP, out)
    assert not out.exists()


def test_the_check_images_are_drawn_from_every_class(tmp_path):
    from fstore.export.annotate import CHECK_IMAGES, _check_images

    images = tmp_path / "images"
    make_image_folder(images, {c: 10 for c in "abcd"}, size=(50, 44))  # sorted, 16 = a and b
    chosen = _check_images(images, PREP)
    assert len(chosen) == CHECK_IMAGES
    assert {p.parent.name for p in chosen} == set("abcd")
