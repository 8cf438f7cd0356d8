"""Planted edited copies of generated photos are verified as copies, other photos are not, and
clusters carry the right labels; exact copies come from the catalog's sha256."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from quality_synthetic import clustered, feature_store, photo

from fstore.quality import edits
from fstore.quality.duplicates import DuplicateOptions, cluster_labels, duplicates
from fstore.quality.verify import Verifier


@pytest.mark.parametrize("names", edits.all_edits(), ids="+".join)
def test_each_planted_edit_is_verified_as_a_copy(tmp_path, names):
    verify = Verifier()
    for seed in range(4):
        source, copy = tmp_path / f"a{seed}.jpg", tmp_path / f"b{seed}.jpg"
        img = photo(seed)
        img.save(source, quality=90)
        edits.apply(img, names).save(copy, quality=95)
        verdict = verify(source, copy)
        assert verdict.copy, (seed, verdict)


def test_different_photos_are_not_copies(tmp_path):
    verify = Verifier()
    paths = []
    for seed in range(8):
        paths.append(tmp_path / f"{seed}.jpg")
        photo(100 + seed).save(paths[-1], quality=90)
    assert not any(verify(a, b).copy for i, a in enumerate(paths) for b in paths[i + 1 :])


def test_cluster_labels():
    assert cluster_labels({"a"}, {"train", "test"}) == ("leak",)
    assert cluster_labels({"a", "b"}, {"train", "test"}) == ("leak", "conflict")
    assert cluster_labels({"a"}, {"test"}) == ("within-test",)
    assert cluster_labels({"a", "b"}, {"train"}) == ("within-train", "conflict")


@pytest.mark.slow
def test_store_duplicates_find_planted_copies_and_byte_copies(tmp_path, config_for):
    """A built store: 6 photos per split of 2 classes, then one edited copy of each of 8
    photos placed elsewhere, and one byte copy; every planted pair is found, nothing else."""
    from fstore.pipeline.model import build_store

    root, planted = tmp_path / "images", []
    for s, split in enumerate(("train", "test")):
        for c, name in enumerate(("alpha", "beta")):
            (root / split / name).mkdir(parents=True)
            for i in range(6):
                photo(100 * s + 10 * c + i).save(root / split / name / f"p{i}.jpg", quality=90)
    for j, names in enumerate(edits.all_edits()):
        src = f"train/alpha/p{j % 6}.jpg" if j < 4 else f"test/beta/p{j % 6}.jpg"
        dst = f"test/alpha/e{j}.jpg" if j % 2 else f"train/beta/e{j}.jpg"
        edits.apply(photo_of(root / src), names).save(root / dst, quality=95)
        planted.append({src, dst})
    shutil.copy(root / "train/alpha/p5.jpg", root / "test/alpha/copy.jpg")
    build_store(config_for(root, layers=("pool5",)))
    store = tmp_path / "s.h5"
    result = duplicates(store, "pool5", DuplicateOptions(k=40, min_similarity=-1.0))
    assert [c.keys for c in result.exact] == [("test/alpha/copy.jpg", "train/alpha/p5.jpg")]
    assert result.exact[0].labels == ("leak",)
    assert [c.keys for c in result.clusters if c.exact] == [result.exact[0].keys]
    found = {frozenset(c.keys) for c in result.clusters}
    missing = [p for p in planted if not any(p <= f for f in found)]
    assert not missing
    assert sum(len(c.keys) - 1 for c in result.clusters) == len(planted) + 1  # nothing else
    for cluster in result.clusters:
        splits, classes = set(cluster.splits), set(cluster.classes)
        assert ("leak" in cluster.labels) == (splits == {"train", "test"})
        assert ("conflict" in cluster.labels) == (len(classes) > 1)
    assert set(result.leaked_test_keys()) == {
        k for c in result.clusters if "leak" in c.labels for k in c.keys if k.startswith("test/")
    }


def photo_of(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_exact_copies_need_no_images(tmp_path):
    """A store written from arrays has no sha256 and no images: no exact clusters, and
    without verification every candidate counts."""
    X = clustered(40, 8, 4, seed=0)
    X[7] = X[3]
    store = feature_store(tmp_path / "s.h5", X, labels=["a"] * 20 + ["b"] * 20)
    result = duplicates(store, options=DuplicateOptions(k=1, min_similarity=0.9999, verify=False))
    assert result.exact == ()
    assert [c.keys for c in result.clusters] == [
        ("train/a/img_000003.jpg", "train/a/img_000007.jpg")
    ]
    assert np.isfinite(result.seconds["candidates"])


def test_a_cluster_is_exact_only_when_its_images_share_one_sha256(tmp_path):
    """Byte copies joined with a near copy make a cluster that is not exact; a store written
    from arrays records no sha256, so none of its clusters is."""
    from dataclasses import replace

    from fstore.quality.duplicates import _clusters
    from fstore.quality.rows import store_rows

    rows = store_rows(feature_store(tmp_path / "s.h5", clustered(6, 4, 1)))
    assert not any(c.exact for c in _clusters(rows, np.array([[0, 1], [2, 3]])))
    rows = replace(rows, sha256=np.array(["a", "a", "b", "b", "b", "c"], dtype=object))
    clusters = _clusters(rows, np.array([[0, 1], [2, 3], [3, 5]]))
    assert [(len(c.keys), c.exact) for c in clusters] == [(2, True), (3, False)]
