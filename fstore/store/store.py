"""The feature store on disk: immutable HDF5 shards, and an index over them that plain h5py reads.

Layout of a store ``fstore.h5``::

    fstore.h5                 the index: keys, labels, split, provenance, where each row is
                              stored, a catalog of the shard files (rows, bytes, sha256), and
                              per layer a virtual dataset (N, D) over them (README "The store")
    fstore.h5.d/manifest.json what the store is built from (model, layers, preprocessing, ...)
    fstore.h5.d/plans/        the fixed lists of images of every shard, one file per build
    fstore.h5.d/journal/      the index's journal: one entry per commit since the last fold,
                              holding the files added and removed (see :func:`commit_index`)
    fstore.h5.d/shards/       HDF5 files, never modified: one per finished shard
                              (``g<generation>-s<index>.h5``), or one segment holding many
                              compacted shards (``m<generation>-s<index>.h5``, named for its
                              first shard; see :mod:`compact`)

Every file is written under a temporary name, fsynced and renamed into place (see
``../shared/notes/STORE.md``: appending to one HDF5 file in place does not survive ``kill -9``).
The shard files and plans are the truth; the index is derived from them, extended by journal
entries and rewritten atomically, so it opens at every moment and a reader sees what was
committed when it opened it. Features
are read from the shard files one file at a time (:func:`load_features`), never through the
virtual datasets, whose unopenable sources read back as NaN without an error.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fstore.errors import StoreError
from fstore.fsutil import atomic_write_bytes, commit_file, tmp_path_for
from fstore.images.discover import SplitSpec, assign_splits, class_of
from fstore.images.reader import file_sha256
from fstore.store.features import FeatureSet

FORMAT = "fstore-store"
FORMAT_VERSION = 2
DEFAULT_STORE = "fstore.h5"


def default_store_path() -> Path:
    """``$FSTORE_STORE``, else ``./fstore.h5``."""
    return Path(os.environ.get("FSTORE_STORE") or DEFAULT_STORE)


def sidecar(store: Path) -> Path:
    return store.with_name(store.name + ".d")


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Manifest:
    """What a store is built from; fixed at its first build, checked by every later one.

    ``fingerprint`` identifies the features: two builds whose fingerprints differ would compute
    different features for the same image, so they may not fill the same store.
    """

    image_root: str
    split_layout: bool
    split: SplitSpec
    layers: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    dtype: str
    fingerprint: str
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "image_root": self.image_root,
            "split_layout": self.split_layout,
            "split": json.loads(self.split.to_json()),
            "layers": list(self.layers),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "dtype": self.dtype,
            "fingerprint": self.fingerprint,
            "provenance": self.provenance,
        }
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise StoreError("not an fstore store manifest")
        return cls(
            image_root=d["image_root"],
            split_layout=d["split_layout"],
            split=SplitSpec(**d["split"]),
            layers=tuple(d["layers"]),
            shapes={k: tuple(v) for k, v in d["shapes"].items()},
            dtype=d["dtype"],
            fingerprint=d["fingerprint"],
            provenance=d["provenance"],
        )


_FAULTS = (
    ((errno.ENOSPC, errno.EDQUOT), "No space left", "the disk is full", "free some space"),
    ((errno.EROFS,), "Read-only file system", "the store's folder is read-only",
     "make it writable"),
    ((errno.EACCES, errno.EPERM), "Permission denied", "the store's folder is not writable",
     "make it writable"),
    ((errno.EFBIG,), "File too large", "a file size limit was reached", "raise the limit"),
)  # fmt: skip


def fault(exc: BaseException | None) -> tuple[str, str] | None:
    """(what happened, what to do) for a write error the user can fix (a full disk, a folder
    that is not writable); None for anything else.

    h5py reports the OS error inside its message, and a failed write inside ``with h5py.File``
    often surfaces as a RuntimeError from closing the file, the OSError as its context.
    """
    while exc is not None:
        if isinstance(exc, OSError | RuntimeError) and not isinstance(exc, FileNotFoundError):
            text = str(exc)
            for codes, words, reason, fix in _FAULTS:
                code = getattr(exc, "errno", None)
                if code in codes or words in text or any(f"errno = {c}," in text for c in codes):
                    return reason, fix
        exc = exc.__context__
    return None


def _small_write(path: Path, data: bytes, store: Path, what: str) -> None:
    """An atomic write of a small file; a fault is one line (nothing else has changed)."""
    try:
        atomic_write_bytes(path, data)
    except (OSError, RuntimeError) as exc:
        found = fault(exc)
        tmp_path_for(path).unlink(missing_ok=True)
        if found is None:
            raise
        raise StoreError(
            f"{found[0]} while writing {what} of {store}; nothing is lost; {found[1]}, then run "
            "the same fstore build again"
        ) from None


def read_manifest(store: Path) -> Manifest | None:
    path = sidecar(store) / "manifest.json"
    if not path.exists():
        return None
    return Manifest.from_json(path.read_text())


def write_manifest(store: Path, manifest: Manifest) -> None:
    data = manifest.to_json().encode()
    _small_write(sidecar(store) / "manifest.json", data, store, "the manifest")


# --------------------------------------------------------------------------- plans


def read_plans(store: Path) -> list[tuple[int, list[list[str]]]]:
    """Every build's plan as (generation, shards), each shard a list of keys, oldest first."""
    folder = sidecar(store) / "plans"
    if not folder.is_dir():
        return []
    plans = []
    for path in sorted(folder.glob("gen-*.json")):
        data = json.loads(path.read_text())
        plans.append((int(data["generation"]), data["shards"]))
    return plans


def write_plan(store: Path, generation: int, shards: list[list[str]]) -> None:
    folder = sidecar(store) / "plans"
    folder.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"generation": generation, "shards": shards})
    _small_write(folder / f"gen-{generation:06d}.json", data.encode(), store, "the build plan")


def shard_name(generation: int, index: int) -> str:
    """The file name of planned shard ``index`` of build ``generation``."""
    return f"g{generation:06d}-s{index:06d}.h5"


def segment_name(first_shard: str, shards: int) -> str:
    """The file name of a segment holding ``shards`` shards from ``first_shard`` on.

    A segment that replaces another always holds more shards, so its name is new.
    """
    generation, index = parse_shard_name(first_shard)
    return f"m{generation:06d}-s{index:06d}-n{shards:06d}.h5"


def parse_shard_name(name: str) -> tuple[int, int]:
    """(generation, index) of a name made by :func:`shard_name` (or of a segment's first)."""
    generation, rest = name[1:].split("-s", 1)
    return int(generation), int(rest[:6])


