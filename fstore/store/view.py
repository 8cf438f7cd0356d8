"""``fstore.h5``: the store as plain h5py reads it, derived from the catalog.

It holds ``keys``, ``labels``, ``classes``, ``split`` and ``features/<layer>``, a virtual
dataset per layer over the shard files, in the folder's order. It is rewritten (in memory,
then one atomic write) when a build or a compaction ends, and records the catalog version it
shows, so an unchanged store is not rewritten. fstore itself reads the catalog and the shards,
never this view (an unopenable source of a virtual dataset reads back as fill values).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from fstore.store.catalog import files, meta
from fstore.store.layout import FORMAT, FORMAT_VERSION, Manifest, h5_bytes, sidecar, write_file
from fstore.store.reads import _table


def view_version(store: Path) -> int | None:
    """The catalog version the view shows; None without a readable view."""
    import h5py

    try:
        with h5py.File(store, "r") as f:
            return int(f.attrs["catalog_version"])
    except (OSError, KeyError):
        return None


def refresh_view(store: Path, con: sqlite3.Connection, manifest: Manifest) -> bool:
    """Rewrite ``fstore.h5`` if the catalog changed since it was written; True if it was."""
    version = meta(con, "version")
    if view_version(store) == version:
        return False
    rows, sizes = _table(con), files(con)
    write_file(store, h5_bytes(lambda f: _fill(f, store, manifest, rows, sizes, version)), store)
    return True


def _fill(f, store: Path, manifest: Manifest, rows, sizes: dict, version: int) -> None:
    import h5py

    string = h5py.string_dtype()
    f.attrs.update(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "catalog_version": version,
            "layers": json.dumps(list(manifest.layers)),
        }
    )
    f.create_dataset("manifest", data=manifest.to_json(), dtype=string)
    f.create_dataset("keys", data=rows.keys, dtype=string)
    f.create_dataset("labels", data=rows.labels.astype(np.int64))
    f.create_dataset("classes", data=np.array(rows.classes, dtype=object), dtype=string)
    f.create_dataset("split", data=rows.split, dtype=string)
    runs = _runs(rows.file, rows.row)
    for layer, shape in manifest.shapes.items():
        dim = int(np.prod(shape))
        layout = h5py.VirtualLayout(shape=(len(rows.keys), dim), dtype=manifest.dtype)
        for name, first, at, length in runs:
            source = h5py.VirtualSource(
                f"{sidecar(store).name}/shards/{name}",
                f"features/{layer}",
                shape=(sizes[name].rows, dim),
            )
            layout[at : at + length] = source[first : first + length]
        dataset = f.create_virtual_dataset(f"features/{layer}", layout, fillvalue=np.nan)
        dataset.attrs["shape"] = np.asarray(shape, np.int64)


def _runs(file: np.ndarray, row: np.ndarray) -> list[tuple[str, int, int, int]]:
    """Consecutive rows of one file: (file, its first row, first row of the view, length)."""
    if not len(row):
        return []
    breaks = (file[1:] != file[:-1]) | (np.diff(row) != 1)
    starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
    ends = np.concatenate([starts[1:], [len(row)]])
    return [(str(file[s]), int(row[s]), int(s), int(e - s)) for s, e in zip(starts, ends)]
