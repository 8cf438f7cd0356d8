"""The kernel solver against plain scikit-learn: ``GridSearchCV(SVC(kernel="linear"))`` on the
same folds, and the saved primal weights against the kernel model they came from."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC
from synthetic_features import gaussian_classes

from fstore.classifiers.kernel import GramSVC, gram
from fstore.classifiers.persist import classifier_from_run, load_classifier, save_classifier
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.svm import grid_search, train_svm
from fstore.classifiers.svm_options import SvmOptions

GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@pytest.fixture(scope="module")
def wide():
    """Fewer rows than features, as fc7 of 15-Scene: 6 overlapping classes, 20 training rows
    each, 200 features; non-negative like post-ReLU activations."""
    fs = gaussian_classes(n_train=20, n_test=15, n_classes=6, dim=200, separation=4.0, seed=3)
    return type(fs)(**{**fs.__dict__, "X": np.abs(fs.X)})


def reference(scale: str, folds) -> GridSearchCV:
    steps = {"l2": [Normalizer()], "standard": [StandardScaler()], "none": []}[scale]
    return GridSearchCV(
        make_pipeline(*steps, SVC(kernel="linear")), {"svc__C": list(GRID)}, cv=folds
    )


@pytest.mark.parametrize("scale", ["l2", "standard", "none"])
def test_kernel_grid_equals_sklearn_svc_linear(wide, scale):
    run = train_svm(wide, SvmOptions(C=GRID, cv=4, scale=scale, seed=5, solver="kernel"))
    fit = run.fits[0]
    assert fit.details["solver"] == "kernel" and fit.details["convergence_warnings"] == 0
    train, test = wide.train, wide.test
    ref = reference(scale, StratifiedKFold(4, shuffle=True, random_state=5)).fit(train.X, train.y)
    np.testing.assert_allclose(
        [row["mean"] for row in fit.details["cv"]], ref.cv_results_["mean_test_score"], atol=1e-9
    )
    assert fit.details["best_C"] == ref.best_params_["svc__C"]
    sklearn_accuracy = np.mean(ref.predict(test.X) == test.y)
    assert abs(fit.evaluation.accuracy - sklearn_accuracy) <= 0.003  # the 0.3-point bound
    assert np.array_equal(fit.model.predict(test.X), ref.predict(test.X))
    assert 0.4 < fit.evaluation.accuracy < 1.0  # C matters here: not a trivial problem


def test_auto_solver_matches_sklearn_within_the_bound(wide):
    run = train_svm(wide, SvmOptions(C=GRID, cv=4, seed=5))
    fit = run.fits[0]
    assert fit.details["solver"] in ("kernel", "primal")
    assert {"probe_rows", "kernel_s", "primal_s"} <= set(fit.details["probe"])
    ref = reference("l2", StratifiedKFold(4, shuffle=True, random_state=5))
    ref.fit(wide.train.X, wide.train.y)
    sklearn_accuracy = ref.score(wide.test.X, wide.test.y)
    if fit.details["solver"] == "kernel":
        assert abs(fit.evaluation.accuracy - sklearn_accuracy) <= 0.003


@pytest.mark.parametrize("n_classes", [2, 3, 6])
def test_primal_weights_predict_as_the_kernel_model(n_classes):
    fs = gaussian_classes(n_train=15, n_test=40, n_classes=n_classes, dim=60, separation=1.2)
    X, y, T = fs.train.X.astype(np.float64), fs.train.y, fs.test.X
    model = GramSVC(C=0.5).fit(X, y)
    assert not hasattr(model, "support_") and model.coef_.shape[1] == 60
    kernel = SVC(kernel="precomputed", C=0.5).fit(gram(X), y)
    assert np.array_equal(model.predict(T), kernel.predict(gram(T, X)))
    linear = SVC(kernel="linear", C=0.5, decision_function_shape="ovo").fit(X, y)
    assert np.array_equal(model.predict(T), linear.predict(T))
    decision = linear.decision_function(T).reshape(len(T), -1)
    expected = -decision if n_classes == 2 else decision  # a binary SVC flips its sign
    np.testing.assert_allclose(model.decision_function(T), expected, rtol=1e-7, atol=1e-7)


def test_votes_tie_to_the_lower_class_as_libsvm():
    model = GramSVC()
    model.coef_, model.intercept_ = np.zeros((3, 1)), np.array([1.0, -1.0, 1.0])
    model.classes_ = np.array([0, 1, 2])
    # pairs (0,1) -> 0, (0,2) -> 2, (1,2) -> 1: one vote each, the lowest index wins
    assert model.predict(np.zeros((1, 1))).tolist() == [0]


def test_saved_kernel_model_predicts_from_raw_features(wide, tmp_path):
    run = train_svm(wide, SvmOptions(C=(0.1, 10.0), cv=3, solver="kernel"))
    path = save_classifier(classifier_from_run(run), tmp_path / "svm.skops")
    loaded = load_classifier(path)
    expected = run.fits[0].model.predict(wide.test.X)
    got = loaded.predict(wide.test.X, loaded.model_sha256)
    assert np.array_equal(got, expected)
    assert np.mean(got == wide.test.y) == pytest.approx(run.accuracy_mean)


def test_no_convergence_warning_reaches_the_user(wide):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search = grid_search(wide.train.X, wide.train.y, SvmOptions(C=GRID, cv=3))
    assert search.unconverged == 0 and search.fits == len(GRID) * 3 + 1


@pytest.mark.parametrize(
    "kernel_s, primal_s, shape, expected",
    [
        (5.0, 50.0, (100, 10), "kernel"),  # measured faster wins, whatever the shape
        (50.0, 5.0, (100, 1000), "primal"),
        (0.1, 0.2, (100, 1000), "kernel"),  # too quick to tell: fewer fold rows than features
        (0.2, 0.1, (100, 10), "primal"),
    ],
)
def test_the_probe_decides(monkeypatch, kernel_s, primal_s, shape, expected):
    import fstore.classifiers.solver as solver

    monkeypatch.setattr(solver, "_kernel_seconds", lambda *a: kernel_s)
    monkeypatch.setattr(solver, "_primal_seconds", lambda *a, **k: primal_s)
    X, y = np.zeros(shape), np.arange(shape[0]) % 5
    chosen, probe = solver.choose_solver(X, y, SvmOptions(cv=5))
    assert chosen == expected and probe["kernel_s"] == kernel_s
    assert solver.choose_solver(X, y, SvmOptions(solver="primal")) == ("primal", {})


def test_too_large_a_gram_matrix_takes_the_primal(wide, monkeypatch):
    import fstore.classifiers.solver as solver

    monkeypatch.setattr(solver, "gram_fits_memory", lambda n_rows: False)
    search = grid_search(wide.train.X, wide.train.y, SvmOptions(C=(1.0,), cv=3))
    assert search.solver == "primal" and "memory" in search.probe["reason"]


def test_parallel_random_splits_equal_one_at_a_time(wide):
    options = SvmOptions(C=(0.1, 10.0), cv=3, solver="kernel")
    run = train_svm(wide, options, SplitProtocol(3, 25, seed=2))
    from fstore.classifiers.protocol import random_splits

    for fit, split in zip(run.fits, random_splits(wide, SplitProtocol(3, 25, seed=2)), strict=True):
        search = grid_search(wide.X[split.train], wide.y[split.train], options)
        assert fit.details["cv"] == search.table
        predicted = search.model.predict(wide.X[split.test])
        assert fit.evaluation.accuracy == pytest.approx(np.mean(predicted == wide.y[split.test]))
