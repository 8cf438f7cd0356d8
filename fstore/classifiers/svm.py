"""A linear SVM chosen by grid search over C with stratified k-fold CV, refit, tested.

Two solvers run the same search (``StratifiedKFold(cv, shuffle=True, random_state=seed)`` on
the training rows, the first best mean CV accuracy wins, refit on all of them):

* ``kernel`` (:mod:`.kernel`): ``SVC(kernel="precomputed")`` on one Gram matrix that every
  fold and every C shares; the problem of ``SVC(kernel="linear")`` (one-vs-one, hinge loss).
  The saved model is its primal weights, so it needs no training row.
* ``primal`` (:mod:`.primal`): ``LinearSVC`` (liblinear) in ``GridSearchCV``; one-vs-rest,
  squared hinge loss. For more rows than a Gram matrix pays for.

``auto`` times both on a sample (:mod:`.solver`). The tests check each against scikit-learn
run by hand on the same arrays. No torch.
"""

from __future__ import annotations

import numpy as np

from fstore.classifiers.evaluation import TrainingRun, run_splits
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.svm_options import SvmOptions
from fstore.classifiers.transforms import check_pca_fits
from fstore.errors import ClassifierError
from fstore.store import FeatureSet


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


def grid_search(X: np.ndarray, y: np.ndarray, options: SvmOptions, n_jobs: int = -1):
    """The :class:`~.search.Search` of ``options.C`` on ``(X, y)`` by the solver
    :func:`.solver.choose_solver` picks, its folds or fits in ``n_jobs`` workers."""
    from fstore.classifiers.kernel import kernel_search
    from fstore.classifiers.primal import primal_search
    from fstore.classifiers.solver import choose_solver

    solver, probe = choose_solver(X, y, options)
    search = {"kernel": kernel_search, "primal": primal_search}[solver]
    found = search(X, y, options, n_jobs=n_jobs)
    found.probe = probe
    return found


def train_svm(
    fs: FeatureSet, options: SvmOptions = SvmOptions(), protocol: SplitProtocol | None = None
) -> TrainingRun:
    """Grid-search, refit and test a linear SVM on each split of ``fs``; K random splits run
    in parallel, one per core.

    With ``options.pca`` set, ``run.baseline`` is the same training on the full features, for
    comparing accuracy and training time. Each fit's ``details`` say which solver ran and
    count the LinearSVC fits that did not converge (``convergence_warnings`` of ``fits``);
    :func:`unconverged_line` says it.
    """
    if options.pca is not None:
        check_pca_fits(options.pca, 10**12, fs.X.shape[1])
    parallel_splits = protocol is not None and protocol.splits > 1
    classes = fs.classes  # what the workers need of fs, not its features

    def fit(X: np.ndarray, y: np.ndarray):
        _check_folds(y, options, classes)
        search = grid_search(X, y, options, n_jobs=1 if parallel_splits else -1)
        details = {
            "cv": search.table,
            "best_C": search.best_C,
            "solver": search.solver,
            "probe": search.probe,
            "convergence_warnings": search.unconverged,
            "fits": search.fits,
        }
        if options.pca is not None:
            details["pca_components"] = int(search.model["pca"].n_components_)
        return search.model, details

    fits = run_splits(fs, fit, protocol, n_jobs=-1 if parallel_splits else 1)
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
