"""The torch head: a scikit-learn estimator that learns, stops early and is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from synthetic_features import gaussian_classes  # noqa: E402

from fstore.classifiers.head import (  # noqa: E402
    HeadOptions,
    TorchHeadClassifier,
    holdout_split,
    train_head,
)
from fstore.classifiers.protocol import SplitProtocol  # noqa: E402
from fstore.errors import ClassifierError  # noqa: E402


# Small and quick: the checks fit toy data of ~100-300 rows, which 20 epochs at lr 0.02 learn.
@parametrize_with_checks([TorchHeadClassifier(epochs=20, patience=5, lr=0.02, batch_size=64)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_linear_head_reaches_full_accuracy_on_separable_data(blobs):
    run = train_head(blobs, HeadOptions(epochs=200, patience=20, lr=0.01))
    assert run.accuracy_mean == 1.0
    assert run.per_class_mean == (1.0, 1.0, 1.0)


def test_mlp_head_reaches_full_accuracy_on_separable_data(blobs):
    run = train_head(blobs, HeadOptions(hidden=(16,), epochs=200, patience=20, lr=0.01))
    assert run.accuracy_mean == 1.0
    assert len(run.fits[0].model["head"].coefs_) == 2


def overfitting_data():
    """Few noisy rows in many dimensions: an MLP fits them and the validation loss turns up."""
    fs = gaussian_classes(n_train=30, n_test=5, n_classes=2, dim=60, separation=1.0, seed=3)
    return fs.train.X, fs.train.y


def test_stops_early_and_restores_the_best_weights():
    X, y = overfitting_data()
    head = TorchHeadClassifier(
        hidden=(128,),
        epochs=500,
        patience=5,
        lr=0.01,
        weight_decay=0,
        validation_fraction=0.3,
        random_state=0,
    ).fit(X, y)
    assert head.stopped_early_
    assert head.n_iter_ < 500
    assert head.n_iter_ == head.best_epoch_ + head.patience
    curve = head.validation_loss_curve_
    assert len(curve) == head.n_iter_
    assert head.best_epoch_ == int(np.argmin(curve)) + 1
    assert curve[-1] > min(curve)  # the last weights were worse than the restored ones
    val = head.validation_indices_
    restored = log_loss(y[val], head.predict_proba(X[val]), labels=head.classes_)
    assert restored == pytest.approx(min(curve), rel=1e-4)
    assert restored < curve[-1]


def test_without_validation_it_runs_every_epoch():
    X, y = overfitting_data()
    head = TorchHeadClassifier(epochs=7, validation_fraction=0).fit(X, y)
    assert head.n_iter_ == 7 and not head.stopped_early_
    assert head.validation_loss_curve_ == [] and len(head.validation_indices_) == 0


def test_deterministic_for_a_seed():
    X, y = overfitting_data()
    kwargs = dict(hidden=(8,), epochs=15, patience=3)
    a = TorchHeadClassifier(random_state=4, **kwargs).fit(X, y)
    b = TorchHeadClassifier(random_state=4, **kwargs).fit(X, y)
    c = TorchHeadClassifier(random_state=5, **kwargs).fit(X, y)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert a.loss_curve_ == b.loss_curve_
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_training_does_not_touch_the_global_torch_seed():
    X, y = overfitting_data()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TorchHeadClassifier(epochs=2).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


def test_fit_restores_torch_threads():
    X, y = overfitting_data()
    before = torch.get_num_threads()
    head = TorchHeadClassifier(epochs=2, threads=1).fit(X, y)
    assert torch.get_num_threads() == before and head.n_iter_ == 2
    with pytest.raises(ValueError, match="threads"):
        TorchHeadClassifier(threads=0).fit(X, y)


def test_string_labels_and_grid_search():
    X, y = overfitting_data()
    names = np.array(["cat", "dog"])[y]
    search = GridSearchCV(TorchHeadClassifier(epochs=5), {"lr": [1e-3, 1e-2]}, cv=2).fit(X, names)
    assert set(search.predict(X)) <= {"cat", "dog"}


def test_holdout_split_is_stratified_and_disjoint():
    y = np.repeat([0, 1, 2], [20, 40, 60])
    train, val = holdout_split(y, 0.25, seed=1)
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == 120
    assert np.bincount(y[val]).tolist() == [5, 10, 15]


def test_head_runs_over_random_splits(blobs):
    run = train_head(blobs, HeadOptions(epochs=20, lr=0.01), SplitProtocol(2, 15, seed=0))
    assert len(run.fits) == 2 and all(f.n_train == 45 for f in run.fits)


def test_head_options_are_checked():
    with pytest.raises(ClassifierError, match="hidden layer sizes must be >= 1"):
        HeadOptions(hidden=(64, -1))
    with pytest.raises(ClassifierError, match="validation_fraction"):
        HeadOptions(validation_fraction=1.5)
    with pytest.raises(ClassifierError):
        HeadOptions(epochs=0)


def test_head_options_build_the_estimator_with_its_own_defaults():
    from dataclasses import fields

    options = HeadOptions()
    head = options.estimator()
    defaults = TorchHeadClassifier().get_params()
    shared = {f.name for f in fields(HeadOptions)} & set(defaults)
    assert shared >= {"hidden", "epochs", "patience", "lr", "batch_size", "threads"}
    assert {k: getattr(options, k) for k in shared} == {k: defaults[k] for k in shared}
    assert head.get_params() == defaults  # seed 0 is random_state 0
    assert HeadOptions(seed=7, lr=0.5).estimator().get_params()["random_state"] == 7
