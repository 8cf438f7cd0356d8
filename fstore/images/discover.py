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
import logging
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fstore.errors import DatasetError

logger = logging.getLogger(__name__)

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


@dataclass
class Discovery:
    """What a folder holds: the images (sorted by key), and the entries skipped with a reason."""

    items: list[ImageItem]
    skipped: dict[str, str] = field(default_factory=dict)


def _not_regular(path: Path) -> str | None:
    """Why ``path`` (an image by its name) cannot be read as a file, or ``None`` if it can.

    A FIFO would block ``open`` forever, a socket or device is no picture; a broken link is left
    to the reader, which records it as unreadable.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}  # fmt: skip
    kind = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
    return f"not a regular file: {kind}"


def _walk(root: Path) -> Discovery:
    found = Discovery([])
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder)
        names = files + [d for d in dirs if Path(d).suffix.lower() in IMAGE_EXTENSIONS]
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = base / name
            key = path.relative_to(root).as_posix()
            reason = _not_regular(path)
            if reason is None:
                found.items.append(ImageItem(key, path))
            else:
                found.skipped[key] = reason
    return found


def discover(root: Path) -> Discovery:
    """Every image file under ``root`` (by extension), sorted by key; errors if none.

    Entries named like images that are not regular files (FIFOs, sockets, devices, a folder
    named ``x.jpg``) are skipped and listed in ``Discovery.skipped`` with the reason.
    """
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    found = _walk(root)
    for key, reason in sorted(found.skipped.items()):
        logger.warning("skipped %s: %s", key, reason)
    if not found.items:
        raise DatasetError(
            f"no images in {root} (expected <class>/<image> or train|test/<class>/<image>)"
        )
    split_layout = is_split_layout(root)
    depth = 3 if split_layout else 2
    misplaced = [it.key for it in found.items if len(Path(it.key).parts) < depth]
    if misplaced:
        where = "train|test/<class>/" if split_layout else "<class>/"
        raise DatasetError(f"image {misplaced[0]} is not inside a class folder ({where}<image>)")
    found.items.sort(key=lambda it: it.key)
    return found


def scan(root: Path) -> list[ImageItem]:
    """The images of :func:`discover`, without the skipped entries."""
    return discover(root).items


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
