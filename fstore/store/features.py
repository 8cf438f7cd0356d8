"""What the store hands to classifiers: one layer's features with labels, keys and split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeatureSet:
    """One layer's features read from a store, as NumPy arrays.

    Attributes:
        layer: layer name (``fc7``...).
        X: float32 ``(N, D)`` features (conv maps flattened).
        y: int64 ``(N,)`` labels, indices into ``classes``.
        keys: ``(N,)`` image paths relative to the image folder.
        split: ``(N,)`` strings: ``train``, ``test`` or ``""`` (unassigned).
        classes: class names, ``classes[y[i]]`` is image i's class.
        shape: one image's output shape before flattening (``(512, 7, 7)`` for pool5).
        provenance: the store's provenance (model sha256, preprocessing, weights...).
    """

    layer: str
    X: np.ndarray
    y: np.ndarray
    keys: np.ndarray
    split: np.ndarray
    classes: tuple[str, ...]
    shape: tuple[int, ...] = ()
    provenance: dict = field(default_factory=dict)

    def subset(self, mask: np.ndarray) -> FeatureSet:
        """The rows where ``mask`` is true (or at the given indices)."""
        return FeatureSet(
            layer=self.layer,
            X=self.X[mask],
            y=self.y[mask],
            keys=self.keys[mask],
            split=self.split[mask],
            classes=self.classes,
            shape=self.shape,
            provenance=self.provenance,
        )

    @property
    def train(self) -> FeatureSet:
        return self.subset(self.split == "train")

    @property
    def test(self) -> FeatureSet:
        return self.subset(self.split == "test")
