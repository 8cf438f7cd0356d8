"""audit's out-of-fold probabilities against plain scikit-learn, planted label noise ranked
first, and an unlabelled store refused."""

from __future__ import annotations

import numpy as np
import pytest
from quality_synthetic import clustered, feature_store

from fstore.errors import ClassifierError
from fstore.quality.audit import AuditOptions, audit, estimator

pytest.importorskip("cleanlab")


def planted(tmp_path, n=600, classes=4, flip=30, seed=0):
    """Features with one cluster per class, and ``flip`` training labels changed."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(classes, 24))
    y = rng.integers(0, classes, n)
    X = (centres[y] + rng.normal(size=(n, 24))).astype(np.float32)
    flipped = rng.choice(n, flip, replace=False)
    given = y.copy()
    given[flipped] = (y[flipped] + rng.integers(1, classes, flip)) % classes
    names = [f"c{c}" for c in given]
    store = feature_store(tmp_path / "s.h5", X, labels=names)
    keys = {f"train/{names[i]}/img_{i:06d}.jpg" for i in flipped}
    return store, X, given, keys


def test_probabilities_equal_cross_val_predict(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    store, X, given, _ = planted(tmp_path)
    options = AuditOptions(folds=5, C=0.5, seed=3)
    result = audit(store, options=options)
    folds = StratifiedKFold(5, shuffle=True, random_state=3)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)  # the rows scaled to length 1, by hand
    model = LogisticRegression(C=0.5, max_iter=2000)
    want = cross_val_predict(model, unit, given, cv=folds, method="predict_proba")
    assert [int(k[-10:-4]) for k in result.keys] == list(range(len(X)))  # the arrays' order
    np.testing.assert_allclose(result.probabilities, want, atol=1e-5)
    ours = cross_val_predict(estimator(options), X, given, cv=folds, method="predict_proba")
    np.testing.assert_allclose(ours, want, atol=1e-5)


def test_issues_are_the_lowest_label_quality_cut_where_cleanlab_estimates(tmp_path):
    from cleanlab.count import num_label_issues
    from cleanlab.rank import get_label_quality_scores

    store, _, given, _ = planted(tmp_path)
    result = audit(store)
    scores = get_label_quality_scores(given, result.probabilities, method="self_confidence")
    probs = result.probabilities
    count = num_label_issues(given, probs, estimation_method="off_diagonal_calibrated")
    np.testing.assert_allclose(result.scores, scores, atol=1e-12)
    assert len(result.issues) == count > 0
    assert [i.key for i in result.issues] == [str(result.keys[r]) for r in result.ranking()[:count]]
    assert all(a.score <= b.score for a, b in zip(result.issues, result.issues[1:]))


def test_planted_label_noise_is_ranked_first(tmp_path):
    store, _, _, noisy = planted(tmp_path)
    issues = audit(store).issues
    top = [i.key for i in issues[: len(noisy)]]
    assert len(set(top) & noisy) / len(noisy) >= 0.9
    first = issues[0]
    assert first.given != first.suggested and 0 <= first.score <= 1


def test_store_without_labels_is_refused(tmp_path):
    store = feature_store(tmp_path / "s.h5", clustered(100, 8, 3))
    with pytest.raises(ClassifierError, match="no class labels"):
        audit(store)