def shard_path(store: Path, name: str) -> Path:
    return sidecar(store) / "shards" / name


# --------------------------------------------------------------------------- rows


@dataclass
class ShardRows:
    """Rows of images as columns: the one bag of columns for shards, segments and the index.

    ``keys``, ``sha256``, ``size``, ``mtime_ns`` hold one entry per stored row; ``features`` the
    layer arrays ``(rows, D)`` while a shard is written (empty when read back without them);
    ``errors`` one dict per bad image with ``key``, ``reason``, ``sha256``, ``size``,
    ``mtime_ns`` and ``stored`` (True when the image was stored despite the problem, e.g.
    unreadable EXIF orientation).
    """

    keys: list[str]
    sha256: list[str]
    size: list[int]
    mtime_ns: list[int]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)


@dataclass
class Part(ShardRows):
    """One planned shard as stored: its rows sit in file ``file`` from row ``offset`` on.

    A shard file holds one part; a segment made by compaction holds many, in plan order.
    """

    name: str = ""
    file: str = ""
    offset: int = 0


#: Before parts had a file and an offset, a finished shard's metadata had its own class.
ShardSummary = Part


@dataclass
class LiveRows(ShardRows):
    """The live rows of a store: for each key, the newest record; ``sources`` says where each
    row's features are, as (file name, row in that file)."""

    sources: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class FileInfo:
    """A shard or segment file as the index records it (``verify`` checks all four)."""

    name: str
    rows: int
    size: int
    sha256: str
    mtime_ns: int = 0


