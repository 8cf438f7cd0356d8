"""int8 and fp16 variants: graph structure, metadata, cache, fidelity, SVM accuracy change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fstore.errors import DatasetError, ModelError
from fstore.export import int8
from fstore.export import precision as prec
from fstore.export.calibration import calibration_fingerprint, choose_images, decode_pixels
from fstore.images.preprocess import Preprocessing

onnx = pytest.importorskip("onnx")


def _props(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _weight_dequantizers(model) -> list:
    """DequantizeLinear nodes fed by an initializer: the quantized weights."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


def _attr(node, name: str):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


@pytest.fixture(scope="module")
def int8_variant(bench_model, bench_folder: Path):
    return prec.export_variant(bench_model, "int8", calibration=bench_folder, calibration_count=8)


def test_int8_is_qdq_per_channel_with_metadata(int8_variant, bench_model) -> None:
    model = onnx.load(str(int8_variant.path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: i for i in model.graph.initializer}
    props = _props(model)
    calibration = json.loads(props["fstore.calibration"])
    weight_type = (
        onnx.TensorProto.INT8 if calibration["format"] == "u8s8" else onnx.TensorProto.UINT8
    )
    weights = [w for w in _weight_dequantizers(model) if inits[w.input[0]].data_type == weight_type]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    dequantized = {w.output[0] for w in weights}
    float_convs = [n.name for n in convs if n.input[1] not in dequantized]
    assert len(weights) == len(convs) - 2 == 11  # conv1_2 .. conv5_2 in int8
    assert float_convs == [convs[0].name, convs[-1].name]  # conv1_1 (stem), conv5_3 (head)
    for node in weights:
        scale = onnx.numpy_helper.to_array(inits[node.input[1]])
        assert _attr(node, "axis") == 0
        assert scale.ndim == 1 and scale.size == inits[node.input[0]].dims[0] > 1
    assert props["fstore.precision"] == "int8"
    assert calibration["source"] == "images" and calibration["images"] == 8
    assert int8_variant.info.precision == "int8"
    assert int8_variant.info.layers == bench_model.info.layers
    # a quarter of the fp32 bytes for 11 convs, all of them for the 2 kept float (16 % of them)
    assert int8_variant.path.stat().st_size < bench_model.path.stat().st_size / 2


def test_int8_fidelity_is_high_and_recorded(int8_variant) -> None:
    record = prec.read_fidelity(int8_variant.path)
    assert record["source"] == "held-out"
    row = record["layers"]["pool5"]
    assert row["images"] == 18 - 8
    assert row["mean_cosine"] >= 0.99
    assert row["min_cosine"] <= row["mean_cosine"]
    assert int8_variant.errors["pool5"] == pytest.approx(row["max_relative_error"])
    assert "cosine vs fp32 mean" in prec.describe_fidelity(record)


def test_variant_is_cached_per_calibration_set(
    int8_variant, bench_model, bench_folder: Path
) -> None:
    again = prec.export_variant(bench_model, "int8", calibration=bench_folder, calibration_count=8)
    assert again.from_cache and again.path == int8_variant.path
    assert again.info.precision == "int8"
    other = choose_images(bench_folder, 9)
    assert prec.variant_tag("int8", other) != prec.variant_tag(
        "int8", choose_images(bench_folder, 8)
    )
    assert prec.variant_tag("fp16") == "fp16"


def test_int8_from_a_cold_cache_is_the_same_model(
    int8_variant, bench_model, bench_folder: Path, tmp_path: Path
) -> None:
    again = prec.export_variant(
        bench_model,
        "int8",
        calibration=bench_folder,
        calibration_count=8,
        use_cache=False,
        output=tmp_path / "again.onnx",
    )
    assert not again.from_cache
    first, second = onnx.load(str(int8_variant.path)), onnx.load(str(again.path))
    assert _props(first) == _props(second)  # calibration record and measured fidelity
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in first.graph.initializer}
    for init in second.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(init), weights[init.name])
    assert len(weights) == len(second.graph.initializer)


