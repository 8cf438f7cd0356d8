"""Which rows train and which test: the store's own split, or K random per-class splits.

The 15-Scene literature reports the mean and standard deviation of the test accuracy over
several random splits of 100 training images per class (the rest test); ``SplitProtocol``
draws those splits from every row of the store, ignoring the store's split, with a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fstore.errors import ClassifierError
from fstore.store import FeatureSet


@dataclass(frozen=True)
class SplitProtocol:
    """``splits`` random splits of ``per_class`` training rows per class, the rest test.

    Attributes:
        splits: number of random splits (K).
        per_class: training rows drawn from each class in each split.
        seed: seed of the draws; the same seed gives the same splits.
    """

    splits: int = 10
    per_class: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.splits < 1:
            raise ClassifierError(f"--splits must be at least 1, not {self.splits}")
        if self.per_class < 1:
            raise ClassifierError(f"--per-class must be at least 1, not {self.per_class}")


@dataclass(frozen=True)
class Split:
    """Row indices of one train/test split; ``name`` says where it came from."""

    train: np.ndarray
    test: np.ndarray
    name: str


def _class_name(fs: FeatureSet, label: int) -> str:
    return fs.classes[label] if 0 <= label < len(fs.classes) else str(label)


def check_training_rows(fs: FeatureSet, train: np.ndarray, what: str = "training split") -> None:
    """Raise a ``ClassifierError`` unless ``train`` rows hold at least two classes."""
    if len(train) == 0:
        raise ClassifierError(
            f"the store's {what} is empty; rebuild the store with a train/test split "
            "or draw random splits with --splits K"
        )
    present = np.unique(fs.y[train])
    if len(present) < 2:
        name = _class_name(fs, int(present[0]))
        raise ClassifierError(
            f"the {what} holds a single class ({name!r}); a classifier needs at least two classes"
        )


def check_every_class_trained(fs: FeatureSet, train: np.ndarray) -> None:
    """Raise a ``ClassifierError`` naming the classes with no row among ``train``: a classifier
    would score each of them 0 and still report a total (an interrupted build does this)."""
    missing = [name for label, name in enumerate(fs.classes) if not np.any(fs.y[train] == label)]
    if missing:
        raise ClassifierError(
            f"the store's training split has no images of {len(missing)} of its "
            f"{len(fs.classes)} classes: {', '.join(missing)}; finish the build (run the same "
            "fstore build)"
        )


def store_split(fs: FeatureSet) -> Split:
    """The store's own train/test split, checked: both parts non-empty, two classes or more."""
    train = np.flatnonzero(fs.split == "train")
    test = np.flatnonzero(fs.split == "test")
    if len(train) == 0 and len(test) == 0:
        raise ClassifierError(
            "the store has no train/test split; rebuild it with one (train/ and test/ folders "
            "or a random split) or pass --splits K to draw K random splits"
        )
    check_training_rows(fs, train)
    check_every_class_trained(fs, train)
    if len(test) == 0:
        raise ClassifierError(
            "the store has no test split; rebuild it with a train/test split "
            "(train/ and test/ folders or a random split) or pass --splits K "
            "to draw K random splits"
        )
    return Split(train, test, "store")


def random_splits(fs: FeatureSet, protocol: SplitProtocol) -> list[Split]:
    """``protocol.splits`` random splits over all rows of ``fs``, ``per_class`` training each.

    Every class must have more than ``per_class`` rows, so that each split tests every class.
    """
    labels, counts = np.unique(fs.y, return_counts=True)
    if len(labels) < 2:
        name = _class_name(fs, int(labels[0])) if len(labels) else "none"
        raise ClassifierError(
            f"the store holds a single class ({name!r}); a classifier needs at least two classes"
        )
    empty = [name for label, name in enumerate(fs.classes) if label not in labels]
    if empty:
        raise ClassifierError(
            f"the store has no images of {len(empty)} of its {len(fs.classes)} classes: "
            f"{', '.join(empty)}; finish the build (run the same fstore build)"
        )
    short = [
        (_class_name(fs, int(c)), int(n))
        for c, n in zip(labels, counts, strict=True)
        if n <= protocol.per_class
    ]
    if short:
        name, n = min(short, key=lambda item: item[1])
        raise ClassifierError(
            f"class {name!r} has only {n} images; --per-class must be below the smallest "
            f"class (try --per-class {max(n - 1, 1)})"
            if n > 1
            else f"class {name!r} has a single image; it cannot be both trained on and tested"
        )
    rng = np.random.default_rng(protocol.seed)
    members = [np.flatnonzero(fs.y == c) for c in labels]
    splits = []
    for k in range(protocol.splits):
        train_parts, test_parts = [], []
        for rows in members:
            order = rng.permutation(len(rows))
            train_parts.append(rows[order[: protocol.per_class]])
            test_parts.append(rows[order[protocol.per_class :]])
        splits.append(
            Split(
                np.sort(np.concatenate(train_parts)),
                np.sort(np.concatenate(test_parts)),
                f"random {k + 1}/{protocol.splits}",
            )
        )
    return splits


def make_splits(fs: FeatureSet, protocol: SplitProtocol | None) -> list[Split]:
    """The store's split when ``protocol`` is None, else the protocol's random splits."""
    return [store_split(fs)] if protocol is None else random_splits(fs, protocol)
