"""What happens to features before a classifier sees them: scaling, then optional PCA.

Both the SVM and the head put these steps in front of their estimator in one scikit-learn
``Pipeline``, so cross-validation fits the scaler and the PCA on each fold's training part only.
"""

from __future__ import annotations

from typing import Any

from fstore.errors import ClassifierError

#: ``standard``: zero mean, unit variance per feature; ``l2``: each row to unit length;
#: ``power``: signed square root of each value, then each row to unit length.
SCALES = ("standard", "l2", "none", "power")


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ClassifierError(f"unknown scaling {scale!r}; choose from {', '.join(SCALES)}")


def parse_pca(text: str | int | float | None) -> int | float | None:
    """``--pca``: ``N`` components (an integer), a variance fraction in (0, 1), or 0/none = off."""
    if text is None or isinstance(text, str) and text.strip().lower() in ("", "0", "none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ClassifierError(
            f"--pca takes a number of components (e.g. 128) or a variance fraction "
            f"(e.g. 0.95), not {text!r}"
        ) from None
    check_pca(int(value) if value >= 1 and value == int(value) else value)
    return int(value) if value >= 1 else value


def check_pca(pca: int | float | None) -> None:
    if pca is None:
        return
    if isinstance(pca, float) and not 0 < pca < 1 or isinstance(pca, int) and pca < 1:
        raise ClassifierError(
            f"--pca must be a whole number of components (>= 1) or a variance fraction "
            f"strictly between 0 and 1, not {pca!r}"
        )


def check_pca_fits(pca: int | float | None, n_rows: int, n_features: int) -> None:
    """An integer PCA size must not exceed what the (smallest) training part can give."""
    if isinstance(pca, int) and pca > min(n_rows, n_features):
        raise ClassifierError(
            f"--pca {pca} asks for more components than the data has "
            f"({n_rows} training rows per fit, {n_features} features); "
            f"use at most {min(n_rows, n_features)} or a variance fraction such as 0.95"
        )


def transform_steps(scale: str, pca: int | float | None, seed: int = 0) -> list[tuple[str, Any]]:
    """Pipeline steps ``scale`` and ``pca`` (``"passthrough"`` when off)."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    from fstore.classifiers.steps import SignedSqrt

    check_scale(scale)
    check_pca(pca)
    scaler: Any = {
        "standard": StandardScaler,
        "l2": lambda: Normalizer(norm="l2"),
        "power": lambda: Pipeline([("sqrt", SignedSqrt()), ("l2", Normalizer(norm="l2"))]),
    }.get(scale, lambda: "passthrough")()
    reducer: Any = "passthrough"
    if pca is not None:
        # A variance fraction needs every component's variance: the eigenvectors of the
        # covariance give them faster than a full SVD of the rows when the rows outnumber the
        # dimensions, with the same features (docs/performance.md).
        reducer = PCA(
            n_components=pca,
            svd_solver="covariance_eigh" if isinstance(pca, float) else "auto",
            random_state=seed,
        )
    return [("scale", scaler), ("pca", reducer)]
