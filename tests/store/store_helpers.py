"""A store written straight through the write stage, without a model: fast store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fstore.build.write import Writer
from fstore.images.discover import SplitSpec
from fstore.store import store as st
from fstore.store.lock import StoreLock, prepare_store

DIM = 6


def manifest() -> st.Manifest:
    return st.Manifest("", False, SplitSpec("none"), ("f", "g"), {"f": (DIM,), "g": (2, 2)},
                       "float32", "synthetic")  # fmt: skip


def shard_rows(keys: list[str], seed: int) -> st.ShardRows:
    rng = np.random.default_rng(seed)
    n = len(keys)
    return st.ShardRows(keys, [f"sha-{k}-{seed}" for k in keys], [seed] * n, [seed] * n,
                        {"f": rng.normal(size=(n, DIM)).astype(np.float32),
                         "g": rng.normal(size=(n, 4)).astype(np.float32)})  # fmt: skip


def synthetic_store(path: Path, shards: int, rows: int, generation: int = 1, seed: int = 0) -> Path:
    """``shards`` shards of ``rows`` rows (keys ``c<k>/img<i>``), one build generation."""
    keys = [[f"c{(s * rows + i) % 3}/img{s * rows + i:06d}" for i in range(rows)]
            for s in range(shards)]  # fmt: skip
    return write_generation(path, generation, keys, seed)


def write_generation(path: Path, generation: int, keys: list[list[str]], seed: int = 0) -> Path:
    """One build generation of shards holding ``keys``, through the write stage (which commits
    the index after every shard, and at its end)."""
    prepare_store(path)
    if st.read_manifest(path) is None:
        st.write_manifest(path, manifest())
    st.write_plan(path, generation, keys)
    with StoreLock(path):
        writer = Writer(path, manifest(), None, index_every=0.0)
        for index, shard_keys in enumerate(keys):
            writer.put(st.shard_name(generation, index), shard_rows(shard_keys, seed + index))
        writer.close()
    return path


def assert_same_store(a: Path, b: Path, layers: tuple[str, ...] = ("pool5", "fc7")) -> None:
    """Two stores read back the same: rows in order, features, labels, splits, classes, and
    what ``info`` says of their images and errors."""
    for layer in layers:
        x, y = st.load_features(a, layer), st.load_features(b, layer)
        assert list(x.keys) == list(y.keys)
        np.testing.assert_array_equal(x.X, y.X)
        np.testing.assert_array_equal(x.y, y.y)
        assert list(x.split) == list(y.split) and x.classes == y.classes
    info_a, info_b = st.store_info(a), st.store_info(b)
    assert (info_a.images, info_a.class_counts, info_a.errors) == (
        info_b.images, info_b.class_counts, info_b.errors)  # fmt: skip
