"""Scoring a classifier on the test rows, and what a training command returns.

``run_splits`` is the loop every trainer shares: for each split (the store's, or K random
ones), fit on the training rows, time it, and score the test rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any

import numpy as np

from fstore.classifiers.protocol import SplitProtocol, make_splits
from fstore.store import FeatureSet

#: ``fit(X_train, y_train) -> (model, details)``; ``model.predict`` gives labels.
FitFunction = Callable[[np.ndarray, np.ndarray], tuple[Any, dict]]


@dataclass(frozen=True)
class Evaluation:
    """Test-set scores.

    Attributes:
        accuracy: fraction of test rows predicted right.
        per_class: per class, the fraction of its test rows predicted right (its recall);
            NaN for a class without test rows.
        confusion: ``(C, C)`` counts, row = true class, column = predicted class.
        n_test: number of test rows.
    """

    accuracy: float
    per_class: tuple[float, ...]
    confusion: np.ndarray
    n_test: int

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "per_class": [_json_float(v) for v in self.per_class],
            "confusion": self.confusion.tolist(),
            "n_test": self.n_test,
        }


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix of label predictions ``0..n_classes-1``
    (``sklearn.metrics``; per-class accuracy is the recall, NaN for a class without test rows)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    labels = np.arange(n_classes)
    if len(y_true) == 0:
        return Evaluation(
            float("nan"),
            (float("nan"),) * n_classes,
            np.zeros((n_classes, n_classes), dtype=np.int64),
            0,
        )
    confusion = confusion_matrix(y_true, y_pred, labels=labels).astype(np.int64)
    per_class = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    return Evaluation(
        float(accuracy_score(y_true, y_pred)),
        tuple(float(v) for v in per_class),
        confusion,
        len(y_true),
    )


@dataclass
class Fit:
    """One model fitted on one split and scored on its test rows.

    ``details`` holds what is particular to the trainer (the SVM's CV table and best C, the
    head's epochs and early stopping).
    """

    split: str
    model: Any
    evaluation: Evaluation
    fit_seconds: float
    n_train: int
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "fit_seconds": self.fit_seconds,
            "n_train": self.n_train,
            **self.evaluation.to_dict(),
            "details": self.details,
        }


@dataclass
class TrainingRun:
    """What ``fstore train svm`` / ``train head`` computes.

    Attributes:
        kind: ``svm`` or ``head``.
        layer, classes, n_features, provenance: from the feature set trained on.
        options: the trainer's frozen options dataclass.
        protocol: the random-split protocol, or None for the store's split.
        fits: one per split.
        baseline: with ``options.pca`` set, the same training on the full features.
    """

    kind: str
    layer: str
    classes: tuple[str, ...]
    n_features: int
    provenance: dict
    options: Any
    protocol: SplitProtocol | None
    fits: list[Fit]
    baseline: TrainingRun | None = None

    @classmethod
    def of(cls, kind: str, fs, fits: list[Fit], *, options, protocol, train) -> TrainingRun:
        """The run of ``fits`` on ``fs``; with ``options.pca`` set, ``train`` (the trainer that
        made the fits) also trains on the full features, as the baseline."""
        baseline = None
        if options.pca is not None:
            baseline = train(fs, replace(options, pca=None), protocol)
        return cls(
            kind=kind,
            layer=fs.layer,
            classes=fs.classes,
            n_features=fs.X.shape[1],
            provenance=dict(fs.provenance),
            options=options,
            protocol=protocol,
            fits=fits,
            baseline=baseline,
        )

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([f.evaluation.accuracy for f in self.fits])

    @property
    def accuracy_mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def accuracy_std(self) -> float:
        """Sample standard deviation over the splits (0 for a single split)."""
        acc = self.accuracies
        return float(acc.std(ddof=1)) if len(acc) > 1 else 0.0

    @property
    def per_class_mean(self) -> tuple[float, ...]:
        table = np.array([f.evaluation.per_class for f in self.fits])
        with np.errstate(invalid="ignore"):
            means = [
                float(np.nanmean(col)) if np.any(~np.isnan(col)) else float("nan")
                for col in table.T
            ]
        return tuple(means)

    @property
    def confusion(self) -> np.ndarray:
        """The confusion matrices of all splits, summed."""
        return np.sum([f.evaluation.confusion for f in self.fits], axis=0)

    @property
    def fit_seconds_mean(self) -> float:
        return float(np.mean([f.fit_seconds for f in self.fits]))

    def to_dict(self) -> dict:
        """Everything but the models, as JSON-ready values."""
        return {
            "kind": self.kind,
            "layer": self.layer,
            "classes": list(self.classes),
            "n_features": self.n_features,
            "options": options_dict(self.options),
            "protocol": options_dict(self.protocol) if self.protocol else None,
            "accuracy_mean": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "per_class_mean": [_json_float(v) for v in self.per_class_mean],
            "fit_seconds_mean": self.fit_seconds_mean,
            "confusion": self.confusion.tolist(),
            "fits": [f.to_dict() for f in self.fits],
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "model_sha256": self.provenance.get("model_sha256"),
        }


def options_dict(options: Any) -> dict:
    """A frozen options dataclass as a JSON-ready dict (tuples become lists)."""
    if options is None:
        return {}
    data = asdict(options) if is_dataclass(options) else dict(options)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _json_float(value: float) -> float | None:
    return None if value != value else value  # NaN is not JSON


def _fit_and_predict(fit: FitFunction, X_train, y_train, X_test) -> tuple[Any, dict, float, Any]:
    start = time.perf_counter()
    model, details = fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return model, details, seconds, model.predict(X_test)


def run_splits(
    fs: FeatureSet, fit: FitFunction, protocol: SplitProtocol | None, n_jobs: int = 1
) -> list[Fit]:
    """Fit and score on each split of ``fs`` (the store's, or the protocol's random ones),
    ``n_jobs`` splits at a time in worker processes (``-1``: one per core)."""
    from joblib import Parallel, delayed

    splits = make_splits(fs, protocol)
    jobs = (
        delayed(_fit_and_predict)(fit, fs.X[s.train], fs.y[s.train], fs.X[s.test]) for s in splits
    )
    done = Parallel(n_jobs=n_jobs if len(splits) > 1 else 1)(jobs)
    return [
        Fit(
            split=split.name,
            model=model,
            evaluation=evaluate(fs.y[split.test], predicted, len(fs.classes)),
            fit_seconds=seconds,
            n_train=len(split.train),
            details=details,
        )
        for split, (model, details, seconds, predicted) in zip(splits, done, strict=True)
    ]
