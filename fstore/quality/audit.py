"""``audit``: training images whose given class is probably wrong.

Out-of-fold predicted probabilities (stratified k-fold on the training split; features scaled
to unit length, then logistic regression, since the SVM gives no probabilities) go to
cleanlab's confident learning: every image gets a label quality (the probability the other
folds' model gives its given class, ``get_label_quality_scores``), and the suspected errors
are the lowest-scored images, as many as confident learning estimates are wrong
(``num_label_issues``, calibrated), cleanlab's recommended cut for a ranking by score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.errors import ClassifierError
from fstore.quality import require

#: What decides the result besides the options (part of the cache's key).
METHOD = "unit-length logistic regression; lowest self-confidence, calibrated count"

#: Feature values (rows × features) from which the folds run in parallel processes.
PARALLEL_FROM = 1_000_000


@dataclass(frozen=True)
class AuditOptions:
    """``folds`` for the out-of-fold probabilities, ``C`` of the logistic regression on
    unit-length features,
    ``split`` the rows audited (``train``, ``test`` or ``all``)."""

    folds: int = 5
    C: float = 1.0
    split: str = "train"
    seed: int = 0


@dataclass(frozen=True)
class LabelIssue:
    """One suspected label error: ``score`` is cleanlab's label quality (low: suspicious)."""

    rank: int
    key: str
    given: str
    suggested: str
    score: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("rank", "key", "given", "suggested", "score")}


@dataclass(frozen=True)
class AuditResult:
    """Ranked suspected label errors, and the out-of-fold probabilities they come from
    (``keys`` the rows audited, ``probabilities`` their (N, classes) out-of-fold values,
    ``scores`` their label quality; the issues are the lowest ``scores``)."""

    store: str
    layer: str
    classes: tuple[str, ...]
    issues: tuple[LabelIssue, ...]
    keys: np.ndarray
    probabilities: np.ndarray
    scores: np.ndarray

    def ranking(self) -> np.ndarray:
        """Every audited row, most suspicious first (the issues, then the rest)."""
        return np.argsort(self.scores, kind="stable")

    def to_dict(self) -> dict:
        return {
            "store": self.store,
            "layer": self.layer,
            "audited": len(self.keys),
            "issues": [i.to_dict() for i in self.issues],
        }


def estimator(options: AuditOptions):
    """The probabilistic linear model: features scaled to unit length, then logistic
    regression.

    Unit length rather than standardised features: on planted label noise in 15-Scene
    (scripts/benchmarks/planted.py) its probabilities rank the wrong labels first more often,
    and C needs no rescaling with the layer's width or magnitude."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    return make_pipeline(Normalizer(), LogisticRegression(C=options.C, max_iter=2000))


def out_of_fold(X: np.ndarray, y: np.ndarray, options: AuditOptions) -> np.ndarray:
    """Each row's class probabilities from a model that did not see it (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(options.folds, shuffle=True, random_state=options.seed)
    # folds in parallel processes, each with one BLAS thread: half the time of one process
    # whose BLAS threads fight over the cores (docs/performance.md); for small data the
    # processes' start costs more than the folds
    jobs = -1 if np.asarray(X).size >= PARALLEL_FROM else None
    return cross_val_predict(
        estimator(options), X, y, cv=folds, method="predict_proba", n_jobs=jobs
    )


def _labelled(features, store: Path, split: str):
    if split != "all":
        features = features.subset(features.split == split)
    used = np.unique(features.y)
    if not len(features.keys) or len(used) < 2 or "" in np.asarray(features.classes)[used]:
        where = "" if split == "all" else f" in its {split} split"
        raise ClassifierError(
            f"store {store} has no class labels{where} (audit needs images in at least two "
            "class folders)"
        )
    counts = np.bincount(features.y)[used]
    return features, used, counts


def audit(
    store: Path | str, layer: str | None = None, options: AuditOptions = AuditOptions()
) -> AuditResult:
    """Suspected label errors of a store's (training) images, most suspicious first."""
    from fstore.store import load_features

    require("cleanlab")
    from cleanlab.count import num_label_issues
    from cleanlab.rank import get_label_quality_scores

    store = Path(store)
    features, used, counts = _labelled(load_features(store, layer), store, options.split)
    if counts.min() < options.folds:
        raise ClassifierError(
            f"audit needs at least {options.folds} images of each class (--folds)"
        )
    y = np.searchsorted(used, features.y)  # classes present, numbered 0..c-1
    probs = out_of_fold(features.X, y, options)
    scores = get_label_quality_scores(y, probs, method="self_confidence")
    count = num_label_issues(y, probs, estimation_method="off_diagonal_calibrated")
    ranked = np.argsort(scores, kind="stable")[:count]
    names = np.asarray(features.classes, dtype=object)[used]
    issues = tuple(
        LabelIssue(r + 1, str(features.keys[i]), str(names[y[i]]), str(names[probs[i].argmax()]),
                   float(scores[i]))
        for r, i in enumerate(ranked)
    )  # fmt: skip
    return AuditResult(
        str(store),
        features.layer,
        tuple(names),
        issues,
        keys=features.keys,
        probabilities=probs,
        scores=scores,
    )
