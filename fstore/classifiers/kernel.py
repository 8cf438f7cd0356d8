"""The linear SVM solved from a precomputed linear kernel, and kept as primal weights.

With fewer training rows than features (1,500 images of 4,096 fc7 values), every quantity a
linear SVM needs is an inner product of two rows, so the ``n x n`` Gram matrix ``K = X X^T``
stands in for ``X``. It is computed once per split (once per fold when the scaling or PCA is
fitted per fold) and every fold and every C index it: ``SVC(kernel="precomputed")`` then solves
the same problem as ``SVC(kernel="linear")`` (one-vs-one, hinge loss, free intercept) without
recomputing a dot product.

The fitted model keeps no training rows: :class:`GramSVC` turns each pair's dual
coefficients into ``w = sum_i alpha_i y_i x_i`` and votes from the (scaled) features as libsvm
does, so a saved classifier predicts from raw features alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from fstore.classifiers.search import (
    Search,
    best_C,
    cv_table,
    folds,
    model_pipeline,
    row_wise,
    transform_pipeline,
)

if TYPE_CHECKING:
    from fstore.classifiers.svm_options import SvmOptions


class GramSVC(ClassifierMixin, BaseEstimator):
    """A linear SVM fitted through its Gram matrix and kept as primal weights.

    ``fit`` solves ``SVC(kernel="precomputed", C)`` on ``X X^T`` (the problem of
    ``SVC(kernel="linear")``: one-vs-one, hinge loss, free intercept), then keeps ``coef_``
    ``(P, D)`` and ``intercept_`` ``(P,)`` for the ``P`` class pairs ``(i, j)``, ``i < j``, in
    libsvm's order, and no training row. A pair's decision ``w . x + b > 0`` votes for
    ``classes_[i]``, otherwise for ``classes_[j]``; the most votes win, the lower class index
    on a tie (libsvm's rule), so ``predict`` equals the kernel model's.
    """

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, X, y) -> GramSVC:
        X = np.asarray(X, dtype=np.float64)
        return self.fit_gram(gram(X), X, y)

    def fit_gram(self, K: np.ndarray, X, y) -> GramSVC:
        """``fit`` with the Gram matrix ``K = X X^T`` already computed."""
        self._set_weights(svc(self.C).fit(K, y), np.asarray(X, dtype=np.float64))
        return self

    def _set_weights(self, kernel_svc, X: np.ndarray) -> None:
        """Each pair's ``w`` summed over its support vectors in ``X`` (the training rows)."""
        n_classes = len(kernel_svc.classes_)
        dual, intercept = kernel_svc.dual_coef_, kernel_svc.intercept_
        if n_classes == 2:  # scikit-learn flips a binary SVC's signs; undo it for libsvm's rule
            dual, intercept = -dual, -intercept
        # One row of pair weights per pair over the support vectors, then one matrix product.
        starts = np.concatenate([[0], np.cumsum(kernel_svc.n_support_)])
        first, second = np.triu_indices(n_classes, k=1)
        pair_dual = np.zeros((len(first), len(kernel_svc.support_)))
        for p, (i, j) in enumerate(zip(first, second, strict=True)):
            part_i, part_j = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
            pair_dual[p, part_i] = dual[j - 1, part_i]
            pair_dual[p, part_j] = dual[i, part_j]
        self.coef_ = pair_dual @ X[kernel_svc.support_]
        self.intercept_ = np.array(intercept, dtype=np.float64)
        self.classes_ = kernel_svc.classes_
        self.n_features_in_ = X.shape[1]

    def decision_function(self, X) -> np.ndarray:
        """Per row, each pair's decision value ``(N, P)`` (``SVC``'s ``ovo`` shape)."""
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict(self, X) -> np.ndarray:
        decision = self.decision_function(X)
        first, second = np.triu_indices(len(self.classes_), k=1)
        votes = np.zeros((len(decision), len(self.classes_)), dtype=np.int64)
        wins = decision > 0
        for p, (i, j) in enumerate(zip(first, second, strict=True)):
            votes[:, i] += wins[:, p]
            votes[:, j] += ~wins[:, p]
        return self.classes_[np.argmax(votes, axis=1)]


@dataclass(frozen=True)
class FoldKernels:
    """One fold's Gram blocks: ``train`` ``(n_fit, n_fit)``, ``test`` ``(n_val, n_fit)``."""

    train: np.ndarray
    test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def gram(A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """``A B^T`` in float64 (libsvm's precision), symmetric when ``B`` is None."""
    A = np.asarray(A, dtype=np.float64)
    return A @ (A if B is None else np.asarray(B, dtype=np.float64)).T


def svc(C: float):  # -> sklearn.svm.SVC
    """The solver of every kernel fit: no iteration limit, so none stops short of ``tol``."""
    from sklearn.svm import SVC

    return SVC(C=C, kernel="precomputed", max_iter=-1)


def fold_scores(fold: FoldKernels, grid: tuple[float, ...]) -> list[float]:
    """Validation accuracy of the kernel SVM at each C of ``grid`` on one fold."""
    scores = []
    for C in grid:
        predicted = svc(C).fit(fold.train, fold.y_train).predict(fold.test)
        scores.append(float(np.mean(predicted == fold.y_test)))
    return scores


def fold_kernels(
    X: np.ndarray, y: np.ndarray, options: SvmOptions, K: np.ndarray
) -> Iterator[FoldKernels]:
    """Each CV fold's Gram blocks. With row-wise steps (no scaler or PCA to fit), ``K``, the
    Gram matrix of all transformed rows, serves every fold; otherwise the steps are fitted on
    each fold's training part and its Gram computed from them."""
    for fit_rows, val_rows in folds(options).split(X, y):
        if row_wise(options):
            columns = K[:, fit_rows]
            train, test = columns[fit_rows], columns[val_rows]
        else:
            transform = transform_pipeline(options).fit(X[fit_rows], y[fit_rows])
            A = transform.transform(X[fit_rows])
            train, test = gram(A), gram(transform.transform(X[val_rows]), A)
        yield FoldKernels(train, test, y[fit_rows], y[val_rows])


def kernel_search(X: np.ndarray, y: np.ndarray, options: SvmOptions, n_jobs: int = -1) -> Search:
    """The grid over ``options.C`` scored on every fold's Gram blocks, folds in ``n_jobs``
    threads (libsvm releases the GIL), then refit on all rows with the best C from the Gram
    matrix of all rows (which the folds share when the steps are row-wise)."""
    from joblib import Parallel, delayed

    transform = transform_pipeline(options).fit(X, y)
    Xt = np.asarray(transform.transform(X), dtype=np.float64)
    K = gram(Xt)
    per_fold = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(fold_scores)(fold, options.C) for fold in fold_kernels(X, y, options, K)
    )
    table = cv_table(options.C, np.array(per_fold).T)
    best = best_C(table)
    model = model_pipeline(transform, GramSVC(best).fit_gram(K, Xt, y))
    return Search(table, best, model, "kernel", fits=len(options.C) * options.cv + 1)
