"""A linear SVM chosen by grid search over C with stratified k-fold CV, refit, tested.

This is plain scikit-learn: ``GridSearchCV`` over ``Pipeline(scale, pca, LinearSVC)`` with
``StratifiedKFold(cv, shuffle=True, random_state=seed)`` on the training rows, refit on all of
them with the best C. The tests check it against scikit-learn run by hand on the same arrays.
No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fstore.classifiers.evaluation import TrainingRun, run_splits
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.transforms import check_pca, check_pca_fits, check_scale, transform_steps
from fstore.errors import ClassifierError
from fstore.store import FeatureSet

DEFAULT_C = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class SvmOptions:
    """How ``fstore train svm`` trains.

    Attributes:
        C: the grid of regularisation values searched.
        cv: number of stratified folds.
        scale: ``standard``, ``l2`` or ``none`` (see :mod:`.transforms`).
        pca: components (int), variance fraction (float in (0, 1)) or None.
        seed: seed of the fold shuffling, of ``LinearSVC`` and of a randomized PCA.
        max_iter: ``LinearSVC``'s iteration limit (scikit-learn's default, 1000: at 10,000 a
            7 x 5 grid on 15-Scene fc7 ran for over 20 minutes on 2 cores, the large C values
            iterating to the limit).
    """

    C: tuple[float, ...] = DEFAULT_C
    cv: int = 5
    # l2 by default: on 15-Scene fc7 (1500 x 4096) one LinearSVC fit at C=0.01 took 116 s on
    # standard-scaled features against 1.9 s on l2-normalised ones.
    scale: str = "l2"
    pca: int | float | None = None
    seed: int = 0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if not self.C or any(c <= 0 for c in self.C):
            raise ClassifierError(f"--C needs positive values, e.g. 0.01,0.1,1; got {self.C}")
        if self.cv < 2:
            raise ClassifierError(f"--cv must be at least 2, not {self.cv}")
        check_scale(self.scale)
        check_pca(self.pca)


def svm_pipeline(options: SvmOptions, C: float = 1.0):  # -> sklearn.pipeline.Pipeline
    """``Pipeline(scale, pca, svc=LinearSVC(C))`` as ``options`` describe it."""
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

    svc = LinearSVC(C=C, dual="auto", max_iter=options.max_iter, random_state=options.seed)
    return Pipeline([*transform_steps(options.scale, options.pca, options.seed), ("svc", svc)])


def folds(options: SvmOptions):  # -> sklearn.model_selection.StratifiedKFold
    """The CV folds: stratified, shuffled with ``options.seed``."""
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=options.cv, shuffle=True, random_state=options.seed)


def _check_folds(y: np.ndarray, options: SvmOptions, classes: tuple[str, ...]) -> None:
    labels, counts = np.unique(y, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < options.cv:
        name = classes[labels[smallest]] if labels[smallest] < len(classes) else labels[smallest]
        raise ClassifierError(
            f"class {name!r} has {counts[smallest]} training images, fewer than the "
            f"{options.cv} CV folds; use --cv {max(int(counts[smallest]), 2)} or fewer folds"
        )
    check_pca_fits(options.pca, len(y) * (options.cv - 1) // options.cv, 10**12)


def grid_search(X: np.ndarray, y: np.ndarray, options: SvmOptions):  # -> GridSearchCV
    """Fit ``GridSearchCV`` over ``options.C`` on ``(X, y)`` and refit with the best C.

    ``LinearSVC`` often stops at ``max_iter`` before converging (at large C). Its
    ``ConvergenceWarning`` is counted, not printed, in the worker process of each CV fit and
    in this process for the refit: ``search.convergence_warnings_`` is how many of the
    ``search.n_fits_`` fits did not converge (:func:`.convergence.summary` says it in a line).
    """
    from sklearn.model_selection import GridSearchCV

    from fstore.classifiers.convergence import CountingLinearSVC, counting, unconverged

    # n_jobs=-1: the fits are independent and liblinear is single-threaded; results are the
    # same as a sequential search. The CV fits use a LinearSVC that records its convergence
    # warning, and a second scorer carries that record back from the worker process; the
    # refit uses a plain LinearSVC, the type that is saved.
    cv_pipeline = svm_pipeline(options)
    cv_pipeline.steps[-1] = ("svc", CountingLinearSVC(**cv_pipeline["svc"].get_params()))
    search = GridSearchCV(
        cv_pipeline,
        {"svc__C": list(options.C)},
        cv=folds(options),
        scoring={"accuracy": "accuracy", "unconverged": unconverged},
        refit=False,
        n_jobs=-1,
    )
    search.fit(X, y)
    results = search.cv_results_
    search.best_index_ = int(np.argmin(results["rank_test_accuracy"]))  # as refit=True picks
    search.best_params_ = results["params"][search.best_index_]
    search.best_estimator_ = svm_pipeline(options, search.best_params_["svc__C"])
    with counting() as refit_unconverged:
        search.best_estimator_.fit(X, y)
    per_fold = (results[f"split{k}_test_unconverged"] for k in range(options.cv))
    search.convergence_warnings_ = int(sum(f.sum() for f in per_fold)) + refit_unconverged.count
    search.n_fits_ = len(options.C) * options.cv + 1
    return search


def cv_table(search) -> list[dict]:
    """Per C: mean and standard deviation of the CV accuracy (as scikit-learn computes them)."""
    res = search.cv_results_
    suffix = "accuracy" if "mean_test_accuracy" in res else "score"
    columns = (res["param_svc__C"], res[f"mean_test_{suffix}"], res[f"std_test_{suffix}"])
    return [
        {"C": float(c), "mean": float(m), "std": float(s)} for c, m, s in zip(*columns, strict=True)
    ]


def train_svm(
    fs: FeatureSet, options: SvmOptions = SvmOptions(), protocol: SplitProtocol | None = None
) -> TrainingRun:
    """Grid-search, refit and test a linear SVM on each split of ``fs``.

    With ``options.pca`` set, ``run.baseline`` is the same training on the full features, for
    comparing accuracy and training time. Each fit's ``details`` count the LinearSVC fits that
    did not converge (``convergence_warnings`` of ``fits``); :func:`unconverged_line` says it.
    """
    if options.pca is not None:
        check_pca_fits(options.pca, 10**12, fs.X.shape[1])

    def fit(X: np.ndarray, y: np.ndarray):
        _check_folds(y, options, fs.classes)
        search = grid_search(X, y, options)
        details = {
            "cv": cv_table(search),
            "best_C": float(search.best_params_["svc__C"]),
            "convergence_warnings": search.convergence_warnings_,
            "fits": search.n_fits_,
        }
        if options.pca is not None:
            details["pca_components"] = int(search.best_estimator_["pca"].n_components_)
        return search.best_estimator_, details

    fits = run_splits(fs, fit, protocol)
    return TrainingRun.of("svm", fs, fits, options=options, protocol=protocol, train=train_svm)


def convergence_counts(run: TrainingRun) -> tuple[int, int]:
    """``(fits that stopped at max_iter, fits)`` over the splits of an SVM run and its
    baseline: CV fits and refits alike."""
    fits = [*run.fits, *(run.baseline.fits if run.baseline is not None else ())]
    return (
        sum(f.details.get("convergence_warnings", 0) for f in fits),
        sum(f.details.get("fits", 0) for f in fits),
    )


def unconverged_line(run: TrainingRun) -> str | None:
    """One line saying how many LinearSVC fits of ``run`` did not converge and what to do;
    None when every fit converged."""
    from fstore.classifiers.convergence import summary

    unconverged, fits = convergence_counts(run)
    return summary(unconverged, fits, run.options.max_iter, run.options.scale)
