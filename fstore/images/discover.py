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
from bisect import bisect_left
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
    """What a folder holds: per image, ``(key, size, mtime_ns)`` as the walk's one stat saw
    them (-1 where it failed), sorted by key, and the entries skipped with a reason.

    Rows, not an object per image, so that a build with nothing to do compares them with its
    catalog's in one comparison. An image's path is its key under ``root``, except where a
    name on the way is not UTF-8 (``renamed``: key → path).
    """

    root: str
    rows: list[tuple[str, int, int]]
    skipped: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    #: the folders (as key prefixes: ``""``, ``"cat/"``...) that hold images
    folders: set[str] = field(default_factory=set)

    @property
    def keys(self) -> list[str]:
        return [row[0] for row in self.rows]

    def path(self, key: str) -> str:
        return self.renamed.get(key) or os.path.join(self.root, key)

    def item(self, i: int) -> ImageItem:
        key, size, mtime_ns = self.rows[i]
        return ImageItem(key, self.path(key), size, mtime_ns)

    @property
    def items(self) -> list[ImageItem]:
        """One :class:`ImageItem` per image, in key order."""
        return [self.item(i) for i in range(len(self.rows))]

    def index(self, key: str) -> int | None:
        """Where ``key`` is in :attr:`rows` (None if the folder does not hold it)."""
        i = bisect_left(self.rows, (key,))
        return i if i < len(self.rows) and self.rows[i][0] == key else None


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))  # fmt: skip
_SUFFIXES = tuple(IMAGE_EXTENSIONS)


def _not_regular(mode: int) -> str:
    """Why an entry named like an image, with this ``st_mode``, cannot be read as a file.

    A FIFO would block ``open`` forever, a socket or device is no picture.
    """
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"not a regular file: {kind}"


def _walk(root: Path) -> Discovery:
    """One ``os.scandir`` walk (hidden entries skipped, linked folders not followed, as
    ``os.walk`` does) and one stat per image-named entry (``scandir`` keeps it, following
    links); the rows come in no order.

    A broken link is left to the reader, which records it as unreadable. This loop is most of
    the cost of a build with nothing to do, so it is written flat: no call or object per entry
    beyond its row.
    """
    found = Discovery(str(root), [])
    rows, pending = found.rows, [(found.root, "", False)]
    while pending:
        folder, prefix, renamed = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError:
            continue
        before = len(rows)
        for entry in listed:
            name = entry.name
            if name.startswith("."):
                continue
            escaped = renamed  # the key is not the path below a name that was escaped
            if not name.isascii() and (text := name_text(name)) != name:
                name, escaped = text, True
            key = prefix + name
            if name.lower().endswith(_SUFFIXES):  # hidden names, ".jpg" alone, left already
                try:
                    info = entry.stat()
                except OSError:
                    info = None
                if info is None or stat.S_ISREG(info.st_mode):
                    rows.append((key, info.st_size, info.st_mtime_ns) if info else (key, -1, -1))
                    if escaped:
                        found.renamed[key] = entry.path
                    continue
                found.skipped[key] = _not_regular(info.st_mode)
            try:
                is_dir = entry.is_dir() and not entry.is_symlink()
            except OSError:
                is_dir = False
            if is_dir:
                pending.append((entry.path, key + "/", escaped))
        if len(rows) > before:
            found.folders.add(prefix)
    return found


def _sorted(found: Discovery) -> Discovery:
    """Sort the rows by key; should two keys be one text (see :func:`_drop_twins`), the file
    whose name had to be escaped is skipped."""
    found.rows.sort()
    if found.renamed:
        _drop_twins(found)
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
    found = _sorted(_walk(root))
    for key, reason in sorted(found.skipped.items()):
        logger.warning("skipped %s: %s", printable(key), reason)
    if not found.rows:
        raise DatasetError(
            f"no images in {root} (expected <class>/<image> or train|test/<class>/<image>)"
        )
    split_layout = is_split_layout(root)
    depth = 3 if split_layout else 2
    if any(prefix.count("/") + 1 < depth for prefix in found.folders):
        misplaced = [key for key, _, _ in found.rows if key.count("/") + 1 < depth]
        where = "train|test/<class>/" if split_layout else "<class>/"
        raise DatasetError(
            f"image {printable(misplaced[0])} is not inside a class folder ({where}<image>)"
        )
    return found


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (by extension, hidden entries skipped), sorted, in any
    layout: the files ``predict`` and ``classify`` take from a folder."""
    found, paths, taken = _walk(Path(folder)), [], set()
    for key, _, _ in found.rows:  # of two files with one key, one was renamed: each its path
        renamed = key in found.renamed and key not in taken
        taken.add(key)
        paths.append(found.renamed[key] if renamed else os.path.join(found.root, key))
    return sorted(map(Path, paths))


def _drop_twins(found: Discovery) -> None:
    """A name that is not UTF-8 is stored as text with ``\\xNN`` escapes; should another file
    bear that very text as its name, the escaped one is skipped, with the reason (its row is
    told from the other's by its stat)."""
    rows = found.rows
    twins = [i for i in range(1, len(rows)) if rows[i][0] == rows[i - 1][0]]
    for i in reversed(twins):
        key = rows[i][0]
        try:
            info = os.stat(found.renamed.pop(key))
            seen = (key, info.st_size, info.st_mtime_ns)
        except OSError:
            seen = (key, -1, -1)
        found.skipped[key + " (2)"] = (
            "its name, with the bytes that are not UTF-8 escaped, is another file's"
        )
        del rows[i - 1 if rows[i - 1] == seen else i]


def scan(root: Path) -> list[ImageItem]:
    """The images of :func:`discover`, without the skipped entries."""
    return discover(root).items
