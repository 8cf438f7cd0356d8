"""Which layer gives the best features: per layer, its dimension, SVM accuracy and fit time.

Layers are loaded one at a time, so only one layer's features are in memory at once. The fit
time is the whole SVM training of one split: the CV grid search plus the refit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fstore.classifiers.evaluation import options_dict
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.svm import SvmOptions, train_svm
from fstore.errors import ClassifierError
from fstore.featurestore.features import FeatureSet


@dataclass(frozen=True)
class LayerRow:
    """One layer's result (means over the splits when there are several)."""

    layer: str
    dim: int
    accuracy: float
    accuracy_std: float
    fit_seconds: float
    best_C: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"layer": self.layer, "dim": self.dim, "accuracy": self.accuracy,
                "accuracy_std": self.accuracy_std, "fit_seconds": self.fit_seconds,
                "best_C": list(self.best_C)}


@dataclass(frozen=True)
class LayerStudy:
    """The rows of a layer study, in the order the layers were given."""

    rows: tuple[LayerRow, ...]
    options: SvmOptions
    protocol: SplitProtocol | None

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows], "options": options_dict(self.options),
                "protocol": options_dict(self.protocol) if self.protocol else None}


def study_feature_sets(sets: Iterable[FeatureSet], options: SvmOptions | None = None,
                       protocol: SplitProtocol | None = None,
                       on_row: Callable[[LayerRow], None] | None = None) -> LayerStudy:
    """Train and test the SVM on each feature set; ``on_row`` is called as each one finishes."""
    options = options or SvmOptions()
    rows = []
    for fs in sets:
        run = train_svm(fs, options, protocol)
        row = LayerRow(fs.layer, fs.X.shape[1], run.accuracy_mean, run.accuracy_std,
                       run.fit_seconds_mean, tuple(f.details["best_C"] for f in run.fits))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return LayerStudy(tuple(rows), options, protocol)


def study_layers(store: Path, layers: Sequence[str] | None = None,
                 options: SvmOptions | None = None, protocol: SplitProtocol | None = None,
                 on_row: Callable[[LayerRow], None] | None = None) -> LayerStudy:
    """:func:`study_feature_sets` over ``layers`` of the store (all its layers when None)."""
    from fstore.featurestore.store import load_features, store_layers

    held = store_layers(store)
    wanted = list(layers) if layers else held
    missing = [name for name in wanted if name not in held]
    if missing:
        raise ClassifierError(f"store {store} has no layer {', '.join(missing)}; "
                              f"it holds: {', '.join(held)}")
    return study_feature_sets((load_features(store, name) for name in wanted), options,
                              protocol, on_row)
