"""Synthetic feature sets and tiny stores for the classifier tests (imported by the tests).

Features are drawn from known class distributions: class ``c`` is a Gaussian around a mean
``separation`` apart from the others, so the reachable accuracy is known (1.0 when well
separated, chance when ``separation`` is 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fstore.images.preprocess import Preprocessing
from fstore.store import FeatureSet

MODEL_SHA = "ab" * 32
PROVENANCE = {
    "model_sha256": MODEL_SHA,
    "model_path": "/nonexistent/model.onnx",
    "layers": ["fc7"],
    "preprocessing": Preprocessing().to_json(),
    "weights_origin": "random",
}


def gaussian_classes(
    n_train: int = 20,
    n_test: int = 10,
    n_classes: int = 3,
    dim: int = 8,
    separation: float = 6.0,
    seed: int = 0,
    layer: str = "fc7",
    classes: tuple[str, ...] | None = None,
    provenance: dict | None = None,
) -> FeatureSet:
    """``n_train`` + ``n_test`` rows per class, class c ~ N(mean_c, I) with the means on
    orthogonal axes scaled by ``separation``."""
    rng = np.random.default_rng(seed)
    means = np.zeros((n_classes, dim))
    for c in range(n_classes):
        means[c, c % dim] = separation
    X, y, split = [], [], []
    for c in range(n_classes):
        for part, n in (("train", n_train), ("test", n_test)):
            X.append(means[c] + rng.standard_normal((n, dim)))
            y += [c] * n
            split += [part] * n
    names = classes or tuple(f"class{c}" for c in range(n_classes))
    keys = np.array([f"{names[c]}/img_{i:04d}.jpg" for i, c in enumerate(y)], dtype=object)
    return FeatureSet(
        layer,
        np.concatenate(X).astype(np.float32),
        np.asarray(y, np.int64),
        keys,
        np.asarray(split, dtype=object),
        names,
        (dim,),
        dict(PROVENANCE if provenance is None else provenance),
    )


def write_feature_sets(path: Path, sets: list[FeatureSet], provenance: dict | None = None) -> Path:
    """A store holding each set as a layer (all sets share rows, labels and split)."""
    from fstore.store import write_arrays

    first = sets[0]
    return write_arrays(
        path,
        {fs.layer: fs.X for fs in sets},
        [str(k) for k in first.keys],
        [first.classes[i] for i in first.y],
        [str(s) for s in first.split],
        provenance=dict(PROVENANCE if provenance is None else provenance),
    )
