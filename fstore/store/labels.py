"""A store's class and split of each key: the rule its manifest names, so that the catalog can
be checked against it and rebuilt from the shard files alone (docs/store.md).

Keys are POSIX paths under the image folder: ``<class>/<image>`` or, in a split layout,
``<split>/<class>/<image>``. The split comes from the folders (``folders``), is drawn with a
seed over each whole class (``random``), is empty (``none``), or is the first folder of a key
written by ``write_arrays`` (``given``: ``none`` meaning no split).
"""

from __future__ import annotations

import numpy as np


def class_of(key: str, split_layout: bool) -> str:
    parts = key.split("/")
    return parts[1] if split_layout else parts[0]


def folder_split(key: str, split_layout: bool) -> str:
    return key.split("/")[0] if split_layout else ""


def assign_splits(
    keys: list[str], class_names: list[str], split: dict, split_layout: bool
) -> np.ndarray:
    """The split of each key (``train``, ``test`` or ``""``), deterministic for ``split``
    (a manifest's ``split``: ``method``, ``train_per_class``, ``seed``)."""
    method = split["method"]
    if method == "folders":
        return np.array([folder_split(k, split_layout) for k in keys], dtype=object)
    if method == "given":
        firsts = (k.split("/")[0] for k in keys)
        return np.array(["" if f == "none" else f for f in firsts], dtype=object)
    out = np.full(len(keys), "", dtype=object)
    if method == "none":
        return out
    rng = np.random.default_rng(split["seed"])
    names = np.asarray(class_names, dtype=object)
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    for name in sorted(set(class_names)):
        members = order[names[order] == name]
        chosen = rng.permutation(len(members))[: split["train_per_class"]]
        out[members] = "test"
        out[members[chosen]] = "train"
    return out


def key_labels(keys: list[str], split_layout: bool, split: dict) -> tuple[list[str], np.ndarray]:
    """The class and split of every key of a store (a random split draws over all of them)."""
    classes = [class_of(k, split_layout) for k in keys]
    return classes, assign_splits(keys, classes, split, split_layout)
