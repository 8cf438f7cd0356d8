"""Train/test splits: the store's (checked) and K random per-class splits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from synthetic_features import gaussian_classes

from fstore.classifiers.protocol import SplitProtocol, make_splits, random_splits, store_split
from fstore.errors import ClassifierError


def test_store_split_uses_the_stored_split(blobs):
    split = store_split(blobs)
    assert set(blobs.split[split.train]) == {"train"}
    assert set(blobs.split[split.test]) == {"test"}
    assert len(split.train) + len(split.test) == len(blobs.y)


def test_store_without_test_split_is_a_clear_error(blobs):
    no_test = blobs.subset(blobs.split == "train")
    with pytest.raises(ClassifierError, match="no test split.*--splits"):
        store_split(no_test)


def test_store_without_any_split_is_a_clear_error(blobs):
    unsplit = replace(blobs, split=np.full(len(blobs.y), "", dtype=object))
    with pytest.raises(ClassifierError, match="no train/test split.*--splits K"):
        store_split(unsplit)


def test_store_with_one_class_is_a_clear_error(blobs):
    one = blobs.subset(blobs.y == 1)
    with pytest.raises(ClassifierError, match="single class \\('class1'\\)"):
        store_split(one)
    with pytest.raises(ClassifierError, match="single class"):
        random_splits(one, SplitProtocol(2, 5))


def test_random_splits_draw_per_class_counts_and_cover_all_rows(blobs):
    protocol = SplitProtocol(splits=4, per_class=7, seed=3)
    splits = random_splits(blobs, protocol)
    assert len(splits) == 4
    for split in splits:
        assert np.intersect1d(split.train, split.test).size == 0
        assert np.union1d(split.train, split.test).size == len(blobs.y)
        counts = np.bincount(blobs.y[split.train], minlength=3)
        assert counts.tolist() == [7, 7, 7]
    assert not all(np.array_equal(splits[0].train, s.train) for s in splits[1:])


def test_random_splits_are_seeded(blobs):
    a = random_splits(blobs, SplitProtocol(3, 5, seed=1))
    b = random_splits(blobs, SplitProtocol(3, 5, seed=1))
    c = random_splits(blobs, SplitProtocol(3, 5, seed=2))
    assert all(np.array_equal(x.train, y.train) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.train, y.train) for x, y in zip(a, c, strict=True))


def test_random_splits_ignore_the_store_split():
    fs = gaussian_classes(n_train=3, n_test=20)
    train = np.concatenate([s.train for s in random_splits(fs, SplitProtocol(5, 10))])
    assert (fs.split[train] == "test").any()


def test_per_class_too_large_names_the_class():
    fs = gaussian_classes(n_train=5, n_test=3)
    with pytest.raises(ClassifierError, match="only 8 images.*--per-class 7"):
        random_splits(fs, SplitProtocol(1, per_class=8))


def test_bad_protocol_values():
    with pytest.raises(ClassifierError):
        SplitProtocol(splits=0)
    with pytest.raises(ClassifierError):
        SplitProtocol(per_class=0)


def test_make_splits_chooses(blobs):
    assert [s.name for s in make_splits(blobs, None)] == ["store"]
    assert len(make_splits(blobs, SplitProtocol(2, 4))) == 2
