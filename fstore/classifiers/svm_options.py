"""How the linear SVM is trained: the options every solver and search reads.

A module of its own, below the solvers (:mod:`.kernel`, :mod:`.primal`, :mod:`.solver`) and
the search they share (:mod:`.search`), so that none of them imports :mod:`.svm`, which
imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fstore.classifiers.transforms import check_pca, check_scale
from fstore.errors import ClassifierError

DEFAULT_C = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
SOLVERS = ("auto", "kernel", "primal")


@dataclass(frozen=True)
class SvmOptions:
    """How ``fstore train svm`` trains.

    Attributes:
        C: the grid of regularisation values searched.
        cv: number of stratified folds.
        scale: ``standard``, ``l2``, ``power`` or ``none`` (see :mod:`.transforms`).
        pca: components (int), variance fraction (float in (0, 1)) or None.
        seed: seed of the fold shuffling, of ``LinearSVC`` and of a randomized PCA.
        max_iter: the primal solver's ``LinearSVC`` iteration limit (scikit-learn's default,
            1000); the kernel solver runs to its tolerance.
        solver: ``kernel``, ``primal`` or ``auto`` (timed on a sample, :mod:`.solver`).
    """

    C: tuple[float, ...] = DEFAULT_C
    cv: int = 5
    # l2 by default: LinearSVC converges far faster on l2-normalised features than on
    # standard-scaled ones (docs/performance.md).
    scale: str = "l2"
    pca: int | float | None = None
    seed: int = 0
    max_iter: int = 1000
    solver: str = "auto"

    def __post_init__(self) -> None:
        if not self.C or any(c <= 0 for c in self.C):
            raise ClassifierError(f"--C needs positive values, e.g. 0.01,0.1,1; got {self.C}")
        if self.cv < 2:
            raise ClassifierError(f"--cv must be at least 2, not {self.cv}")
        if self.solver not in SOLVERS:
            raise ClassifierError(f"unknown solver {self.solver!r}; choose from {SOLVERS}")
        check_scale(self.scale)
        check_pca(self.pca)
