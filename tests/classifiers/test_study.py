"""The layer study: one row per layer, equal to training the SVM on that layer alone."""

from __future__ import annotations

import pytest
from synthetic_features import gaussian_classes

from fstore.classifiers.study import study_feature_sets, study_layers
from fstore.classifiers.svm import train_svm
from fstore.classifiers.svm_options import SvmOptions
from fstore.errors import ClassifierError

OPTIONS = SvmOptions(C=(0.1, 1.0), cv=3)


def test_rows_follow_the_layers_and_equal_single_layer_training():
    good = gaussian_classes(dim=6, layer="fc7")
    noisy = gaussian_classes(dim=20, separation=0.5, seed=3, layer="pool5")
    seen = []
    study = study_feature_sets([noisy, good], OPTIONS, on_row=seen.append)
    assert [r.layer for r in study.rows] == ["pool5", "fc7"] == [r.layer for r in seen]
    assert [r.dim for r in study.rows] == [20, 6]
    assert study.rows[1].accuracy == train_svm(good, OPTIONS).accuracy_mean == 1.0
    assert study.rows[0].accuracy == train_svm(noisy, OPTIONS).accuracy_mean < 1.0
    assert all(r.fit_seconds > 0 and len(r.best_C) == 1 for r in study.rows)


def test_study_reads_every_layer_of_a_store(tiny_store):
    study = study_layers(tiny_store, options=OPTIONS)
    assert {r.layer: r.dim for r in study.rows} == {"fc6": 24, "fc7": 16}
    only = study_layers(tiny_store, ["fc7"], OPTIONS)
    assert [r.layer for r in only.rows] == ["fc7"]
    assert only.rows[0].accuracy == 1.0


def test_unknown_layer_fails_before_training(tiny_store):
    with pytest.raises(ClassifierError, match="no layer pool5; it holds: fc6, fc7"):
        study_layers(tiny_store, ["fc7", "pool5"], OPTIONS)
