"""``duplicates``: exact copies (the catalog's sha256) and near-duplicates, grouped into
clusters, each labelled: ``within-train`` / ``within-test`` (one split), ``leak`` (train and
test) and ``conflict`` (more than one class); a cluster can be both a leak and a conflict.

Near-duplicates are found in two steps, never through an N×N matrix:

1. candidates: each row's ``k`` nearest neighbours (exact search streamed by shard, or the
   faiss index beside the store) with cosine at least ``min_similarity``;
2. verification of each candidate pair on its images (:mod:`fstore.quality.verify`), since no
   cosine threshold alone separates an edited copy from another photo of the same room.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.quality.rows import StoreRows, store_rows


@dataclass(frozen=True)
class DuplicateOptions:
    """``k`` neighbours per row and ``min_similarity`` make the candidates; ``verify`` checks
    them on the images (off: every candidate counts); ``use_index`` takes candidates from the
    index that ``fstore index`` built, searching ``nprobe`` of its cells per row (0: the
    index's own); ``workers`` threads verify (0: one per core)."""

    k: int = 5
    min_similarity: float = 0.75
    verify: bool = True
    use_index: bool = False
    workers: int = 0
    nprobe: int = 0


@dataclass(frozen=True)
class Cluster:
    """Keys that are copies of each other, sorted; ``exact``: all byte-identical."""

    keys: tuple[str, ...]
    labels: tuple[str, ...]
    classes: tuple[str, ...]
    splits: tuple[str, ...]
    exact: bool

    def to_dict(self) -> dict:
        return {
            "keys": list(self.keys),
            "labels": list(self.labels),
            "classes": list(self.classes),
            "splits": list(self.splits),
            "exact": self.exact,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Cluster:
        return cls(
            tuple(d["keys"]), tuple(d["labels"]), tuple(d["classes"]), tuple(d["splits"]),
            bool(d["exact"]),
        )  # fmt: skip


@dataclass(frozen=True)
class DuplicateResult:
    """What :func:`duplicates` returns: ``exact`` the clusters of byte-identical images,
    ``clusters`` every cluster (exact and near copies joined), and how many candidate pairs
    were checked and accepted."""

    store: str
    layer: str
    exact: tuple[Cluster, ...]
    clusters: tuple[Cluster, ...]
    candidates: int
    verified: int
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "store": self.store,
            "layer": self.layer,
            "exact": [c.to_dict() for c in self.exact],
            "clusters": [c.to_dict() for c in self.clusters],
            "candidates": self.candidates,
            "verified": self.verified,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DuplicateResult:
        return cls(
            store=d["store"],
            layer=d["layer"],
            exact=tuple(map(Cluster.from_dict, d["exact"])),
            clusters=tuple(map(Cluster.from_dict, d["clusters"])),
            candidates=d["candidates"],
            verified=d["verified"],
            seconds=dict(d["seconds"]),
        )

    def leaked_test_keys(self) -> list[str]:
        """Test images with a copy in the training split (to leave out of a test score)."""
        return sorted(
            key for c in self.clusters if "leak" in c.labels for key, s in zip(c.keys, c.splits)
            if s == "test"
        )  # fmt: skip


def cluster_labels(classes: set[str], splits: set[str]) -> tuple[str, ...]:
    labels = (
        ["leak"]
        if {"train", "test"} <= splits
        else [f"within-{s or 'unsplit'}" for s in sorted(splits)]
    )
    return tuple(labels + (["conflict"] if len(classes) > 1 else []))


def _clusters(rows: StoreRows, pairs: np.ndarray) -> tuple[Cluster, ...]:
    """Connected components of the pairs (rows ``(p, 2)``), as labelled clusters; a cluster
    is exact when its images share one recorded sha256."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return ()
    n = len(rows)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    members = np.unique(pairs)
    out = []
    for comp in np.unique(label[members]):
        at = sorted(members[label[members] == comp], key=lambda i: rows.keys[i])
        classes, splits = [str(rows.classes[i]) for i in at], [str(rows.split[i]) for i in at]
        labels = cluster_labels(set(classes), set(splits))
        shas = {str(rows.sha256[i]) for i in at}
        exact = len(shas) == 1 and "" not in shas
        keys = tuple(str(rows.keys[i]) for i in at)
        out.append(Cluster(keys, labels, tuple(classes), tuple(splits), exact))
    return tuple(sorted(out, key=lambda c: c.keys))


def exact_pairs(rows: StoreRows) -> np.ndarray:
    """Pairs of rows whose images have the same sha256 (each with the group's first row)."""
    sha = rows.sha256.astype(str)
    order = np.argsort(sha, kind="stable")
    pairs = []
    for run in np.split(order, np.flatnonzero(sha[order][1:] != sha[order][:-1]) + 1):
        if len(run) > 1 and sha[run[0]]:
            pairs += [(run[0], other) for other in run[1:]]
    return np.array(pairs, np.int64).reshape(-1, 2)


def near_pairs(sims: np.ndarray, hits: np.ndarray, first: int, min_similarity: float):
    """The pairs ``(p, 2)`` (lower row first) and similarities that a search's results make
    candidates: queries are rows ``first, first + 1, ...``; a row is not its own neighbour,
    ``-1`` is no row."""
    own = np.broadcast_to(first + np.arange(len(hits))[:, None], hits.shape)
    keep = (sims >= min_similarity) & (hits != own) & (hits >= 0)
    a, b = own[keep], hits[keep]
    return np.stack([np.minimum(a, b), np.maximum(a, b)], 1), sims[keep]


def candidate_pairs(
    store: Path, layer: str, rows: StoreRows, options: DuplicateOptions, progress: bool = False
):
    """Each row's ``k`` nearest rows at cosine ≥ ``min_similarity``: unique pairs ``(p, 2)``
    (lower row first) and their similarities, one batch of queries at a time (``progress``:
    a bar on stderr).

    Through the index the similarities are the index's own (not re-ranked from the store):
    a candidate is checked on its images anyway, and re-reading the store for every query
    would cost more than the search."""
    from tqdm import tqdm

    from fstore.quality.index import open_index
    from fstore.quality.neighbors import exact_search
    from fstore.quality.rows import stream_unit_rows

    index = open_index(store, layer, rows) if options.use_index else None
    pairs, similarities = [], []
    bar = tqdm(total=len(rows), unit="image", desc="candidates", disable=not progress)
    for first, X in stream_unit_rows(store, layer):
        if index is not None:
            sims, hits = index.search(X, options.k + 1, rerank=0, nprobe=options.nprobe)
        else:
            sims, hits = exact_search(store, layer, X, options.k + 1)
        bar.update(len(X))
        found, found_sims = near_pairs(sims, hits, first, options.min_similarity)
        pairs.append(found)
        similarities.append(found_sims)
    bar.close()
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    sims = np.concatenate(similarities) if similarities else np.zeros(0, np.float32)
    pairs, once = np.unique(pairs.astype(np.int64), axis=0, return_index=True)  # found twice
    return pairs.reshape(-1, 2), sims[once].astype(np.float32)


def duplicates(
    store: Path | str,
    layer: str | None = None,
    options: DuplicateOptions = DuplicateOptions(),
    progress: bool | None = None,
) -> DuplicateResult:
    """Exact and near-duplicate clusters of a store's images, labelled (see the module).

    ``progress``: bars on stderr for the candidates' search and the checks (``None``: only on
    a terminal)."""
    from fstore.quality.verify import Verifier
    from fstore.store import read_manifest
    from fstore.store.reads import pick_layer

    store, t0 = Path(store), time.perf_counter()
    layer = pick_layer(store, read_manifest(store, required=True), layer)
    rows = store_rows(store)
    same = exact_pairs(rows)
    progress = sys.stderr.isatty() if progress is None else progress
    pairs, _ = candidate_pairs(store, layer, rows, options, progress)
    t1 = time.perf_counter()
    identical = {tuple(sorted(p)) for p in same.tolist()}
    identical |= {
        (a, b) for a, b in pairs.tolist() if rows.sha256[a] and rows.sha256[a] == rows.sha256[b]
    }
    todo = [p for p in pairs.tolist() if tuple(p) not in identical]
    if options.verify and todo:
        images = [(rows.image(rows.keys[a]), rows.image(rows.keys[b])) for a, b in todo]
        verdicts = Verifier().verify_pairs(images, options.workers, progress)
        todo = [p for p, v in zip(todo, verdicts) if v.copy]
    accepted = np.array(todo, np.int64).reshape(-1, 2)
    seconds = {"candidates": t1 - t0, "verify": time.perf_counter() - t1}
    return DuplicateResult(
        str(store), layer, _clusters(rows, same),
        _clusters(rows, np.concatenate([same, accepted])),
        candidates=len(pairs), verified=len(accepted), seconds=seconds,
    )  # fmt: skip
