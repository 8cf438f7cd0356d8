"""Reading a store: one layer's features with labels, keys and split, shard by shard.

The catalog says which rows exist, in folder order, and where each one's features are; the
shard files are read one at a time, each once, straight into the result. So a read holds at
most one shard besides its result, and never meets the open-file limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.store import catalog
from fstore.store.catalog import ROWS_QUERY, connect
from fstore.store.features import FeatureSet
from fstore.store.layout import Manifest, open_h5, read_manifest, sidecar, store_bytes


def pick_layer(store: Path, manifest: Manifest, layer: str | None) -> str:
    """``layer`` if the store has it; without one, the store's only layer, else ``fc7``."""
    layers = manifest.layers
    if layer is None and len(layers) == 1:
        return layers[0]
    if layer is None and "fc7" in layers:
        return "fc7"
    if layer is None:
        raise StoreError(
            f"store {store} holds several layers ({', '.join(layers)}): pick one with --layer"
        )
    if layer not in layers:
        raise StoreError(f"store {store} has no layer {layer!r}; it holds: {', '.join(layers)}")
    return layer


def store_layers(store: Path) -> list[str]:
    """The layers a store holds, in forward order."""
    return list(_manifest(Path(store)).layers)


def resolve_layer(store: Path, layer: str | None) -> str:
    return pick_layer(store, _manifest(Path(store)), layer)


def _manifest(store: Path) -> Manifest:
    manifest = read_manifest(store)
    if manifest is None:
        raise StoreError(f"no store at {store} (build one with: fstore build IMAGES --layer fc7)")
    return manifest


@dataclass
class _Rows:
    """Stored rows as columns, in folder order; ``classes`` of the whole store."""

    pos: np.ndarray
    keys: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    file: np.ndarray
    row: np.ndarray
    classes: tuple[str, ...]
    bytes: dict[str, int]

    def __len__(self) -> int:
        return len(self.keys)


def _table(
    con: sqlite3.Connection, tail: str = "ORDER BY i.pos", params: tuple = (), classes=None
) -> _Rows:
    """The stored rows that ``tail`` (ORDER BY, LIMIT...) selects, and the store's classes
    (a scan of every image: a caller reading page after page passes them)."""
    rows = con.execute(f"{ROWS_QUERY} {tail}", params).fetchall()
    if classes is None:
        query = "SELECT DISTINCT class FROM images WHERE class IS NOT NULL ORDER BY class"
        classes = tuple(r[0] for r in con.execute(query))
    pos, keys, names, split, files, at = (list(c) for c in zip(*rows)) if rows else [[]] * 6
    return _Rows(
        pos=np.asarray(pos, np.int64),
        keys=np.asarray(keys, dtype=object),
        labels=np.searchsorted(np.asarray(classes, dtype=object), np.asarray(names, dtype=object)),
        split=np.asarray(split, dtype=object),
        file=np.asarray(files, dtype=object),
        row=np.asarray(at, np.int64),
        classes=classes,
        bytes=dict(con.execute("SELECT name, bytes FROM files").fetchall()),
    )


def _feature_set(store: Path, manifest: Manifest, layer: str, rows: _Rows) -> FeatureSet:
    """One layer of ``rows`` as a FeatureSet, reading each shard file once, one at a time."""
    X = np.empty((len(rows.keys), int(np.prod(manifest.shapes[layer]))), np.float32)
    order = np.argsort(rows.file, kind="stable")
    groups = np.split(order, np.flatnonzero(rows.file[order][1:] != rows.file[order][:-1]) + 1)
    folder = sidecar(store) / "shards"
    for at in groups if len(order) else ():
        name, src = rows.file[at[0]], rows.row[at]
        with open_h5(folder / name, f"shard {name}", store) as f:
            try:
                if f.id.get_filesize() != rows.bytes[name]:
                    raise ValueError(
                        f"{f.id.get_filesize()} bytes, the catalog has {rows.bytes[name]}"
                    )
                first, last = int(src.min()), int(src.max()) + 1
                if last - first <= 4 * len(src):  # one block read beats HDF5 point selections
                    X[at] = f["features"][layer][first:last][src - first]
                else:
                    X[at[np.argsort(src)]] = f["features"][layer][np.sort(src)]
            except (OSError, KeyError, ValueError) as exc:
                raise StoreError(
                    f"store {store} is damaged: shard {name} does not read ({exc}); run: "
                    f"fstore verify --store {store}, then fstore build to recompute it"
                ) from None
    shape = tuple(int(s) for s in manifest.shapes[layer])
    y = rows.labels.astype(np.int64)
    provenance = dict(manifest.provenance)
    return FeatureSet(
        layer, X, y, rows.keys, rows.split, rows.classes, shape=shape, provenance=provenance
    )


