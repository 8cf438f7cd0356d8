"""Which solver runs a grid faster on these rows: measured on a sample, not guessed from shapes.

Both solvers are timed over the whole C grid on one fold of a stratified sample of
:data:`PROBE_ROWS` training rows and scaled up to the real grid: the kernel solver's Gram
matrix grows with the square of the rows; its fits (libsvm on one-vs-one pairs) about with the
rows (7 C values on 1,200 fc7-sized rows took 2.7 times as long as on 240), as do a PCA or
scaler in front and the primal's fits (which refit those steps for every C). The primal probe
stops as soon as its estimate passes the kernel's, so the probe costs little more than the
cheaper solver's share. When both estimates stay under :data:`TOO_QUICK_S` the measurement
cannot tell them apart, and fewer fold rows than features picks the kernel (where the Gram
matrix is the smaller problem).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from fstore.classifiers.search import folds, row_wise, transform_pipeline

if TYPE_CHECKING:
    from fstore.classifiers.svm_options import SvmOptions

PROBE_ROWS = 300
TOO_QUICK_S = 1.0
#: The kernel solver holds the Gram matrix and its fold blocks: about three n x n float64.
GRAM_COPIES = 3


def gram_fits_memory(n_rows: int) -> bool:
    """Whether the kernel solver's matrices take under half of the memory available now."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):  # not Linux: assume 4 GiB
        available = 4 << 30
    return GRAM_COPIES * n_rows * n_rows * 8 < available / 2


def probe_rows(y: np.ndarray, count: int, least: int, seed: int) -> np.ndarray:
    """About ``count`` rows drawn per class in proportion, at least ``least`` of each class."""
    rng = np.random.default_rng(seed)
    share = count / len(y)
    parts = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = min(len(members), max(least, round(share * len(members))))
        parts.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(parts))


def _kernel_seconds(X, y, options: SvmOptions, growth: float) -> float:
    """The kernel grid's estimated seconds, from one probe fold: the Gram matrices grow with
    the square of the rows, the steps in front (a PCA, a scaler) and the fits with the rows."""
    from fstore.classifiers.kernel import FoldKernels, fold_scores, gram

    fit_rows, val_rows = next(folds(options).split(X, y))
    start = time.perf_counter()
    transform = transform_pipeline(options).fit(X[fit_rows], y[fit_rows])
    A, B = transform.transform(X[fit_rows]), transform.transform(X[val_rows])
    steps = time.perf_counter() - start
    fold = FoldKernels(gram(A), gram(B, A), y[fit_rows], y[val_rows])
    grams = time.perf_counter() - start - steps
    fold_scores(fold, options.C)
    fits = time.perf_counter() - start - steps - grams
    fitted = 1 if row_wise(options) else options.cv + 1  # steps and Grams: once, or per fold
    return growth**2 * grams * fitted + growth * (steps * fitted + fits * (options.cv + 1))


def _primal_seconds(X, y, options: SvmOptions, growth: float, beaten_at: float) -> float:
    """The primal grid's estimated seconds, from one probe fold; it stops at ``beaten_at``."""
    from sklearn.exceptions import ConvergenceWarning

    from fstore.classifiers.primal import svm_pipeline

    fit_rows, _ = next(folds(options).split(X, y))
    spent = 0.0
    for C in options.C:
        start = time.perf_counter()
        with warnings.catch_warnings():  # counted where it counts: in the real search
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm_pipeline(options, C).fit(X[fit_rows], y[fit_rows])
        spent += time.perf_counter() - start
        if growth * spent * (options.cv + 1) > beaten_at:
            break
    return growth * spent * (options.cv + 1) * len(options.C) / (options.C.index(C) + 1)


def choose_solver(X: np.ndarray, y: np.ndarray, options: SvmOptions) -> tuple[str, dict]:
    """``(solver, what was measured)``: ``options.solver`` unless it is ``auto``."""
    if options.solver != "auto":
        return options.solver, {}
    n_rows, n_features = X.shape
    if not gram_fits_memory(n_rows):
        return "primal", {"reason": f"a {n_rows} x {n_rows} Gram matrix does not fit in memory"}
    rows = probe_rows(y, PROBE_ROWS, options.cv, options.seed)
    growth = n_rows / len(rows)
    kernel = _kernel_seconds(X[rows], y[rows], options, growth)
    primal = _primal_seconds(X[rows], y[rows], options, growth, beaten_at=kernel)
    probe = {"probe_rows": len(rows), "kernel_s": kernel, "primal_s": primal}
    if max(kernel, primal) < TOO_QUICK_S:
        fold_rows = n_rows * (options.cv - 1) // options.cv
        return ("kernel" if fold_rows < n_features else "primal"), probe
    return ("kernel" if kernel <= primal else "primal"), probe
