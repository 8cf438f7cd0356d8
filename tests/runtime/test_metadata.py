"""Model metadata, the weights description and the precision choice, below export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fstore.errors import ModelError
from fstore.export.precision import auto_candidate
from fstore.runtime.metadata import PRECISIONS, props_path, read_model_info, read_props
from fstore.runtime.weights_source import WeightsSource


@pytest.mark.parametrize(
    "source",
    [
        WeightsSource("imagenet"),
        WeightsSource("random", seed=7),
        WeightsSource("file", Path("/w.pth")),
    ],
)
def test_from_origin_inverts_origin(source):
    assert WeightsSource.from_origin(source.origin) == source


def test_sidecar_is_the_one_meta_json_rule(store_model):
    assert props_path(store_model) == store_model.with_suffix(".meta.json")
    sidecar = json.loads(props_path(store_model).read_text())
    assert sidecar == {k: v for k, v in read_props(store_model).items() if k.startswith("fstore.")}
    assert json.loads(sidecar["fstore.input"])["layout"] == "NHWC"
    info = read_model_info(store_model)
    assert info.layers == ("pool5", "fc7") and info.precision in PRECISIONS


def test_a_foreign_model_has_no_fstore_metadata(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [x])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="not exported by fstore"):
        read_model_info(tmp_path / "m.onnx")


def test_auto_precision_is_fp16_on_gpus_and_int8_on_the_cpu(tmp_path):
    assert auto_candidate("cuda", None) == auto_candidate("tensorrt", None) == "fp16"
    assert auto_candidate("cpu", tmp_path) == "int8"  # calibration images: int8 is tried
    assert auto_candidate("cpu", None) == "fp32"
