"""The int8 recipe: the nodes it keeps in float32, every option recorded, and the cache key."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from fstore.errors import ModelError
from fstore.export import int8
from fstore.export import precision as prec
from fstore.images.preprocess import Preprocessing

onnx = pytest.importorskip("onnx")

PREP = Preprocessing(resize=10, crop=8)


def _mobile_net(path: Path, side: int | str = 8) -> Path:
    """stem Conv → Relu → depthwise Conv → Relu → 1x1 Conv (head) → Relu → GAP → Flatten,
    output ``pooled``; and Gemm on it, output ``logits``: the shape of EfficientNet-Lite.
    Multiply-adds per image at ``side`` 8: stem 6,912, dw 2,304, conv_head 1,536, Gemm 30."""
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
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, side, side])],
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


@pytest.mark.parametrize(
    ("budget", "leading"),
    [
        (0.0, ["stem"]),
        (0.05, ["stem"]),
        (0.855, ["stem", "dw"]),
        (1.0, ["stem", "dw", "conv_head", "classifier"]),
    ],
)
def test_leading_nodes_fill_a_share_of_the_multiply_adds(mobile: Path, budget, leading) -> None:
    """stem 64.1 %, stem and dw 85.5 %, with the head 99.7 % of 10,782 (the stem always)."""
    assert int8.float_nodes(onnx.load(str(mobile)), ("leading",), budget) == leading


def test_leading_is_the_stem_where_sizes_are_unknown(tmp_path: Path) -> None:
    model = onnx.load(str(_mobile_net(tmp_path / "any-size.onnx", side="side")))
    assert int8.float_nodes(model, ("leading",), 1.0) == ["stem"]


def test_the_recipe_is_applied_and_every_option_recorded(mobile: Path, tmp_path: Path) -> None:
    recipe = int8.Int8Recipe(method="percentile", percentile=99.9, num_bins=512)
    out = int8.quantize_int8(mobile, tmp_path / "q.onnx", None, 8, PREP, seed=3, recipe=recipe)
    model = onnx.load(str(out))
    assert _quantized_nodes(model) == {"dw"}  # stem and head (conv_head, classifier) stay float
    record = json.loads({p.key: p.value for p in model.metadata_props}["fstore.calibration"])
    assert record["source"] == "synthetic" and record["images"] == 8 and record["seed"] == 3
    assert record["recipe"] == json.loads(json.dumps(asdict(recipe)))  # every field
    assert record["recipe"]["leading_macs"] == 0.05
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
        {"leading_macs": 0.1},
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
    with pytest.raises(ModelError, match="share of the model"):
        int8.Int8Recipe(leading_macs=5.0)


@pytest.mark.parametrize("fmt", int8.INT8_FORMATS)
def test_each_weight_format_runs_close_to_fp32(mobile: Path, tmp_path: Path, fmt: str) -> None:
    """Every weighted node in int8, forced to ``fmt`` (a CPU runs both), against fp32 on 16
    pictures it was not calibrated on. Measured for either format: cosine of ``pooled`` mean
    0.9987, min 0.9871 (a 6-value output, mostly zeros after ReLU, so one picture's rounding
    moves it most)."""
    import onnxruntime as ort

    from fstore.export.calibration import synthetic_inputs

    recipe = int8.Int8Recipe(keep_float=())
    out = int8.quantize_int8(mobile, tmp_path / "q.onnx", None, 16, PREP, recipe=recipe, fmt=fmt)
    model = onnx.load(str(out))
    assert _quantized_nodes(model) == {"stem", "dw", "conv_head", "classifier"}
    record = json.loads({p.key: p.value for p in model.metadata_props}["fstore.calibration"])
    assert record["format"] == fmt
    weight_type = onnx.TensorProto.INT8 if fmt == "u8s8" else onnx.TensorProto.UINT8
    inits = {i.name: i.data_type for i in model.graph.initializer}
    weights = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert {inits[w] for w in weights if w in inits} == {weight_type}
    pictures = synthetic_inputs(16, PREP, seed=7)
    outputs = []
    for path in (mobile, out):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(["pooled"], {"input": pictures})[0])
    cosine = prec.cosine_rows(*outputs)
    assert cosine.mean() > 0.995 and cosine.min() > 0.98


def test_an_unknown_weight_format_is_a_user_error(mobile: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="int8 format"):
        int8.quantize_int8(mobile, tmp_path / "q.onnx", None, 4, PREP, fmt="s8s8")
