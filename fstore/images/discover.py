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

from fstore.errors import DatasetError
from fstore.fsutil import name_text, printable

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


class ImageItem:
    """One image: its key (POSIX path under the root) and path; ``size`` and ``mtime_ns`` as
    discovery saw them (-1 when not known), so planning need not stat the file again.

    ``path`` may be given as a string: it becomes a :class:`~pathlib.Path` when first asked
    for, so that discovering a large folder (and planning a build that has nothing to do)
    builds no ``Path`` per image.
    """

    __slots__ = ("key", "_path", "size", "mtime_ns")

    def __init__(self, key: str, path: Path | str, size: int = -1, mtime_ns: int = -1) -> None:
        self.key, self._path, self.size, self.mtime_ns = key, path, size, mtime_ns

    @property
    def path(self) -> Path:
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageItem):
            return NotImplemented
        return self.key == other.key and str(self._path) == str(other._path)

    def __hash__(self) -> int:
        return hash((self.key, str(self._path)))

    def __repr__(self) -> str:
        return f"ImageItem({self.key!r}, {str(self._path)!r})"


def is_split_layout(root: Path) -> bool:
    return all((root / name).is_dir() for name in SPLIT_NAMES)


@dataclass
class Discovery:
    """What a folder holds: the images (sorted by key), and the entries skipped with a reason."""

    items: list[ImageItem]
    skipped: dict[str, str] = field(default_factory=dict)


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))  # fmt: skip


def _not_regular(mode: int) -> str:
    """Why an entry named like an image, with this ``st_mode``, cannot be read as a file.

    A FIFO would block ``open`` forever, a socket or device is no picture.
    """
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"not a regular file: {kind}"


def _is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def _visit(entry: os.DirEntry, key: str, found: Discovery) -> None:
    """Record one entry named like an image, with the stat ``scandir`` keeps for it.

    A broken link is left to the reader, which records it as unreadable.
    """
    try:
        info = entry.stat()  # follows links; cached on the entry, the one stat of the file
    except OSError:
        found.items.append(ImageItem(key, entry.path))
        return
    if stat.S_ISREG(info.st_mode):
        found.items.append(ImageItem(key, entry.path, info.st_size, info.st_mtime_ns))
    else:
        found.skipped[key] = _not_regular(info.st_mode)


def _walk(root: Path) -> Discovery:
    """One ``os.scandir`` walk (hidden entries skipped, linked folders not followed, as
    ``os.walk`` does), one stat per image-named entry."""
    found = Discovery([])
    pending = [(str(root), "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            name = name_text(entry.name)
            if name.startswith("."):
                continue
            if _is_image_name(name):
                _visit(entry, prefix + name, found)
            try:
                is_dir = entry.is_dir() and not entry.is_symlink()
            except OSError:
                is_dir = False
            if is_dir:
                pending.append((entry.path, prefix + name + "/"))
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
    found.items.sort(key=lambda it: it.key)
    _drop_twins(found)
    for key, reason in sorted(found.skipped.items()):
        logger.warning("skipped %s: %s", printable(key), reason)
    if not found.items:
        raise DatasetError(
            f"no images in {root} (expected <class>/<image> or train|test/<class>/<image>)"
        )
    split_layout = is_split_layout(root)
    depth = 3 if split_layout else 2
    misplaced = [it.key for it in found.items if it.key.count("/") + 1 < depth]
    if misplaced:
        where = "train|test/<class>/" if split_layout else "<class>/"
        raise DatasetError(
            f"image {printable(misplaced[0])} is not inside a class folder ({where}<image>)"
        )
    return found


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (by extension, hidden entries skipped), sorted, in any
    layout: the files ``predict`` and ``classify`` take from a folder."""
    return sorted(Path(item.path) for item in _walk(Path(folder)).items)


def _drop_twins(found: Discovery) -> None:
    """A name that is not UTF-8 is stored as text with ``\\xNN`` escapes; should another file
    bear that very text as its name, the second of the two is skipped, with the reason."""
    items = found.items
    twins = [i for i in range(1, len(items)) if items[i].key == items[i - 1].key]
    for i in reversed(twins):
        why = "its name, with the bytes that are not UTF-8 escaped, is another file's"
        found.skipped[items[i].key + " (2)"] = why
        del items[i]


def scan(root: Path) -> list[ImageItem]:
    """The images of :func:`discover`, without the skipped entries."""
    return discover(root).items