def str_data(values: Iterable[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def _strings(dataset) -> list[str]:
    return list(dataset.asstr()[()]) if len(dataset) else []


ERROR_STRINGS = ("key", "reason", "sha256")
ERROR_INTS = ("size", "mtime_ns")


def _write_errors(group, errors: list[dict]) -> None:
    """One entry per bad image (or image stored with a warning), as columns."""
    import h5py

    for name in ERROR_STRINGS:
        group.create_dataset(name, data=str_data(e[name] for e in errors),
                             dtype=h5py.string_dtype())  # fmt: skip
    group.create_dataset("stored", data=np.array([e["stored"] for e in errors], bool))
    for name in ERROR_INTS:
        group.create_dataset(name, data=np.array([e[name] for e in errors], np.int64))


def _read_errors(group) -> list[dict]:
    columns = {name: _strings(group[name]) for name in ERROR_STRINGS}
    columns["stored"] = [bool(v) for v in group["stored"][()]]
    columns.update({name: [int(v) for v in group[name][()]] for name in ERROR_INTS})
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def write_columns(f, rows: ShardRows) -> None:
    import h5py

    string = h5py.string_dtype()
    f.create_dataset("keys", data=str_data(rows.keys), dtype=string)
    f.create_dataset("sha256", data=str_data(rows.sha256), dtype=string)
    f.create_dataset("size", data=np.asarray(rows.size, dtype=np.int64))
    f.create_dataset("mtime_ns", data=np.asarray(rows.mtime_ns, dtype=np.int64))
    _write_errors(f.create_group("errors"), rows.errors)


def concat_rows(parts: list[Part]) -> ShardRows:
    """Every row and error of ``parts``, one after the other (features left out)."""
    return ShardRows(
        [k for p in parts for k in p.keys],
        [s for p in parts for s in p.sha256],
        [s for p in parts for s in p.size],
        [m for p in parts for m in p.mtime_ns],
        errors=[e for p in parts for e in p.errors],
    )


def _read_columns(f) -> ShardRows:
    return ShardRows(
        _strings(f["keys"]),
        _strings(f["sha256"]),
        [int(v) for v in f["size"][()]],
        [int(v) for v in f["mtime_ns"][()]],
        errors=_read_errors(f["errors"]),
    )


# --------------------------------------------------------------------------- shard files


def create_h5(path: Path):
    """Open a new HDF5 file for writing (every store file is created here; tests fake faults)."""
    import h5py

    return h5py.File(path, "w")


def commit_hashed(tmp: Path, final: Path, rows: int) -> FileInfo:
    """Hash and commit a finished temporary file (fsync, rename, fsync the folder)."""
    stat = tmp.stat()  # a rename keeps size and mtime
    info = FileInfo(final.name, rows, stat.st_size, file_sha256(tmp), stat.st_mtime_ns)
    commit_file(tmp, final)
    return info


def write_shard(path: Path, rows: ShardRows, dtype: str, attrs: dict) -> FileInfo:
    """Write a shard atomically: temporary name, fsync, rename, fsync the folder.

    Returns the file's size and sha256, which the index records for ``fstore verify``. On any
    error the temporary file is removed, and nothing else has changed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        with create_h5(tmp) as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            write_columns(f, rows)
            group = f.create_group("features")
            for layer, values in rows.features.items():
                group.create_dataset(layer, data=np.asarray(values, dtype=dtype))  # contiguous
        return commit_hashed(tmp, path, len(rows.keys))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_file_parts(path: Path) -> list[Part]:
    """The parts a shard or segment file holds, read from the file itself (no features)."""
    import h5py

    with h5py.File(path, "r") as f:
        columns = _read_columns(f)
        if "parts" in f:
            names = _strings(f["parts/name"])
            counts = [int(v) for v in f["parts/rows"][()]]
            error_counts = [int(v) for v in f["parts/errors"][()]]
        else:
            names, counts, error_counts = [path.name], [len(columns.keys)], [len(columns.errors)]
    return _split_parts(columns, path.name, names, counts, error_counts)


def _split_parts(
    columns: ShardRows, file: str, names: list[str], counts: list[int], error_counts: list[int]
) -> list[Part]:
    parts, row, err = [], 0, 0
    for name, count, n_err in zip(names, counts, error_counts):
        end = row + count
        parts.append(Part(columns.keys[row:end], columns.sha256[row:end], columns.size[row:end],
                          columns.mtime_ns[row:end], errors=columns.errors[err : err + n_err],
                          name=name, file=file, offset=row))  # fmt: skip
        row, err = end, err + n_err
    return parts


def remove_temporaries(store: Path) -> int:
    """Delete temporary files left by a killed writer and shard files a finished compaction
    replaced (returns how many), and move files that do not open into ``damaged/``. Only a
    build or compaction holding the store's lock calls it."""
    return clean_store(store)[0]


def clean_store(store: Path) -> tuple[int, StoreState]:
    """:func:`remove_temporaries`, also returning the store's state after it (as
    :func:`load_state` would read it again), so that a build reads the state once."""
    count, state = 0, StoreState({}, {})
    for folder in (
        sidecar(store),
        sidecar(store) / "shards",
        sidecar(store) / "plans",
        store.parent,
    ):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                if folder == store.parent and not tmp.name.startswith(f".{store.name}."):
                    continue
                tmp.unlink(missing_ok=True)
                count += 1
    if (sidecar(store) / "shards").is_dir():
        catalog = read_catalog(store)  # entries of another base: a fold killed before removing
        count += _remove_journal(store, catalog.index_id if catalog else "")
        state = load_state(store)
        for name in state.obsolete:
            shard_path(store, name).unlink(missing_ok=True)
            count += 1
        if state.damaged:  # kept for a look, out of the way; their shards get recomputed
            (sidecar(store) / "damaged").mkdir(exist_ok=True)
        for name, _ in state.damaged:
            os.replace(shard_path(store, name), sidecar(store) / "damaged" / name)
        state.obsolete, state.damaged = [], []
    return count, state


def failed_path(store: Path, name: str) -> Path:
    return sidecar(store) / "failed" / f"{name}.json"


def record_failed_shard(store: Path, name: str, keys: list[str], reason: str) -> None:
    """Mark a shard as failed (the next build tries it again); shown by ``fstore info``."""
    path = failed_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps({"shard": name, "reason": reason, "keys": keys}).encode())


def failed_shards(store: Path) -> list[dict]:
    folder = sidecar(store) / "failed"
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# --------------------------------------------------------------------------- state


@dataclass
class StoreState:
    """What is stored, from the files on disk, with the index as a cache of their contents.

    ``parts`` maps each finished planned shard to where it is stored, in plan order; ``files``
    the files holding them. A file that does not open (HDF5 refuses a truncated file) is
    ``damaged`` and its shards count as not done (the next build recomputes them); a file whose
    shards a later segment holds (a compaction killed before deleting it) is ``obsolete``.
    """

    parts: dict[str, Part]
    files: dict[str, FileInfo]
    obsolete: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    index_current: bool = False

    # Mapping-like access by shard name, as ``finished_shards`` returned before.
    def __contains__(self, name: object) -> bool:
        return name in self.parts

    def __getitem__(self, name: str) -> Part:
        return self.parts[name]

    def __iter__(self):
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def values(self):
        return self.parts.values()

    def ordered(self) -> list[Part]:
        return [self.parts[name] for name in sorted(self.parts)]


def _on_disk(store: Path) -> dict[str, tuple[int, int]]:
    folder = sidecar(store) / "shards"
    if not folder.is_dir():
        return {}
    with os.scandir(folder) as entries:
        return {
            e.name: (e.stat().st_size, e.stat().st_mtime_ns)
            for e in entries
            if e.name.endswith(".h5") and not e.name.startswith(".")
        }


def _look_at_file(store: Path, name: str, stat: tuple[int, int], known: FileInfo | None):
    """A stored file the catalog does not vouch for (new since the index, or with another size
    or mtime): ``(FileInfo, parts or None)`` to use it, or why it is damaged.

    Shard files are never rewritten, so a file the catalog knows under another size or mtime
    is kept only if its sha256 is still the recorded one (e.g. a store copied without its
    times); one with other bytes is damaged, and its shards are recomputed.
    """
    path = shard_path(store, name)
    size, mtime = stat
    if known is not None and known.sha256:
        sha = file_sha256(path)
        if sha != known.sha256:
            return "changed since the index recorded it (other size, mtime and sha256)"
        return FileInfo(name, known.rows, size, sha, mtime), None
    try:  # HDF5 refuses a truncated file
        parts = read_file_parts(path)
    except (OSError, KeyError, ValueError) as exc:
        return f"does not read ({type(exc).__name__}: {exc})"
    rows = sum(len(p.keys) for p in parts)
    return FileInfo(name, rows, size, file_sha256(path), mtime), parts


def load_state(store: Path) -> StoreState:
    """The store's finished shards: one listing of the shard folder, the index's catalog for
    the files it already knows (same name, size and mtime), and a look at each file it does not
    (new since the index was written, or changed: see :func:`_look_at_file`)."""
    catalog = read_catalog(store)
    files, by_file, damaged, looked = {}, {}, [], False
    for name, (size, mtime) in sorted(_on_disk(store).items()):
        known = catalog.files.get(name) if catalog else None
        if known is not None and (known.size, known.mtime_ns) == (size, mtime):
            files[name], by_file[name] = known, catalog.parts_by_file.get(name, [])
            continue
        found, looked = _look_at_file(store, name, (size, mtime), known), True
        if isinstance(found, str):
            damaged.append((name, found))
            continue
        files[name], by_file[name] = (
            found[0],
            (found[1] if found[1] is not None else catalog.parts_by_file.get(name, [])),
        )
    parts, obsolete = _owned_parts(by_file)
    for name in obsolete:
        del files[name]
    missing = sorted(set(catalog.files) - set(files) - set(obsolete)) if catalog else []
    missing = [m for m in missing if not any(p.name in parts for p in catalog.parts_by_file[m])]
    current = bool(catalog) and set(catalog.files) == set(files) and not (damaged or looked)
    return StoreState(parts, files, obsolete, damaged, missing, current)


def finished_shards(store: Path) -> StoreState:
    """The finished shards by name, in plan order (a :class:`StoreState`)."""
    return load_state(store)


# --------------------------------------------------------------------------- catalog


@dataclass
class Catalog:
    """The index's record of every stored file and of every part they hold: the base file's
    catalog with the journal's entries applied (see :func:`commit_index`)."""

    files: dict[str, FileInfo]
    parts_by_file: dict[str, list[Part]]
    index_id: str = ""
    base_rows: int = 0
    journal: list[str] = field(default_factory=list)
    journal_rows: int = 0
    manifest: str = ""
    key: tuple = ()  # which store and state of its files this is (see read_catalog)

    def parts(self) -> list[Part]:
        """The parts in plan order, each from the file that holds it."""
        return list(_owned_parts(self.parts_by_file)[0].values())


def _owned_parts(by_file: dict[str, list[Part]]) -> tuple[dict[str, Part], list[str]]:
    """Each part from the file that holds it (segments before the shard files they replaced),
    in plan order; and the files all of whose parts another file holds (obsolete)."""
    owner: dict[str, str] = {}
    for name in sorted(by_file, key=lambda n: (-len(by_file[n]), n)):  # segments first
        for part in by_file[name]:
            owner.setdefault(part.name, name)
    obsolete = [n for n, ps in by_file.items() if ps and all(owner[p.name] != n for p in ps)]
    parts = {p.name: p for n, ps in by_file.items() for p in ps if owner[p.name] == n}
    return {name: parts[name] for name in sorted(parts)}, obsolete


def _write_catalog(f, parts: list[Part], files: dict[str, FileInfo]) -> None:
    import h5py

    string = h5py.string_dtype()
    g = f.create_group("catalog")
    infos = [files[name] for name in sorted(files)]
    g.create_dataset("file_name", data=str_data(i.name for i in infos), dtype=string)
    g.create_dataset("file_rows", data=np.array([i.rows for i in infos], np.int64))
    g.create_dataset("file_size", data=np.array([i.size for i in infos], np.int64))
    g.create_dataset("file_mtime_ns", data=np.array([i.mtime_ns for i in infos], np.int64))
    g.create_dataset("file_sha256", data=str_data(i.sha256 for i in infos), dtype=string)
    g.create_dataset("part_name", data=str_data(p.name for p in parts), dtype=string)
    g.create_dataset("part_file", data=str_data(p.file for p in parts), dtype=string)
    g.create_dataset("part_offset", data=np.array([p.offset for p in parts], np.int64))
    g.create_dataset("part_rows", data=np.array([len(p.keys) for p in parts], np.int64))
    g.create_dataset("part_errors", data=np.array([len(p.errors) for p in parts], np.int64))
    write_columns(g.create_group("rows"), concat_rows(parts))


def _catalog_files(g) -> list[FileInfo]:
    names = _strings(g["file_name"])  # indexes before file_mtime_ns: 0, i.e. look at the file
    mtimes = g["file_mtime_ns"][()] if "file_mtime_ns" in g else [0] * len(names)
    infos = zip(names, g["file_rows"][()], g["file_size"][()], _strings(g["file_sha256"]),
                mtimes)  # fmt: skip
    return [FileInfo(n, int(r), int(s), h, int(m)) for n, r, s, h, m in infos]


def _catalog_parts(g) -> list[Part]:
    columns = _read_columns(g["rows"])
    counts = [int(v) for v in g["part_rows"][()]]
    error_counts = [int(v) for v in g["part_errors"][()]]
    parts = _split_parts(columns, "", _strings(g["part_name"]), counts, error_counts)
    for part, file, offset in zip(parts, _strings(g["part_file"]), g["part_offset"][()]):
        part.file, part.offset = file, int(offset)
    return parts


_catalog_cache: dict[str, tuple[tuple, Catalog | None]] = {}


def read_catalog(store: Path) -> Catalog | None:
    """The catalog of the index at ``store`` (base and journal); None when there is no
    readable current index.

    Cached per process while the index is the same (the base is only ever replaced whole, so a
    new base is a new inode, and journal entries are only ever added or removed whole; a
    commit of this process updates the cache); callers get their own dicts to change.
    """
    for _ in range(3):  # a fold may remove journal entries between the listing and the read
        key = _index_key(store)
        if key is None:
            return None
        cached = _catalog_cache.get(str(store))
        if cached is None or cached[0] != key:
            try:
                cached = (key, _read_catalog(store, key[3]))
            except FileNotFoundError:
                continue
            if cached[1] is not None:
                cached[1].key = (str(store.absolute()), *key)
            _catalog_cache.clear()
            _catalog_cache[str(store)] = cached
        return _copy(cached[1])
    return None


def forget_cached_index() -> None:
    """Drop this process's cached catalog and live index, so that the next read starts from
    the files as a new process would (for benchmarks and tests)."""
    _catalog_cache.clear()
    _view_cache.clear()


def _index_key(store: Path) -> tuple | None:
    try:
        stat = store.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, tuple(_journal_names(store)))


