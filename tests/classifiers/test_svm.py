"""The SVM's primal solver against plain scikit-learn (``LinearSVC``) on the same arrays,
estimator and folds; the kernel solver's own tests are in ``test_kernel.py``."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC
from synthetic_features import gaussian_classes

from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.svm import train_svm
from fstore.classifiers.svm_options import SvmOptions
from fstore.classifiers.transforms import parse_pca
from fstore.errors import ClassifierError

GRID = (0.001, 0.01, 0.1, 1.0)


@pytest.fixture
def overlapping():
    """Classes that overlap, so that C matters and accuracies differ across the grid."""
    return gaussian_classes(n_train=25, n_test=15, n_classes=3, dim=10, separation=1.5, seed=4)


def reference_pipeline(scale: str, C: float, seed: int):
    scaler = {"standard": StandardScaler(), "l2": Normalizer()}.get(scale)
    svc = LinearSVC(C=C, dual="auto", max_iter=1000, random_state=seed)
    return make_pipeline(*([scaler] if scaler is not None else []), svc)


@pytest.mark.parametrize("scale", ["standard", "l2", "none"])
def test_grid_search_equals_scikit_learn(overlapping, scale):
    options = SvmOptions(C=GRID, cv=4, scale=scale, seed=7, solver="primal")
    run = train_svm(overlapping, options)
    fit = run.fits[0]

    train, test = overlapping.train, overlapping.test
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=7)
    ref = GridSearchCV(
        reference_pipeline(scale, 1.0, 7),
        {"linearsvc__C": list(GRID)},
        cv=folds,
        scoring="accuracy",
    )
    ref.fit(train.X, train.y)

    table = fit.details["cv"]
    assert [row["C"] for row in table] == list(GRID)
    np.testing.assert_allclose(
        [row["mean"] for row in table], ref.cv_results_["mean_test_score"], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        [row["std"] for row in table], ref.cv_results_["std_test_score"], rtol=0, atol=1e-12
    )
    assert fit.details["best_C"] == ref.best_params_["linearsvc__C"]
    predicted = ref.predict(test.X)
    assert fit.evaluation.accuracy == pytest.approx(np.mean(predicted == test.y), abs=1e-12)
    for c in range(3):
        rows = test.y == c
        assert fit.evaluation.per_class[c] == pytest.approx(np.mean(predicted[rows] == c))


def test_cv_means_equal_a_fold_by_fold_loop(overlapping):
    """Independent of GridSearchCV: score each C on the same folds with cross_val_score."""
    run = train_svm(
        overlapping, SvmOptions(C=GRID, cv=3, scale="standard", seed=2, solver="primal")
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=2)
    train = overlapping.train
    for row in run.fits[0].details["cv"]:
        scores = cross_val_score(
            reference_pipeline("standard", row["C"], 2), train.X, train.y, cv=folds
        )
        assert row["mean"] == pytest.approx(scores.mean(), abs=1e-12)
        assert row["std"] == pytest.approx(scores.std(), abs=1e-12)


def test_grid_matters_on_overlapping_data(overlapping):
    means = [
        row["mean"]
        for row in train_svm(overlapping, SvmOptions(C=GRID, cv=4)).fits[0].details["cv"]
    ]
    assert max(means) > min(means)


def test_separable_classes_are_learned_exactly(blobs):
    run = train_svm(blobs, SvmOptions(C=(0.1, 1.0), cv=3))
    assert run.accuracy_mean == 1.0
    assert run.per_class_mean == (1.0, 1.0, 1.0)
    assert np.array_equal(run.confusion, np.diag([10, 10, 10]))


def test_chance_level_without_signal():
    fs = gaussian_classes(n_train=30, n_test=30, n_classes=3, dim=6, separation=0.0, seed=5)
    run = train_svm(fs, SvmOptions(C=(0.01, 1.0), cv=3))
    assert run.accuracy_mean < 0.6


def test_pca_option_compares_with_full_features(overlapping):
    run = train_svm(
        overlapping, SvmOptions(C=(0.1, 1.0), cv=3, scale="standard", pca=4, solver="primal")
    )
    assert run.fits[0].details["pca_components"] == 4
    assert run.baseline is not None and run.baseline.options.pca is None
    assert "pca_components" not in run.baseline.fits[0].details
    full = train_svm(overlapping, SvmOptions(C=(0.1, 1.0), cv=3, scale="standard", solver="primal"))
    assert run.baseline.accuracy_mean == full.accuracy_mean

    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    ref = GridSearchCV(
        make_pipeline(
            StandardScaler(),
            PCA(4, random_state=0),
            LinearSVC(dual="auto", max_iter=1000, random_state=0),
        ),
        {"linearsvc__C": [0.1, 1.0]},
        cv=folds,
    ).fit(overlapping.train.X, overlapping.train.y)
    assert run.fits[0].details["best_C"] == ref.best_params_["linearsvc__C"]
    assert run.accuracy_mean == pytest.approx(ref.score(overlapping.test.X, overlapping.test.y))


def test_pca_variance_fraction(overlapping):
    run = train_svm(overlapping, SvmOptions(C=(1.0,), cv=3, pca=0.9))
    assert 1 <= run.fits[0].details["pca_components"] < overlapping.X.shape[1]


def test_random_splits_report_mean_and_std(overlapping):
    run = train_svm(overlapping, SvmOptions(C=(0.1, 1.0), cv=3), SplitProtocol(3, 20, seed=1))
    acc = [f.evaluation.accuracy for f in run.fits]
    assert len(acc) == 3
    assert run.accuracy_mean == pytest.approx(np.mean(acc))
    assert run.accuracy_std == pytest.approx(np.std(acc, ddof=1))
    assert all(f.n_train == 60 for f in run.fits)
    assert run.confusion.sum() == 3 * (len(overlapping.y) - 60)


def test_too_few_images_for_the_folds():
    fs = gaussian_classes(n_train=3, n_test=2)
    with pytest.raises(ClassifierError, match="fewer than the 5 CV folds; use --cv 3"):
        train_svm(fs, SvmOptions(cv=5))


def test_pca_larger_than_the_features(blobs):
    with pytest.raises(ClassifierError, match="more components than the data has"):
        train_svm(blobs, SvmOptions(pca=50))


def test_option_parsing():
    with pytest.raises(ClassifierError):
        SvmOptions(C=(0.0,))
    with pytest.raises(ClassifierError):
        SvmOptions(scale="minmax")
    assert parse_pca("0.95") == 0.95
    assert parse_pca("64") == 64
    assert parse_pca(None) is None and parse_pca("0") is None
    for bad in ("1.5", "-3", "x"):
        with pytest.raises(ClassifierError):
            parse_pca(bad)
