"""The linear SVM in the primal: scikit-learn's ``LinearSVC`` (liblinear) in ``GridSearchCV``.

It is the solver for more training rows than the Gram matrix can hold or than a kernel fit
pays for (:mod:`.solver` measures which), and it solves liblinear's problem: one-vs-rest,
squared hinge loss, an intercept regularised like a weight. ``LinearSVC`` takes no warm
start from the previous C, so each C of the grid starts from zero; its fits run in parallel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fstore.classifiers.search import Search, best_C, cv_table, folds, transform_pipeline

if TYPE_CHECKING:
    from fstore.classifiers.svm_options import SvmOptions


def svm_pipeline(options: SvmOptions, C: float = 1.0):  # -> sklearn.pipeline.Pipeline
    """``Pipeline(scale, pca, svc=LinearSVC(C))`` as ``options`` describe it."""
    from sklearn.svm import LinearSVC

    from fstore.classifiers.search import model_pipeline

    svc = LinearSVC(C=C, dual="auto", max_iter=options.max_iter, random_state=options.seed)
    return model_pipeline(transform_pipeline(options), svc)


def primal_search(X: np.ndarray, y: np.ndarray, options: SvmOptions, n_jobs: int = -1) -> Search:
    """``GridSearchCV`` over ``options.C`` on ``(X, y)``, refit with the best C.

    ``LinearSVC`` often stops at ``max_iter`` before converging (at large C). Its
    ``ConvergenceWarning`` is counted, not printed, in the worker process of each CV fit and
    in this process for the refit: ``unconverged`` of the search's ``fits``
    (:func:`.convergence.summary` says it in a line).
    """
    from sklearn.model_selection import GridSearchCV

    from fstore.classifiers.convergence import CountingLinearSVC, counting, unconverged

    # The fits are independent and liblinear is single-threaded; results are the same as a
    # sequential search. The CV fits use a LinearSVC that records its convergence warning,
    # and a second scorer carries that record back from the worker process; the refit uses a
    # plain LinearSVC, the type that is saved.
    cv_pipeline = svm_pipeline(options)
    cv_pipeline.steps[-1] = ("svc", CountingLinearSVC(**cv_pipeline["svc"].get_params()))
    search = GridSearchCV(
        cv_pipeline,
        {"svc__C": list(options.C)},
        cv=folds(options),
        scoring={"accuracy": "accuracy", "unconverged": unconverged},
        refit=False,
        n_jobs=n_jobs,
    )
    search.fit(X, y)
    results = search.cv_results_
    scores = np.array([results[f"split{k}_test_accuracy"] for k in range(options.cv)]).T
    table = cv_table(options.C, scores)
    best = best_C(table)
    model = svm_pipeline(options, best)
    with counting() as refit_unconverged:
        model.fit(X, y)
    per_fold = (results[f"split{k}_test_unconverged"] for k in range(options.cv))
    return Search(
        table,
        best,
        model,
        "primal",
        fits=len(options.C) * options.cv + 1,
        unconverged=int(sum(f.sum() for f in per_fold)) + refit_unconverged.count,
    )
