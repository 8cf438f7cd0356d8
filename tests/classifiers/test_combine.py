"""Layer combinations and power scaling: the features equal their definitions, and the CLI
trains on them, saves them and refuses what it cannot use."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic_features import gaussian_classes, write_feature_sets

from fstore.classifiers.combine import combine, layer_names, load_layers
from fstore.classifiers.transforms import transform_steps
from fstore.cli.classifiers import train
from fstore.errors import ClassifierError


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_combined_layers_equal_hstack_of_l2_normalised_parts(tiny_store):
    from fstore.store import load_features

    fc6, fc7 = load_features(tiny_store, "fc6"), load_features(tiny_store, "fc7")
    both = load_layers(tiny_store, "fc6,fc7")
    assert both.layer == "fc6+fc7" and both.X.shape == (len(fc6.y), 24 + 16)
    expected = np.hstack([unit(fc6.X.astype(np.float64)), unit(fc7.X.astype(np.float64))])
    np.testing.assert_allclose(both.X, expected, rtol=1e-6, atol=1e-7)
    assert np.array_equal(both.y, fc6.y) and np.array_equal(both.split, fc6.split)
    assert np.array_equal(load_layers(tiny_store, "fc7").X, fc7.X)  # one layer: as stored


def test_combine_keeps_zero_rows_and_names():
    parts = [np.array([[3.0, 4.0], [0.0, 0.0]]), np.array([[0.0, 2.0], [1.0, 0.0]])]
    np.testing.assert_allclose(combine(parts), [[0.6, 0.8, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    assert layer_names("pooled,logits") == layer_names("pooled+logits") == ["pooled", "logits"]
    with pytest.raises(ClassifierError, match="twice"):
        layer_names("fc7,fc7")


def test_power_scale_is_the_signed_square_root_then_unit_rows():
    X = np.array([[4.0, -9.0, 0.0, 1.0], [-0.25, 0.0, 16.0, -1.0]])
    scaler = transform_steps("power", None)[0][1].fit(X)
    root = np.sign(X) * np.sqrt(np.abs(X))
    np.testing.assert_allclose(scaler["sqrt"].transform(X), root)
    np.testing.assert_allclose(scaler.transform(X), unit(root))


def test_train_svm_on_combined_layers_with_power_scale(tiny_store, tmp_path):
    out = tmp_path / "svm"
    args = ["svm", "--store", tiny_store, "--layer", "fc6,fc7", "--scale", "power"]
    result = CliRunner().invoke(
        train, [*map(str, args), "--C", "0.1,1", "--cv", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "svm on fc6+fc7: 40 features" in result.output
    from fstore.classifiers.persist import load_classifier

    clf = load_classifier(out / "classifier.skops")
    both = load_layers(tiny_store, "fc6,fc7")
    assert clf.layer == "fc6+fc7" and clf.n_features == 40
    from fstore.classifiers.svm import train_svm
    from fstore.classifiers.svm_options import SvmOptions

    run = train_svm(both, SvmOptions(C=(0.1, 1.0), cv=3, scale="power"))
    assert np.array_equal(clf.predict_features(both), run.fits[0].model.predict(both.X))


def test_layers_with_different_images_are_refused(tmp_path):
    a = gaussian_classes(n_train=6, n_test=3, dim=4, layer="a")
    store = write_feature_sets(tmp_path / "s.h5", [a])
    with pytest.raises(Exception, match="no layer|not in|unknown"):
        load_layers(store, "a,b")
