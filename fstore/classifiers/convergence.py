"""LinearSVC's convergence warnings, counted where they happen and said once.

A grid search fits dozens of ``LinearSVC`` in joblib worker processes; each fit that reaches
``max_iter`` raises a ``ConvergenceWarning`` there, and printed raw they bury the result.
:class:`CountingLinearSVC` records its own warning instead (inside the worker), the
:func:`unconverged` scorer carries that record back with the CV scores, and :func:`summary`
turns the count into one line that says what to do.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC


@dataclass
class Count:
    """How many ``ConvergenceWarning`` were raised inside :func:`counting`."""

    count: int = 0


@contextlib.contextmanager
def counting() -> Iterator[Count]:
    """Record the ``ConvergenceWarning``s raised inside instead of printing them; any other
    warning is passed on as usual."""
    found = Count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield found
    found.count = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class CountingLinearSVC(LinearSVC):
    """``LinearSVC`` that records, rather than prints, its ``ConvergenceWarning``:
    ``unconverged_`` is 1 when the fit stopped at ``max_iter``, else 0. Used for the CV fits
    only; the refit that is saved is a plain ``LinearSVC``."""

    def fit(self, X, y, sample_weight=None) -> CountingLinearSVC:
        with counting() as found:
            super().fit(X, y, sample_weight=sample_weight)
        self.unconverged_ = found.count
        return self


def unconverged(estimator, X, y) -> float:
    """A scorer for ``GridSearchCV``: 1.0 when the pipeline's ``svc`` did not converge."""
    return float(getattr(estimator["svc"], "unconverged_", 0))


def summary(unconverged_fits: int, fits: int, max_iter: int, scale: str) -> str | None:
    """One line on the fits that did not converge, and what to do; None when all converged."""
    if not unconverged_fits:
        return None
    advice = "raise --max-iter or drop the largest --C values"
    if scale != "l2":
        advice += ", or use --scale l2 (it converges far sooner)"
    return (
        f"note: {unconverged_fits} of {fits} LinearSVC fits stopped at --max-iter {max_iter} "
        f"before converging (usual at large C); {advice}"
    )
