"""A complete store written from arrays: for tests, and for importing features made elsewhere."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.store import catalog
from fstore.store.catalog import connect, transaction
from fstore.store.layout import Manifest, sidecar, write_manifest
from fstore.store.shards import write_shard
from fstore.store.view import refresh_view


def write_arrays(
    store: Path,
    features: dict[str, np.ndarray],
    keys: list[str],
    class_per_row: list[str],
    split: list[str],
    provenance: dict | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a new store holding ``features[layer]`` ``(N, ...)`` (trailing shape recorded) with
    the given classes and splits (``train``, ``test`` or ``""``), as one shard.

    Keys become ``<split or 'none'>/<class>/<key>``, as a folder of that layout would give.
    """
    store = Path(store)
    if store.exists() or sidecar(store).exists():
        raise StoreError(f"{store} already exists; write_arrays only creates new stores")
    n = len(keys)
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
    flat = {layer: np.asarray(v).reshape(n, -1) for layer, v in features.items()}
    info = write_shard(store, "g000001-s000000.h5", full_keys, flat, dtype)
    with closing(connect(store, write=True)) as con:
        with transaction(con, store):
            catalog.add_plan(con, {"g000001-s000000": [(k, 0, 0) for k in full_keys]})
            catalog.set_order(con, zip(full_keys, range(n), class_per_row, split))
        images = [(k, i, "", 0, 0, None) for i, k in enumerate(full_keys)]
        catalog.commit_shard(con, store, "g000001-s000000", info, images)
        refresh_view(store, con, manifest)
    return store
