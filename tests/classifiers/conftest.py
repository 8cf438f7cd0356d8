"""Fixtures for the classifier tests; the data generators are in ``synthetic_features``."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_features import gaussian_classes, write_feature_sets

from fstore.store import FeatureSet


@pytest.fixture
def blobs() -> FeatureSet:
    """Three well separated classes: 20 training and 10 test rows each, 8 features."""
    return gaussian_classes()


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    """A store with ``fc7`` (separable, 16 features) and ``fc6`` (noisier, 24 features)."""
    fc7 = gaussian_classes(n_train=12, n_test=6, dim=16, layer="fc7")
    fc6 = gaussian_classes(n_train=12, n_test=6, dim=24, separation=1.0, seed=1, layer="fc6")
    return write_feature_sets(tmp_path / "tiny.h5", [fc6, fc7])