def test_fp16_keeps_float32_io_and_has_float16_weights(
    bench_model, bench_folder: Path, tmp_path: Path
) -> None:
    result = prec.export_variant(
        bench_model, "fp16", calibration=bench_folder, output=tmp_path / "fp16.onnx"
    )
    assert result.path == tmp_path / "fp16.onnx"
    model = onnx.load(str(result.path))
    float32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.UINT8]
    assert all(o.type.tensor_type.elem_type == float32 for o in model.graph.output)
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert list(types.values()).count(onnx.TensorProto.FLOAT16) >= 13
    # float32 only in the uint8 prefix, which normalises in float32 before the fp16 cast
    assert {n for n, t in types.items() if t == float32} == {
        "fstore_input/scale",
        "fstore_input/shift",
    }
    prefix = [n for n in model.graph.node if n.name.startswith("fstore_input/")]
    assert [n.op_type for n in prefix] == ["Transpose", "Cast", "Mul", "Add"]
    assert prefix[1].attribute[0].i == float32  # pixels → float32, no fp16 rounding inside
    to_fp16 = [n for n in model.graph.node if n.input and n.input[0] == prefix[-1].output[0]]
    assert [(n.op_type, n.attribute[0].i) for n in to_fp16] == [("Cast", onnx.TensorProto.FLOAT16)]
    assert _props(model)["fstore.precision"] == "fp16"
    row = prec.read_fidelity(result.path)["layers"]["pool5"]
    assert row["mean_cosine"] > 0.999


def test_synthetic_fallback_is_said_and_recorded(
    bench_model, bench_prep: Preprocessing, tmp_path: Path, caplog
) -> None:
    with caplog.at_level("INFO", logger="fstore.export"):
        out = int8.quantize_int8(bench_model.path, tmp_path / "q.onnx", None, 4, bench_prep)
    assert "generated pictures" in caplog.text
    record = json.loads(_props(onnx.load(str(out)))["fstore.calibration"])
    assert record["source"] == "synthetic" and record["images"] == 4 and record["seed"] == 0
    assert record["fingerprint"] == calibration_fingerprint([], int8.DEFAULT_RECIPE.method)
    assert record["format"] == int8.int8_format()


