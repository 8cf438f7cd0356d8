"""What a grid search over C finds, whichever solver ran it, and the pieces both solvers share:
the folds, the CV table, the choice of the best C and the steps in front of the SVM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fstore.classifiers.svm_options import SvmOptions


@dataclass
class Search:
    """A grid search over C, refit with the best C.

    Attributes:
        table: per C, ``{"C", "mean", "std"}`` of the CV accuracy (as scikit-learn computes them).
        best_C: the C refit on all training rows (the first of the best means, as
            ``GridSearchCV`` picks it).
        model: the refit ``Pipeline(scale, pca, svc)``; it predicts from raw features.
        solver: ``kernel`` or ``primal`` (:mod:`.solver` says which and why).
        fits: SVM fits run, CV fits and the refit.
        unconverged: fits that stopped at ``max_iter`` (the primal solver's LinearSVC only).
        probe: what the solver choice measured (empty when the solver was asked for).
    """

    table: list[dict]
    best_C: float
    model: Any
    solver: str
    fits: int
    unconverged: int = 0
    probe: dict = field(default_factory=dict)


def folds(options: SvmOptions):  # -> sklearn.model_selection.StratifiedKFold
    """The CV folds: stratified, shuffled with ``options.seed``."""
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=options.cv, shuffle=True, random_state=options.seed)


def cv_table(grid: tuple[float, ...], scores: np.ndarray) -> list[dict]:
    """Per C (rows of ``scores``, one column per fold): mean and standard deviation, computed as
    ``GridSearchCV``'s ``cv_results_`` computes them."""
    scores = np.asarray(scores, dtype=np.float64)
    means = np.average(scores, axis=1)
    stds = np.sqrt(np.average((scores - means[:, None]) ** 2, axis=1))
    return [
        {"C": float(c), "mean": float(m), "std": float(s)}
        for c, m, s in zip(grid, means, stds, strict=True)
    ]


def best_C(table: list[dict]) -> float:
    """The first C with the highest mean (``GridSearchCV``'s rank 1 with method ``min``)."""
    means = [row["mean"] for row in table]
    return table[int(np.argmax(means))]["C"]


def transform_pipeline(options: SvmOptions):  # -> sklearn.pipeline.Pipeline
    """The unfitted steps in front of the SVM: scaling, PCA."""
    from sklearn.pipeline import Pipeline

    from fstore.classifiers.transforms import transform_steps

    return Pipeline(transform_steps(options.scale, options.pca, options.seed))


def row_wise(options: SvmOptions) -> bool:
    """True when the steps in front of the SVM treat each row alone (no scaler or PCA fitted on
    the training rows), so every fold's features are rows of one transformed matrix."""
    return options.pca is None and options.scale != "standard"


def model_pipeline(transform: Any, svc: Any):  # -> sklearn.pipeline.Pipeline
    """``transform``'s steps followed by ``("svc", svc)``."""
    from sklearn.pipeline import Pipeline

    return Pipeline([*transform.steps, ("svc", svc)])