def _copy(catalog: Catalog | None) -> Catalog | None:
    if catalog is None:
        return None
    by_file = {k: list(v) for k, v in catalog.parts_by_file.items()}
    return replace(catalog, files=dict(catalog.files), parts_by_file=by_file,
                   journal=list(catalog.journal))  # fmt: skip


def _remember(store: Path, catalog: Catalog) -> None:
    """Cache the catalog this process just committed (saves reading it back)."""
    key = _index_key(store)
    if key is not None:
        catalog.key = (str(store.absolute()), *key)
        _catalog_cache.clear()
        _catalog_cache[str(store)] = (key, _copy(catalog))


def _read_catalog(store: Path, journal: tuple[str, ...]) -> Catalog | None:
    import h5py

    try:
        with h5py.File(store, "r") as f:
            if f.attrs.get("format_version") != FORMAT_VERSION or "catalog" not in f:
                return None
            files = _catalog_files(f["catalog"])
            parts = _catalog_parts(f["catalog"])
            index_id = str(f.attrs.get("index_id", ""))
            manifest = scalar_str(f["manifest"])
    except (OSError, KeyError):
        return None
    catalog = _base_catalog(index_id, files, parts, manifest)
    for name in journal:
        if index_id and name.startswith(f"j-{index_id}-"):
            _apply_entry(catalog, journal_dir(store) / name)
    return catalog


def _base_catalog(index_id: str, files: list[FileInfo], parts: list[Part],
                  manifest: str) -> Catalog:  # fmt: skip
    """The catalog of a base index, before any journal entry."""
    by_file: dict[str, list[Part]] = {info.name: [] for info in files}
    for part in parts:
        by_file.setdefault(part.file, []).append(part)
    return Catalog({info.name: info for info in files}, by_file, index_id,
                   sum(_rows(p) for p in parts), manifest=manifest)  # fmt: skip


def _rows(part: Part) -> int:
    return len(part.keys) + len(part.errors)


# --------------------------------------------------------------------------- journal

#: A commit of the index appends a journal entry (only the files added and removed since the
#: last commit) while the journal holds at most this share of the base's rows and at most
#: ``MAX_JOURNAL`` entries; past either, it folds everything into a new base. Folds then happen
#: each time the store has grown by this share, so their total work is linear in the rows.
FOLD_FRACTION = 0.25
MAX_JOURNAL = 64
#: At the end of a build the index is folded whenever the store holds at most this many rows
#: (about 0.3 s): small stores always leave a base that plain h5py reads completely.
SMALL_INDEX_ROWS = 65_536


def journal_dir(store: Path) -> Path:
    return sidecar(store) / "journal"


