"""Reading a store: the catalog says which rows exist, in order, and where; each shard file is
then read once, one at a time, straight into the result (memory: one shard besides it)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.store import catalog
from fstore.store.catalog import ORDER, ROWS_QUERY, connect
from fstore.store.layout import (
    READ_ERRORS,
    Manifest,
    open_h5,
    read_manifest,
    sidecar,
    store_bytes,
    unreadable_shard,
)

logger = logging.getLogger(__name__)


def view_problem(store: Path, con: sqlite3.Connection, exact: bool = False) -> str:
    """Why the view ``fstore.h5`` does not serve what the catalog holds ('' when it does): it
    is missing, does not open, or was written for another catalog version, another catalog
    (one lost and built again) or another store folder (the store was moved or copied, and its
    sources name the old folder). A few attributes are read: cheap enough for every read. An
    unfinished store's view may be older than its catalog, since the build that finishes the
    store writes it; ``exact`` (the writer's question, is there anything to rewrite) counts
    that too."""
    import h5py

    try:
        with h5py.File(store, "r") as f:
            seen = {k: f.attrs.get(k) for k in ("catalog_version", "catalog_id", "sidecar")}
    except FileNotFoundError:
        return "is missing"
    except OSError:
        return "does not open"
    if seen["sidecar"] is None:
        return "was written by an earlier fstore, which did not record the store's folder in it"
    if seen["sidecar"] != sidecar(store).name:
        return (
            f"names the shards of {seen['sidecar']}/, not {sidecar(store).name}/ (the store was "
            "moved or copied): plain h5py would read other files, or NaN"
        )
    identity, current = catalog.identity(con)
    if seen["catalog_id"] != identity:
        return "was written for another catalog (one lost and built again)"
    if seen["catalog_version"] != current and (exact or not catalog.unfinished(con)):
        return "is older than the catalog (a build or compaction was stopped before writing it)"
    return ""


#: What every read of a store says when its view does not serve the catalog: fstore's own
#: reads go through the catalog, but plain h5py reads the view.
STALE_VIEW = (
    "the view {store} {what}; fstore verify --repair --store {store} (or the next fstore "
    "build) rewrites it"
)


def stale_view(store: Path, con: sqlite3.Connection) -> str:
    """The line saying that the view ``fstore.h5`` does not serve this catalog ('' when it
    does)."""
    what = view_problem(store, con)
    return STALE_VIEW.format(store=store, what=what) if what else ""


@dataclass(frozen=True)
class FeatureSet:
    """One layer's features read from a store: ``X`` float32 ``(N, D)`` (conv maps flattened),
    ``y`` int64 indices into ``classes``, ``keys`` (image paths relative to the image folder),
    ``split`` (``train``, ``test`` or ``""``), ``shape`` (one image's output before flattening,
    ``(512, 7, 7)`` for pool5) and the store's ``provenance`` (model sha256, preprocessing...)."""

    layer: str
    X: np.ndarray
    y: np.ndarray
    keys: np.ndarray
    split: np.ndarray
    classes: tuple[str, ...]
    shape: tuple[int, ...] = ()
    provenance: dict = field(default_factory=dict)

    def subset(self, mask: np.ndarray) -> FeatureSet:
        """The rows where ``mask`` is true (or at the given indices)."""
        return replace(
            self, X=self.X[mask], y=self.y[mask], keys=self.keys[mask], split=self.split[mask]
        )

    @property
    def train(self) -> FeatureSet:
        return self.subset(self.split == "train")

    @property
    def test(self) -> FeatureSet:
        return self.subset(self.split == "test")


def damaged_catalog(store: Path, exc: Exception) -> StoreError:
    """The one line for a catalog that SQLite cannot read through."""
    return StoreError(
        f"store {store} is damaged: its catalog does not read ({exc}); run: fstore verify "
        f"--repair --store {store}, which rebuilds it from the shard files"
    )


def pick_layer(store: Path, manifest: Manifest, layer: str | None) -> str:
    """``layer`` if the store has it; without one, the store's only layer, else ``fc7``."""
    layers = manifest.layers
    if layer is None and (len(layers) == 1 or "fc7" in layers):
        return layers[0] if len(layers) == 1 else "fc7"
    if layer is None:
        raise StoreError(
            f"store {store} holds several layers ({', '.join(layers)}): pick one with --layer"
        )
    if layer not in layers:
        raise StoreError(f"store {store} has no layer {layer!r}; it holds: {', '.join(layers)}")
    return layer


def store_layers(store: Path) -> list[str]:
    """The layers a store holds, in forward order."""
    return list(read_manifest(Path(store), required=True).layers)


def _table(con: sqlite3.Connection, tail: str = ORDER, params: tuple = (), classes=None) -> dict:
    """Columns of the rows ``tail`` selects, and the store's ``classes`` (a scan of every image,
    which a caller reading page after page passes back)."""
    rows = con.execute(f"{ROWS_QUERY} {tail}", params).fetchall()
    if classes is None:
        query = "SELECT DISTINCT class FROM images ORDER BY class"
        classes = tuple(r[0] for r in con.execute(query))
    names, cells = ("pos", "keys", "labels", "split", "file", "row"), np.array(rows, dtype=object)
    table = {k: cells.reshape(-1, 6)[:, j].copy() for j, k in enumerate(names)}  # not zip(*rows)
    table["labels"] = np.searchsorted(np.array(classes, dtype=object), table["labels"])
    table["row"] = table["row"].astype(np.int64)
    return {**table, "classes": classes}


def _feature_set(store: Path, manifest: Manifest, layer: str, t: dict) -> FeatureSet:
    """One layer of the rows ``t`` as a FeatureSet, reading each shard file once (HDF5 itself
    refuses a truncated file)."""
    X = np.empty((len(t["keys"]), int(np.prod(manifest.shapes[layer]))), np.float32)
    order = np.argsort(t["file"], kind="stable")
    starts = np.flatnonzero(t["file"][order][1:] != t["file"][order][:-1]) + 1
    for at in np.split(order, starts) if len(order) else ():
        name, src = t["file"][at[0]], t["row"][at]
        with open_h5(sidecar(store) / "shards" / name, f"shard {name}", store) as f:
            try:
                # one block read (at most the file) beats HDF5's point selections
                first = int(src.min())
                X[at] = f["features"][layer][first : int(src.max()) + 1][src - first]
            except READ_ERRORS as exc:
                raise unreadable_shard(store, name, exc) from None
    return FeatureSet(
        layer, X, t["labels"].astype(np.int64), t["keys"], t["split"], t["classes"],
        shape=tuple(int(s) for s in manifest.shapes[layer]), provenance=dict(manifest.provenance),
    )  # fmt: skip


def load_features(
    store: Path | str, layer: str | None = None, rows: np.ndarray | slice | None = None
) -> FeatureSet:
    """One layer's features (float32) with labels, keys and split, in the folder's order;
    ``rows`` selects some: a slice or indices, in any order. A missing, truncated or unreadable
    shard raises :class:`StoreError`; nothing reads back as NaN."""
    store = Path(store)
    manifest = read_manifest(store, required=True)
    layer = pick_layer(store, manifest, layer)
    try:
        with closing(connect(store)) as con:
            table = _table(con)
            if what := view_problem(store, con):  # said, not refused: these rows are right
                logger.warning(STALE_VIEW.format(store=store, what=what))
    except catalog.DAMAGE as exc:
        raise damaged_catalog(store, exc) from None
    if rows is not None:
        picked = np.arange(len(table["keys"]))[rows]
        table.update({k: table[k][picked] for k in ("keys", "labels", "split", "file", "row")})
    return _feature_set(store, manifest, layer, table)


def iter_features(
    store: Path | str, layer: str | None = None, batch_rows: int = 65_536
) -> Iterator[FeatureSet]:
    """A layer in batches of ``batch_rows`` rows, in folder order, for data larger than memory
    (e.g. scikit-learn ``partial_fit``); memory stays at one batch and one shard."""
    if batch_rows < 1:
        raise StoreError("batch_rows must be at least 1")
    store = Path(store)
    manifest = read_manifest(store, required=True)
    layer = pick_layer(store, manifest, layer)
    after, classes, page = (-1, ""), None, f"AND (i.pos, i.key) > (?, ?) {ORDER} LIMIT ?"
    with closing(connect(store)) as con:
        try:
            if what := view_problem(store, con):
                logger.warning(STALE_VIEW.format(store=store, what=what))
        except catalog.DAMAGE as exc:
            raise damaged_catalog(store, exc) from None
        while True:
            try:
                t = _table(con, page, (*after, batch_rows), classes)
            except catalog.DAMAGE as exc:
                raise damaged_catalog(store, exc) from None
            if not len(t["keys"]):
                return
            after, classes = (int(t["pos"][-1]), t["keys"][-1]), t["classes"]
            yield _feature_set(store, manifest, layer, t)


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
    incomplete: str = ""  # the line saying that a build is unfinished
    stale_view: str = ""  # the line saying that the view does not serve the catalog


_INFO = {
    "class_counts": "SELECT class, COUNT(row) FROM images GROUP BY class ORDER BY class",
    "splits": "SELECT COALESCE(NULLIF(split, ''), '(none)'), COUNT(*) FROM images "
    "WHERE row IS NOT NULL GROUP BY 1 ORDER BY 1",
    "errors": "SELECT key, error, row IS NOT NULL FROM images WHERE error IS NOT NULL",
    "files": "SELECT COUNT(*) FROM files",
    "failed": "SELECT s.name, s.failed, COUNT(*) FROM shards s JOIN images i ON i.shard = s.name "
    "WHERE s.failed IS NOT NULL AND s.file IS NULL GROUP BY s.name",
}


def store_info(store: Path) -> StoreInfo:
    """Summarise a store: images, classes, splits, layers, provenance, errors, size."""
    store = Path(store)
    manifest = read_manifest(store, required=True)
    try:
        with closing(connect(store)) as con:
            n, q = catalog.counts(con), {k: con.execute(v).fetchall() for k, v in _INFO.items()}
            stale = stale_view(store, con)
    except catalog.DAMAGE as exc:
        raise damaged_catalog(store, exc) from None
    class_counts, done = dict(q["class_counts"]), n["planned"] - n["pending"]
    todo = (
        f"incomplete: {done} of {n['planned']} planned images; run the same fstore build to finish"
    )
    return StoreInfo(
        path=str(store), image_root=manifest.image_root, images=n["stored"],
        planned=n["planned"], pending=n["pending"], classes=tuple(class_counts),
        class_counts=class_counts, splits=dict(q["splits"]),
        layers={layer: {"shape": list(shape), "dim": int(np.prod(shape))}
                for layer, shape in manifest.shapes.items()},
        dtype=manifest.dtype, shards=q["files"][0][0],
        errors=[{"key": k, "reason": r, "stored": bool(s)} for k, r, s in q["errors"]],
        provenance=manifest.provenance, size_bytes=store_bytes(store),
        failed_shards=[{"shard": s, "reason": r, "images": k} for s, r, k in q["failed"]],
        incomplete=todo if n["pending"] else "", stale_view=stale,
    )  # fmt: skip
