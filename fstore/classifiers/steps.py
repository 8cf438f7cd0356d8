"""The step fstore adds in front of a classifier, as a scikit-learn transformer: the signed
square root of ``--scale power``.

It learns nothing, so a fold's features are rows of one transformed matrix, and it is saved
with the classifier (skops trusts it by name, :mod:`.persist`).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class SignedSqrt(TransformerMixin, BaseEstimator):
    """``sign(x) * sqrt(|x|)`` per value: the power normalisation of the Fisher-vector
    literature (Perronnin, Sanchez & Mensink 2010), which damps the few large activations that
    dominate a dot product. It learns nothing."""

    def fit(self, X, y=None) -> SignedSqrt:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X)
        return np.sign(X) * np.sqrt(np.abs(X))
