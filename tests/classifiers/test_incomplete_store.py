"""A store where a class has no training images (an interrupted build leaves one): train,
study and report refuse it in one line that names the classes, exit status 1, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic_features import gaussian_classes, write_feature_sets

from fstore.cli.classifiers import study, train


def missing_class_store(tmp_path):
    """Three classes, one of them (class2) with test images only, as an interrupted build."""
    fs = gaussian_classes(n_train=6, n_test=3, n_classes=3, dim=4)
    keep = ~((fs.y == 2) & (fs.split == "train"))
    part = fs.subset(keep)
    return write_feature_sets(
        tmp_path / "part.h5", [part, type(part)(**{**part.__dict__, "layer": "fc6"})]
    )


@pytest.mark.parametrize(
    "command, args",
    [
        (train, ["svm", "--cv", "3"]),
        (train, ["head", "--epochs", "2"]),
        (study, ["layers", "--cv", "3"]),
    ],
)
def test_train_and_study_refuse_a_class_without_training_images(tmp_path, command, args):
    store = missing_class_store(tmp_path)
    result = CliRunner().invoke(
        command, [*args, "--store", str(store), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "no images of 1 of its 3 classes: class2" in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def write_conv_model(path: Path, size: int = 32) -> Path:
    """A tiny ONNX model with a first convolution (the report draws it): ``input`` (N, 3, size,
    size) -> Conv 4x3x3x3 -> Relu -> ``pooled`` (N, 4, 1, 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 4, 1, 1])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_report_refuses_a_class_without_training_images(tmp_path):
    from helpers import make_image_folder

    images = tmp_path / "images"
    make_image_folder(images, {"a": 6, "b": 6}, prefix="train")
    make_image_folder(images, {"a": 3, "b": 3, "c": 3}, seed=1, prefix="test")
    model = write_conv_model(tmp_path / "conv.onnx")
    args = [images, "--model", model, "--size", "32", "--out", tmp_path / "out"]
    args += ["--splits", "0", "--precisions", "", "--cv", "3", "--samples", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "fstore.cli", "report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: the store's training split has no images of 1 of its 3 classes: c; "
        "finish the build (run the same fstore build)"
    ], done.stderr