def _journal_names(store: Path) -> list[str]:
    try:
        with os.scandir(journal_dir(store)) as entries:
            return sorted(e.name for e in entries if e.name.startswith("j-") and
                          e.name.endswith(".h5"))  # fmt: skip
    except FileNotFoundError:
        return []
    except OSError as exc:
        _raise_if_too_many_files(exc, "the index's journal")
        raise


def _apply_entry(catalog: Catalog, path: Path) -> None:
    """Apply one journal entry read from its file."""
    import h5py

    with h5py.File(path, "r") as f:
        removed = _strings(f["removed"])
        added = _catalog_files(f["catalog"])
        parts = _catalog_parts(f["catalog"])
        manifest = scalar_str(f["manifest"])
    _apply(catalog, path.name, added, parts, removed, manifest)


def _apply(catalog: Catalog, entry: str, added: list[FileInfo], parts: list[Part],
           removed: list[str], manifest: str) -> None:  # fmt: skip
    """Apply journal entry ``entry``: removed files go, added files (with their parts) come,
    replacing any of the same name."""
    for name in removed + [i.name for i in added]:
        catalog.files.pop(name, None)
        catalog.parts_by_file.pop(name, None)
    for info in added:
        catalog.files[info.name] = info
        catalog.parts_by_file[info.name] = []
    for part in parts:
        catalog.parts_by_file.setdefault(part.file, []).append(part)
    catalog.journal.append(entry)
    catalog.journal_rows += sum(_rows(p) for p in parts)
    catalog.manifest = manifest


def commit_index(
    store: Path,
    manifest: Manifest,
    parts: list[Part],
    files: dict[str, FileInfo],
    *,
    final: bool = False,
    fold: bool = False,
    may_fold: bool = True,
) -> str:
    """Make the index say what ``parts`` (in plan order) and ``files`` say: ``"journal"`` when
    it appended a journal entry with only the files added and removed since the last commit,
    ``"fold"`` when it rewrote the base (:func:`write_index`; see ``FOLD_FRACTION``),
    ``"current"`` when it had nothing to do, ``"deferred"`` when it should fold and may not.

    ``final``: the end of a build or compaction (a small store folds); ``fold``: fold any
    pending journal (``fstore compact``); ``may_fold=False``: a build's writer that folded
    recently (see :class:`write.Writer`) rather writes nothing now than fold again.
    """
    catalog = read_catalog(store)
    if catalog is None or not catalog.index_id:
        write_index(store, manifest, parts, files)
        return "fold"
    added = {name: info for name, info in files.items() if catalog.files.get(name) != info}
    removed = sorted(set(catalog.files) - set(files))
    new_parts = [p for p in parts if p.file in added]
    journal_rows = catalog.journal_rows + sum(_rows(p) for p in new_parts)
    fold = fold or (final and sum(_rows(p) for p in parts) <= SMALL_INDEX_ROWS)
    manifest_json = manifest.to_json()
    if not added and not removed and manifest_json == catalog.manifest:
        if not (fold and catalog.journal):
            return "current"
    if (
        fold
        or journal_rows > FOLD_FRACTION * catalog.base_rows
        or (len(catalog.journal) >= MAX_JOURNAL)
    ):
        if not (fold or may_fold):
            return "deferred"
        write_index(store, manifest, parts, files)
        return "fold"
    seq = int(catalog.journal[-1].split("-")[2].split(".")[0]) + 1 if catalog.journal else 1
    name = f"j-{catalog.index_id}-{seq:06d}.h5"
    _write_entry(store, name, manifest, new_parts, added, removed)
    _apply(catalog, name, list(added.values()), new_parts, removed, manifest_json)
    _remember(store, catalog)
    return "journal"


