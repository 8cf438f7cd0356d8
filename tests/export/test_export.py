"""Export: parity with eager torchvision through the uint8 input, truncation, metadata, cache,
and the user errors."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import ALL_LAYERS, SMALL, random_image

from fstore import __version__
from fstore.errors import OutputPathError, WeightsError
from fstore.export.layers import parse_layers
from fstore.export.onnx_export import export, truncated_vgg16
from fstore.export.result import relative_error
from fstore.export.weights_loader import load_vgg16
from fstore.images.preprocess import Preprocessing, resize_and_crop, to_rgb
from fstore.runtime.metadata import read_model_info
from fstore.runtime.prefix import NODE_PREFIX
from fstore.runtime.weights_source import WeightsSource

torch = pytest.importorskip("torch")

RANDOM0 = WeightsSource("random", seed=0)


def eager_outputs(layers: tuple[str, ...], x: np.ndarray) -> dict[str, np.ndarray]:
    model, _ = load_vgg16(RANDOM0)
    module = truncated_vgg16(model, parse_layers(layers))
    with torch.inference_mode():
        return {n: o.numpy() for n, o in zip(layers, module(torch.from_numpy(x)))}


def real_crops(spec: Preprocessing, n: int = 3) -> np.ndarray:
    """uint8 (N, crop, crop, 3) crops of generated pictures: what the model takes."""
    rng = np.random.default_rng(11)
    images = [random_image(rng, (50 + 9 * i, 44)) for i in range(n)]
    return np.stack([np.asarray(resize_and_crop(to_rgb(im), spec)) for im in images])


def torchvision_float(crops: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The eager reference input: torchvision ToTensor + Normalize on the same uint8 crops."""
    from torchvision.transforms import functional as F

    return np.stack(
        [F.normalize(F.to_tensor(c), spec.mean, spec.std).numpy() for c in crops]
    ).astype(np.float32)