def load_features(
    store: Path | str, layer: str | None = None, rows: np.ndarray | slice | None = None
) -> FeatureSet:
    """One layer's features (float32) with labels, keys and split, in the folder's order.

    ``rows`` selects rows: a slice (read as one range) or indices, in any order. A missing,
    truncated or unreadable shard raises :class:`StoreError`; nothing reads back as NaN.
    """
    store = Path(store)
    manifest = read_manifest(store)
    if manifest is None:
        raise StoreError(f"no store at {store} (build one with: fstore build IMAGES --layer fc7)")
    layer = pick_layer(store, manifest, layer)
    with closing(connect(store)) as con:
        table = _table(con)
    if rows is not None:
        picked = np.arange(len(table.keys))[rows]
        for name in ("pos", "keys", "labels", "split", "file", "row"):
            setattr(table, name, getattr(table, name)[picked])
    return _feature_set(store, manifest, layer, table)


def iter_features(
    store: Path | str, layer: str | None = None, batch_rows: int = 65_536
) -> Iterator[FeatureSet]:
    """A layer in batches of ``batch_rows`` rows, in folder order, for data larger than memory
    (e.g. scikit-learn ``partial_fit``); memory stays at one batch and one shard."""
    if batch_rows < 1:
        raise StoreError("batch_rows must be at least 1")
    store = Path(store)
    manifest = _manifest(store)
    layer = pick_layer(store, manifest, layer)
    after, classes = -1, None
    with closing(connect(store)) as con:
        while len(
            table := _table(
                con, "AND i.pos > ? ORDER BY i.pos LIMIT ?", (after, batch_rows), classes
            )
        ):
            after, classes = int(table.pos[-1]), table.classes
            yield _feature_set(store, manifest, layer, table)


@dataclass(frozen=True)
class StoreInfo:
    """What ``fstore info`` reports about a store."""

    path: str
    image_root: str
    images: int
    planned: int
    pending: int
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

    @property
    def incomplete(self) -> str:
        """The line saying that a build is unfinished; empty for a complete store."""
        if not self.pending:
            return ""
        done = self.planned - self.pending
        return (
            f"incomplete: {done} of {self.planned} planned images; run the same fstore build "
            "to finish"
        )


def store_info(store: Path) -> StoreInfo:
    """Summarise a store: images, classes, splits, layers, provenance, errors, size."""
    store = Path(store)
    manifest = _manifest(store)
    with closing(connect(store)) as con:
        n = catalog.counts(con)
        per_class = con.execute(
            "SELECT class, COUNT(row) FROM images GROUP BY class ORDER BY class"
        )
        class_counts = {c: k for c, k in per_class if c is not None}
        splits = dict(
            con.execute(
                "SELECT COALESCE(NULLIF(split, ''), '(none)'), COUNT(*) FROM images "
                "WHERE row IS NOT NULL GROUP BY 1 ORDER BY 1"
            )
        )
        errors = [
            {"key": k, "reason": r, "stored": s is not None}
            for k, r, s in con.execute("SELECT key, error, row FROM images WHERE error IS NOT NULL")
        ]
        failed = [
            {"shard": s, "reason": r, "images": k}
            for s, r, k in con.execute(
                "SELECT s.name, s.failed, COUNT(*) FROM shards s JOIN images i ON i.shard = s.name "
                "WHERE s.failed IS NOT NULL AND s.file IS NULL GROUP BY s.name"
            )
        ]
        n_files = con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    return StoreInfo(
        path=str(store),
        image_root=manifest.image_root,
        images=n["stored"],
        planned=n["planned"],
        pending=n["pending"],
        classes=tuple(class_counts),
        class_counts=class_counts,
        splits=splits,
        layers={
            layer: {"shape": list(shape), "dim": int(np.prod(shape))}
            for layer, shape in manifest.shapes.items()
        },
        dtype=manifest.dtype,
        shards=n_files,
        errors=errors,
        provenance=manifest.provenance,
        size_bytes=store_bytes(store),
        failed_shards=failed,
    )
