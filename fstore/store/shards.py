"""The HDF5 files a store writes, each built in memory and written whole: shard files (``keys``,
``features/<layer>`` and ``record``, what the catalog holds of their images), the view
``fstore.h5`` (a virtual dataset per layer over them, for plain h5py, rewritten when it no
longer matches the catalog), and a whole store written from arrays."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fstore.errors import StoreError
from fstore.store import catalog
from fstore.store.catalog import FileInfo, connect, files, transaction
from fstore.store.layout import Manifest, h5_bytes, shard_path, sidecar, write_file, write_manifest
from fstore.store.reads import _table, view_problem


@dataclass
class ShardRows:
    """A computed shard: an entry per stored row (``features``: (rows, D) per layer), and a dict
    per image with a problem in ``errors`` (``key``, ``reason``, ``sha256``, ``size``,
    ``mtime_ns``, ``stored``: kept anyway, e.g. an unreadable EXIF orientation)."""

    keys: list[str]
    sha256: list[str]
    size: list[int]
    mtime_ns: list[int]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)


class RecordShard(NamedTuple):
    """A shard a file holds: its rows are ``start`` to ``start + rows`` of the file."""

    name: str
    start: int
    rows: int


class RecordRow(NamedTuple):
    """What the catalog holds of a stored row's image (``pos``: its place in the folder walk,
    0 for a build; ``warning``: a problem it was stored despite, else ``None``)."""

    pos: int
    sha256: str
    size: int
    mtime_ns: int
    warning: str | None


class RecordBad(NamedTuple):
    """An image of ``shard`` that has no row, and why."""

    key: str
    shard: str
    reason: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass
class ShardRecord:
    """What the catalog holds of a file's images, kept in the file (dataset ``record``, JSON:
    each entry a list in its named tuple's field order) so that a lost or damaged catalog can
    be rebuilt from the shard files alone.

    ``shards``: each shard the file holds, in row order; ``rows``: one per row of the file;
    ``bad``: the images that have no row.
    """

    shards: list[RecordShard] = field(default_factory=list)
    rows: list[RecordRow] = field(default_factory=list)
    bad: list[RecordBad] = field(default_factory=list)

    def extend(self, other: ShardRecord) -> None:
        """Append ``other``, the record of the rows that follow these."""
        at = len(self.rows)
        self.shards += [s._replace(start=s.start + at) for s in other.shards]
        self.rows += other.rows
        self.bad += other.bad


def shard_record(name: str, rows: ShardRows, pos: list[int] | None = None) -> ShardRecord:
    """The record of one computed shard (``pos``: each row's position, 0 for a build)."""
    notes = {e["key"]: e["reason"] for e in rows.errors if e["stored"]}
    pos = pos or [0] * len(rows.keys)
    return ShardRecord(
        [RecordShard(name, 0, len(rows.keys))],
        [RecordRow(p, sha, size, mtime, notes.get(key)) for p, key, sha, size, mtime
         in zip(pos, rows.keys, rows.sha256, rows.size, rows.mtime_ns)],
        [RecordBad(e["key"], name, e["reason"], e["sha256"], e["size"], e["mtime_ns"])
         for e in rows.errors if not e["stored"]],
    )  # fmt: skip


def read_record(f) -> ShardRecord | None:
    """The record of an open shard file; None for a file written without one."""
    if "record" not in f:
        return None
    data = json.loads(f["record"][()])
    return ShardRecord(
        [RecordShard(*entry) for entry in data["shards"]],
        [RecordRow(*entry) for entry in data["rows"]],
        [RecordBad(*entry) for entry in data["bad"]],
    )


def content_sha256(keys: list[str], features: dict[str, np.ndarray], record: str | None) -> str:
    """sha256 of what a shard file holds: its keys, each layer's values as stored, its record.

    The catalog holds each file's sha256; this one is kept in the file itself (attribute
    ``content_sha256``), so that a file whose values changed is found when the catalog is
    damaged too, and a repair does not take it in.
    """
    digest = hashlib.sha256(json.dumps(list(keys)).encode())
    for layer in sorted(features):
        values = np.ascontiguousarray(features[layer])
        digest.update(json.dumps([layer, values.dtype.str, values.shape]).encode())
        digest.update(values.tobytes())
    digest.update((record or "").encode())
    return digest.hexdigest()


def content_intact(f) -> bool | None:
    """Whether an open shard file still holds what it was written with (``None``: a file
    written without :func:`content_sha256`)."""
    kept = f.attrs.get("content_sha256")
    if kept is None:
        return None
    keys = list(f["keys"].asstr()[()])
    features = {layer: f["features"][layer][()] for layer in f["features"]}
    record = f["record"].asstr()[()] if "record" in f else None
    return content_sha256(keys, features, record) == kept


def write_shard(store: Path, name: str, keys: list[str], features: dict, dtype: str,
                record: ShardRecord | None = None) -> FileInfo:  # fmt: skip
    """Write a shard (or segment) file atomically; returns what the catalog records of it."""
    import h5py

    stored = {layer: np.asarray(values, dtype=dtype) for layer, values in features.items()}
    text = json.dumps(asdict(record)) if record is not None else None

    def fill(f) -> None:
        string = h5py.string_dtype()
        f.create_dataset("keys", data=np.array(keys, dtype=object), dtype=string)
        for layer, values in stored.items():
            f.create_dataset(f"features/{layer}", data=values)
        if text is not None:
            f.create_dataset("record", data=text, dtype=string)
        f.attrs["content_sha256"] = content_sha256(keys, stored, text)

    data, path = h5_bytes(fill), shard_path(store, name)
    write_file(path, data, store)
    sha = hashlib.sha256(data).hexdigest()
    return FileInfo(name, len(keys), len(data), sha, path.stat().st_mtime_ns)


def write_arrays(
    store: Path,
    features: dict[str, np.ndarray],
    keys: list[str],
    class_per_row: list[str],
    split: list[str],
    provenance: dict | None = None,
    dtype: str = "float32",
) -> Path:
    """A new store holding ``features[layer]`` ``(N, ...)``, classes and splits (``train``,
    ``test`` or ``""``), in the given order. Keys become ``<split or 'none'>/<class>/<key>``."""
    store = Path(store)
    if store.exists() or sidecar(store).exists():
        raise StoreError(f"{store} already exists; write_arrays only creates new stores")
    full_keys = [f"{s or 'none'}/{c}/{k}" for k, c, s in zip(keys, class_per_row, split)]
    manifest = Manifest(
        image_root="",
        split_layout=True,
        split={"method": "given", "train_per_class": 0, "seed": 0},
        layers=tuple(features),
        shapes={layer: tuple(int(d) for d in np.shape(v)[1:]) for layer, v in features.items()},
        dtype=dtype,
        fingerprint="arrays",
        provenance=dict(provenance or {}),
    )
    (sidecar(store) / "shards").mkdir(parents=True)
    write_manifest(store, manifest)
    flat = {layer: np.asarray(v).reshape(len(keys), -1) for layer, v in features.items()}
    name = "g000001-s000000"  # one shard, as the first shard of a build is named
    n = len(full_keys)
    rows = ShardRows(full_keys, [""] * n, [0] * n, [0] * n, flat)
    record = shard_record(name, rows, pos=list(range(n)))
    info = write_shard(store, f"{name}.h5", full_keys, flat, dtype, record)
    with closing(connect(store, write=True)) as con:
        with transaction(con, store):
            rows = zip(full_keys, class_per_row, split)
            catalog.add_plan(con, [name], ((*r, name, 0, 0) for r in rows))
            # the rows keep the order they were given, which their keys may not have
            con.executemany("UPDATE images SET pos = ? WHERE key = ?", enumerate(full_keys))
        images = [(k, i, "", 0, 0, None) for i, k in enumerate(full_keys)]
        catalog.commit_shard(con, store, name, info, images)
        refresh_view(store, con, manifest)
    return store


def refresh_view(
    store: Path, con: sqlite3.Connection, manifest: Manifest, force: bool = False
) -> bool:
    """Rewrite ``fstore.h5`` unless it serves what the catalog holds (``force``: anyway);
    True if it was rewritten. Its sha256 goes into the catalog for ``fstore verify``."""
    import h5py

    if not force and not view_problem(store, con, exact=True):
        return False
    identity, version = catalog.identity(con)
    t, sizes, string = _table(con), files(con), h5py.string_dtype()
    n, file, row = len(t["keys"]), t["file"], t["row"]
    # each run of consecutive rows of one file is one mapping of a virtual dataset
    breaks = np.flatnonzero((file[1:] != file[:-1]) | (np.diff(row) != 1)) + 1
    runs = list(zip(np.r_[0, breaks], np.r_[breaks, n])) if n else []

    def fill(f) -> None:
        f.attrs.update(catalog_version=version, catalog_id=identity, sidecar=sidecar(store).name)
        f.create_dataset("manifest", data=manifest.to_json(), dtype=string)
        f.create_dataset("classes", data=np.array(t["classes"], dtype=object), dtype=string)
        for name in "keys", "split":
            f.create_dataset(name, data=t[name], dtype=string)
        f.create_dataset("labels", data=t["labels"].astype(np.int64))
        for layer, shape in manifest.shapes.items():
            dim = int(np.prod(shape))
            layout = h5py.VirtualLayout(shape=(n, dim), dtype=manifest.dtype)
            for start, end in runs:
                # relative to the view's own folder, where HDF5 looks first (docs/store.md)
                path, rows = f"{sidecar(store).name}/shards/{file[start]}", sizes[file[start]].rows
                source = h5py.VirtualSource(path, f"features/{layer}", shape=(rows, dim))
                layout[start:end] = source[row[start] : row[start] + end - start]
            dataset = f.create_virtual_dataset(f"features/{layer}", layout, fillvalue=np.nan)
            dataset.attrs["shape"] = np.asarray(shape, np.int64)

    data = h5_bytes(fill)
    write_file(store, data, store)
    catalog.set_meta(con, store, "view_sha256", hashlib.sha256(data).hexdigest())
    return True
