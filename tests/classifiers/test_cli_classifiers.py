"""The click commands on tiny stores: outputs, files, one-line errors, and classify end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from synthetic_features import MODEL_SHA, PROVENANCE, gaussian_classes, write_feature_sets

from fstore.cli.classifiers import classify, study, train, zeroshot


def invoke(command, args, ok=True):
    result = CliRunner().invoke(command, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_import_is_light():
    code = (
        "import sys, fstore.cli.classifiers\n"
        "heavy = {'torch', 'sklearn', 'h5py', 'onnxruntime', 'matplotlib'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_commands_register_on_a_group_with_help():
    group = click.Group("fstore")
    for command in (train, study, zeroshot, classify):
        group.add_command(command)
    assert sorted(group.commands) == ["classify", "study", "train", "zeroshot"]
    assert sorted(train.commands) == ["head", "pca", "svm"]
    assert sorted(study.commands) == ["layers"]
    for args in (
        ["train", "svm"],
        ["train", "head"],
        ["train", "pca"],
        ["study", "layers"],
        ["zeroshot"],
        ["classify"],
    ):
        result = invoke(group, [*args, "--help"])
        assert "Usage:" in result.output and len(result.output.splitlines()) > 5


def test_train_svm_with_the_default_store_and_layer(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setenv("FSTORE_STORE", str(tiny_store))
    out = tmp_path / "svm"
    result = invoke(train, ["svm", "--C", "0.1,1", "--cv", "3", "--out", out])
    text = result.output
    assert "svm on fc7: 16 features, 3 classes, 36 training / 18 test images" in text
    assert "best C:" in text and "test accuracy: 1.0000" in text
    assert text.count("±") == 3 and "class2" in text  # header and two C rows
    for name in ("confusion.png", "confusion.json", "result.json", "classifier.skops"):
        assert (out / name).is_file(), name
    from fstore.classifiers.persist import load_classifier

    clf = load_classifier(out / "classifier.skops")
    assert clf.layer == "fc7" and clf.model_sha256 == MODEL_SHA


def test_train_svm_json_pca_and_splits(tiny_store, tmp_path):
    result = invoke(
        train,
        [
            "svm",
            "--store",
            tiny_store,
            "--layer",
            "fc6",
            "--C",
            "1",
            "--cv",
            "3",
            "--pca",
            "4",
            "--out",
            tmp_path,
            "--json",
        ],
    )
    data = json.loads(result.stdout)
    assert data["layer"] == "fc6" and data["fits"][0]["details"]["pca_components"] == 4
    assert data["baseline"]["n_features"] == 24 and data["baseline"]["options"]["pca"] is None
    text = invoke(
        train,
        ["svm", "--store", tiny_store, "--C", "1", "--cv", "3", "--pca", "4", "--out", tmp_path],
    ).output
    assert "PCA 4 (4 components): accuracy" in text and "full features (16)" in text
    text = invoke(
        train,
        [
            "svm",
            "--store",
            tiny_store,
            "--C",
            "1",
            "--cv",
            "3",
            "--splits",
            "3",
            "--per-class",
            "10",
            "--out",
            tmp_path / "splits",
        ],
    ).output
    assert "3 random splits" in text and "no classifier saved" in text
    assert "over 3 splits" in text


def test_train_head(tiny_store, tmp_path):
    pytest.importorskip("torch")
    text = invoke(
        train,
        [
            "head",
            "--store",
            tiny_store,
            "--hidden",
            "8",
            "--epochs",
            "100",
            "--lr",
            "0.05",
            "--out",
            tmp_path,
        ],
    ).output
    assert "head on fc7" in text and "best epoch" in text and "test accuracy: 1.0000" in text
    assert (tmp_path / "classifier.safetensors").is_file()


def test_train_pca(tiny_store, tmp_path):
    result = invoke(
        train,
        [
            "pca",
            "--store",
            tiny_store,
            "--variance",
            "0.8",
            "--out",
            tmp_path,
            "--plot",
            tmp_path / "v.png",
        ],
    )
    assert "PCA of fc7: 36 train rows, 16 features" in result.output
    for fraction in ("80%", "90%", "95%", "99%"):
        assert f"components for {fraction} of the variance:" in result.output
    saved = json.loads((tmp_path / "v.json").read_text())
    assert len(saved["explained_variance_ratio"]) == 16
    assert (tmp_path / "v.png").is_file()


def test_study_layers(tiny_store, tmp_path):
    result = invoke(
        study, ["layers", "--store", tiny_store, "--C", "1", "--cv", "3", "--out", tmp_path]
    )
    lines = result.output.splitlines()
    assert any(line.startswith("fc6") and " 24 " in line for line in lines)
    assert any(line.startswith("fc7") and "1.0000" in line for line in lines)
    assert json.loads((tmp_path / "study.json").read_text())["rows"][1]["layer"] == "fc7"
    assert (tmp_path / "study.png").is_file() and (tmp_path / "result.json").is_file()


def logits_store(path: Path) -> Path:
    """A store with fc7 and logits for coast, forest, kitchen: logits favour seashore/stove."""
    names = ("coast", "forest", "kitchen")
    fc7 = gaussian_classes(n_train=4, n_test=4, classes=names)
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=0.1, size=(len(fc7.y), 1000))
    logits[fc7.y == 0, 978] += 4  # seashore
    logits[fc7.y == 2, 827] += 4  # stove
    fs = replace(fc7, layer="logits", X=logits.astype(np.float32), shape=(1000,))
    return write_feature_sets(path, [fc7, fs])


def test_zeroshot(tmp_path):
    store = logits_store(tmp_path / "s.h5")
    result = invoke(zeroshot, ["--store", store, "--out", tmp_path / "z"])
    assert "accuracy over the covered classes: 1.0000 (8 images)" in result.output
    assert "forest" in result.output.splitlines()[-2]
    assert (tmp_path / "z" / "confusion.png").is_file()
    data = json.loads(invoke(zeroshot, ["--store", store, "--out", tmp_path, "--json"]).stdout)
    assert data["covered"] == ["coast", "kitchen"] and data["uncovered"] == ["forest"]


def test_zeroshot_needs_logits(tiny_store, tmp_path):
    result = invoke(zeroshot, ["--store", tiny_store, "--out", tmp_path], ok=False)
    assert result.exit_code == 1 and "holds no logits (layers: fc6, fc7)" in result.output


def test_store_without_test_split_is_one_line(tmp_path):
    fs = gaussian_classes()
    fs = replace(fs, split=np.full(len(fs.y), "", dtype=object))
    store = write_feature_sets(tmp_path / "nosplit.h5", [fs])
    result = invoke(train, ["svm", "--store", store, "--out", tmp_path], ok=False)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert "no train/test split" in result.stderr and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if "Error" in line]) == 1
    ok = invoke(
        train,
        [
            "svm",
            "--store",
            store,
            "--C",
            "1",
            "--cv",
            "3",
            "--splits",
            "2",
            "--per-class",
            "20",
            "--out",
            tmp_path,
        ],
    )
    assert "over 2 splits" in ok.output


def test_store_with_one_class_is_one_line(tmp_path):
    fs = gaussian_classes(n_classes=1)
    store = write_feature_sets(tmp_path / "one.h5", [fs])
    result = invoke(train, ["svm", "--store", store, "--out", tmp_path], ok=False)
    assert result.exit_code == 1 and "single class ('class0')" in result.output


def test_missing_store_and_bad_options_are_one_line(tmp_path):
    result = invoke(train, ["svm", "--store", tmp_path / "none.h5"], ok=False)
    assert result.exit_code == 1 and "no store at" in result.output
    result = invoke(train, ["svm", "--store", tmp_path / "none.h5", "--pca", "2.5"], ok=False)
    assert result.exit_code == 1 and "--pca must be" in result.output


# --------------------------------------------------------------------------- classify


COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def colour_images(root: Path, per_class: int, seed: int) -> tuple[list[Path], list[str]]:
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-30, 30, size=(40, 40, 3))
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            path = root / name / f"{i}.png"
            Image.fromarray(pixels).save(path)
            paths.append(path)
            labels.append(name)
    return paths, labels


def mean_colour_model(path: Path, doc: str = "") -> Path:
    """An ONNX model whose ``fc7`` output is the mean of each input channel (3 features)."""
    from onnx import TensorProto, helper, save_model

    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["fc7"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("fc7", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], doc_string=doc)
    model.ir_version = 9
    save_model(model, path)
    return path


def test_classify_new_images_end_to_end(tmp_path, small_preprocessing):
    pytest.importorskip("onnxruntime")
    from fstore.images.reader import file_sha256
    from fstore.pipeline.run import extract_features

    model = mean_colour_model(tmp_path / "model.onnx")
    paths, labels = colour_images(tmp_path / "train", per_class=8, seed=0)
    features, good, bad = extract_features(
        paths, model, ("fc7",), preprocessing=small_preprocessing
    )
    assert not bad and good == paths
    split = ["train" if i % 8 < 5 else "test" for i in range(len(paths))]
    provenance = {
        **PROVENANCE,
        "model_sha256": file_sha256(model),
        "model_path": str(model),
        "preprocessing": small_preprocessing.to_json(),
    }
    from fstore.store import write_arrays

    store = write_arrays(
        tmp_path / "colours.h5", features, [p.name for p in paths], labels, split, provenance
    )
    invoke(train, ["svm", "--store", store, "--C", "1", "--cv", "3", "--out", tmp_path / "run"])
    clf = tmp_path / "run" / "classifier.skops"

    new, truth = colour_images(tmp_path / "new", per_class=2, seed=1)
    (tmp_path / "new" / "broken.jpg").write_bytes(b"not an image")
    result = CliRunner().invoke(classify, [str(tmp_path / "new"), "--classifier", str(clf)])
    assert result.exit_code == 0, result.output
    predicted = dict(line.split("\t")[:2] for line in result.output.splitlines() if "\t" in line)
    assert predicted == {str(p): t for p, t in zip(new, truth, strict=True)}
    assert "skipped" in result.output and "broken.jpg" in result.output

    data = json.loads(invoke(classify, [new[0], "--classifier", clf, "--json"]).stdout)
    assert data["predictions"][0]["class"] == truth[0]

    other = mean_colour_model(tmp_path / "other.onnx", doc="another model")
    refused = invoke(classify, [new[0], "--classifier", clf, "--model", other], ok=False)
    assert refused.exit_code == 1 and "trained on features of model" in refused.output
