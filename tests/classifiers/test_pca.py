"""PCA's explained variance against NumPy's SVD, and the 90/95/99 % counts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.decomposition import PCA

from fstore.classifiers.pca import PcaOptions, components_for, pca_profile, variance_profile
from fstore.errors import ClassifierError


def correlated(n: int = 60, d: int = 12, seed: int = 0) -> np.ndarray:
    """Rows with a decaying spectrum, so that the counts for 90/95/99 % differ."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    scales = 2.0 ** -np.arange(d) * 10
    return (rng.standard_normal((n, d)) * scales @ basis.T + rng.normal(size=d)).astype(np.float32)


def svd_ratio(X: np.ndarray) -> np.ndarray:
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    s = np.linalg.svd(Xc, compute_uv=False)
    return s**2 / np.sum(s**2)


def test_variance_equals_numpy_svd():
    X = correlated()
    profile = variance_profile(X, PcaOptions(scale="none"))
    expected = svd_ratio(X)
    np.testing.assert_allclose(profile.explained_variance_ratio, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(profile.cumulative, np.cumsum(expected), rtol=1e-6)
    assert profile.cumulative[-1] == pytest.approx(1.0)


def test_standard_scaling_is_applied_before_pca():
    X = correlated(seed=1)
    profile = variance_profile(X, PcaOptions(scale="standard"))
    Z = X.astype(np.float64)
    Z = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    np.testing.assert_allclose(
        profile.explained_variance_ratio, svd_ratio(Z), rtol=1e-5, atol=1e-10
    )


def test_threshold_counts_match_scikit_learn_and_the_cumulative_curve():
    X = correlated(seed=2)
    profile = variance_profile(X, PcaOptions(scale="none", variance=0.8))
    assert set(profile.thresholds) == {0.8, 0.9, 0.95, 0.99}
    counts = [profile.thresholds[f] for f in (0.8, 0.9, 0.95, 0.99)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    for fraction, k in profile.thresholds.items():
        assert k == PCA(n_components=fraction, svd_solver="full").fit(X).n_components_
        assert profile.cumulative[k - 1] > fraction
        assert k == 1 or profile.cumulative[k - 2] <= fraction


def test_components_limit_the_computed_spectrum():
    X = correlated(seed=3)
    full = variance_profile(X, PcaOptions(scale="none"))
    part = variance_profile(X, PcaOptions(scale="none", components=2))
    assert len(part.explained_variance_ratio) == 2
    np.testing.assert_allclose(
        part.explained_variance_ratio, full.explained_variance_ratio[:2], rtol=1e-4
    )
    assert part.thresholds[0.99] is None  # two components cannot reach 99 % here


def test_components_for_edge_cases():
    cumulative = np.array([0.5, 0.9, 0.95, 1.0])
    assert components_for(cumulative, 0.5) == 2  # must exceed, as scikit-learn counts
    assert components_for(cumulative, 0.49) == 1
    assert components_for(cumulative, 0.96) == 4
    assert components_for(cumulative[:2], 0.95) is None


def test_profile_uses_the_training_rows(blobs):
    profile = pca_profile(blobs, PcaOptions(scale="none"))
    assert profile.rows == "train" and profile.n_samples == 60
    np.testing.assert_allclose(
        profile.explained_variance_ratio, svd_ratio(blobs.train.X), rtol=1e-5, atol=1e-10
    )
    no_split = replace(blobs, split=np.full(len(blobs.y), "", dtype=object))
    assert pca_profile(no_split).rows == "all"


def test_bad_options():
    with pytest.raises(ClassifierError, match="not both"):
        PcaOptions(components=3, variance=0.9)
    with pytest.raises(ClassifierError):
        PcaOptions(variance=1.0)
    with pytest.raises(ClassifierError):
        PcaOptions(components=0)
    with pytest.raises(ClassifierError, match="at least 2 rows"):
        variance_profile(np.ones((1, 3), np.float32))
