"""Weights of any architecture (a file, safetensors, ImageNet offline), ``--precision auto``
by fidelity and speed, and builds from an architecture."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
from helpers import make_image_folder

from fstore.errors import FstoreError, WeightsError
from fstore.export.architectures import default_preprocessing, resolve_arch
from fstore.images.preprocess import Preprocessing
from fstore.runtime.weights_source import WeightsSource

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

ARCH = "timm:test_efficientnet"
SEED0 = WeightsSource("random", seed=0)


def small() -> Preprocessing:
    own = default_preprocessing(resolve_arch(ARCH))
    return Preprocessing(72, 64, own.mean, own.std, own.interpolation)


@pytest.fixture(scope="module")
def base():
    from fstore.export.onnx_export import export

    return export("pooled", SEED0, arch=ARCH, preprocessing=small())


def test_a_state_dict_or_safetensors_file_gives_the_same_model(base, tmp_path):
    from safetensors.torch import save_file

    from fstore.export.onnx_export import export
    from fstore.export.weights_loader import load_model

    model, sha = load_model(ARCH, SEED0)
    assert sha == base.info.weights_sha256
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        weights = WeightsSource.parse(str(tmp_path / name))
        result = export("pooled", weights, arch=ARCH, preprocessing=small())
        assert result.path == base.path and result.info.weights_sha256 == sha
        assert result.info.weights_origin == f"file:{tmp_path / name}"


def test_weights_of_another_architecture_are_one_line(tmp_path):
    from fstore.export.weights_loader import load_model

    other, _ = load_model("timm:test_resnet", SEED0)
    torch.save(other.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(WeightsError) as info:
        load_model(ARCH, WeightsSource.parse(str(tmp_path / "resnet.pth")))
    message = str(info.value)
    assert "does not fit timm:test_efficientnet" in message and "\n" not in message


def test_imagenet_offline_is_one_line(monkeypatch):
    import timm
    from torchvision.models import ResNet18_Weights

    from fstore.export.weights_loader import load_model

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", offline)
    with pytest.raises(WeightsError) as info:
        load_model("resnet18", WeightsSource("imagenet"))
    assert "ResNet18_Weights.IMAGENET1K_V1" in str(info.value) and "--weights PATH" in str(
        info.value
    )
    real = timm.create_model

    def hub_offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, **kw)

    monkeypatch.setattr(timm, "create_model", hub_offline)
    with pytest.raises(WeightsError) as info:
        load_model(ARCH, WeightsSource("imagenet"))
    assert "timm's hub" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- auto


@pytest.mark.parametrize(
    "seconds, chosen",
    [
        ({"fp32": 1.0, "int8": 2.0}, "fp32"),  # int8 slower: the CPU without VNNI case
        ({"fp32": 1.0, "int8": 0.9}, "fp32"),  # a near tie that load could flip
        ({"fp32": 1.0, "int8": 0.5}, "int8"),
    ],
)
def test_auto_takes_int8_only_when_clearly_faster(base, tmp_path, monkeypatch, seconds, chosen):
    from fstore.export import precision

    images = tmp_path / "images"
    make_image_folder(images, {"a": 6, "b": 6}, size=(80, 72))
    monkeypatch.setattr(precision, "fidelity_holds", lambda result, threshold=None: True)
    monkeypatch.setattr(precision, "time_models", lambda models, provider, pixels: seconds)
    result = precision.choose_auto(base, "cpu", images, calibration_count=4)
    assert result.info.precision == chosen
    assert (result.path == base.path) == (chosen == "fp32")
    variant = precision.export_variant(base, "int8", calibration=images, calibration_count=4)
    record = json.loads(precision.speed_path(variant.path).read_text())
    assert record["chosen"] == chosen and record["seconds"] == seconds
    assert record["required"] == precision.AUTO_SPEEDUP


def test_auto_without_calibration_images_stays_fp32(base):
    from fstore.export.precision import choose_auto

    assert choose_auto(base, "cpu", None).path == base.path


# --------------------------------------------------------------------------- builds


@pytest.mark.slow
def test_build_from_an_architecture_resumes_with_it(tmp_path):
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store
    from fstore.runtime.metadata import read_model_info
    from fstore.store.layout import read_manifest

    images = tmp_path / "images"
    make_image_folder(images, {"a": 3, "b": 3}, size=(80, 72))
    store = tmp_path / "s.h5"
    config = BuildConfig(store=store, images=images, arch=ARCH, layers=("pooled", "stage2"),
                         weights=SEED0, preprocessing=small(), provider="cpu", batch_size=4,
                         precision="fp32")  # fmt: skip
    report = build_store(config)
    assert report.images_total == 6
    manifest = read_manifest(store)
    assert read_model_info(manifest.provenance["model_path"]).arch == ARCH
    make_image_folder(images, {"c": 2}, size=(80, 72))
    again = build_store(BuildConfig(store=store, provider="cpu"))
    assert again.images_total == 8 and again.images_done_before == 6
    assert read_manifest(store).provenance["model_path"] == manifest.provenance["model_path"]
    # through the CLI, naming the store's layers: they are the architecture's, not VGG16's
    from click.testing import CliRunner

    from fstore.cli import cli

    args = ["build", "--store", str(store), "--layer", "pooled,stage2", "--provider", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "0 images computed, 8 already stored" in result.output
    # the cached model gone (FSTORE_CACHE emptied): the store's provenance names the network
    assert read_manifest(store).provenance["arch"] == ARCH
    Path(manifest.provenance["model_path"]).unlink()
    make_image_folder(images, {"d": 1}, size=(80, 72))
    last = build_store(BuildConfig(store=store, provider="cpu"))
    assert last.images_total == 9 and last.images_done_before == 8


def test_flags_that_contradict_an_annotated_model_are_one_line(base, tmp_path):
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    images = tmp_path / "images"
    make_image_folder(images, {"a": 2, "b": 2}, size=(80, 72))
    wrong = Preprocessing(80, 72)
    config = BuildConfig(store=tmp_path / "s.h5", images=images, model=base.path,
                         preprocessing=wrong, provider="cpu")  # fmt: skip
    with pytest.raises(FstoreError) as info:
        build_store(config)
    message = str(info.value)
    assert "--size 72 (the model's: 64)" in message and "\n" not in message
    assert not (tmp_path / "s.h5").exists()
