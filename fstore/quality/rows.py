"""What the quality tools need to know about a store's rows, read from its catalog without the
features: keys in the store's order, class, split, sha256, and the catalog's version."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.store import read_manifest
from fstore.store.catalog import ROW_COLUMNS, STORED_ROWS, connect, version

#: Rows of a layer read at a time: a block of queries against them stays near 64 MiB.
BATCH_ROWS = 16_384


@dataclass(frozen=True)
class StoreRows:
    """The stored rows of a store, in the order ``load_features`` gives them."""

    store: Path
    keys: np.ndarray  # object array of str
    classes: np.ndarray  # object array: each row's class name ("" where unlabelled)
    split: np.ndarray  # "train", "test" or ""
    sha256: np.ndarray  # "" where the store did not record one (write_arrays)
    version: int
    image_root: str
    files_digest: str  # the sha256 of the shard files' sha256: changes with any row's data
    file: np.ndarray  # object array: the shard file that holds each row
    row: np.ndarray  # int64: the row's place in that file

    def __len__(self) -> int:
        return len(self.keys)

    def position(self) -> dict[str, int]:
        """key → row in this order."""
        return {k: i for i, k in enumerate(self.keys)}

    def image(self, key: str) -> Path:
        """The image file of ``key``; a store built from arrays has none."""
        if not self.image_root:
            raise StoreError(f"store {self.store} was written from arrays: it has no image files")
        return Path(self.image_root) / key


def store_rows(store: Path | str) -> StoreRows:
    """Keys, classes, splits and sha256 of every stored row, in the store's order."""
    store = Path(store)
    manifest = read_manifest(store, required=True)
    # One scan of the table in key order (its primary key: no sort, no lookup per row), then
    # a stable sort by position: the store's order, ``ORDER`` (pos, then key).
    query = f"SELECT {ROW_COLUMNS}, COALESCE(i.sha256, '') {STORED_ROWS} ORDER BY i.key"
    with closing(connect(store)) as con:
        rows = con.execute(query).fetchall()
        catalog_version = version(con)
        files = sorted(con.execute("SELECT sha256 FROM files"))
    cells = np.array(rows, dtype=object).reshape(-1, 7)
    cells = cells[np.argsort(cells[:, 0].astype(np.int64), kind="stable")]
    return StoreRows(
        store=store,
        keys=cells[:, 1].copy(),
        classes=cells[:, 2].copy(),
        split=cells[:, 3].copy(),
        sha256=cells[:, 6].copy(),
        version=catalog_version,
        image_root=manifest.image_root,
        files_digest=hashlib.sha256(repr(files).encode()).hexdigest(),
        file=cells[:, 4].copy(),
        row=cells[:, 5].astype(np.int64),
    )


class RowReader:
    """Some rows of a layer, read by their place in the shard files (known from the catalog
    once), each file opened once: a few rows of a large store cost a few point reads, not a
    scan of the catalog or of whole files."""

    def __init__(self, rows: StoreRows, layer: str):
        self.rows, self.layer, self.open = rows, layer, {}

    def read(self, wanted: np.ndarray) -> np.ndarray:
        """The store rows ``wanted`` (any order, repeats allowed), float32."""
        from fstore.store.layout import READ_ERRORS, open_h5, shard_path, unreadable_shard

        store = self.rows.store
        unique, back = np.unique(np.asarray(wanted, np.int64), return_inverse=True)
        files, out = self.rows.file[unique], None
        for name in np.unique(files):
            at = np.flatnonzero(files == name)  # ascending rows of one file: ascending places
            if name not in self.open:
                self.open[name] = open_h5(shard_path(store, name), f"shard {name}", store)
            src = self.rows.row[unique[at]]
            order = np.argsort(src, kind="stable")  # HDF5 reads points in ascending order
            try:
                values = self.open[name]["features"][self.layer][src[order]]
            except READ_ERRORS as exc:
                raise unreadable_shard(store, name, exc) from None
            if out is None:
                out = np.empty((len(unique), int(np.prod(values.shape[1:]))), np.float32)
            out[at[order]] = values.reshape(len(at), -1)
        if out is None:
            return np.zeros((0, 0), np.float32)
        return out[back.reshape(-1)]

    def close(self) -> None:
        for f in self.open.values():
            f.close()
        self.open.clear()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32), so that a dot product is the cosine; a zero row
    stays zero (similarity 0 to everything)."""
    X = np.asarray(X, np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1).astype(np.float32)


def stream_unit_rows(
    store: Path, layer: str, batch_rows: int = BATCH_ROWS
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, unit-length rows) of a layer, batch after batch, in the store's order."""
    from fstore.store import iter_features

    start = 0
    for batch in iter_features(store, layer, batch_rows=batch_rows):
        yield start, unit_rows(batch.X)
        start += len(batch.X)
