"""OrtBackend implements the Backend Protocol; uint8 in, host arrays out; no float fallback."""

from __future__ import annotations

import numpy as np
import pytest

from fstore.errors import ModelError
from fstore.images.preprocess import to_float
from fstore.runtime.backend import Backend
from fstore.runtime.session import OrtBackend

pytest.importorskip("torch")


def crops(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_ort_backend_is_a_backend_and_each_method_works(store_model):
    backend = OrtBackend(store_model, "cpu", outputs=("fc7",), threads=1)
    assert isinstance(backend, Backend)
    assert backend.session is None  # nothing loaded before load()
    backend.load()
    session = backend.session
    backend.load()  # idempotent
    assert backend.session is session
    out = backend.run(crops(3))
    assert list(out) == ["fc7"] and out["fc7"].shape == (3, 4096) and out["fc7"].dtype == np.float32
    backend.synchronize()
    info = backend.describe()
    assert info["provider"] == "cpu" and info["precision"] == "fp32"
    assert info["input"] == "uint8 NHWC RGB" and info["name"] == "ort-fp32"


def test_the_older_load_call_still_opens_a_model(store_model):
    backend = OrtBackend.open(store_model, "cpu", outputs=("pool5",))
    assert backend.session is not None and backend.outputs == ("pool5",)
    assert backend.input_name == "image"


def test_run_batches_equals_run_per_batch(store_model):
    backend = OrtBackend.open(store_model, "cpu")
    batches = [crops(4, seed=1), crops(1, seed=2), crops(3, seed=3)]
    streamed = list(backend.run_batches(iter(batches)))
    assert len(streamed) == 3
    for batch, got in zip(batches, streamed):
        want = backend.run(batch)
        for name in backend.outputs:
            np.testing.assert_array_equal(got[name], want[name])


def test_a_uint8_model_refuses_float_batches(store_model, small_preprocessing):
    """No float fallback: a normalised float batch to a model with the prefix is a bug."""
    backend = OrtBackend.open(store_model, "cpu")
    with pytest.raises(TypeError, match="uint8"):
        backend.run(to_float(crops(2, seed=4), small_preprocessing))


def test_missing_output_and_unknown_normalisation_are_user_errors(store_model, tmp_path):
    with pytest.raises(ModelError, match="no output 'fc8'"):
        OrtBackend.open(store_model, "cpu", outputs=("fc8",))
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "f.onnx"))  # fmt: skip
    float_model = OrtBackend.open(tmp_path / "f.onnx", "cpu")
    assert float_model.describe()["input"] == "float32 NCHW"
    with pytest.raises(ModelError, match="--mean/--std"):
        float_model.run(crops(1, side=4))
    assert float_model.run(np.ones((1, 3, 4, 4), np.float32))["y"].shape == (1, 3, 4, 4)
