"""The HDF5 files a store writes, each built in memory and written whole: shard files (``keys``
and ``features/<layer>``), the view ``fstore.h5`` (a virtual dataset per layer over them, for
plain h5py, rewritten when the catalog changed), and a whole store written from arrays."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.store import catalog
from fstore.store.catalog import FileInfo, connect, files, transaction
from fstore.store.layout import Manifest, h5_bytes, shard_path, sidecar, write_file, write_manifest
from fstore.store.reads import _table


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


def write_shard(store: Path, name: str, keys: list[str], features: dict, dtype: str) -> FileInfo:
    """Write a shard (or segment) file atomically; returns what the catalog records of it."""
    import h5py

    def fill(f) -> None:
        f.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype())
        for layer, values in features.items():
            f.create_dataset(f"features/{layer}", data=np.asarray(values, dtype=dtype))

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
        split={"method": "folders" if all(split) else "none", "train_per_class": 0, "seed": 0},
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
    info = write_shard(store, f"{name}.h5", full_keys, flat, dtype)
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


def refresh_view(store: Path, con: sqlite3.Connection, manifest: Manifest) -> bool:
    """Rewrite ``fstore.h5`` if the catalog changed since it was written; True if it was."""
    import h5py

    version = catalog.version(con)
    try:
        with h5py.File(store, "r") as f:
            if f.attrs.get("catalog_version") == version:
                return False
    except OSError:  # no view yet, or a damaged one
        pass
    t, sizes, string = _table(con), files(con), h5py.string_dtype()
    n, file, row = len(t["keys"]), t["file"], t["row"]
    # each run of consecutive rows of one file is one mapping of a virtual dataset
    breaks = np.flatnonzero((file[1:] != file[:-1]) | (np.diff(row) != 1)) + 1
    runs = list(zip(np.r_[0, breaks], np.r_[breaks, n])) if n else []

    def fill(f) -> None:
        f.attrs["catalog_version"] = version
        f.create_dataset("manifest", data=manifest.to_json(), dtype=string)
        f.create_dataset("classes", data=np.array(t["classes"], dtype=object), dtype=string)
        for name in "keys", "split":
            f.create_dataset(name, data=t[name], dtype=string)
        f.create_dataset("labels", data=t["labels"].astype(np.int64))
        for layer, shape in manifest.shapes.items():
            dim = int(np.prod(shape))
            layout = h5py.VirtualLayout(shape=(n, dim), dtype=manifest.dtype)
            for start, end in runs:
                path, rows = f"{sidecar(store).name}/shards/{file[start]}", sizes[file[start]].rows
                source = h5py.VirtualSource(path, f"features/{layer}", shape=(rows, dim))
                layout[start:end] = source[row[start] : row[start] + end - start]
            dataset = f.create_virtual_dataset(f"features/{layer}", layout, fillvalue=np.nan)
            dataset.attrs["shape"] = np.asarray(shape, np.int64)

    write_file(store, h5_bytes(fill), store)
    return True