def _write_entry(store: Path, name: str, manifest: Manifest, parts: list[Part],
                 added: dict[str, FileInfo], removed: list[str]) -> None:  # fmt: skip
    """One journal entry, atomically (temporary name, fsync, rename, fsync the folder)."""
    import h5py

    path = journal_dir(store) / name
    path.parent.mkdir(exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        with create_h5(tmp) as f:
            f.create_dataset("manifest", data=manifest.to_json(), dtype=h5py.string_dtype())
            f.create_dataset("removed", data=str_data(removed), dtype=h5py.string_dtype())
            _write_catalog(f, parts, added)
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_journal(store: Path, keep_id: str) -> int:
    """Delete journal entries that belong to another base than ``keep_id`` (folded into it, or
    left by a fold killed before it removed them) and temporaries; returns how many."""
    folder = journal_dir(store)
    if not folder.is_dir():
        return 0
    count = 0
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.name.startswith(f"j-{keep_id}-"):
            path.unlink(missing_ok=True)
            count += 1
    return count


# --------------------------------------------------------------------------- index


@dataclass
class IndexView:
    """The live index as columns (what :func:`write_index` writes into the base, and what
    readers compute from base and journal while a journal is pending)."""

    manifest: Manifest
    rows: LiveRows
    labels: np.ndarray
    classes: list[str]
    split: np.ndarray
    files: list[FileInfo]
    source_file: np.ndarray
    source_row: np.ndarray


def live_rows(parts: list[Part]) -> LiveRows:
    """Resolve parts (in plan order) into live rows: a later record of a key replaces earlier.

    Linear in the rows. When no key is recorded twice (a store built once, or only extended
    with new images), the rows are the parts' rows one after the other (:func:`_concatenated`);
    else one dict insertion per row and per error (:func:`_resolved`).
    """
    recorded = sum(len(p.keys) + sum(not e["stored"] for e in p.errors) for p in parts)
    distinct = {k for p in parts for k in p.keys}
    distinct.update(e["key"] for p in parts for e in p.errors if not e["stored"])
    return _concatenated(parts) if len(distinct) == recorded else _resolved(parts)


def _concatenated(parts: list[Part]) -> LiveRows:
    """:func:`_resolved` for parts that record no key twice, without a dict per row."""
    view = LiveRows(
        [k for p in parts for k in p.keys],
        [s for p in parts for s in p.sha256],
        [int(v) for p in parts for v in p.size],
        [int(v) for p in parts for v in p.mtime_ns],
        errors=[e for p in parts for e in p.errors if not e["stored"]],
        sources=[(p.file, p.offset + row) for p in parts for row in range(len(p.keys))],
    )
    warnings = [e for p in parts for e in p.errors if e["stored"]]
    if warnings:
        _keep_warnings(view, warnings)
    return view


def _keep_warnings(view: LiveRows, warnings: list[dict]) -> None:
    """Warnings (images stored despite a problem) stay while the row is still that image's."""
    position = {key: i for i, key in enumerate(view.keys)}
    for warning in warnings:
        at = position.get(warning["key"])
        if at is not None and view.sha256[at] == warning["sha256"]:
            view.errors.append(warning)


def _resolved(parts: Iterable[Part]) -> LiveRows:
    """Live rows through one dict insertion per row and per error, in plan order."""
    latest: dict[str, tuple | dict] = {}
    warnings = []
    for part in parts:
        for row, key in enumerate(part.keys):
            latest.pop(key, None)
            latest[key] = (part, row)
        for error in part.errors:
            if error["stored"]:
                warnings.append(error)  # a warning: the key's row above is the record
                continue
            latest.pop(error["key"], None)
            latest[error["key"]] = error
    view = LiveRows([], [], [], [])
    for key, record in latest.items():
        if isinstance(record, dict):
            view.errors.append(record)
            continue
        part, row = record
        view.keys.append(key)
        view.sha256.append(part.sha256[row])
        view.size.append(int(part.size[row]))
        view.mtime_ns.append(int(part.mtime_ns[row]))
        view.sources.append((part.file, part.offset + row))
    _keep_warnings(view, warnings)
    return view


def index_view(manifest: Manifest, parts: list[Part], files: dict[str, FileInfo]) -> IndexView:
    """The live index of ``parts`` (in plan order) stored in ``files``: one pass over the rows."""
    view = live_rows(parts)
    class_names = [class_of(k, manifest.split_layout) for k in view.keys]
    classes = sorted(set(class_names))
    class_index = {c: i for i, c in enumerate(classes)}
    infos = [files[name] for name in sorted(files)]
    file_index = {info.name: i for i, info in enumerate(infos)}
    return IndexView(
        manifest=manifest,
        rows=view,
        labels=np.array([class_index[c] for c in class_names], np.int64),
        classes=classes,
        split=assign_splits(view.keys, class_names, manifest.split, manifest.split_layout),
        files=infos,
        source_file=np.array([file_index[s[0]] for s in view.sources], np.int32),
        source_row=np.array([s[1] for s in view.sources], np.int64),
    )


def _runs(file_ids: np.ndarray, rows: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Group consecutive rows of one file: (file id, first file row, first index row, length)."""
    if not len(rows):
        return []
    breaks = (np.diff(file_ids) != 0) | (np.diff(rows) != 1)
    starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
    ends = np.concatenate([starts[1:], [len(rows)]])
    return [(int(file_ids[s]), int(rows[s]), int(s), int(e - s)) for s, e in zip(starts, ends)]


def _write_virtual(f, store: Path, manifest: Manifest, runs: list, files: list[FileInfo]) -> None:
    """Per layer a virtual dataset over the files: for tools that read HDF5; fstore reads the
    files directly (a source that cannot be opened reads back as NaN, without an error)."""
    import h5py

    group = f.create_group("features")
    n = sum(r[3] for r in runs)
    for layer in manifest.layers:
        dim = int(np.prod(manifest.shapes[layer]))
        layout = h5py.VirtualLayout(shape=(n, dim), dtype=manifest.dtype)
        for file_id, first, at, length in runs:
            info = files[file_id]
            source = h5py.VirtualSource(f"{sidecar(store).name}/shards/{info.name}",
                                        f"features/{layer}", shape=(info.rows, dim))  # fmt: skip
            layout[at : at + length] = source[first : first + length]
        dataset = group.create_virtual_dataset(layer, layout, fillvalue=np.nan)
        dataset.attrs["shape"] = np.asarray(manifest.shapes[layer], np.int64)


def write_index(
    store: Path, manifest: Manifest, parts: list[Part], files: dict[str, FileInfo]
) -> LiveRows:
    """Rewrite the base index from the parts (in plan order), atomically, folding the journal
    into it (its entries are deleted after the rename; until then they belong to the old base's
    id and readers ignore them).

    One pass over the rows, written as whole columns; the catalog lets the next build and
    ``verify`` know every file without opening it.
    """
    import uuid

    import h5py

    view = index_view(manifest, parts, files)
    index_id = uuid.uuid4().hex[:12]
    string = h5py.string_dtype()
    tmp = tmp_path_for(store)
    try:
        with create_h5(tmp) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["index_id"] = index_id
            f.attrs["image_root"] = manifest.image_root
            f.attrs["layers"] = json.dumps(list(manifest.layers))
            f.create_dataset("manifest", data=manifest.to_json(), dtype=string)
            write_columns(f, view.rows)
            f.create_dataset("labels", data=view.labels)
            f.create_dataset("classes", data=str_data(view.classes), dtype=string)
            f.create_dataset("split", data=view.split, dtype=string)
            f.create_dataset("sources/file", data=view.source_file)
            f.create_dataset("sources/row", data=view.source_row)
            runs = _runs(view.source_file, view.source_row)
            _write_virtual(f, store, manifest, runs, view.files)
            _write_catalog(f, parts, files)
        commit_file(tmp, store)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _remove_journal(store, index_id)
    _remember(store, _base_catalog(index_id, list(files.values()), parts, manifest.to_json()))
    return view.rows


# --------------------------------------------------------------------------- reading


def open_index(store: Path):
    import h5py

    if not store.exists():
        raise StoreError(f"no store at {store} (build one with: fstore build IMAGES --layer fc7)")
    try:
        f = h5py.File(store, "r")
    except OSError as exc:
        _raise_if_too_many_files(exc, store.name)
        raise StoreError(f"cannot open store {store}: {exc}") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise StoreError(f"{store} is not an fstore store")
    if f.attrs.get("format_version") != FORMAT_VERSION:
        f.close()
        raise StoreError(
            f"store {store} has an index from an older fstore; rewrite it with: "
            f"fstore build --store {store}"
        )
    return f


@dataclass
class IndexReader:
    """The live index for reading: the base file's datasets (read as needed) when no journal
    entry is pending, else the columns computed from base and journal (:func:`index_view`).
    ``keys``, ``labels``, ``split``, ``source_file``, ``source_row`` are h5py datasets (strings
    through ``asstr``) or NumPy arrays; both slice alike."""

    manifest: Manifest
    n: int
    keys: Any
    labels: Any
    split: Any
    source_file: Any
    source_row: Any
    classes: tuple[str, ...]
    files: list[FileInfo]
    errors: list[dict]
    journal: int = 0


@contextmanager
def reading(store: Path) -> Iterator[IndexReader]:
    """The store's live index, for the length of a ``with`` block.

    With no journal entry pending, the base file's own datasets (kept open); else base and
    entries resolved (:func:`_journal_reader`). A fold by another process may replace the base
    and delete its entries at any moment: the base is used alone only if it was still the
    store's index after the journal was listed, and a catalog only if it has entries; else the
    read starts again.
    """
    for _ in range(3):
        with open_index(store) as f:
            index_id = str(f.attrs.get("index_id", ""))
            names = _journal_names(store)
            current = _is_current(store, f)
            pending = index_id and any(n.startswith(f"j-{index_id}-") for n in names)
            if current and not pending:
                yield _base_reader(f)
                return
            catalog = read_catalog(store)  # the whole catalog: only when entries are pending
            if catalog is not None and catalog.journal:
                yield _journal_reader(catalog)
                return
    raise StoreError(
        f"the index of {store} was replaced three times while it was read (another fstore "
        "process is writing it); run this again"
    )


def _is_current(store: Path, f) -> bool:
    """Whether the open index file ``f`` is still the one at ``store`` (not replaced since)."""
    try:
        return os.stat(store).st_ino == os.fstat(f.id.get_vfd_handle()).st_ino
    except OSError:
        return False


def _base_reader(f) -> IndexReader:
    return IndexReader(
        manifest=Manifest.from_json(scalar_str(f["manifest"])),
        n=len(f["keys"]),
        keys=f["keys"].asstr(),
        labels=f["labels"],
        split=f["split"].asstr(),
        source_file=f["sources/file"],
        source_row=f["sources/row"],
        classes=tuple(_strings(f["classes"])),
        files=_catalog_files(f["catalog"]),
        errors=_read_errors(f["errors"]),
    )


_view_cache: dict[tuple, IndexReader] = {}


def _journal_reader(catalog: Catalog) -> IndexReader:
    """Base and journal resolved into live columns: linear in the rows, once per process for
    one state of the index."""
    key = catalog.key  # the store's path, its base file and its entries
    if not key or key not in _view_cache:
        view = index_view(Manifest.from_json(catalog.manifest), catalog.parts(), catalog.files)
        _view_cache.clear()
        _view_cache[key] = IndexReader(
            manifest=view.manifest,
            n=len(view.rows.keys),
            keys=np.array(view.rows.keys, dtype=object),
            labels=view.labels,
            split=view.split,
            source_file=view.source_file,
            source_row=view.source_row,
            classes=tuple(view.classes),
            files=view.files,
            errors=view.rows.errors,
            journal=len(catalog.journal),
        )
    return _view_cache[key]


def store_layers(store: Path) -> list[str]:
    """The layers a store holds, in forward order."""
    with open_index(store) as f:
        return json.loads(f.attrs["layers"])


def resolve_layer(store: Path, layer: str | None) -> str:
    """``layer`` if the store has it; without one, the store's only layer, else ``fc7``."""
    layers = store_layers(store)
    if layer is None:
        if len(layers) == 1:
            return layers[0]
        if "fc7" in layers:
            return "fc7"
        raise StoreError(
            f"store {store} holds several layers ({', '.join(layers)}): pick one with --layer"
        )
    if layer not in layers:
        raise StoreError(f"store {store} has no layer {layer!r}; it holds: {', '.join(layers)}")
    return layer


def _raise_if_too_many_files(exc: OSError, what: str) -> None:
    """One line naming the open-file limit, when that is what failed."""
    import errno
    import resource

    if exc.errno == errno.EMFILE or "Too many open files" in str(exc):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        raise StoreError(
            f"cannot open {what}: too many open files (RLIMIT_NOFILE is {soft}; fstore reads "
            "one shard at a time, so other open files use it up); raise it, e.g. ulimit -n 4096"
        ) from None


def open_shard(store: Path, info: FileInfo):
    """Open one stored file for reading, checking it against the index; one-line errors."""
    import h5py

    path = shard_path(store, info.name)
    fix = f"run: fstore verify --store {store}, then fstore build --store {store} to recompute it"
    try:
        size = path.stat().st_size
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise StoreError(f"store {store} is damaged: shard {info.name} is missing; {fix}") from None
    except OSError as exc:
        _raise_if_too_many_files(exc, f"shard {info.name}")
        raise StoreError(
            f"store {store} is damaged: shard {info.name} does not open; {fix}"
        ) from None
    if size != info.size:
        f.close()
        raise StoreError(
            f"store {store} is damaged: shard {info.name} has {size} bytes, the index recorded "
            f"{info.size}; {fix}"
        )
    return f


def _read_rows(store: Path, index: IndexReader, layer: str, sel: np.ndarray | slice) -> np.ndarray:
    """Rows ``sel`` of the index (a slice or sorted unique indices) of one layer, float32.

    Reads the stored files one at a time (never more than one open), each once, straight into
    the result; so the number of shards never meets the open-file limit.
    """
    file_ids = _column(index.source_file, sel)
    file_rows = _column(index.source_row, sel)
    dim = int(np.prod(index.manifest.shapes[layer]))
    X = np.empty((len(file_ids), dim), dtype=np.float32)
    if not len(file_ids):
        return X
    order = np.argsort(file_ids, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(file_ids[order])) + 1)
    for at in groups:
        info = index.files[int(file_ids[at[0]])]
        with open_shard(store, info) as shard:
            _copy_rows(shard, layer, info, file_rows[at], X, at)
    return X


def _copy_rows(shard, layer: str, info: FileInfo, src: np.ndarray, X, at: np.ndarray) -> None:
    try:
        dataset = shard["features"][layer]
        if dataset.shape != (info.rows, X.shape[1]):
            raise ValueError(f"shape {dataset.shape}, expected {(info.rows, X.shape[1])}")
        first, last = int(src.min()), int(src.max()) + 1
        contiguous = last - first == len(src) and bool((np.diff(src) == 1).all())
        if contiguous and bool((np.diff(at) == 1).all()):
            target = np.s_[int(at[0]) : int(at[-1]) + 1]
            dataset.read_direct(X, np.s_[first:last], target)
        elif last - first <= 4 * len(src):  # one block read beats HDF5 point selections
            X[at] = dataset[first:last][src - first]
        else:
            order = np.argsort(src)
            X[at[order]] = dataset[src[order]]
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(
            f"shard {info.name} does not read ({exc}); run: fstore verify, then fstore build "
            "to recompute it"
        ) from None


def _column(dataset, sel: np.ndarray | slice) -> np.ndarray:
    """Rows ``sel`` of a 1-D dataset: a slice is read as a range; indices are taken from the
    whole column (HDF5 point selections are slow for long index lists). An array (a cached
    live index) gives a copy, so that callers may change what they get."""
    if isinstance(dataset, np.ndarray):
        return dataset[sel].copy()
    return dataset[sel] if isinstance(sel, slice) else np.asarray(dataset[()])[sel]


def _selection(n: int, rows) -> tuple[np.ndarray | slice, np.ndarray | None]:
    """A readable selection for ``rows`` (None, a slice or indices) and the order to undo."""
    if rows is None:
        return slice(0, n), None
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n)
        if step == 1:
            return slice(start, max(start, stop)), None
        rows = np.arange(start, stop, step)
    index = np.asarray(rows, dtype=np.int64)
    if len(index) and (index.min() < -n or index.max() >= n):
        raise StoreError(f"row index out of range for a store of {n} rows")
    index = np.where(index < 0, index + n, index)
    unique, inverse = np.unique(index, return_inverse=True)
    return unique, inverse


