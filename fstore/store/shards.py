"""Shard files: one HDF5 file per computed shard (or per segment of many, after compaction).

A shard file holds ``keys`` and ``features/<layer>`` (rows, D), so it reads on its own with
plain h5py. It is built in memory and written whole (:func:`layout.write_file`), so it never
exists half-written; the catalog lists it only after it is on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.store.catalog import FileInfo
from fstore.store.layout import h5_bytes, shard_path, write_file


@dataclass
class ShardRows:
    """A computed shard as columns: one entry per stored row (``features`` ``(rows, D)`` per
    layer), and ``errors``, one dict per image with a problem (``key``, ``reason``, ``sha256``,
    ``size``, ``mtime_ns``, ``stored``: True when it was stored anyway, e.g. an unreadable
    EXIF orientation; an unreadable image has no row)."""

    keys: list[str]
    sha256: list[str]
    size: list[int]
    mtime_ns: list[int]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)

    def catalog_images(self) -> list[tuple]:
        """(key, row, sha256, size, mtime_ns, error) per image, for :func:`catalog.commit_shard`."""
        notes = {e["key"]: e["reason"] for e in self.errors}
        rows = zip(self.keys, range(len(self.keys)), self.sha256, self.size, self.mtime_ns)
        out = [(key, row, sha, size, mtime, notes.get(key)) for key, row, sha, size, mtime in rows]
        bad = (e for e in self.errors if not e["stored"])
        return out + [
            (e["key"], None, e["sha256"], e["size"], e["mtime_ns"], e["reason"]) for e in bad
        ]


def shard_bytes(keys: list[str], features: dict[str, np.ndarray], dtype: str) -> bytes:
    """The HDF5 file of one shard or segment, built in memory."""
    import h5py

    def fill(f) -> None:
        f.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype())
        group = f.create_group("features")
        for layer, values in features.items():
            group.create_dataset(layer, data=np.asarray(values, dtype=dtype))

    return h5_bytes(fill)


def write_shard(store: Path, name: str, keys: list[str], features: dict, dtype: str) -> FileInfo:
    """Write a shard (or segment) file atomically; returns what the catalog records of it."""
    data, path = shard_bytes(keys, features, dtype), shard_path(store, name)
    write_file(path, data, store)
    sha = hashlib.sha256(data).hexdigest()
    return FileInfo(name, len(keys), len(data), sha, path.stat().st_mtime_ns)
