"""Save → load → predict round-trips without pickle, and refusal of foreign features."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from synthetic_features import MODEL_SHA, PROVENANCE, gaussian_classes

from fstore.classifiers.persist import (
    classifier_from_run,
    default_filename,
    load_classifier,
    save_classifier,
)
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.svm import train_svm
from fstore.classifiers.svm_options import SvmOptions
from fstore.errors import ClassifierError


@pytest.fixture
def overlapping():
    return gaussian_classes(n_train=20, n_test=20, dim=10, separation=1.5, seed=2)


@pytest.mark.parametrize("scale, pca", [("standard", None), ("l2", 3), ("none", 0.9)])
def test_svm_round_trip(tmp_path, overlapping, scale, pca):
    run = train_svm(overlapping, SvmOptions(C=(0.1, 1.0), cv=3, scale=scale, pca=pca))
    path = save_classifier(classifier_from_run(run), tmp_path / default_filename("svm"))
    assert path.suffix == ".skops" and zipfile.is_zipfile(path)
    loaded = load_classifier(path)
    assert (loaded.kind, loaded.layer, loaded.classes) == ("svm", "fc7", overlapping.classes)
    assert loaded.provenance == PROVENANCE and loaded.model_sha256 == MODEL_SHA
    assert loaded.options["scale"] == scale and loaded.options["C"] == [0.1, 1.0]
    assert loaded.metrics["test_accuracy"] == run.accuracy_mean
    X = overlapping.test.X
    expected = run.fits[0].model.predict(X)
    np.testing.assert_array_equal(loaded.predict(X, MODEL_SHA), expected)
    np.testing.assert_array_equal(loaded.predict_features(overlapping.test), expected)
    assert loaded.predict_proba(X, MODEL_SHA) is None


@pytest.mark.parametrize(
    "scale, pca, hidden", [("standard", None, ()), ("l2", 4, (8,)), ("none", None, (6, 5))]
)
def test_head_round_trip(tmp_path, overlapping, scale, pca, hidden):
    pytest.importorskip("torch")
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import Normalizer, StandardScaler

    from fstore.classifiers.head import HeadOptions, train_head

    run = train_head(overlapping, HeadOptions(hidden=hidden, epochs=10, scale=scale, pca=pca))
    path = save_classifier(classifier_from_run(run), tmp_path / default_filename("head"))
    assert path.suffix == ".safetensors"
    loaded = load_classifier(path)
    assert loaded.kind == "head" and loaded.options["hidden"] == list(hidden)
    # The scaling and PCA come back as the scikit-learn objects, fitted as they were.
    scaler = {"standard": StandardScaler, "l2": Normalizer}.get(scale)
    if scaler is None:
        assert loaded.model["scale"] == "passthrough"
    else:
        assert isinstance(loaded.model["scale"], scaler)
    assert isinstance(loaded.model["pca"], PCA) == (pca is not None)
    X = overlapping.test.X
    pipeline = run.fits[0].model
    np.testing.assert_array_equal(loaded.predict(X, MODEL_SHA), pipeline.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X, MODEL_SHA), pipeline.predict_proba(X))
    np.testing.assert_array_equal(loaded.model[:-1].transform(X), pipeline[:-1].transform(X))


# Simulates an install without torch: ``import torch`` fails, as it would there.
NO_TORCH = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('no torch here')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)


@pytest.mark.parametrize("kind", ["head", "svm"])
def test_saved_classifier_applies_without_torch(tmp_path, overlapping, kind):
    if kind == "head":
        pytest.importorskip("torch")
        from fstore.classifiers.head import HeadOptions, train_head

        run = train_head(overlapping, HeadOptions(hidden=(4,), epochs=5, pca=3))
    else:
        run = train_svm(overlapping, SvmOptions(C=(1.0,), cv=3, pca=3))
    path = save_classifier(classifier_from_run(run), tmp_path / default_filename(kind))
    np.save(tmp_path / "X.npy", overlapping.test.X)
    expected = run.fits[0].model.predict(overlapping.test.X)
    code = NO_TORCH + (
        "import numpy as np\n"
        "from fstore.classifiers.persist import load_classifier\n"
        f"clf = load_classifier({str(path)!r})\n"
        f"pred = clf.predict(np.load({str(tmp_path / 'X.npy')!r}), {MODEL_SHA!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(' '.join(map(str, pred)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(v) for v in expected]


def test_head_saved_in_the_old_format_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "old.safetensors"
    save_file(
        {"labels": np.arange(2)},
        str(path),
        metadata={"format": "fstore-classifier", "format_version": "1", "kind": "head"},
    )
    with pytest.raises(ClassifierError, match="older fstore .format 1.; train it again"):
        load_classifier(path)


def test_refuses_features_of_another_model(tmp_path, overlapping):
    run = train_svm(overlapping, SvmOptions(C=(1.0,), cv=3))
    loaded = load_classifier(save_classifier(classifier_from_run(run), tmp_path / "c.skops"))
    other = "cd" * 32
    with pytest.raises(ClassifierError, match="another model|not of model"):
        loaded.predict(overlapping.test.X, other)
    foreign = gaussian_classes(provenance={**PROVENANCE, "model_sha256": other}, dim=10)
    with pytest.raises(ClassifierError, match="not of model cdcdcd"):
        loaded.predict_features(foreign)
    with pytest.raises(ClassifierError, match="takes 10 fc7 features per image, got 8"):
        loaded.predict(np.zeros((2, 8), np.float32), MODEL_SHA)
    with pytest.raises(ClassifierError, match="takes fc7 features, not fc6"):
        loaded.predict_features(gaussian_classes(layer="fc6", dim=10))


def test_classifier_without_recorded_model_is_refused(tmp_path):
    fs = gaussian_classes(provenance={})
    run = train_svm(fs, SvmOptions(C=(1.0,), cv=3))
    loaded = load_classifier(save_classifier(classifier_from_run(run), tmp_path / "c.skops"))
    with pytest.raises(ClassifierError, match="records no model sha256"):
        loaded.predict(fs.X, "")


class Untrusted(BaseEstimator):
    """A type skops does not trust by default."""

    def predict(self, X):
        return np.zeros(len(X), dtype=np.int64)


def test_untrusted_skops_content_is_refused(tmp_path):
    import skops.io as sio

    path = tmp_path / "evil.skops"
    sio.dump({"format": "fstore-classifier", "model": Untrusted()}, path)
    with pytest.raises(ClassifierError, match="does not trust"):
        load_classifier(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ClassifierError, match="no classifier file"):
        load_classifier(tmp_path / "missing.skops")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ClassifierError, match="not a classifier file"):
        load_classifier(junk)
    from safetensors.numpy import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(plain), metadata={"x": json.dumps(1)})
    with pytest.raises(ClassifierError, match="not an fstore classifier"):
        load_classifier(plain)


def test_random_split_runs_have_no_single_model(overlapping):
    run = train_svm(overlapping, SvmOptions(C=(1.0,), cv=3), SplitProtocol(2, 10))
    with pytest.raises(ClassifierError, match="without --splits"):
        classifier_from_run(run)