def load_features(
    store: Path | str, layer: str | None = None, rows: np.ndarray | slice | None = None
) -> FeatureSet:
    """One layer's features (float32) with labels, keys and split; only that layer is read.

    ``rows`` selects rows: a slice (e.g. ``slice(0, 100_000)``, read as one range) or indices,
    in any order. Features are read from the shard files one at a time; a missing, truncated
    or unreadable shard raises :class:`StoreError` and never reads back as NaN.
    """
    store = Path(store)
    layer = resolve_layer(store, layer)
    with reading(store) as index:
        sel, inverse = _selection(index.n, rows)
        fs = FeatureSet(
            layer=layer,
            X=_read_rows(store, index, layer, sel),
            y=_column(index.labels, sel),
            keys=np.asarray(_column(index.keys, sel), dtype=object),
            split=np.asarray(_column(index.split, sel), dtype=object),
            classes=index.classes,
            shape=tuple(int(s) for s in index.manifest.shapes[layer]),
            provenance=dict(index.manifest.provenance),
        )
    return fs if inverse is None else fs.subset(inverse)


def iter_features(
    store: Path | str, layer: str | None = None, batch_rows: int = 65_536
) -> Iterator[FeatureSet]:
    """A layer in batches of ``batch_rows`` rows, in store order, for data larger than memory
    (e.g. scikit-learn ``partial_fit``): each batch is read as :func:`load_features` reads."""
    if batch_rows < 1:
        raise StoreError("batch_rows must be at least 1")
    store = Path(store)
    n = store_info_rows(store)
    for start in range(0, n, batch_rows):
        yield load_features(store, layer, rows=slice(start, min(n, start + batch_rows)))


