"""Image folders: the two layouts fstore reads, labels, and train/test splits.

* ``<root>/<class>/<image>``: classes from folder names; no split unless one is drawn.
* ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``: the split comes from the
  folders (as in 15-Scene's standard split).

A random split (``train_per_class`` images per class, the rest test, drawn with a seed) can
replace either. Keys are POSIX paths relative to the root, and every list is sorted by key, so
the same folder always gives the same order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fstore.errors import DatasetError

#: Files with these extensions are treated as images; anything else in the folder is ignored.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".jp2", ".j2k", ".heic", ".heif", ".avif", ".ico", ".tga",
})  # fmt: skip
SPLIT_NAMES = ("train", "test")


@dataclass(frozen=True)
class SplitSpec:
    """How images are assigned to train/test.

    ``method`` is ``folders`` (from ``train/`` and ``test/``), ``random`` (``train_per_class``
    per class drawn with ``seed``, the rest test) or ``none``.
    """

    method: str = "folders"
    train_per_class: int = 0
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SplitSpec:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ImageItem:
    key: str
    path: Path


def is_split_layout(root: Path) -> bool:
    return all((root / name).is_dir() for name in SPLIT_NAMES)


def scan(root: Path) -> list[ImageItem]:
    """Every image file under ``root`` (by extension), sorted by key; errors if none."""
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    items = [
        ImageItem(path.relative_to(root).as_posix(), path)
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not path.is_dir()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
    if not items:
        raise DatasetError(
            f"no images in {root} (expected <class>/<image> or train|test/<class>/<image>)"
        )
    split_layout = is_split_layout(root)
    depth = 3 if split_layout else 2
    misplaced = [it.key for it in items if len(Path(it.key).parts) < depth]
    if misplaced:
        where = "train|test/<class>/" if split_layout else "<class>/"
        raise DatasetError(f"image {misplaced[0]} is not inside a class folder ({where}<image>)")
    return sorted(items, key=lambda it: it.key)


def class_of(key: str, split_layout: bool) -> str:
    parts = key.split("/")
    return parts[1] if split_layout else parts[0]


def folder_split(key: str, split_layout: bool) -> str:
    return key.split("/")[0] if split_layout else ""


def assign_splits(
    keys: list[str], class_names: list[str], spec: SplitSpec, split_layout: bool
) -> np.ndarray:
    """The split of each key (``train``, ``test`` or ``""``), deterministic for ``spec``."""
    if spec.method == "folders":
        return np.array([folder_split(k, split_layout) for k in keys], dtype=object)
    split = np.full(len(keys), "", dtype=object)
    if spec.method == "none":
        return split
    rng = np.random.default_rng(spec.seed)
    names = np.asarray(class_names, dtype=object)
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    for name in sorted(set(class_names)):
        members = order[names[order] == name]
        chosen = rng.permutation(len(members))[: spec.train_per_class]
        split[members] = "test"
        split[members[chosen]] = "train"
    return split
