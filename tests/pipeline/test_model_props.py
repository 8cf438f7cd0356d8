"""A model's metadata is read from its protobuf encoding without ``onnx``: the same props as
``onnx.load`` (the reference) for whole files, and a one-line ModelError where onnx refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fstore.errors import ModelError
from fstore.runtime.metadata import read_metadata_props


def _model(path: Path, props: dict[str, str]) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(3000, dtype=np.float32).reshape(3, 1000), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1000])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                              initializer=[weight])  # fmt: skip
    model = helper.make_model(graph, doc_string="a model", producer_name="test")
    helper.set_model_props(model, props)  # serialised after the graph (field 14 > 7)
    model.metadata_props.add(key="late", value="after")
    onnx.save(model, str(path))
    return path


def _onnx_props(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


PROPS = {"fstore.layers": '["fc7"]', "fstore.classes": "é ü 中文 🙂", "empty": "", "x" * 300: "v"}


def test_the_props_are_onnx_own(tmp_path):
    path = _model(tmp_path / "m.onnx", PROPS)
    assert read_metadata_props(path) == _onnx_props(path) == {**PROPS, "late": "after"}


def test_a_model_without_props_has_none(tmp_path):
    path = _model(tmp_path / "m.onnx", {})
    assert read_metadata_props(path) == _onnx_props(path) == {"late": "after"}


def test_a_truncated_or_garbled_model_is_refused_as_onnx_refuses_it(tmp_path):
    """Every cut of a model, and random bytes: where onnx reads props, ours are the same; where
    onnx refuses the file, ours is one ModelError."""
    from google.protobuf.message import DecodeError

    data = _model(tmp_path / "m.onnx", PROPS).read_bytes()
    rng = np.random.default_rng(0)
    cuts = [*range(0, 64), *rng.integers(64, len(data), 200), len(data) - 1]
    garbled = [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in (5, 40, 999)]
    refused = 0
    for blob in [data[:cut] for cut in cuts] + garbled:
        path = tmp_path / "cut.onnx"
        path.write_bytes(blob)
        try:
            want = _onnx_props(path)
        except DecodeError:
            with pytest.raises(ModelError, match="cannot read ONNX model") as info:
                read_metadata_props(path)
            assert "\n" not in str(info.value)
            refused += 1
            continue
        assert read_metadata_props(path) == want
    assert refused > 200  # the cuts inside the graph