def store_info_rows(store: Path) -> int:
    """The number of live rows (images with features) in a store."""
    with reading(store) as index:
        return index.n


@dataclass(frozen=True)
class StoreInfo:
    """What ``fstore info`` reports about a store."""

    path: str
    image_root: str
    images: int
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    splits: dict[str, int]
    layers: dict[str, dict]
    dtype: str
    shards: int
    errors: list[dict]
    provenance: dict
    size_bytes: int
    failed_shards: list[dict] = field(default_factory=list)
    journal: int = 0


def store_info(store: Path) -> StoreInfo:
    """Summarise a store: images, classes, splits, layers and shapes, provenance, errors, size."""
    with reading(store) as index:
        manifest, classes = index.manifest, index.classes
        labels, split = _column(index.labels, slice(None)), list(_column(index.split, slice(None)))
        errors = [{"key": e["key"], "reason": e["reason"], "stored": e["stored"]}
                  for e in index.errors]  # fmt: skip
        n_shards, journal = len(index.files), index.journal
    failed = [{"shard": x["shard"], "reason": x["reason"], "images": len(x["keys"])}
              for x in failed_shards(store)]  # fmt: skip
    return StoreInfo(
        path=str(store),
        image_root=manifest.image_root,
        images=len(labels),
        classes=classes,
        class_counts={c: int((labels == i).sum()) for i, c in enumerate(classes)},
        splits={s or "(none)": split.count(s) for s in sorted(set(split))},
        layers={
            layer: {
                "shape": list(manifest.shapes[layer]),
                "dim": int(np.prod(manifest.shapes[layer])),
            }
            for layer in manifest.layers
        },
        dtype=manifest.dtype,
        shards=n_shards,
        failed_shards=failed,
        journal=journal,
        errors=errors,
        provenance=manifest.provenance,
        size_bytes=store_bytes(store),
    )


def store_bytes(store: Path) -> int:
    """The bytes a store takes on disk: its index and everything in its folder."""
    folder = sidecar(store)
    files = folder.rglob("*") if folder.is_dir() else ()
    return store.stat().st_size + sum(p.stat().st_size for p in files if p.is_file())


def scalar_str(dataset) -> str:
    value = dataset[()]
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- direct writing


def write_arrays(
    store: Path,
    features: dict[str, np.ndarray],
    keys: list[str],
    class_per_row: list[str],
    split: list[str],
    provenance: dict | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a complete store from arrays (one shard); for tests and for importing features.

    Keys become ``<split or 'none'>/<class>/<key>`` so that the stored class and split are the
    given ones. ``features[layer]`` is ``(N, ...)``; its trailing shape is recorded.
    """
    if store.exists() or sidecar(store).exists():
        raise StoreError(f"{store} already exists; write_arrays only creates new stores")
    n = len(keys)
    full_keys = [f"{s or 'none'}/{c}/{k}" for k, c, s in zip(keys, class_per_row, split)]
    shapes = {
        layer: tuple(int(d) for d in np.asarray(v).shape[1:]) for layer, v in features.items()
    }
    spec = SplitSpec("folders") if all(split) else SplitSpec("none")
    manifest = Manifest(
        image_root="",
        split_layout=True,
        split=spec,
        layers=tuple(features),
        shapes=shapes,
        dtype=dtype,
        fingerprint="arrays",
        provenance=dict(provenance or {}),
    )
    sidecar(store).mkdir(parents=True)
    write_manifest(store, manifest)
    write_plan(store, 1, [full_keys])
    rows = ShardRows(
        full_keys,
        [""] * n,
        [0] * n,
        [0] * n,
        {k: np.asarray(v).reshape(n, -1) for k, v in features.items()},
    )
    name = shard_name(1, 0)
    info = write_shard(shard_path(store, name), rows, dtype, {"generation": 1, "index": 0})
    part = Part(rows.keys, rows.sha256, rows.size, rows.mtime_ns, name=name, file=name)
    write_index(store, manifest, [part], {name: info})
    return store
