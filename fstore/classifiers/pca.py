"""How many principal components the features need: explained variance, 90 / 95 / 99 %.

The features are scaled as the classifiers scale them (``standard`` by default, as ``train svm``
does before its ``--pca``), then PCA is fitted on the training rows (all rows when the store has
no split). The count for a fraction follows scikit-learn's ``PCA(n_components=fraction)``: the
fewest components whose cumulative explained variance exceeds the fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fstore.classifiers.transforms import check_scale, transform_steps
from fstore.errors import ClassifierError
from fstore.store import FeatureSet

THRESHOLDS = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class PcaOptions:
    """What ``fstore train pca`` computes.

    Attributes:
        components: compute only this many leading components (faster on wide layers);
            None computes them all.
        variance: a fraction of variance whose component count is reported besides
            90 / 95 / 99 %.
        scale: ``standard``, ``l2`` or ``none``, applied before PCA.
        seed: seed of the randomized solver scikit-learn may pick with ``components``.
    """

    components: int | None = None
    variance: float | None = None
    scale: str = "standard"
    seed: int = 0

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if self.components is not None and self.variance is not None:
            raise ClassifierError("give --components N or --variance F, not both")
        if self.components is not None and self.components < 1:
            raise ClassifierError(f"--components must be at least 1, not {self.components}")
        if self.variance is not None and not 0 < self.variance < 1:
            raise ClassifierError(
                f"--variance must be strictly between 0 and 1, not {self.variance}"
            )


@dataclass(frozen=True)
class PcaProfile:
    """Explained variance of a layer's features.

    Attributes:
        layer: the layer.
        rows: ``train`` or ``all``, the rows PCA was fitted on.
        n_samples, n_features: the fitted matrix's shape.
        explained_variance_ratio: per computed component, its share of the total variance.
        cumulative: running sum of ``explained_variance_ratio``.
        thresholds: fraction → fewest components exceeding it, None if more than computed.
    """

    layer: str
    rows: str
    n_samples: int
    n_features: int
    scale: str
    explained_variance_ratio: np.ndarray
    cumulative: np.ndarray
    thresholds: dict[float, int | None]

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "rows": self.rows,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "scale": self.scale,
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
            "cumulative": self.cumulative.tolist(),
            "thresholds": {str(k): v for k, v in self.thresholds.items()},
        }


def components_for(cumulative: np.ndarray, fraction: float) -> int | None:
    """Fewest components whose cumulative explained variance exceeds ``fraction`` (as
    scikit-learn's ``PCA(n_components=fraction)`` counts); None if ``cumulative`` never does."""
    k = int(np.searchsorted(cumulative, fraction, side="right")) + 1
    return k if k <= len(cumulative) else None


def variance_profile(
    X: np.ndarray, options: PcaOptions = PcaOptions(), layer: str = "", rows: str = "all"
) -> PcaProfile:
    """Fit PCA on ``X`` (scaled per ``options.scale``) and summarise its explained variance."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline

    n, d = X.shape
    if n < 2:
        raise ClassifierError(f"PCA needs at least 2 rows; the {rows} rows hold {n}")
    limit = min(n, d)
    k = min(options.components, limit) if options.components else limit
    scaler = Pipeline(transform_steps(options.scale, None)[:1])
    Z = np.asarray(scaler.fit_transform(X), dtype=np.float64)
    pca = PCA(
        n_components=k, svd_solver="full" if k == limit else "auto", random_state=options.seed
    ).fit(Z)
    ratio = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
    cumulative = np.cumsum(ratio)
    fractions = sorted({*THRESHOLDS, *([options.variance] if options.variance else [])})
    return PcaProfile(
        layer=layer,
        rows=rows,
        n_samples=n,
        n_features=d,
        scale=options.scale,
        explained_variance_ratio=ratio,
        cumulative=cumulative,
        thresholds={f: components_for(cumulative, f) for f in fractions},
    )


def pca_profile(fs: FeatureSet, options: PcaOptions = PcaOptions()) -> PcaProfile:
    """:func:`variance_profile` of ``fs``'s training rows (all rows if it has no training split)."""
    train = fs.split == "train"
    if train.any():
        return variance_profile(fs.X[train], options, fs.layer, "train")
    return variance_profile(fs.X, options, fs.layer, "all")
