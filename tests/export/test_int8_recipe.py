"""The int8 recipe: the nodes it keeps in float32, every option recorded, and the cache key."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fstore.errors import ModelError
from fstore.export import int8
from fstore.export import precision as prec
from fstore.images.preprocess import Preprocessing

onnx = pytest.importorskip("onnx")

PREP = Preprocessing(resize=10, crop=8)


def _mobile_net(path: Path) -> Path:
    """stem Conv → Relu → depthwise Conv → Relu → 1x1 Conv (head) → Relu → GAP → Flatten,
    output ``pooled``; and Gemm on it, output ``logits``: the shape of EfficientNet-Lite."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "wd"], ["c1"], name="dw", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv_head"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["pooled"], name="flatten"),
        helper.make_node("Gemm", ["pooled", "fw"], ["logits"], name="classifier", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mobile",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 6]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5]),
        ],
        [init("w0", 4, 3, 3, 3), init("wd", 4, 1, 3, 3), init("w2", 6, 4, 1, 1), init("fw", 5, 6)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def mobile(tmp_path_factory) -> Path:
    return _mobile_net(tmp_path_factory.mktemp("mobile") / "mobile.onnx")


def _quantized_nodes(model) -> set[str]:
    """Weighted nodes whose weight arrives through DequantizeLinear (i.e. was quantized)."""
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.name
        for n in model.graph.node
        if n.op_type in int8.WEIGHTED_OPS and n.input[1] in dequantized
    }


def test_float_roles_find_stem_head_and_depthwise(mobile: Path) -> None:
    model = onnx.load(str(mobile))
    assert int8.float_nodes(model, ()) == []
    assert int8.float_nodes(model, ("stem",)) == ["stem"]
    head = int8.float_nodes(model, ("head",))
    assert set(head) == {"flatten", "gap", "relu2", "conv_head", "classifier"}
    assert int8.float_nodes(model, ("depthwise",)) == ["dw"]


def test_the_recipe_is_applied_and_every_option_recorded(mobile: Path, tmp_path: Path) -> None:
    recipe = int8.Int8Recipe(method="percentile", percentile=99.9, num_bins=512)
    out = int8.quantize_int8(mobile, tmp_path / "q.onnx", None, 8, PREP, seed=3, recipe=recipe)
    model = onnx.load(str(out))
    assert _quantized_nodes(model) == {"dw"}  # stem and head (conv_head, classifier) stay float
    record = json.loads({p.key: p.value for p in model.metadata_props}["fstore.calibration"])
    assert record["source"] == "synthetic" and record["images"] == 8 and record["seed"] == 3
    assert record["recipe"]["method"] == "percentile" and record["recipe"]["percentile"] == 99.9
    assert record["calibrator"] == {"symmetric": False, "num_bins": 512, "percentile": 99.9}
    quantizer = record["quantizer"]
    assert quantizer["per_channel"] is True and quantizer["reduce_range"] is False
    assert quantizer["activation_type"] == "QUInt8"
    assert quantizer["weight_type"] == ("QInt8" if record["format"] == "u8s8" else "QUInt8")
    assert set(quantizer["nodes_to_exclude"]) == {
        "stem",
        "conv_head",
        "relu2",
        "gap",
        "flatten",
        "classifier",
    }
    assert quantizer["extra_options"]["ActivationSymmetric"] is False
    assert record["onnxruntime"] == int8._ort_version()


def test_quantizing_every_node_quantizes_the_stem_and_head(mobile: Path, tmp_path: Path) -> None:
    recipe = int8.Int8Recipe(method="minmax", keep_float=())
    model = onnx.load(
        str(int8.quantize_int8(mobile, tmp_path / "q.onnx", None, 4, PREP, recipe=recipe))
    )
    assert _quantized_nodes(model) == {"stem", "dw", "conv_head", "classifier"}


@pytest.mark.parametrize(
    "change",
    [
        {"method": "entropy"},
        {"percentile": 99.99},
        {"num_bins": 1024},
        {"num_quantized_bins": 64},
        {"symmetric_activations": True},
        {"per_channel": False},
        {"reduce_range": True},
        {"min_real_range": 1e-4},
        {"keep_float": ("stem",)},
    ],
)
def test_every_recipe_option_is_in_the_cache_key(change: dict) -> None:
    base = prec.CalibrationRequest()
    other = replace(base, recipe=replace(base.recipe, **change))
    assert prec.variant_tag("int8", (), other) != prec.variant_tag("int8", (), base)


def test_count_seed_format_and_onnxruntime_are_in_the_cache_key(monkeypatch) -> None:
    base = prec.variant_tag("int8", (), prec.CalibrationRequest())
    assert prec.variant_tag("int8", (), prec.CalibrationRequest(count=16)) != base
    assert prec.variant_tag("int8", (), prec.CalibrationRequest(seed=1)) != base
    monkeypatch.setattr(int8, "_ort_version", lambda: "0.0.0")
    assert prec.variant_tag("int8", (), prec.CalibrationRequest()) != base
    monkeypatch.undo()
    monkeypatch.setattr(prec, "int8_format", lambda: "u8u8" if "u8s8" in base else "u8s8")
    assert prec.variant_tag("int8", (), prec.CalibrationRequest()) != base


def test_a_bad_recipe_is_a_user_error() -> None:
    with pytest.raises(ModelError, match="calibration method"):
        int8.Int8Recipe(method="magic")
    with pytest.raises(ModelError, match="float role"):
        int8.Int8Recipe(keep_float=("tail",))
