"""An approximate nearest-neighbour index (faiss) beside a store, mapped by key, never by row.

``<store>.index/<layer>.faiss`` holds the vectors (unit length, inner product = cosine);
``<layer>.rows.json`` lists, in faiss id order, the key and sha256 of each row it covers, and
``<layer>.json`` its parameters and the catalog it saw. Rows move with inserts and
``compact``; keys and their sha256 do not, so a compaction leaves the index valid, new images
are added by the next ``build_index`` (an extension), and an image that changed or left the
store makes the index stale: every search then refuses it in one line, and ``build_index``
builds it again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.fsutil import atomic_write_bytes, commit_file, tmp_path_for
from fstore.quality import require
from fstore.quality.rows import RowReader, StoreRows, store_rows, unit_rows

#: Below this many rows a flat (exact) faiss index is small and fast enough.
FLAT_BELOW = 100_000
#: Index kinds: auto picks flat below FLAT_BELOW rows, else ivf-sq8.
KINDS = ("auto", "flat", "ivf-sq8", "ivf-pq")


@dataclass(frozen=True)
class IndexOptions:
    """``kind``: ``auto`` (flat below FLAT_BELOW rows, else ``ivf-sq8``), ``flat``, ``ivf-sq8``
    or ``ivf-pq``; ``nlist`` IVF cells (0: 4·sqrt(N), at most a 39th of the training sample);
    ``nprobe`` cells searched; ``train_rows`` the sample the quantisers learn from; ``rerank``
    candidates re-scored with the store's exact features (0: none); ``pq_m`` PQ sub-vectors."""

    kind: str = "auto"
    nlist: int = 0
    nprobe: int = 32
    train_rows: int = 65_536
    rerank: int = 0
    pq_m: int = 64
    seed: int = 0


@dataclass(frozen=True)
class IndexReport:
    """What :func:`build_index` did: ``action`` is ``built``, ``extended`` or ``current``."""

    path: str
    layer: str
    kind: str
    action: str
    rows: int
    added: int
    seconds: float


def index_dir(store: Path) -> Path:
    return store.with_name(store.name + ".index")


def _files(store: Path, layer: str) -> tuple[Path, Path, Path]:
    base = index_dir(store) / layer.replace("/", "_")
    return base.with_suffix(".faiss"), Path(f"{base}.rows.json"), base.with_suffix(".json")


@dataclass(frozen=True)
class Coverage:
    """How an index's rows compare with the store's: ids (in the index) of rows still stored,
    keys the store added since, and how many of its rows changed or left."""

    ids: np.ndarray
    positions: np.ndarray  # the store row of each id in ``ids``
    added: np.ndarray  # store rows the index lacks
    stale: int


def _coverage(keys: list[str], shas: list[str], rows: StoreRows, files: str) -> Coverage:
    """Match the index's keys to the store's rows in array operations (a million rows are a
    question of each CLI call, so no Python loop per row)."""
    n, asked = len(rows), np.asarray(keys, dtype=object)
    if len(asked) == n and np.array_equal(asked, rows.keys):  # nothing moved since the build
        at, found = np.arange(n), np.ones(n, bool)
    elif n == 0 or len(asked) == 0:
        at, found = np.zeros(len(asked), np.int64), np.zeros(len(asked), bool)
    else:
        stored = rows.keys.astype(str)
        order = np.argsort(stored, kind="stable")
        place = np.minimum(np.searchsorted(stored[order], asked.astype(str)), n - 1)
        at = order[place]
        found = stored[at] == asked.astype(str)
    sha = np.asarray(shas, dtype=object)
    same = found & (rows.sha256[at] == sha) if n else found
    if files != rows.files_digest:  # a store written from arrays records no image sha256:
        same &= sha != ""  # its shard files must then match
    ids = np.flatnonzero(same)
    have = np.zeros(n, bool)
    have[at[ids]] = True
    return Coverage(ids, at[ids], np.flatnonzero(~have), int(len(asked) - len(ids)))


class _Unreadable(Exception):
    """The index's files are damaged, or were written by an fstore that recorded less."""


