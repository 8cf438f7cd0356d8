"""Scores from sklearn.metrics equal the hand-written counts they replaced."""

from __future__ import annotations

import numpy as np
import pytest

from fstore.classifiers.evaluation import evaluate


def counted(y_true, y_pred, n_classes):
    """The former hand-written scores: a confusion matrix by counting, recall per row."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / support, np.nan)
    return float(np.mean(y_true == y_pred)), per_class, confusion


@pytest.mark.parametrize("seed", range(5))
def test_equal_to_counting(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 200)
    y_true[y_true == 2] = 3  # class 2 has no test rows: its accuracy is NaN
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 6, 200))  # 5: never true
    accuracy, per_class, confusion = counted(y_true, y_pred, 6)
    ev = evaluate(y_true, y_pred, 6)
    assert ev.accuracy == pytest.approx(accuracy, abs=1e-15)
    np.testing.assert_allclose(ev.per_class, per_class, rtol=0, atol=1e-15)
    assert np.isnan(ev.per_class[2]) and np.isnan(ev.per_class[5])
    np.testing.assert_array_equal(ev.confusion, confusion)
    assert ev.confusion.dtype == np.int64 and ev.n_test == 200


def test_known_values_and_no_rows():
    ev = evaluate([0, 0, 1, 1], [0, 1, 1, 1], 3)
    assert ev.accuracy == 0.75 and ev.per_class[:2] == (0.5, 1.0) and np.isnan(ev.per_class[2])
    assert ev.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    empty = evaluate([], [], 2)
    assert np.isnan(empty.accuracy) and empty.n_test == 0 and empty.confusion.shape == (2, 2)
    assert empty.to_dict()["per_class"] == [None, None]
