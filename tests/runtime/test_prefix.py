"""The uint8 prefix: in-graph normalisation equals the float path (torchvision) within 1e-5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fstore.errors import ModelError
from fstore.images.preprocess import Preprocessing, to_float
from fstore.runtime.prefix import (
    IMAGE_INPUT,
    InputSpec,
    add_prefix,
    has_prefix,
    remove_prefix,
)
from fstore.runtime.session import OrtBackend

torch = pytest.importorskip("torch")
F = pytest.importorskip("torchvision.transforms.functional")

TOLERANCE = 1e-5
CASES = [  # (height, width, mean, std)
    (32, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    (7, 19, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    (240, 240, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    (13, 5, (0.9, 0.1, 0.3), (0.05, 2.0, 0.7)),
]


def torchvision_float(pixels: np.ndarray, mean, std) -> np.ndarray:
    """The reference: torchvision ToTensor + Normalize on each uint8 crop."""
    return np.stack([F.normalize(F.to_tensor(p), mean, std).numpy() for p in pixels])


def identity_model(path: Path, h: int, w: int, elem_type=TensorProto.FLOAT) -> Path:
    """A float NCHW model whose output is its input: shows exactly what the prefix computed."""
    x = helper.make_tensor_value_info("input", elem_type, ["n", 3, h, w])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3, h, w])
    nodes = [helper.make_node("Cast", ["input"], ["out"], to=TensorProto.FLOAT)]
    model = helper.make_model(
        helper.make_graph(nodes, "identity", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save(model, str(path))
    return path


def pixels(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    out[0, 0, 0] = (0, 255, 128)  # both ends of the range
    return out


@pytest.mark.parametrize("h, w, mean, std", CASES)
def test_prefix_equals_torchvision(tmp_path, h, w, mean, std):
    model = onnx.load(str(identity_model(tmp_path / "id.onnx", h, w)))
    add_prefix(model, mean, std)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == IMAGE_INPUT and image.type == "tensor(uint8)"
    assert image.shape[1:] == [h, w, 3]
    x = pixels(3, h, w)
    got = session.run(["out"], {IMAGE_INPUT: x})[0]
    want = torchvision_float(x, mean, std)
    assert got.dtype == np.float32 and got.shape == want.shape == (3, 3, h, w)
    assert np.abs(got - want).max() <= TOLERANCE
    assert np.abs(to_float(x, Preprocessing(mean=mean, std=std)) - want).max() <= TOLERANCE


def test_fp16_input_is_cast_after_float32_normalisation(tmp_path):
    model = onnx.load(str(identity_model(tmp_path / "id16.onnx", 8, 8, TensorProto.FLOAT16)))
    add_prefix(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    ops = [(n.op_type, [a.i for a in n.attribute if a.name == "to"]) for n in model.graph.node]
    assert ops[:5] == [
        ("Transpose", []), ("Cast", [TensorProto.FLOAT]), ("Mul", []), ("Add", []),
        ("Cast", [TensorProto.FLOAT16]),
    ]  # fmt: skip
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = pixels(2, 8, 8)
    got = session.run(["out"], {IMAGE_INPUT: x})[0]
    want = torchvision_float(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    # float32 multiply-add, then one rounding to fp16: at most one fp16 step (|x| < 4) apart
    one_step = 4 * float(np.finfo(np.float16).eps)
    assert np.abs(got - want.astype(np.float16).astype(np.float32)).max() <= one_step


def test_small_vgg16_prefix_output_equals_torchvision(store_model, small_preprocessing):
    """Expose the prefix's output (the old float input) of the exported model and compare."""
    model = onnx.load(str(store_model))
    assert has_prefix(model)
    model.graph.output.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = pixels(4, 32, 32, seed=3)
    got = session.run(["input"], {IMAGE_INPUT: x})[0]
    p = small_preprocessing
    assert np.abs(got - torchvision_float(x, p.mean, p.std)).max() <= TOLERANCE


def test_a_float_model_is_wrapped_once_from_its_mean_and_std(tmp_path):
    """``--model``: a float model is wrapped at load; a wrapped one is not wrapped again."""
    path = tmp_path / "conv.onnx"
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 12, 12])
    y = helper.make_tensor_value_info("feat", TensorProto.FLOAT, None)
    conv = helper.make_node("Conv", ["input", "w"], ["feat"])
    graph = helper.make_graph([conv], "c", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)

    class Prep:
        pass

    prep = Prep()
    prep.mean, prep.std = mean, std
    backend = OrtBackend(path, "cpu", preprocessing=prep)
    backend.load()
    assert backend.input_spec == InputSpec(mean=mean, std=std)
    crops = pixels(3, 12, 12, seed=5)
    got = backend.run(crops)["feat"]
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = plain.run(["feat"], {"input": torchvision_float(crops, mean, std)})[0]
    assert np.abs(got - want).max() <= TOLERANCE * max(1.0, np.abs(want).max())

    wrapped = onnx.load(str(path))
    add_prefix(wrapped, mean, std)
    n_nodes = len(wrapped.graph.node)
    add_prefix(wrapped, (0, 0, 0), (1, 1, 1))  # already wrapped: unchanged
    assert len(wrapped.graph.node) == n_nodes
    onnx.save(wrapped, str(tmp_path / "wrapped.onnx"))
    again = OrtBackend.open(tmp_path / "wrapped.onnx", "cpu", preprocessing=prep)
    casts = [n for n in onnx.load(str(tmp_path / "wrapped.onnx")).graph.node if n.op_type == "Cast"]
    assert len(casts) == 1 and np.abs(again.run(crops)["feat"] - got).max() == 0


def test_remove_prefix_gives_the_float_model_back(tmp_path):
    model = onnx.load(str(identity_model(tmp_path / "id.onnx", 6, 6)))
    before = model.SerializeToString()
    add_prefix(model, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert remove_prefix(model) == InputSpec(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert not has_prefix(model) and remove_prefix(model) is None
    assert [i.name for i in model.graph.input] == ["input"]
    assert len(model.graph.node) == len(onnx.load_from_string(before).graph.node)


def test_what_cannot_be_wrapped_is_a_one_line_error(tmp_path):
    x = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["n", 7])
    y = helper.make_tensor_value_info("out", TensorProto.INT64, ["n", 7])
    graph = helper.make_graph([helper.make_node("Identity", ["tokens"], ["out"])], "t", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="not a float NCHW image batch"):
        add_prefix(model, (0, 0, 0), (1, 1, 1))