def _tiny_conv_gemm(path: Path) -> Path:
    """Conv(3→4) → Relu → Flatten → Gemm(transB, 5 outputs): enough to check Gemm's axis."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32), "fw"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fb"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["fc"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("fc", TensorProto.FLOAT, ["batch", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("fmt", int8.INT8_FORMATS)
def test_fully_connected_weights_are_per_output_channel(tmp_path: Path, fmt: str) -> None:
    prep = Preprocessing(resize=10, crop=8)
    every_node = int8.Int8Recipe(keep_float=())  # else the Gemm, the head, stays float
    tiny = _tiny_conv_gemm(tmp_path / "tiny.onnx")
    out = int8.quantize_int8(tiny, tmp_path / "q.onnx", None, 8, prep, recipe=every_node, fmt=fmt)
    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    weight_type = onnx.TensorProto.INT8 if fmt == "u8s8" else onnx.TensorProto.UINT8
    gemm_weight = [
        n
        for n in _weight_dequantizers(model)
        if inits[n.input[0]].data_type == weight_type and len(inits[n.input[0]].dims) == 2
    ]
    assert len(gemm_weight) == 1
    scale = onnx.numpy_helper.to_array(inits[gemm_weight[0].input[1]])
    assert _attr(gemm_weight[0], "axis") == 0 and scale.shape == (5,)


def test_cosine_rows_edge_cases() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 2.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-1.0, -2.0]])
    np.testing.assert_allclose(prec.cosine_rows(a, b), [1.0, 1.0, 0.0, -1.0])


def test_fidelity_of_a_model_with_itself(
    bench_model, bench_folder: Path, bench_prep: Preprocessing
) -> None:
    images = choose_images(bench_folder, 5)
    rows = prec.fidelity(bench_model.path, bench_model.path, images, bench_prep, batch_size=2)
    assert rows["pool5"]["images"] == 5
    assert rows["pool5"]["min_cosine"] == pytest.approx(1.0)
    assert rows["pool5"]["max_relative_error"] == 0.0
    array = decode_pixels(images, bench_prep)
    assert array.dtype == np.uint8 and array.shape == (5, 32, 32, 3)
    assert (
        prec.fidelity(bench_model.path, bench_model.path, array, bench_prep)["pool5"]["images"] == 5
    )


def test_choose_images_is_deterministic_and_excludes(bench_folder: Path) -> None:
    first = choose_images(bench_folder, 5)
    assert first == choose_images(bench_folder, 5) and len(first) == 5
    rest = choose_images(bench_folder, 100, exclude=first)
    assert len(rest) == 13 and not set(rest) & set(first)


def test_accuracy_change_trains_the_same_svm(
    bench_model, int8_variant, bench_folder: Path, bench_prep: Preprocessing
) -> None:
    from fstore.classifiers.fidelity import accuracy_change

    same = accuracy_change(bench_model.path, bench_model.path, bench_folder, bench_prep)
    assert same["change_points"] == 0.0 and same["n_train"] == 9 and same["n_test"] == 9
    other = accuracy_change(
        bench_model.path, int8_variant.path, bench_folder, bench_prep, per_class=4
    )
    assert other["n_train"] == 6 and other["n_test"] == 6
    assert other["change_points"] == pytest.approx(
        100 * (other["accuracy"] - other["fp32_accuracy"])
    )


def test_bad_requests_are_user_errors(bench_model, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown precision"):
        prec.export_variant(bench_model, "int4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError):
        prec.export_variant(bench_model, "int8", calibration=empty)
    with pytest.raises(ModelError, match="at least 1"):
        int8.quantize_int8(
            bench_model.path, tmp_path / "q.onnx", None, 0, bench_model.info.preprocessing
        )
    assert prec.export_variant(bench_model, "fp32") is bench_model


def test_the_store_records_the_precision(int8_variant, bench_folder: Path, tmp_path: Path) -> None:
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store
    from fstore.store import store_info

    report = build_store(
        BuildConfig(
            store=tmp_path / "s.h5",
            images=bench_folder,
            model=int8_variant.path,
            provider="cpu",
            batch_size=4,
        ),
        progress=False,
    )
    assert report.images_computed == 18
    assert store_info(tmp_path / "s.h5").provenance["precision"] == "int8"


def _auto_export(bench_folder: Path, bench_prep: Preprocessing, calibration: Path | None):
    from fstore.export.onnx_export import export
    from fstore.runtime.weights_source import WeightsSource

    return export(
        ("pool5",),
        WeightsSource("random", seed=0),
        precision="auto",
        preprocessing=bench_prep,
        calibration=calibration,
        calibration_count=8,
        provider="cpu",
    )


@pytest.fixture
def int8_clearly_faster(monkeypatch):
    """auto's timing says the variant runs twice as fast, whatever this CPU does: these tests
    hold the fidelity rule; tests/export/test_arch_weights.py holds the speed rule."""

    def twice_as_fast(models, provider, pixels):
        return {name: 1.0 if name == "fp32" else 0.5 for name in models}

    monkeypatch.setattr(prec, "time_models", twice_as_fast)


def test_auto_on_cpu_takes_int8_only_where_every_layer_reaches_the_rule(
    int8_variant,
    bench_model,
    bench_folder: Path,
    bench_prep: Preprocessing,
    monkeypatch,
    int8_clearly_faster,
) -> None:
    recorded = min(
        row["mean_cosine"] for row in prec.read_fidelity(int8_variant.path)["layers"].values()
    )
    expected = "int8" if recorded >= prec.AUTO_MIN_COSINE else "fp32"
    assert _auto_export(bench_folder, bench_prep, bench_folder).info.precision == expected
    monkeypatch.setattr(prec, "AUTO_MIN_COSINE", recorded)  # the rule holds, just
    chosen = _auto_export(bench_folder, bench_prep, bench_folder)
    assert chosen.path == int8_variant.path and chosen.info.precision == "int8"
    monkeypatch.setattr(prec, "AUTO_MIN_COSINE", np.nextafter(recorded, 2.0))  # fails, just
    chosen = _auto_export(bench_folder, bench_prep, bench_folder)
    assert chosen.path == bench_model.path and chosen.info.precision == "fp32"


def test_auto_on_cpu_without_calibration_images_keeps_fp32(
    bench_model, bench_prep: Preprocessing, bench_folder: Path
) -> None:
    assert prec.auto_candidate("cpu", None) == "fp32"
    assert prec.auto_candidate("cpu", bench_folder) == "int8"
    assert prec.auto_candidate("cuda", None) == prec.auto_candidate("tensorrt", None) == "fp16"
    assert _auto_export(bench_folder, bench_prep, None).path == bench_model.path


@pytest.mark.parametrize(("threshold", "expected"), [(0.0, "int8"), (1.5, "fp32")])
def test_an_auto_build_records_the_precision_it_chose(
    bench_folder: Path,
    bench_prep: Preprocessing,
    tmp_path: Path,
    monkeypatch,
    threshold,
    expected,
    int8_clearly_faster,
) -> None:
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store
    from fstore.runtime.weights_source import WeightsSource
    from fstore.store import store_info

    monkeypatch.setattr(prec, "AUTO_MIN_COSINE", threshold)  # cosine is at most 1: 1.5 fails
    config = BuildConfig(
        store=tmp_path / "s.h5",
        images=bench_folder,
        layers=("pool5",),
        weights=WeightsSource("random", seed=0),
        preprocessing=bench_prep,
        precision="auto",
        provider="cpu",
        batch_size=6,
    )
    assert build_store(config, progress=False).images_computed == 18
    assert store_info(tmp_path / "s.h5").provenance["precision"] == expected