def test_every_layer_matches_eager_on_small_input(small_model):
    assert set(small_model.errors) == set(ALL_LAYERS) or small_model.from_cache
    assert all(err <= 1e-4 for err in small_model.errors.values())
    crops = real_crops(SMALL)
    session = ort.InferenceSession(str(small_model.path), providers=["CPUExecutionProvider"])
    got = dict(zip(ALL_LAYERS, session.run(list(ALL_LAYERS), {"image": crops})))
    want = eager_outputs(ALL_LAYERS, torchvision_float(crops, SMALL))
    for name in ALL_LAYERS:
        assert got[name].shape == want[name].shape
        assert relative_error(got[name], want[name]) <= 1e-4, name
    np.testing.assert_allclose(got["prob"].sum(1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_graph_stops_at_the_deepest_layer(tmp_path):
    fc7 = export("fc7", RANDOM0, preprocessing=SMALL, output=tmp_path / "fc7.onnx")
    graph = onnx.load(str(fc7.path)).graph
    assert [o.name for o in graph.output] == ["fc7"]
    shapes = [tuple(init.dims) for init in graph.initializer]
    assert (1000, 4096) not in shapes and (4096, 1000) not in shapes  # no fc8
    assert not any(n.op_type == "Softmax" for n in graph.node)

    pool5 = export(("pool5", "conv1_1"), RANDOM0, preprocessing=SMALL)
    graph = onnx.load(str(pool5.path)).graph
    assert [o.name for o in graph.output] == ["conv1_1", "pool5"]
    assert not any(n.op_type in ("Gemm", "MatMul") for n in graph.node)
    assert [n.op_type for n in graph.node].count("Conv") == 13
    kernels = [i for i in graph.initializer if not i.name.startswith(NODE_PREFIX)]
    assert sum(1 for init in kernels if len(init.dims) == 4) == 13  # 13 conv kernels

    conv = export("conv2_1", RANDOM0, preprocessing=SMALL)
    ops = [n.op_type for n in onnx.load(str(conv.path)).graph.node]
    assert ops.count("Conv") == 3 and ops.count("MaxPool") == 1


def test_metadata_and_dynamic_batch(small_model, tmp_path):
    info = read_model_info(small_model.path)
    assert info.layers == ALL_LAYERS
    assert info.weights_origin == "random:seed=0"
    assert info.weights_sha256 == load_vgg16(RANDOM0)[1]
    assert info.preprocessing == SMALL and info.precision == "fp32" and info.opset == 18
    assert info.fstore_version == __version__
    from torchvision.models import VGG16_Weights

    assert list(info.classes) == VGG16_Weights.IMAGENET1K_V1.meta["categories"]
    assert info.shapes["pool5"] == (512, 1, 1) and info.shapes["fc7"] == (4096,)
    props = {p.key: p.value for p in onnx.load(str(small_model.path)).metadata_props}
    assert json.loads(props["fstore.preprocessing"])["resize"] == 37
    assert json.loads(props["fstore.input"])["dtype"] == "uint8"
    session = ort.InferenceSession(str(small_model.path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image" and image.type == "tensor(uint8)"
    assert isinstance(image.shape[0], str) and image.shape[1:] == [32, 32, 3]
    for batch in (1, 5):
        out = session.run(["fc7"], {"image": np.zeros((batch, 32, 32, 3), np.uint8)})[0]
        assert out.shape == (batch, 4096)
    no_classes = export("pool5", RANDOM0, preprocessing=SMALL)
    assert no_classes.info.classes is None


@pytest.mark.slow
def test_cache_is_reused_and_keyed_by_weights_content(tmp_path):
    first = export("pool2", RANDOM0, preprocessing=SMALL)
    again = export("pool2", RANDOM0, preprocessing=SMALL)
    assert again.from_cache and again.path == first.path and again.seconds == 0
    model, _ = load_vgg16(RANDOM0)
    weights_file = tmp_path / "vgg16.pth"
    torch.save(model.state_dict(), weights_file)
    from_file = export("pool2", WeightsSource.parse(str(weights_file)), preprocessing=SMALL)
    assert from_file.path == first.path  # same weights, same model
    other = export("pool2", WeightsSource("random", seed=1), preprocessing=SMALL)
    assert other.path != first.path


@pytest.mark.slow
def test_mismatched_and_unreadable_weights(tmp_path):
    model, _ = load_vgg16(RANDOM0)
    state = model.state_dict()
    state["classifier.6.weight"] = state["classifier.6.weight"][:10]
    bad_shape = tmp_path / "shape.pth"
    torch.save(state, bad_shape)
    with pytest.raises(WeightsError, match=r"classifier\.6\.weight.*shape"):
        load_vgg16(WeightsSource.parse(str(bad_shape)))
    del state["features.0.bias"]
    missing = tmp_path / "missing.pth"
    torch.save(state, missing)
    with pytest.raises(WeightsError, match=r"features\.0\.bias.*missing"):
        load_vgg16(WeightsSource.parse(str(missing)))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_vgg16(WeightsSource.parse(str(garbage)))
    with pytest.raises(WeightsError, match="neither"):
        WeightsSource.parse(str(tmp_path / "absent.pth"))


def test_imagenet_offline_says_what_to_do(monkeypatch):
    from torchvision.models import VGG16_Weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WeightsError) as err:
        load_vgg16(WeightsSource("imagenet"))
    message = str(err.value)
    assert "--weights PATH" in message and "vgg16-397923af.pth" in message and "\n" not in message


def test_unwritable_output(tmp_path):
    with pytest.raises(OutputPathError):
        export("pool1", RANDOM0, preprocessing=SMALL, output=tmp_path / "missing" / "m.onnx")
    with pytest.raises(OutputPathError):
        export("pool1", RANDOM0, preprocessing=SMALL, output=tmp_path)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["export", "--layers", "fc9", "--weights", "random"], "valid layers are"),
        (["export", "--layers", "fc7", "--weights", "/nonexistent/w.pth"], "neither"),
        (
            ["export", "--layers", "pool1", "--weights", "random", "-o", "/nonexistent/dir/m.onnx"],
            "not writable",
        ),
    ],
)
def test_cli_errors_are_one_line(args, fragment):
    proc = subprocess.run(
        [sys.executable, "-m", "fstore.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_full_size_parity_for_representative_layers():
    layers = ("conv1_1", "pool3", "conv5_3", "pool5", "fc6", "fc7", "logits", "prob")
    result = export(layers, RANDOM0)
    assert result.info.shapes["pool5"] == (512, 7, 7)
    assert all(err <= 1e-4 for err in result.errors.values()) or result.from_cache
    crops = real_crops(Preprocessing(), n=2)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = dict(zip(layers, session.run(list(layers), {"image": crops})))
    want = eager_outputs(layers, torchvision_float(crops, Preprocessing()))
    for name in layers:
        assert relative_error(got[name], want[name]) <= 1e-4, name
    assert Path(result.path).stat().st_size > 500e6  # fc6 and fc7 hold most of the weights


def test_cli_export_takes_a_comma_list_of_layers(tmp_path):
    """``--layers`` is split by the CLI's ``CommaList``; the library gets the names."""
    from click.testing import CliRunner

    from fstore.cli import cli

    out = tmp_path / "m.onnx"
    args = ["export", "--layers", "pool1, conv1_1", "--weights", "random", "--input-size", "32"]
    result = CliRunner().invoke(cli, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "outputs conv1_1, pool1" in result.stdout
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["conv1_1", "pool1"]