def _read(store: Path, layer: str):
    """The index's parameters, keys and sha256, and its faiss file; ``None`` if there is none.

    Raises :class:`_Unreadable` when its files do not read as this version writes them."""
    faiss_file, rows_file, meta_file = _files(store, layer)
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        _ = meta["kind"], meta["files_digest"], meta["options"]["rerank"], meta["options"]["nprobe"]
        int(meta["rows"])
        listed = json.loads(rows_file.read_text())  # JSON: a key may hold any character
        keys, shas = listed["keys"], listed["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Unreadable(str(exc)) from None
    if not (len(keys) == len(shas) == meta["rows"]):
        raise _Unreadable(f"{rows_file.name} does not list the index's {meta['rows']} rows")
    return meta, keys, shas, faiss_file


def _read_faiss(faiss, path: Path, rows: int):
    """The faiss index in ``path``, which must hold ``rows`` vectors."""
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports a missing or malformed file so
        raise _Unreadable(str(exc).strip().splitlines()[-1]) from None
    if index.ntotal != rows:
        raise _Unreadable(f"{path.name} holds {index.ntotal} vectors, its rows file {rows}")
    return index


def _new_index(faiss, dim: int, n: int, options: IndexOptions):
    kind = options.kind if options.kind != "auto" else "flat" if n < FLAT_BELOW else "ivf-sq8"
    if kind == "flat":
        return kind, faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    # faiss's k-means wants at least 39 training rows a cell: fewer cells than the sample
    # allows would leave their centroids to chance (and faiss warns)
    sample = min(n, options.train_rows)
    nlist = options.nlist or max(1, min(int(4 * np.sqrt(n)), sample // 39))
    code = "SQ8" if kind == "ivf-sq8" else f"PQ{options.pq_m}"
    if kind not in KINDS:
        raise StoreError(f"unknown index kind {kind!r}: {', '.join(KINDS)}")
    return kind, faiss.index_factory(dim, f"IVF{nlist},{code}", faiss.METRIC_INNER_PRODUCT)


def _train_sample(store: Path, layer: str, n: int, options: IndexOptions) -> np.ndarray:
    """A uniform random sample of rows for the quantisers, drawn batch by batch."""
    from fstore.quality.rows import stream_unit_rows

    rng, share, parts = np.random.default_rng(options.seed), min(1.0, options.train_rows / n), []
    for _, X in stream_unit_rows(store, layer):
        parts.append(X[rng.random(len(X)) < share])
    return np.concatenate(parts)


def _add(index, store: Path, layer: str, rows_wanted: np.ndarray, first_id: int) -> None:
    """Add the store's ``rows_wanted`` (ascending) to ``index`` with ids from ``first_id``."""
    from fstore.quality.rows import stream_unit_rows

    done = 0
    for start, X in stream_unit_rows(store, layer):
        lo, hi = np.searchsorted(rows_wanted, [start, start + len(X)])
        if hi > lo:
            index.add_with_ids(X[rows_wanted[lo:hi] - start], np.arange(hi - lo) + first_id + done)
            done += hi - lo


def build_index(
    store: Path | str, layer: str | None = None, options: IndexOptions = IndexOptions()
) -> IndexReport:
    """Build the index of ``layer``, or extend it with the rows the store added since; a
    stale index (images changed or left) is built again."""
    from fstore.store import read_manifest
    from fstore.store.reads import pick_layer

    faiss = require("faiss")
    t0, store = time.perf_counter(), Path(store)
    manifest = read_manifest(store, required=True)
    layer = pick_layer(store, manifest, layer)
    rows = store_rows(store)
    dim = int(np.prod(manifest.shapes[layer]))
    faiss_file, rows_file, meta_file = _files(store, layer)
    try:  # an index that is damaged or stale, or was made with other options, is built again
        old = _read(store, layer)
        cover = _coverage(old[1], old[2], rows, old[0]["files_digest"]) if old else None
        if cover is not None and cover.stale == 0 and old[0]["options"] == asdict(options):
            index, keys, shas = _read_faiss(faiss, faiss_file, len(old[1])), old[1], old[2]
            kind, action, added = (
                old[0]["kind"],
                "extended" if len(cover.added) else "current",
                cover.added,
            )
        else:
            index = None
    except _Unreadable:
        index = None
    if index is None:
        kind, index = _new_index(faiss, dim, len(rows), options)
        if not index.is_trained:
            index.train(_train_sample(store, layer, len(rows), options))
        keys, shas, action, added = [], [], "built", np.arange(len(rows))
    _add(index, store, layer, added, len(keys))
    keys += [str(k) for k in rows.keys[added]]
    shas += [str(s) for s in rows.sha256[added]]
    index_dir(store).mkdir(exist_ok=True)
    tmp = tmp_path_for(faiss_file)
    faiss.write_index(index, str(tmp))
    commit_file(tmp, faiss_file)
    atomic_write_bytes(rows_file, json.dumps({"keys": keys, "sha256": shas}).encode())
    meta = {
        "layer": layer, "kind": kind, "dim": dim, "rows": len(keys), "options": asdict(options),
        "catalog_version": rows.version, "files_digest": rows.files_digest,
    }  # fmt: skip
    atomic_write_bytes(meta_file, json.dumps(meta, indent=1).encode())
    seconds = time.perf_counter() - t0
    return IndexReport(
        path=str(faiss_file), layer=layer, kind=kind, action=action, rows=len(keys),
        added=len(added), seconds=seconds,
    )  # fmt: skip


@dataclass
class LoadedIndex:
    """An index read once and checked against the store, for many searches in one process."""

    store: Path
    layer: str
    index: object
    rows: StoreRows
    id_to_row: np.ndarray  # store row of each faiss id
    rerank: int
    reader: RowReader | None = None

    def search(
        self, queries: np.ndarray, k: int, rerank: int | None = None, nprobe: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities and store rows ``(m, k)`` of the nearest rows (row -1: none);
        with ``rerank`` (default: the index's), that many candidates are re-scored with the
        store's exact features; ``nprobe``: IVF cells searched (0: the index's own)."""
        rerank = self.rerank if rerank is None else rerank
        Q = unit_rows(queries)
        params = None
        if nprobe and hasattr(self.index, "nprobe"):
            import faiss

            params = faiss.SearchParametersIVF(nprobe=nprobe)
        sims, ids = self.index.search(Q, max(k, rerank), params=params)
        found = np.where(ids >= 0, self.id_to_row[np.maximum(ids, 0)], -1)
        if rerank:
            self.reader = self.reader or RowReader(self.rows, self.layer)
            sims, found = _rerank(self.reader, Q, found)
        order = np.lexsort((found, -sims), axis=1)[:, :k]
        return np.take_along_axis(sims, order, 1), np.take_along_axis(found, order, 1)


#: Candidate features gathered at once while re-ranking (floats): bounds its memory.
RERANK_BLOCK = 1 << 24


def _rerank(reader: RowReader, Q: np.ndarray, found: np.ndarray):
    """Exact cosine of each candidate, read from the store."""
    wanted = np.unique(found[found >= 0])
    X = unit_rows(reader.read(wanted))
    at = np.searchsorted(wanted, np.maximum(found, 0))
    sims = np.empty(found.shape, np.float32)
    step = max(1, RERANK_BLOCK // max(1, found.shape[1] * Q.shape[1]))
    for q in range(0, len(Q), step):
        sims[q : q + step] = np.einsum("md,mkd->mk", Q[q : q + step], X[at[q : q + step]])
    return np.where(found >= 0, sims, -np.inf).astype(np.float32), found


def open_index(store: Path | str, layer: str, rows: StoreRows | None = None) -> LoadedIndex:
    """The index of ``layer``, refused in one line if it is missing or does not read, or if
    the store changed since it was built (rows added, changed or gone)."""
    faiss = require("faiss")
    store = Path(store)
    rows = rows if rows is not None else store_rows(store)
    redo = f"run: fstore index --store {store} --layer {layer}"
    try:
        old = _read(store, layer)
        if old is None:
            raise StoreError(f"store {store} has no index of layer {layer}; {redo}")
        meta, keys, shas, faiss_file = old
        cover = _coverage(keys, shas, rows, meta["files_digest"])
        if cover.stale or len(cover.added):
            raise StoreError(
                f"the index of {layer} is older than store {store} ({cover.stale} of its images "
                f"changed or left the store, {len(cover.added)} are new); {redo}"
            )
        index = _read_faiss(faiss, faiss_file, len(keys))
    except _Unreadable as exc:
        raise StoreError(
            f"the index of {layer} beside store {store} does not read ({exc}); {redo}"
        ) from None
    if hasattr(index, "nprobe"):
        index.nprobe = meta["options"]["nprobe"]
    id_to_row = np.full(len(keys), -1, np.int64)
    id_to_row[cover.ids] = cover.positions
    return LoadedIndex(store, layer, index, rows, id_to_row, meta["options"]["rerank"])


def index_search(
    store: Path, layer: str, queries: np.ndarray, k: int, rows: StoreRows | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`LoadedIndex.search` through the index beside the store (checked first)."""
    return open_index(store, layer, rows).search(queries, k)
