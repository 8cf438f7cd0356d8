"""Figures are written as PNG with their data as JSON; result JSON is valid JSON."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from fstore.classifiers.outputs import (
    confusion_figure,
    study_figure,
    to_json,
    variance_figure,
    write_run,
)
from fstore.classifiers.pca import PcaOptions, pca_profile
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.study import study_feature_sets
from fstore.classifiers.svm import train_svm
from fstore.classifiers.svm_options import SvmOptions


def is_png(path) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 100


def test_confusion_figure_and_its_data(tmp_path):
    confusion = np.array([[3, 1], [0, 4]])
    png, data = confusion_figure(tmp_path / "c.png", confusion, ("a", "b"), "title")
    assert is_png(png) and data == tmp_path / "c.json"
    saved = json.loads(data.read_text())
    assert saved["confusion"] == [[3, 1], [0, 4]]
    assert saved["row_normalised"] == [[0.75, 0.25], [0.0, 1.0]]


def test_write_run_writes_figure_result_and_classifier(tmp_path, blobs):
    run = train_svm(blobs, SvmOptions(C=(1.0,), cv=3))
    paths = write_run(run, tmp_path / "out")
    assert set(paths) == {"confusion", "confusion_json", "result", "classifier"}
    assert is_png(paths["confusion"])
    result = json.loads(paths["result"].read_text())
    assert result["accuracy_mean"] == 1.0 and result["fits"][0]["details"]["best_C"] == 1.0
    assert np.array(result["confusion"]).trace() == 30


def test_random_splits_save_no_classifier(tmp_path, blobs):
    run = train_svm(blobs, SvmOptions(C=(1.0,), cv=3), SplitProtocol(2, 10))
    assert "classifier" not in write_run(run, tmp_path)


def test_variance_and_study_figures(tmp_path, blobs):
    profile = pca_profile(blobs, PcaOptions())
    png, data = variance_figure(tmp_path / "pca.png", profile)
    assert is_png(png)
    assert json.loads(data.read_text())["cumulative"] == profile.cumulative.tolist()
    study = study_feature_sets([blobs], SvmOptions(C=(1.0,), cv=3))
    png, data = study_figure(tmp_path / "study.png", study)
    assert is_png(png) and json.loads(data.read_text())["rows"][0]["layer"] == "fc7"


def test_json_has_no_nan():
    text = to_json({"a": float("nan"), "b": np.float32(0.5), "c": np.arange(2)})
    assert json.loads(text) == {"a": None, "b": 0.5, "c": [0, 1]}
