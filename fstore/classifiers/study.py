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
from fstore.classifiers.svm import convergence_counts, train_svm
from fstore.classifiers.svm_options import SvmOptions
from fstore.errors import ClassifierError
from fstore.store import FeatureSet


@dataclass(frozen=True)
class LayerResult:
    """One layer's result (means over the splits when there are several)."""

    layer: str
    dim: int
    accuracy: float
    accuracy_std: float
    fit_seconds: float
    best_C: tuple[float, ...]
    unconverged_fits: int = 0
    fits: int = 0

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "dim": self.dim,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "fit_seconds": self.fit_seconds,
            "best_C": list(self.best_C),
            "unconverged_fits": self.unconverged_fits,
            "fits": self.fits,
        }


@dataclass(frozen=True)
class LayerStudy:
    """The rows of a layer study, in the order the layers were given."""

    rows: tuple[LayerResult, ...]
    options: SvmOptions
    protocol: SplitProtocol | None

    def to_dict(self) -> dict:
        return {
            "rows": [r.to_dict() for r in self.rows],
            "options": options_dict(self.options),
            "protocol": options_dict(self.protocol) if self.protocol else None,
        }

    def unconverged_line(self) -> str | None:
        """One line on the LinearSVC fits of all layers that did not converge; None if all did."""
        from fstore.classifiers.convergence import summary

        return summary(
            sum(r.unconverged_fits for r in self.rows),
            sum(r.fits for r in self.rows),
            self.options.max_iter,
            self.options.scale,
        )


def study_feature_sets(
    sets: Iterable[FeatureSet],
    options: SvmOptions | None = None,
    protocol: SplitProtocol | None = None,
    on_row: Callable[[LayerResult], None] | None = None,
) -> LayerStudy:
    """Train and test the SVM on each feature set; ``on_row`` is called as each one finishes."""
    options = options or SvmOptions()
    rows = []
    for fs in sets:
        run = train_svm(fs, options, protocol)
        unconverged, fits = convergence_counts(run)
        row = LayerResult(
            layer=fs.layer,
            dim=fs.X.shape[1],
            accuracy=run.accuracy_mean,
            accuracy_std=run.accuracy_std,
            fit_seconds=run.fit_seconds_mean,
            best_C=tuple(f.details["best_C"] for f in run.fits),
            unconverged_fits=unconverged,
            fits=fits,
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return LayerStudy(tuple(rows), options, protocol)


def study_layers(
    store: Path,
    layers: Sequence[str] | None = None,
    options: SvmOptions | None = None,
    protocol: SplitProtocol | None = None,
    on_row: Callable[[LayerResult], None] | None = None,
) -> LayerStudy:
    """:func:`study_feature_sets` over ``layers`` of the store (all its layers when None)."""
    from fstore.store import load_features, store_layers

    held = store_layers(store)
    wanted = list(layers) if layers else held
    missing = [name for name in wanted if name not in held]
    if missing:
        raise ClassifierError(
            f"store {store} has no layer {', '.join(missing)}; it holds: {', '.join(held)}"
        )
    return study_feature_sets(
        (load_features(store, name) for name in wanted), options, protocol, on_row=on_row
    )
