"""``neighbors``: the stored images nearest to a query by cosine similarity.

Exact search streams the layer shard by shard (:func:`fstore.store.iter_features`) and keeps
only the best ``k`` of each query, so memory is one batch of rows, whatever the store's size.
A query is a key of the store or an image file or folder; a new image goes through the store's
own model, preprocessing and decoding, as ``classify`` does. A key wins over a path of the same
name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fstore.errors import DatasetError, StoreError
from fstore.quality.rows import (
    BATCH_ROWS,
    RowReader,
    StoreRows,
    store_rows,
    stream_unit_rows,
    unit_rows,
)

#: Queries compared per block: with BATCH_ROWS rows, a block's similarity matrix is 64 MiB.
QUERY_BLOCK = 1_024


@dataclass(frozen=True)
class Neighbor:
    """One stored image found near a query."""

    rank: int
    key: str
    label: str
    split: str
    similarity: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("label")
        return d


@dataclass(frozen=True)
class QueryResult:
    """A query (a store key, or an image path) and its neighbours, nearest first."""

    query: str
    is_key: bool
    neighbors: tuple[Neighbor, ...]

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "is_key": self.is_key,
            "neighbors": [n.to_dict() for n in self.neighbors],
        }


@dataclass(frozen=True)
class NeighborResult:
    """What :func:`neighbors` returns: ``method`` is ``exact`` or ``index``."""

    store: str
    layer: str
    k: int
    method: str
    results: tuple[QueryResult, ...]

    def to_dict(self) -> dict:
        head = {k: getattr(self, k) for k in ("store", "layer", "k", "method")}
        return {**head, "results": [r.to_dict() for r in self.results]}


def _merge(best_s, best_i, sims, first_row, k):
    """The ``k`` best of what was kept and a new block of similarities, best first."""
    if sims.shape[1] > k:
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sims = np.take_along_axis(sims, idx, 1)
    else:
        idx = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
    s = np.concatenate([best_s, sims], axis=1)
    i = np.concatenate([best_i, idx + first_row], axis=1)
    order = np.lexsort((i, -s), axis=1)[:, :k]  # ties: the lower row first
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def exact_search(
    store: Path, layer: str, queries: np.ndarray, k: int, batch_rows: int = BATCH_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities ``(m, k)`` and store rows ``(m, k)`` of the ``k`` nearest rows to
    each query, best first (ties: lower row first), streamed shard by shard."""
    Q = unit_rows(queries)
    best_s = np.full((len(Q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(Q), 0), np.int64)
    for first, X in stream_unit_rows(store, layer, batch_rows):
        parts = []
        for q in range(0, len(Q), QUERY_BLOCK):
            sims = Q[q : q + QUERY_BLOCK] @ X.T
            parts.append(
                _merge(best_s[q : q + QUERY_BLOCK], best_i[q : q + QUERY_BLOCK], sims, first, k)
            )
        best_s = np.concatenate([p[0] for p in parts]) if parts else best_s
        best_i = np.concatenate([p[1] for p in parts]) if parts else best_i
    return best_s, best_i


@dataclass(frozen=True)
class Queries:
    """Queries resolved: labels shown for them, their features, and each one's own store row
    (-1 for a new image), which is left out of its neighbours."""

    names: tuple[str, ...]
    features: np.ndarray
    own_rows: np.ndarray


def resolve_queries(
    store: Path, rows: StoreRows, layer: str, queries: Sequence[str | Path], provider: str = "cpu"
) -> Queries:
    """Store keys are read from the store; image files and folders go through its model."""

    position = rows.position()
    keys = [str(q) for q in queries if str(q) in position]
    paths = [Path(q) for q in queries if str(q) not in position]
    for p in paths:
        if not p.exists():
            raise DatasetError(
                f"query {p} is neither a key of store {store} nor an image file or folder"
            )
    own = np.array([position[k] for k in keys], np.int64)
    with RowReader(rows, layer) as reader:
        X = reader.read(own) if keys else None
    names: list[str] = list(keys)
    if paths:
        images, Y = image_features(store, layer, paths, provider)
        names += [str(p) for p in images]
        X = Y if X is None else np.concatenate([X, Y])
        own = np.concatenate([own, np.full(len(images), -1, np.int64)])
    return Queries(tuple(names), X, own)


def image_features(
    store: Path, layer: str, paths: list[Path], provider: str = "cpu"
) -> tuple[list[Path], np.ndarray]:
    """Features of new images computed as the store computed its own (model, preprocessing,
    decoding); an image that does not decode is one line."""
    from fstore.classifiers.predict import expand_images
    from fstore.images.preprocess import Preprocessing
    from fstore.images.reader import file_sha256
    from fstore.pipeline.run import extract_features
    from fstore.store import read_manifest

    prov = read_manifest(store, required=True).provenance
    model = Path(prov.get("model_path", ""))
    if not prov.get("model_path") or not model.is_file():
        raise StoreError(
            f"store {store} was built with model {model or '(none recorded)'}, which is not "
            "there: new images cannot be compared with it; query by key instead"
        )
    if prov.get("model_sha256") and file_sha256(model) != prov["model_sha256"]:
        raise StoreError(f"model {model} changed since store {store} was built from it")
    images = expand_images(paths)
    features, good, bad = extract_features(
        images, model, (layer,), provider=provider,
        preprocessing=Preprocessing.from_json(prov["preprocessing"]),
        decode=prov.get("decode", "exact"),
    )  # fmt: skip
    if bad:
        path, reason = bad[0]
        raise DatasetError(f"query image {path} does not decode: {reason}")
    return list(good), features[layer].reshape(len(good), -1)


def neighbors(
    store: Path | str,
    queries: Sequence[str | Path],
    layer: str | None = None,
    k: int = 10,
    use_index: bool = False,
    provider: str = "cpu",
) -> NeighborResult:
    """The ``k`` stored images nearest (cosine) to each query: a store key, or an image file or
    folder. Exact by default; ``use_index`` searches the index that ``fstore index`` built
    beside the store (refused if the store changed since)."""
    from fstore.quality.index import index_search
    from fstore.store import read_manifest
    from fstore.store.reads import pick_layer

    store = Path(store)
    if k < 1:
        raise StoreError("k must be at least 1")
    layer = pick_layer(store, read_manifest(store, required=True), layer)
    rows = store_rows(store)
    q = resolve_queries(store, rows, layer, queries, provider)
    # one more than asked, so a key's own row can be dropped
    if use_index:
        sims, found = index_search(store, layer, q.features, k + 1, rows)
    else:
        sims, found = exact_search(store, layer, q.features, k + 1)
    results = []
    for name, own, s, f in zip(q.names, q.own_rows, sims, found):
        kept = [(si, fi) for si, fi in zip(s, f) if fi != own and fi >= 0][:k]
        hits = tuple(
            Neighbor(r + 1, rows.keys[fi], rows.classes[fi], rows.split[fi], float(si))
            for r, (si, fi) in enumerate(kept)
        )
        results.append(QueryResult(name, bool(own >= 0), hits))
    method = "index" if use_index else "exact"
    return NeighborResult(str(store), layer, k, method, tuple(results))
