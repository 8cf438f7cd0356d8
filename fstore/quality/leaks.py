"""Test images leaked into the training split, left out of a test score (``--exclude-leaks``).

A test image leaks when ``duplicates`` puts it in one cluster with a training image (an exact
or a verified near copy). Leaving it out changes the test set only: the training rows, and so
the model, stay the same, and the score no longer counts images the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.errors import ClassifierError


@dataclass(frozen=True)
class LeakExclusion:
    """The feature set without its leaked test rows, and the keys left out (sorted)."""

    features: object  # fstore.store.FeatureSet
    excluded: tuple[str, ...]


def leaked_test_keys(store: Path | str, layer: str | None = None) -> tuple[str, ...]:
    """The store's test images with a copy in its training split (cached, see
    :mod:`fstore.quality.cache`)."""
    from fstore.quality.cache import cached_duplicates

    return tuple(cached_duplicates(store, layer).leaked_test_keys())


def exclude_leaks(features, store: Path | str, layer: str | None = None) -> LeakExclusion:
    """``features`` without the test rows that leak (``layer``: the stored layer whose
    neighbours give the duplicates' candidates; default the store's main one)."""
    if not (features.split == "test").any():
        raise ClassifierError(
            "--exclude-leaks needs the store's train/test split (it has no test images)"
        )
    keys = leaked_test_keys(store, layer)
    keep = ~np.isin(features.keys.astype(str), np.array(keys, dtype=str))
    keep |= features.split != "test"
    return LeakExclusion(features.subset(keep), keys)
